"""Curricula: what a step trains on, as stages that start at given steps.

A :class:`Stage` starts at a step and sets what it names: the response budget (``max_new_tokens``) or
the pool of prompts the data order draws from (``pool``, prompt indices). :meth:`Curriculum.at` folds
the stages whose start step was reached, in start order, each overriding the fields it sets, so
independent schedules (a length schedule and a prompt schedule) compose. Three instances:

- ``rollout.length_stages`` (AceReason, Skywork-OR1): ``[[step, max_new_tokens], ...]``, always on;
- ``data.curriculum=kind_order`` (AceReason's math-then-code RL): one stage per problem kind in
  ``data.curriculum_kinds`` order, each drawing only prompts of that kind;
- ``data.curriculum=potential`` (R1-Code-Interpreter, arXiv 2505.21668): prompts ranked by improvement
  potential (highest first); stage k of K draws from the top ``k / K`` of the ranking (a quarter, half,
  three quarters, all for K = 4). The potential is computed before training
  (:func:`archer.rl.potential.compute_potentials`) or read from ``data.potential_file``.

Stage start steps come from ``data.curriculum_steps`` (default: ``trainer.steps`` split evenly).
Within a stage the seeded data order is kept and prompts outside the pool are skipped
(:meth:`archer.rl.batch.PromptSampler.next`), so a resumed run draws the same prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    start: int
    max_new_tokens: int | None = None
    pool: frozenset[int] | None = None
    name: str = ""


@dataclass(frozen=True)
class StageState:
    """What applies at a step: the response budget, the prompt pool (None = all), the stage names."""

    max_new_tokens: int
    pool: frozenset[int] | None
    names: tuple[str, ...]


class Curriculum:
    def __init__(self, stages: Sequence[Stage], default_max_new_tokens: int) -> None:
        self.stages = sorted(stages, key=lambda s: s.start)  # stable: equal starts keep their order
        self.default_max_new_tokens = default_max_new_tokens

    def at(self, step: int) -> StageState:
        max_new, pool, names = self.default_max_new_tokens, None, []
        for s in self.stages:
            if s.start > step:
                break
            if s.max_new_tokens is not None:
                max_new = s.max_new_tokens
            if s.pool is not None:
                pool = s.pool
            if s.name:
                names.append(s.name)
        return StageState(max_new, pool, tuple(names))


def length_stages(stages: Sequence[Sequence[int]]) -> list[Stage]:
    """``rollout.length_stages`` as stages setting the response budget."""
    return [Stage(int(start), max_new_tokens=int(tokens)) for start, tokens in stages]


def stage_starts(steps: Sequence[int], count: int, total_steps: int) -> list[int]:
    """``count`` start steps: the configured ``steps``, or ``total_steps`` split evenly from 0."""
    if steps:
        if len(steps) != count:
            raise ValueError(f"data.curriculum_steps has {len(steps)} starts for {count} stages")
        return [int(s) for s in steps]
    return [total_steps * k // count for k in range(count)]


def potential_stages(potential: Sequence[float], starts: Sequence[int]) -> list[Stage]:
    """R1-CI stages: prompts by decreasing potential (ties by index); stage k of K draws the top k/K."""
    order = sorted(range(len(potential)), key=lambda i: (-float(potential[i]), i))
    count = len(starts)
    out = []
    for k, start in enumerate(starts, 1):
        size = max(1, -(-len(order) * k // count))  # ceil(n * k / K)
        out.append(Stage(start, pool=frozenset(order[:size]), name=f"potential {k}/{count}"))
    return out


def kind_stages(kinds: Sequence[str], order: Sequence[str], starts: Sequence[int]) -> list[Stage]:
    """AceReason's order: stage k draws only the prompts of kind ``order[k]`` (math, then code)."""
    out = []
    for kind, start in zip(order, starts):
        pool = frozenset(i for i, k in enumerate(kinds) if k == kind)
        if not pool:
            raise ValueError(f"data.curriculum_kinds: no training problem of kind {kind!r}")
        out.append(Stage(start, pool=pool, name=f"kind {kind}"))
    return out


def _none(cfg: Any, problems: Sequence[Any], potential: Sequence[float] | None) -> list[Stage]:
    return []


def _kind_order(cfg: Any, problems: Sequence[Any], potential: Sequence[float] | None) -> list[Stage]:
    d = cfg.data
    starts = stage_starts(d.curriculum_steps, len(d.curriculum_kinds), cfg.trainer.steps)
    return kind_stages([p.kind for p in problems], d.curriculum_kinds, starts)


def _potential(cfg: Any, problems: Sequence[Any], potential: Sequence[float] | None) -> list[Stage]:
    if potential is None or len(potential) != len(problems):
        raise ValueError("data.curriculum=potential needs one potential per training problem")
    d = cfg.data
    starts = stage_starts(d.curriculum_steps, d.curriculum_stages, cfg.trainer.steps)
    return potential_stages(potential, starts)


# data.curriculum -> (cfg, training problems, potentials or None) -> prompt stages
CURRICULA: dict[str, Callable[[Any, Sequence[Any], Sequence[float] | None], list[Stage]]] = {
    "none": _none,
    "kind_order": _kind_order,
    "potential": _potential,
}


def build_curriculum(
    cfg: Any, problems: Sequence[Any] = (), potential: Sequence[float] | None = None
) -> Curriculum:
    """The run's curriculum: its length stages plus the prompt stages of ``data.curriculum``."""
    name = getattr(cfg.data, "curriculum", "none")
    stages = length_stages(cfg.rollout.length_stages) + CURRICULA[name](cfg, problems, potential)
    return Curriculum(stages, cfg.rollout.max_new_tokens)
