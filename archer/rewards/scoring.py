"""Scorers: how the trainer turns responses into rewards, chosen by ``resources.backend``.

A scorer has two methods: ``score(responses, problems) -> list[RewardResult]`` and ``close()``. The
``local`` scorer calls :func:`archer.rewards.registry.score_responses` in this process (the verifiers
use their own pools: math-verify with timeouts, the code sandbox with parallel processes); the ``ray``
scorer is :class:`archer.rewards.ray_pool.RayRewardScorer`, imported only when asked for, so a
CPU run never imports ray. The recipe is the same for both; only ``resources.*`` changes.

Whatever a verifier does, a scorer returns one result per response: a failure becomes reward 0 with
``info["reason"]`` (the registry already guarantees this for exceptions; :func:`safe_score` also
covers a scorer that breaks as a whole, e.g. a lost Ray worker).

:func:`build_run_scorer` builds a run's scorer from its config: the backend's scorer, wrapped by
:class:`CustomRewardScorer` when ``reward.function`` is set (``archer.rewards.custom``: the user's
function, weighted with the built-in verifier, runs in the trainer's process), then by
:class:`archer.rewards.reward_model.RewardModelScorer` when ``reward.model`` is set (a reward model on the
trainer's device, mixed with that rule reward).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from archer.data.schema import Problem
from archer.distributed.placement import label_resources
from archer.rewards.code import code_step_metrics
from archer.rewards.custom import (
    FailureTally,
    combine,
    function_names,
    load_reward_function,
    verifier_exists,
)
from archer.rewards.registry import score_responses
from archer.rewards.reward_model import build_rm_scorer, rm_metrics
from archer.rewards.types import RewardResult, Scorer, safe_score


class LocalScorer:
    """In-process scoring through the verifier registry; ``verifier_opts`` go to every verifier."""

    def __init__(self, **verifier_opts: Any) -> None:
        self.verifier_opts = verifier_opts

    def score(self, responses: list[str], problems: list[Problem]) -> list[RewardResult]:

        return score_responses(responses, problems, **self.verifier_opts)

    def close(self) -> None:
        pass


def _local(
    num_workers: int, cpus_per_worker: float, address: str | None, resources: Any = None, **opts: Any
) -> Scorer:
    return LocalScorer(**opts)  # in-process: a node label has nothing to place


def _ray(
    num_workers: int, cpus_per_worker: float, address: str | None, resources: Any = None, **opts: Any
) -> Scorer:
    try:
        module = importlib.import_module("archer.rewards.ray_pool")
    except ImportError as exc:
        raise ImportError(
            f"resources.backend='ray' needs ray and archer.distributed ({exc}); "
            "install with `pip install 'archer[ray]'` or use resources.backend=local"
        ) from exc
    return module.RayRewardScorer(
        num_workers=num_workers,
        cpus_per_worker=cpus_per_worker,
        address=address,
        **({"resources": resources} if resources else {}),
        **opts,
    )


# backend name -> factory(num_workers, cpus_per_worker, address, **verifier_opts); a factory is also given
# resources= (custom Ray resources of its actors) when resources.placement labels the reward role
SCORERS: dict[str, Callable[..., Scorer]] = {"local": _local, "ray": _ray}


def register_scorer(name: str, factory: Callable[..., Scorer]) -> None:
    SCORERS[name] = factory


def build_scorer(
    backend: str,
    *,
    num_workers: int = 1,
    cpus_per_worker: float = 1.0,
    address: str | None = None,
    **verifier_opts: Any,
) -> Scorer:
    if backend not in SCORERS:
        raise KeyError(f"unknown scorer backend {backend!r}; known: {sorted(SCORERS)}")
    return SCORERS[backend](num_workers, cpus_per_worker, address, **verifier_opts)


class CustomRewardScorer:
    """``reward.verifier_weight * inner scorer + sum(weight * user function)``. The inner (verifier) scorer
    runs whenever a verifier exists for a sample, also at weight 0: its verdict is the accuracy. A
    function's failure raises :class:`archer.errors.RewardFunctionError` unless ``on_error="zero"``."""

    def __init__(
        self,
        inner: Scorer | None,
        functions: Sequence[tuple[str, float, Any]],
        *,
        verifier_weight: float = 0.0,
        none_reward: float = 0.0,
        on_error: str = "raise",
    ) -> None:
        self.inner, self.functions = inner, list(functions)
        self.verifier_weight, self.none_reward = verifier_weight, none_reward
        self.tally = FailureTally() if on_error == "zero" else None

    def score(self, responses: list[str], problems: list[Problem]) -> list[RewardResult]:

        exists = verifier_exists(problems)
        verifier = None
        if self.inner is not None and any(exists):
            verifier = safe_score(self.inner, responses, problems)
        values = [(n, w, f.values(responses, problems, self.tally)) for n, w, f in self.functions]
        return combine(
            values,
            verifier,
            verifier_weight=self.verifier_weight,
            none_reward=self.none_reward,
            has_verifier=exists,
        )

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def build_run_scorer(cfg: Any, device: Any = None) -> Scorer:
    """The scorer of a run: ``resources.backend``'s, wrapped for ``reward.function(s)`` when set, then for
    ``reward.model`` (a reward model on ``device``, :mod:`archer.rewards.reward_model`) when set."""
    rule = _rule_scorer(cfg)
    if getattr(cfg.reward, "model", None) is None:
        return rule

    try:
        return build_rm_scorer(rule, cfg, device)
    except Exception:
        rule.close()
        raise


