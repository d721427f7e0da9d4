"""Sampling metrics for evaluation: unbiased pass@k and avg@k (ALGORITHMS.md section 7).

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
Code", arXiv 2107.03374): with ``n`` samples of which ``c`` are correct,
``pass@k = 1 - C(n-c, k) / C(n, k)``. It is computed exactly with integer binomials and a
:class:`fractions.Fraction` (no floating-point cancellation for any ``n``, ``c``, ``k``), then
rounded once to a float.

avg@k is the mean correctness of k samples; with n >= k samples drawn, its unbiased estimate is
``c / n`` (it equals pass@1). Both are averaged over problems by :func:`aggregate`.

Error bars: :func:`aggregate` reports ``avg_se``, the standard error of the mean over problems of the
per-problem accuracy ``c_i / n_i`` (sample standard deviation, ddof 1, over ``sqrt(P)``): it covers both
the sampling noise of each problem's ``n`` samples and the choice of problems. A before/after
comparison on the same problems uses :func:`paired_standard_error` of the per-problem differences,
which removes the shared problem difficulty and is the error to quote for an improvement.

Pure Python: importing this module never imports torch or numpy.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any


def _check(n: Any, c: Any, k: Any) -> tuple[int, int, int]:
    try:
        n, c, k = operator.index(n), operator.index(c), operator.index(k)
    except TypeError:
        raise TypeError(f"n, c, k must be integers, got n={n!r}, c={c!r}, k={k!r}") from None
    if n < 1:
        raise ValueError(f"n (samples) must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c (correct samples) must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k} (pass@k needs at least k samples)")
    return n, c, k


def pass_at_k_exact(n: int, c: int, k: int) -> Fraction:
    """Exact unbiased pass@k as a Fraction: ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021)."""
    n, c, k = _check(n, c, k)
    if n - c < k:  # every k-subset contains a correct sample
        return Fraction(1)
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct; ``k > n`` raises."""
    return float(pass_at_k_exact(n, c, k))


def avg_at_k(n: int, c: int, k: int | None = None) -> float:
    """Expected mean correctness of ``k`` samples (drawn without replacement from the ``n``): ``c / n``.

    ``k`` is only validated (``1 <= k <= n``); the unbiased estimate does not depend on it.
    """
    n, c, _ = _check(n, c, n if k is None else k)
    return c / n


def per_problem_metrics(correct: Sequence[bool], ks: Iterable[int]) -> dict[str, float]:
    """``{"avg@k": .., "pass@k": ..}`` for one problem's per-sample verdicts, every ``k <= len(correct)``."""
    n, c = len(correct), sum(bool(x) for x in correct)
    out: dict[str, float] = {}
    for k in sorted(set(ks)):
        if 1 <= k <= n:
            out[f"avg@{k}"] = avg_at_k(n, c, k)
            out[f"pass@{k}"] = pass_at_k(n, c, k)
    return out


def aggregate(correct_lists: Sequence[Sequence[bool]], ks: Iterable[int]) -> dict[str, Any]:
    """Mean over problems of avg@k and pass@k for every requested ``k`` that every problem supports.

    ``correct_lists[i]`` holds the verdicts of problem i's samples (problems may have different n).
    A requested ``k`` larger than the smallest n is left out and listed under ``"skipped_k"``.
    Returns e.g. ``{"avg@1": .., "pass@1": .., "avg@8": .., "pass@8": .., "num_problems": P,
    "num_samples": S, "ks": [1, 8]}``; with no problems the metric values are 0.0.
    """
    ks = sorted({operator.index(k) for k in ks})
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    if any(len(c) == 0 for c in correct_lists):
        raise ValueError("a problem has no samples; every problem needs n >= 1")
    min_n = min((len(c) for c in correct_lists), default=max(ks, default=1))
    kept = [k for k in ks if k <= min_n]
    out: dict[str, Any] = {}
    num = len(correct_lists)
    for k in kept:
        # exact sums of per-problem Fractions would be overkill; float means of exact values suffice
        avg = [avg_at_k(len(c), sum(map(bool, c)), k) for c in correct_lists]
        pas = [pass_at_k(len(c), sum(map(bool, c)), k) for c in correct_lists]
        out[f"avg@{k}"] = math.fsum(avg) / num if num else 0.0
        out[f"pass@{k}"] = math.fsum(pas) / num if num else 0.0
    out["avg_se"] = standard_error([sum(map(bool, c)) / len(c) for c in correct_lists])
    out["num_problems"] = num
    out["num_samples"] = sum(len(c) for c in correct_lists)
    out["ks"] = kept
    if len(kept) < len(ks):
        out["skipped_k"] = [k for k in ks if k not in kept]
    return out


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of ``values``: sample standard deviation (ddof 1) over ``sqrt(n)``;
    0.0 for fewer than two values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def paired_standard_error(before: Sequence[float], after: Sequence[float]) -> float:
    """Standard error of ``mean(after) - mean(before)`` for per-problem values on the same problems."""
    if len(before) != len(after):
        raise ValueError(f"paired values need equal lengths, got {len(before)} and {len(after)}")
    return standard_error([a - b for a, b in zip(after, before)])
