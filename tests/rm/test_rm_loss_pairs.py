"""Bradley-Terry loss and gradient against hand-computed values; AceCoder's pair rule on made-up pass rates."""

from __future__ import annotations

import math

import pytest
import torch

from archer.rm.loss import bradley_terry_loss, pairwise_accuracy
from archer.rm.pairs import PairRule, build_pairs, pair_rows


def test_bradley_terry_loss_and_gradient_match_hand_computed_values():
    r_c = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64, requires_grad=True)
    r_r = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    loss = bradley_terry_loss(r_c, r_r)
    # d = [1, 0, -2]; -log sigmoid(d) = log(1 + exp(-d))
    expected = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(2))) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    # dL/dr_c_i = -(1 - sigmoid(d_i)) / 3, dL/dr_r_i = +(1 - sigmoid(d_i)) / 3
    sig = [1 / (1 + math.exp(-d)) for d in (1.0, 0.0, -2.0)]
    want = [-(1 - s) / 3 for s in sig]
    assert r_c.grad.tolist() == pytest.approx(want, abs=1e-12)
    assert r_r.grad.tolist() == pytest.approx([-w for w in want], abs=1e-12)


def test_bradley_terry_loss_is_finite_for_huge_margins_and_rejects_bad_shapes():
    big = bradley_terry_loss(torch.tensor([-1000.0]), torch.tensor([1000.0]))
    assert torch.isfinite(big) and big.item() == pytest.approx(2000.0)
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(0), torch.zeros(0))


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0, 1.0]), torch.tensor([0.0, 0.0, 3.0, -1.0])) == 0.5


def test_acecoder_pair_rule_on_hand_made_pass_rates():
    responses = ["a", "b", "c", "d", "e", "f"]
    rates = [1.0, 0.85, 0.5, 0.45, 0.0, 0.8]
    pairs = build_pairs(responses, rates)
    # chosen must be > 0.8 (a=1.0, b=0.85; f=0.8 is not > 0.8), rejected > 0 (e excluded), gap > 0.4
    # a-c 0.5, a-d 0.55, b-d 0.40 is not > 0.4 (float: 0.85-0.45=0.39999...), b-c 0.35 no, a-f 0.2 no
    assert pairs == [(0, 2), (0, 3)]
    rows = pair_rows("p1", "prompt", responses, rates, pairs)
    assert rows[0] == {
        "id": "p1",
        "prompt": "prompt",
        "chosen": "a",
        "rejected": "c",
        "chosen_pass_rate": 1.0,
        "rejected_pass_rate": 0.5,
    }


def test_pair_rule_flags_change_the_pairs_and_identical_texts_never_pair():
    rates = [1.0, 0.0, 0.9]
    assert build_pairs(["a", "b", "c"], rates) == []  # 0.0 is not > 0
    loose = PairRule(min_gap=0.05, min_chosen=0.5, min_rejected=-1.0)
    assert build_pairs(["a", "b", "c"], rates, loose) == [(0, 1), (0, 2), (2, 1)]
    assert build_pairs(["a", "a", "c"], rates, loose) == [(0, 2), (2, 1)]
    assert len(build_pairs(["a", "b", "c"], rates, loose, max_pairs=2, seed=1)) == 2
    with pytest.raises(ValueError):
        PairRule(min_gap=2.0)
    with pytest.raises(ValueError):
        build_pairs(["a"], [1.0, 0.5])