def reward_functions(rw: Any) -> list[tuple[str, float]]:
    """``(spec, weight)`` of each user reward: ``reward.functions`` with ``reward.function_weights`` (1 each
    when empty), or the single ``reward.function`` with ``reward.function_weight``."""
    if rw.functions:
        weights = list(rw.function_weights) or [1.0] * len(rw.functions)
        return list(zip(rw.functions, weights))
    return [(rw.function, rw.function_weight)] if rw.function else []


def describe_reward(rw: Any) -> str:
    """What the run's "accuracy" and "reward" mean, printed at the start of a run with user rewards."""
    pairs = reward_functions(rw)
    names = function_names([spec for spec, _ in pairs])
    terms = ([f"{rw.verifier_weight:g} x verifier"] if rw.verifier_weight > 0 else []) + [
        f"{w:g} x {n}" for n, (_, w) in zip(names, pairs)
    ]
    return (
        "archer: accuracy = the built-in verifier's verdict for the problem's kind (math, code, ...; "
        "where there is none: a verl 'acc', else reward > 0); reward = " + " + ".join(terms)
    )


def _rule_scorer(cfg: Any) -> Scorer:
    r, rw = cfg.resources, cfg.reward

    def make_inner() -> Scorer:
        return build_scorer(
            r.backend,
            num_workers=r.num_reward_workers,
            cpus_per_worker=r.cpus_per_worker,
            address=r.address,
            **({"resources": placed} if (placed := label_resources(r.placement, "reward")) else {}),
            timeout=r.verifier_timeout,
            reward_mode=rw.code_mode,  # the code verifier's options; the math verifier drops them
            max_tests=rw.code_max_tests,
            extraction=rw.math_extraction,  # the math verifier's; the code verifier drops it
        )

    pairs = reward_functions(rw)
    if not pairs:
        return make_inner()
    names = function_names([spec for spec, _ in pairs])
    functions = [(n, w, load_reward_function(spec, rw.signature)) for n, (spec, w) in zip(names, pairs)]
    print(describe_reward(rw), file=sys.stderr, flush=True)
    return CustomRewardScorer(
        make_inner(),
        functions,
        verifier_weight=rw.verifier_weight,
        none_reward=rw.none_reward,
        on_error=rw.on_error,
    )


def function_metrics(infos: list[dict[str, Any]]) -> dict[str, float]:
    """``reward/fn/<name>``: each user reward function's mean value over the step's responses."""
    sums: dict[str, list[float]] = {}
    for info in infos:
        for key, value in info.items():
            if key.startswith("fn/"):
                sums.setdefault(key, []).append(float(value))
    return {f"reward/{k}": sum(v) / len(v) for k, v in sums.items()}


# Each verifier family's metrics over the reward infos of a step's responses (code outcomes, reward-model
# score vs rule reward); the RL step asks step_metrics and knows no family. Empty dicts for the others.
STEP_METRICS: list[Callable[[list[dict[str, Any]]], dict[str, float]]] = [
    code_step_metrics,
    rm_metrics,
    function_metrics,
]


def step_metrics(infos: list[dict[str, Any]]) -> dict[str, float]:
    """Every verifier family's step metrics (:data:`STEP_METRICS`) over ``infos``."""
    out: dict[str, float] = {}
    for fn in STEP_METRICS:
        out.update(fn(infos))
    return out
