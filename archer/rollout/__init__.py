"""Rollout engines: the protocol (``base``), the transformers engine (``hf``), multi-turn tool use.

``from archer.rollout import SamplingParams, Rollout, RolloutEngine`` is cheap; ``HFEngine`` imports
torch on first use. :data:`ENGINES` is the registry ``rollout.engine`` names: each entry is
``"module:Class"``, imported only when built, so an optional engine costs nothing until used;
:func:`engine_problem` tells, without importing it, why a name cannot be used here (the config
validation calls it, so ``rollout.engine=...`` fails before any compute).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from archer.rollout.base import FINISH_REASONS, Rollout, RolloutEngine, SamplingParams

__all__ = ["ENGINES", "FINISH_REASONS", "HFEngine", "Rollout", "RolloutEngine", "SamplingParams", "build_engine",
           "engine_problem"]

# rollout.engine name -> ("module:Class", the third-party package it needs or None)
ENGINES: dict[str, tuple[str, str | None]] = {
    "hf": ("archer.rollout.hf:HFEngine", None),
}


def engine_problem(name: str) -> str | None:
    """None when engine ``name`` can be built here, else a one-line reason (unknown, or not installed)."""
    if name not in ENGINES:
        return f"unknown engine {name!r}; known: {sorted(ENGINES)}"
    target, needs = ENGINES[name]
    if needs is not None and importlib.util.find_spec(needs) is None:
        return f"engine {name!r} needs the {needs!r} package, which is not installed"
    if importlib.util.find_spec(target.partition(":")[0]) is None:
        return f"engine {name!r}: module {target.partition(':')[0]} not found"
    return None


def build_engine(name: str, model: Any, tokenizer: Any, **kwargs: Any) -> Any:
    """The engine registered as ``name`` over ``model`` (keyword arguments go to its constructor)."""
    problem = engine_problem(name)
    if problem:
        raise ValueError(f"rollout.engine: {problem}")
    module, _, cls = ENGINES[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)(model, tokenizer, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "HFEngine":
        from archer.rollout.hf import HFEngine

        return HFEngine
    raise AttributeError(f"module 'archer.rollout' has no attribute {name!r}")
