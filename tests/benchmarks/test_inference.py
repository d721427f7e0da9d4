"""The three-outcome rules of benchmarks/_toy_common.decide, on synthetic data with known effects: a
real effect is found, a true null with a tight spread is "no effect larger than the margin", a true
null with a wide spread (too few seeds) is "inconclusive", never "refuted"."""

from __future__ import annotations

import math
import random
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _toy_common as common  # noqa: E402


def draws(mean: float, sd: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


def test_known_effects_get_their_outcomes_most_of_the_time():
    """Over 200 synthetic studies each: the rules' error rates are those the design promises."""

    def rate(mean, sd, n, outcome):
        return sum(common.decide(draws(mean, sd, n, s), 0.05)["verdict"] == outcome for s in range(200)) / 200

    assert rate(0.5, 0.1, 5, "effect") == 1.0  # a large effect, 5 seeds
    assert rate(0.0, 0.1, 5, "effect") < 0.10  # a true null: about 5% false effects
    assert rate(0.0, 0.01, 10, "no effect larger than the margin") > 0.9  # tight null: shown equivalent
    assert rate(0.0, 0.2, 3, "inconclusive") > 0.8  # wide null, 3 seeds: the honest word
    assert rate(0.0, 0.2, 3, "no effect larger than the margin") == 0.0


def test_decide_by_hand():
    d = common.decide([0.9, 1.0, 1.1], margin=0.5)  # mean 1, sd 0.1, se 0.1/sqrt(3), t(2) = 4.303
    se = 0.1 / math.sqrt(3)
    assert d["verdict"] == "effect" and d["low"] == pytest.approx(1 - 4.303 * se)
    assert d["mde"] == pytest.approx((4.303 + 1.061) * se)  # t(2) at 0.975 plus t(2) at 0.80
    d = common.decide([-0.01, 0.01, 0.0, 0.005], margin=0.1)
    assert d["verdict"] == "no effect larger than the margin" and not d["underpowered"]
    d = common.decide([-0.3, 0.4, 0.1], margin=0.05)
    assert d["verdict"] == "inconclusive" and d["underpowered"]
    d = common.decide([0.2], margin=0.05)
    assert d["verdict"] == "inconclusive" and math.isnan(d["mde"])


def test_describe_says_the_margin_and_the_detectable_effect():
    design = common.StudyDesign("q", "x - y", "nats", 0.05, (0, 1, 2))
    text = common.describe(common.decide([-0.3, 0.4, 0.1], 0.05), design)
    assert text.startswith("INCONCLUSIVE (underpowered") and "margin +/-0.05 nats" in text
    assert "smallest detectable effect" in text and "over 3 seeds" in text


def test_t95_never_narrower_than_the_true_quantile():
    assert common.t95(4) == 2.776 and common.t95(30) == 2.042
    assert common.t95(35) == 2.042  # between tabled dfs: the lower df's (wider) quantile, true 2.030
    assert common.t95(1000) == 1.980 and math.isnan(common.t95(0))


def test_clustered_interval_with_singleton_clusters_is_the_t_interval():
    vals = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    got = common.clustered_mean_ci(vals, list(range(6)))
    m, lo, hi = common.mean_ci(vals)
    assert got["mean"] == pytest.approx(m) and (got["low"], got["high"]) == pytest.approx((lo, hi))
    assert got["clusters"] == 6 and got["n"] == 6


def test_clustered_interval_by_hand():
    # clusters a: [1, 1, 1], b: [0], c: [1, 0]: mean 4/6; residual sums a 1, b -2/3, c -1/3
    vals, cl = [1, 1, 1, 0, 1, 0], ["a", "a", "a", "b", "c", "c"]
    got = common.clustered_mean_ci(vals, cl)
    var = 3 / 2 * (1 + 4 / 9 + 1 / 9) / 36
    assert got["mean"] == pytest.approx(4 / 6)
    assert got["high"] - got["mean"] == pytest.approx(4.303 * math.sqrt(var))  # t on C-1 = 2 df
    # the same six values as independent items give a narrower interval: clustering is not free
    m, lo, hi = common.mean_ci([float(v) for v in vals])
    assert hi - m < got["high"] - got["mean"]
    one = common.clustered_mean_ci([1.0, 0.0], ["a", "a"])
    assert one["clusters"] == 1 and math.isnan(one["low"])
    with pytest.raises(ValueError):
        common.clustered_mean_ci([1.0], ["a", "b"])


def test_clustered_interval_covers_the_truth_when_items_are_correlated():
    """Problems with their own difficulty, 6 pairs each: the clustered interval keeps ~95% coverage of
    the true accuracy 0.6, the naive one (pairs as independent) falls well short."""
    def study(seed):
        rng = random.Random(seed)
        vals, cl = [], []
        for c in range(25):
            p = min(max(rng.gauss(0.6, 0.3), 0.0), 1.0)  # E[p] = 0.6 up to the clipping, checked below
            for _ in range(6):
                vals.append(float(rng.random() < p))
                cl.append(c)
        return vals, cl

    rng = random.Random(99)
    truth = statistics.mean(min(max(rng.gauss(0.6, 0.3), 0), 1) for _ in range(200_000))
    covered = naive = 0
    for s in range(300):
        vals, cl = study(s)
        got = common.clustered_mean_ci(vals, cl)
        covered += got["low"] <= truth <= got["high"]
        _, lo, hi = common.mean_ci(vals)
        naive += lo <= truth <= hi
    assert covered / 300 >= 0.9 and naive / 300 < covered / 300 - 0.05
