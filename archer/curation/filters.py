"""Dataset filters: deduplication, decontamination against evaluation sets, and difficulty/quality.

- :func:`dedup`: always drops exact duplicates (same normalised text); drops a near duplicate when
  the fraction of its distinct word ``n``-grams (default 9-grams, the overlap unit of the GPT-3 paper's
  contamination study, Brown et al. 2020) that already occur in earlier problems (counted over all
  earlier problems together, not per pair) is at least ``threshold`` (default
  :data:`DEFAULT_DEDUP_THRESHOLD` = 0.5) and their number at least ``min_shared``. The default keeps
  MATH-500's 500 distinct problems (their largest shared fraction is 0.235: two inequality problems
  sharing "let x y and z be positive real numbers such that"), while a restatement that keeps most of
  a problem's wording is dropped; ``threshold=0`` is the older rule (any ``min_shared`` shared n-gram
  drops, which removed 20 of MATH-500's problems). The first occurrence is kept, so input order
  matters.
- :func:`decontaminate`: drops training problems with ``min_shared`` distinct n-grams found anywhere in
  the evaluation problems (or an identical normalised text). ``max_doc_freq`` optionally ignores
  evaluation n-grams shared by many evaluation problems (prompt boilerplate); the LiveCodeBench loader
  already keeps the bare statement in ``meta["question"]``, which :func:`problem_text` prefers, so its
  instruction block is not indexed.
- :func:`filter_min_tests`, :func:`filter_reference_passes` (the reference solution in
  ``meta["solution"]`` must pass its own tests, via ``archer.rewards.code.run_tests_batch``) and
  :func:`filter_pass_rate` (keep problems whose measured pass rate under a given model lies in a band,
  the difficulty filter of DAPO / Archer data pipelines).

Every filter returns ``(kept, report)``; the report says which problem was dropped and why.
Text normalisation and hashing are documented in ``archer.data.ngram``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from archer.data.ngram import DEFAULT_N, NgramIndex, near_duplicate_counts, ngram_totals
from archer.data.schema import Problem

DEFAULT_DEDUP_THRESHOLD = 0.5


def problem_text(problem: Problem) -> str:
    """The text compared for overlap: the bare statement when the loader kept one, else the prompt."""
    if problem.meta.get("question"):
        return str(problem.meta["question"])
    if isinstance(problem.prompt, list):
        return "\n".join(str(m.get("content", "")) for m in problem.prompt if m.get("role") != "system")
    return problem.prompt


def dedup(
    problems: Sequence[Problem],
    n: int = DEFAULT_N,
    min_shared: int = 1,
    near: bool = True,
    threshold: float = DEFAULT_DEDUP_THRESHOLD,
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """Keep the first of each group of exact or near-duplicate problems (see the module docstring);
    a near duplicate needs ``shared / distinct n-grams >= threshold`` and ``shared >= min_shared``."""
    if min_shared < 1:
        raise ValueError(f"min_shared must be >= 1, got {min_shared}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    texts = [problem_text(p) for p in problems]
    counts, example, exact = near_duplicate_counts(texts, n)
    totals = ngram_totals(texts, n) if near else counts
    kept, removed = [], []
    for i, p in enumerate(problems):
        shared = int(counts[i])
        fraction = shared / int(totals[i]) if near and totals[i] else 0.0
        if exact[i] >= 0:
            removed.append({"id": p.id, "reason": "exact", "duplicate_of": problems[int(exact[i])].id})
        elif near and shared >= min_shared and fraction >= threshold:
            removed.append(
                {
                    "id": p.id,
                    "reason": f"near ({shared}/{int(totals[i])} = {fraction:.2f} shared {n}-grams)",
                    "duplicate_of": problems[int(example[i])].id,
                    "shared_fraction": round(fraction, 4),
                }
            )
        else:
            kept.append(p)
    return kept, removed


def decontaminate(
    problems: Sequence[Problem],
    eval_problems: Sequence[Problem],
    n: int = DEFAULT_N,
    min_shared: int = 1,
    max_doc_freq: int | None = None,
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """Drop problems that share ``min_shared`` word n-grams (or their whole text) with an eval problem."""
    if min_shared < 1:
        raise ValueError(f"min_shared must be >= 1, got {min_shared}")
    index = NgramIndex.build([problem_text(p) for p in eval_problems], n, max_doc_freq=max_doc_freq)
    counts, example, exact = index.match([problem_text(p) for p in problems])
    kept, removed = [], []
    for i, p in enumerate(problems):
        if exact[i] >= 0:
            removed.append({"id": p.id, "reason": "exact", "matches": eval_problems[int(exact[i])].id})
        elif counts[i] >= min_shared:
            removed.append(
                {
                    "id": p.id,
                    "reason": f"{int(counts[i])} shared {n}-grams",
                    "matches": eval_problems[int(example[i])].id,
                }
            )
        else:
            kept.append(p)
    return kept, removed


def num_tests(problem: Problem) -> int:
    """Test cases of a code problem: stdin/call cases, or assert statements; 0 for math."""
    tests = problem.tests or {}
    if "inputs" in tests:
        return len(tests["inputs"])
    if isinstance(tests.get("assert"), list):
        return len(tests["assert"])
    if "assert" in tests:  # one test-code string: count its assert statements
        return max(1, sum(line.lstrip().startswith("assert") for line in str(tests["assert"]).splitlines()))
    return 0


def filter_min_tests(
    problems: Sequence[Problem], min_tests: int
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """Drop code problems with fewer than ``min_tests`` test cases (math problems pass through)."""
    kept, removed = [], []
    for p in problems:
        if p.kind == "code" and num_tests(p) < min_tests:
            removed.append({"id": p.id, "reason": f"{num_tests(p)} tests < {min_tests}"})
        else:
            kept.append(p)
    return kept, removed


def filter_reference_passes(
    problems: Sequence[Problem],
    require_solution: bool = False,
    run_tests_batch: Callable[..., list[Any]] | None = None,
    **run_opts: Any,
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """Drop code problems whose reference ``meta["solution"]`` fails its own tests.

    Problems without a reference are kept unless ``require_solution``. ``run_tests_batch`` defaults
    to ``archer.rewards.code.run_tests_batch`` (items ``(program, tests)`` -> ``TestReport`` list).
    """
    if run_tests_batch is None:
        from archer.rewards.code import run_tests_batch
    checked = [i for i, p in enumerate(problems) if p.kind == "code" and p.meta.get("solution")]
    reports = run_tests_batch(
        [(problems[i].meta["solution"], problems[i].tests) for i in checked], **run_opts
    )
    verdict = {i: r for i, r in zip(checked, reports)}
    kept, removed = [], []
    for i, p in enumerate(problems):
        if i in verdict and not verdict[i].all_passed:
            r = verdict[i]
            removed.append(
                {
                    "id": p.id,
                    "reason": f"reference passes {r.passed}/{r.total} tests",
                    "verdicts": list(r.verdicts),
                }
            )
        elif p.kind == "code" and i not in verdict and require_solution:
            removed.append({"id": p.id, "reason": "no reference solution"})
        else:
            kept.append(p)
    return kept, removed


def filter_pass_rate(
    problems: Sequence[Problem],
    rates: Sequence[float],
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """Keep problems with ``low <= rate <= high`` (rates measured by rolling out a model; see
    :func:`archer.eval.runner.measure_pass_rates`). ``low > 0`` drops unsolved, ``high < 1`` solved ones."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    if len(rates) != len(problems):
        raise ValueError(f"{len(rates)} pass rates for {len(problems)} problems")
    kept, removed = [], []
    for p, r in zip(problems, rates):
        if low <= r <= high:
            kept.append(p)
        else:
            removed.append({"id": p.id, "reason": f"pass rate {r:.3f} outside [{low}, {high}]"})
    return kept, removed
