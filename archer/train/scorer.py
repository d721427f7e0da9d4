"""Scorers: how the trainer turns responses into rewards, chosen by ``resources.backend``.

A scorer has two methods: ``score(responses, problems) -> list[RewardResult]`` and ``close()``. The
``local`` scorer calls :func:`archer.rewards.registry.score_responses` in this process (the verifiers
use their own pools: math-verify with timeouts, the code sandbox with parallel processes); the ``ray``
scorer is :class:`archer.distributed.reward_pool.RayRewardScorer`, imported only when asked for, so a
CPU run never imports ray. The recipe is the same for both; only ``resources.*`` changes.

Whatever a verifier does, a scorer returns one result per response: a failure becomes reward 0 with
``info["reason"]`` (the registry already guarantees this for exceptions; :func:`safe_score` also
covers a scorer that breaks as a whole, e.g. a lost Ray worker).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from archer.data.schema import Problem
from archer.rewards.types import RewardResult


class Scorer(Protocol):
    def score(self, responses: list[str], problems: list[Problem]) -> list[RewardResult]: ...

    def close(self) -> None: ...


class LocalScorer:
    """In-process scoring through the verifier registry; ``verifier_opts`` go to every verifier."""

    def __init__(self, **verifier_opts: Any) -> None:
        self.verifier_opts = verifier_opts

    def score(self, responses: list[str], problems: list[Problem]) -> list[RewardResult]:
        from archer.rewards.registry import score_responses

        return score_responses(responses, problems, **self.verifier_opts)

    def close(self) -> None:
        pass


def _local(num_workers: int, cpus_per_worker: float, address: str | None, **opts: Any) -> Scorer:
    return LocalScorer(**opts)


def _ray(num_workers: int, cpus_per_worker: float, address: str | None, **opts: Any) -> Scorer:
    try:
        module = importlib.import_module("archer.distributed.reward_pool")
    except ImportError as exc:
        raise ImportError(
            f"resources.backend='ray' needs ray and archer.distributed ({exc}); "
            "install with `pip install 'archer[ray]'` or use resources.backend=local"
        ) from exc
    return module.RayRewardScorer(num_workers=num_workers, cpus_per_worker=cpus_per_worker,
                                  address=address, **opts)


# backend name -> factory(num_workers, cpus_per_worker, address, **verifier_opts)
SCORERS: dict[str, Callable[..., Scorer]] = {"local": _local, "ray": _ray}


def register_scorer(name: str, factory: Callable[..., Scorer]) -> None:
    SCORERS[name] = factory


def build_scorer(backend: str, *, num_workers: int = 1, cpus_per_worker: float = 1.0,
                 address: str | None = None, **verifier_opts: Any) -> Scorer:
    if backend not in SCORERS:
        raise KeyError(f"unknown scorer backend {backend!r}; known: {sorted(SCORERS)}")
    return SCORERS[backend](num_workers, cpus_per_worker, address, **verifier_opts)


def safe_score(scorer: Scorer, responses: list[str], problems: list[Problem]) -> list[RewardResult]:
    """``scorer.score`` that never raises and always returns one result per response."""
    try:
        results = list(scorer.score(responses, problems))
        if len(results) != len(responses):
            raise RuntimeError(f"scorer returned {len(results)} results for {len(responses)} responses")
        return results
    except Exception as exc:  # the run goes on with zero reward; the reason is logged per sample
        reason = f"scorer failed: {type(exc).__name__}: {exc}"
        return [RewardResult(0.0, False, {"reason": reason}) for _ in responses]
