"""Rollout engines: the protocol (``base``), the transformers engine (``hf``), multi-turn tool use.

``from archer.rollout import SamplingParams, Rollout, RolloutEngine`` is cheap; ``HFEngine`` imports
torch on first use.
"""

from __future__ import annotations

from typing import Any

from archer.rollout.base import FINISH_REASONS, Rollout, RolloutEngine, SamplingParams

__all__ = ["FINISH_REASONS", "HFEngine", "Rollout", "RolloutEngine", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name == "HFEngine":
        from archer.rollout.hf import HFEngine

        return HFEngine
    raise AttributeError(f"module 'archer.rollout' has no attribute {name!r}")
