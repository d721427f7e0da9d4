"""Advantage estimators against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from archer.algo import compute_advantages


def test_grpo_hand_values():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
    adv = compute_advantages("grpo", r)
    # group 1: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    s = 0.5 + 1e-6
    assert adv[0].tolist() == pytest.approx([0.75 / s, -0.25 / s, -0.25 / s, -0.25 / s], rel=1e-6)
    assert adv[1].tolist() == pytest.approx([0.25 / s, 0.25 / s, -0.75 / s, 0.25 / s], rel=1e-6)
    assert adv.dtype == torch.float32 and adv.shape == r.shape


def test_dr_grpo_and_rloo_hand_values():
    r = torch.tensor([[3.0, 1.0, 2.0]])
    assert compute_advantages("dr_grpo", r)[0].tolist() == pytest.approx([1.0, -1.0, 0.0])
    # rloo: 3 - mean(1, 2) = 1.5; 1 - mean(3, 2) = -1.5; 2 - mean(3, 1) = 0
    assert compute_advantages("rloo", r)[0].tolist() == pytest.approx([1.5, -1.5, 0.0])


def test_reinforce_pp_normalises_by_batch_std():
    r = torch.tensor([[1.0, 0.0], [2.0, 2.0], [4.0, 0.0]], dtype=torch.float64)
    centred = [0.5, -0.5, 0.0, 0.0, 2.0, -2.0]
    mean = sum(centred) / 6
    std = math.sqrt(sum((c - mean) ** 2 for c in centred) / 5)
    adv = compute_advantages("reinforce_pp", r)
    assert adv.flatten().tolist() == pytest.approx([c / (std + 1e-6) for c in centred], rel=1e-12)
    assert adv.dtype == torch.float64


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_degenerate_groups_give_zero(name):
    # equal rewards (including values that do not centre exactly in float32) and groups of one
    r = torch.tensor([[0.1, 0.1, 0.1], [0.7, 0.7, 0.7]])
    assert torch.equal(compute_advantages(name, r), torch.zeros(2, 3))
    assert torch.equal(compute_advantages(name, torch.tensor([[1.0], [0.0]])), torch.zeros(2, 1))
    mixed = compute_advantages(name, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert mixed[1].tolist() == [0.0, 0.0] and mixed[0, 0] > 0 > mixed[0, 1]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"dr_grpo.*grpo.*reinforce_pp.*rloo"):
        compute_advantages("ppo", torch.zeros(2, 2))
    with pytest.raises(ValueError, match="num_prompts, group_size"):
        compute_advantages("grpo", torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        compute_advantages("grpo", torch.tensor([[1.0, float("nan")]]))


def test_integer_and_bool_rewards_are_accepted():
    adv = compute_advantages("dr_grpo", torch.tensor([[1, 0], [True, False]]).long())
    assert adv.tolist() == [[0.5, -0.5], [0.5, -0.5]]
