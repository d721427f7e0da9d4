"""The three-outcome rules of benchmarks/_toy_common.decide, on synthetic data with known effects: a
real effect is found, a true null with a tight spread is "no effect larger than the margin", a true
null with a wide spread (too few seeds) is "inconclusive", never "refuted"."""

from __future__ import annotations

import math
import random
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
