"""Preference pairs from sampled programs and their test pass rates (AceCoder, arXiv:2502.01718, Sec. 2).

For one problem with sampled programs ``y_1..y_n`` and pass rates ``s_1..s_n`` (fraction of the
problem's tests passed), ``(y_i, y_j)`` is a (chosen, rejected) pair when::

    s_i - s_j > min_gap      (AceCoder: 0.4)
    s_i > min_chosen         (AceCoder: 0.8; the chosen program is close to correct)
    s_j > min_rejected       (AceCoder: 0; a 0 pass rate is often a syntax or import slip, not a
                              meaningful negative, so such programs are left out)

All three comparisons are strict, as in the paper. ``max_pairs`` caps the pairs per problem (a seeded
random subset; None keeps all). A response with no code block is given pass rate 0 (so, with the
defaults, it never appears in a pair). Identical (chosen, rejected) texts are skipped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archer.rewards.code import extract_code, run_tests_batch


@dataclass(frozen=True)
class PairRule:
    """AceCoder's thresholds; every comparison is strict."""

    min_gap: float = 0.4
    min_chosen: float = 0.8
    min_rejected: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_gap", "min_chosen", "min_rejected"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [-1, 1] (pass rates are fractions), got {value}")

    def accepts(self, s_chosen: float, s_rejected: float) -> bool:
        return (
            s_chosen - s_rejected > self.min_gap
            and s_chosen > self.min_chosen
            and s_rejected > self.min_rejected
        )


def build_pairs(
    responses: Sequence[str],
    pass_rates: Sequence[float],
    rule: PairRule | None = None,
    *,
    max_pairs: int | None = None,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """Index pairs ``(chosen, rejected)`` of one problem's samples that satisfy ``rule``."""
    if len(responses) != len(pass_rates):
        raise ValueError(f"{len(responses)} responses but {len(pass_rates)} pass rates")
    rule = rule or PairRule()
    out = [
        (i, j)
        for i, si in enumerate(pass_rates)
        for j, sj in enumerate(pass_rates)
        if i != j and rule.accepts(float(si), float(sj)) and responses[i] != responses[j]
    ]
    if max_pairs is not None and len(out) > max_pairs:
        out = sorted(random.Random(seed).sample(out, max_pairs))
    return out


def pair_rows(
    problem_id: str,
    prompt: Any,
    responses: Sequence[str],
    pass_rates: Sequence[float],
    pairs: list[tuple[int, int]],
) -> list[dict[str, Any]]:
    """JSONL rows of ``archer rm train --data``: one per pair."""
    return [
        {
            "id": problem_id,
            "prompt": prompt,
            "chosen": responses[i],
            "rejected": responses[j],
            "chosen_pass_rate": float(pass_rates[i]),
            "rejected_pass_rate": float(pass_rates[j]),
        }
        for i, j in pairs
    ]


def pass_rates(responses: Sequence[str], tests: Sequence[dict[str, Any]], **run_opts: Any) -> list[float]:
    """Fraction of tests each response's program passes, every test run (no stop at the first
    failure), in the sandbox; a response without a code block or a problem with bad tests gives 0."""

    programs = [extract_code(r) for r in responses]
    todo = [k for k, p in enumerate(programs) if p is not None]
    reports = (
        run_tests_batch([(programs[k], tests[k]) for k in todo], stop_on_failure=False, **run_opts)
        if todo
        else []
    )
    rates = [0.0] * len(responses)
    for k, rep in zip(todo, reports):
        rates[k] = rep.fraction
    return rates
