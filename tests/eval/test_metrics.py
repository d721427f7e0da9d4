"""pass@k and avg@k against the combinatorial definition, computed independently."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from archer.eval import aggregate, avg_at_k, pass_at_k, pass_at_k_exact, per_problem_metrics
from archer.eval.metrics import paired_standard_error, standard_error


def _pass_by_enumeration(n: int, c: int, k: int) -> Fraction:
    # the definition: probability that a uniformly random k-subset of the n samples holds a correct one
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(samples[i] for i in s) for s in subsets)
    return Fraction(hits, len(subsets))


def test_pass_at_k_matches_enumeration_on_small_grid():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = _pass_by_enumeration(n, c, k)
                assert pass_at_k_exact(n, c, k) == expected, (n, c, k)
                assert pass_at_k(n, c, k) == float(expected)


def test_pass_at_k_matches_comb_formula_on_large_grid():
    for n in (16, 64, 100, 1000, 5000):
        for c in sorted({0, 1, 2, n // 3, n // 2, n - 5, n - 1, n}):
            for k in sorted({1, 2, 8, 16, n // 2, n}):
                if k > n or c < 0:
                    continue
                ref = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k_exact(n, c, k) == ref
                assert pass_at_k(n, c, k) == float(ref)


def test_pass_at_k_tiny_values_are_not_cancelled():
    # 1 - C(n-1, 1)/C(n, 1) = 1/n exactly; the float naive formula 1 - (1 - 1/n) loses digits
    n = 10**12
    assert pass_at_k(n, 1, 1) == 1 / n


def test_pass_at_1_equals_fraction_correct_and_edges():
    assert pass_at_k(8, 3, 1) == 3 / 8
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k


@pytest.mark.parametrize("n,c,k", [(4, 1, 5), (4, 5, 1), (0, 0, 1), (4, 1, 0), (4, -1, 1)])
def test_pass_at_k_rejects_invalid(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_k_rejects_floats():
    with pytest.raises(TypeError):
        pass_at_k(4.0, 1, 1)


def test_avg_at_k_is_mean_correctness():
    assert avg_at_k(8, 3, 8) == 3 / 8
    assert avg_at_k(8, 3) == 3 / 8
    assert avg_at_k(16, 4, 8) == 0.25
    with pytest.raises(ValueError):
        avg_at_k(4, 1, 8)


def test_aggregate_means_over_problems_and_skips_large_k():
    lists = [[True, False, False, False], [False] * 4, [True] * 4]
    out = aggregate(lists, ks=[1, 2, 4, 8])
    assert out["ks"] == [1, 2, 4]
    assert out["skipped_k"] == [8]
    assert out["avg@1"] == pytest.approx((0.25 + 0 + 1) / 3)
    assert out["avg@4"] == out["avg@1"]
    # problem 0: pass@2 = 1 - C(3,2)/C(4,2) = 1/2
    assert out["pass@2"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert out["pass@4"] == pytest.approx(2 / 3)
    assert out["num_problems"] == 3 and out["num_samples"] == 12
    # per-problem accuracies 0.25, 0, 1: mean 5/12, deviations 1/6, 5/12, 7/12 -> var (ddof 1) = 13/48
    assert out["avg_se"] == pytest.approx(math.sqrt(13 / 48 / 3))


def test_standard_errors_by_hand():
    assert standard_error([1.0]) == 0.0 and standard_error([]) == 0.0
    assert standard_error([0.0, 1.0]) == pytest.approx(0.5)  # sd sqrt(1/2), over sqrt(2)
    # differences 0.5, 0.5, 0.0: mean 1/3, var (1/36 + 1/36 + 4/36) / 2 = 1/12, se sqrt(1/36) = 1/6
    assert paired_standard_error([0.0, 0.25, 1.0], [0.5, 0.75, 1.0]) == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_standard_error([0.0], [0.0, 1.0])


def test_per_problem_metrics_and_empty_rejected():
    assert per_problem_metrics([True, False], [1, 2, 3]) == {
        "avg@1": 0.5,
        "pass@1": 0.5,
        "avg@2": 0.5,
        "pass@2": 1.0,
    }
    with pytest.raises(ValueError):
        aggregate([[True], []], ks=[1])
