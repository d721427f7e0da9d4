"""Reward dispatch: a problem's ``kind`` (and optionally its ``data_source``) picks the verifier.

Every verifier is a batch function ``fn(responses: list[str], problems: list[Problem], **opts) ->
list[RewardResult]`` registered by name. The trainer and the evaluation runner call
:func:`score_responses`, which groups a mixed batch by verifier, scores each group in one call (so
pools and sandboxes are used in parallel) and puts the results back in order. A verifier that raises
gives reward 0 with the reason recorded, never a crashed run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from archer.data.schema import Problem
from archer.rewards.types import RewardResult

BatchVerifier = Callable[..., list[RewardResult]]

# name -> "module:function"; imported lazily so math-only runs never import the sandbox and vice versa
_VERIFIERS: dict[str, str] = {
    "math": "archer.rewards.math.score:score_math_problems",
    "code": "archer.rewards.code:score_code_problems",
}
# data_source -> verifier name, for sources whose verifier differs from the default of their kind
_SOURCE_OVERRIDES: dict[str, str] = {}


def register_verifier(name: str, target: str | BatchVerifier, data_sources: Sequence[str] = ()) -> None:
    """Register a batch verifier (a callable or a ``"module:function"`` path) under ``name``."""
    _VERIFIERS[name] = target  # type: ignore[assignment]
    for source in data_sources:
        _SOURCE_OVERRIDES[source] = name


def verifier_names() -> list[str]:
    return sorted(_VERIFIERS)


def get_verifier(name: str) -> BatchVerifier:
    if name not in _VERIFIERS:
        raise KeyError(f"unknown verifier {name!r}; known: {verifier_names()}")
    target = _VERIFIERS[name]
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def verifier_for(problem: Problem) -> str:
    return _SOURCE_OVERRIDES.get(problem.data_source, problem.kind)


def score_responses(responses: Sequence[str], problems: Sequence[Problem], **opts: Any) -> list[RewardResult]:
    """Score ``responses[i]`` against ``problems[i]``; options are passed to every verifier by name.

    Options a verifier does not accept are dropped for it (e.g. ``memory_mb`` for math), so one
    options dict can serve a mixed math+code batch.
    """
    if len(responses) != len(problems):
        raise ValueError(f"{len(responses)} responses for {len(problems)} problems")
    groups: dict[str, list[int]] = {}
    for i, problem in enumerate(problems):
        groups.setdefault(verifier_for(problem), []).append(i)
    results: list[RewardResult | None] = [None] * len(responses)
    for name, idx in groups.items():
        try:
            fn = get_verifier(name)
            scored = fn([responses[i] for i in idx], [problems[i] for i in idx], **_accepted_kwargs(fn, opts))
            if len(scored) != len(idx):
                raise RuntimeError(f"verifier {name!r} returned {len(scored)} results for {len(idx)} items")
        except Exception as exc:  # a broken verifier must not end the run: zero reward, reason logged
            reason = f"verifier {name!r} failed: {type(exc).__name__}: {exc}"
            scored = [RewardResult(0.0, False, {"reason": reason}) for _ in idx]
        for i, result in zip(idx, scored):
            results[i] = result
    return results  # type: ignore[return-value]


def _accepted_kwargs(fn: Callable[..., Any], opts: dict[str, Any]) -> dict[str, Any]:
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(opts)
    return {k: v for k, v in opts.items() if k in params}
