"""benchmarks/algorithms_toy.py's verdict: the three-outcome rules on its declared primary measure, with
accuracy as a secondary; never a hand-made word like "did not hold"."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import algorithms_toy as toy  # noqa: E402


def _r(name, ent, acc):
    return {"name": name, "tail_ent": ent, "after_all": {"avg@8": acc}, "after": {"avg@8": sum(acc) / len(acc)}}


def test_the_committed_two_seed_numbers_are_inconclusive():
    # per-seed numbers of the same shape as the committed run: a 0.005-nat gap, seeds that disagree on accuracy
    text = toy._verdict([_r("ASPO", [0.055, 0.055], [0.541, 0.428]), _r("GRPO", [0.047, 0.053], [0.556, 0.568])], "avg@8")
    assert "INCONCLUSIVE" in text and "over 2 seeds" in text and "Secondary (not the verdict)" in text
    assert not any(w in text for w in ("DID NOT HOLD", "HELD", "REFUTED"))


def test_a_tight_large_gap_is_an_effect_and_a_tight_null_is_within_the_margin():
    effect = toy._verdict([_r("ASPO", [0.10, 0.1002], [0.5, 0.5]), _r("GRPO", [0.05, 0.0501], [0.5, 0.5])], "avg@8")
    assert "EFFECT." in effect
    null = toy._verdict([_r("ASPO", [0.0500, 0.0601], [0.5, 0.5]), _r("GRPO", [0.0501, 0.0601], [0.5, 0.5])], "avg@8")
    assert "NO EFFECT LARGER THAN THE MARGIN" in null
    assert "not judged" in toy._verdict(
        [_r("ASPO", [float("nan")], [0.5]), _r("GRPO", [float("nan")], [0.5])], "avg@8"
    )
