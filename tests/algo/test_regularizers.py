"""KL estimators, entropy bonus and controller, positive-sample NLL, truncated IS: hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from archer.algo import (
    AdaptiveEntropyController,
    compute_policy_loss,
    entropy_bonus,
    kl_penalty,
    kl_reward_penalty,
    positive_nll_loss,
    truncated_is_weights,
)


def test_kl_estimators_hand_values_and_gradients():
    logp = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-2.0, -1.0, -0.5], dtype=torch.float64)
    d = [-1.0, 1.0, 0.0]  # ref - logp
    want = {
        "k1": [1.0, -1.0, 0.0],
        "k2": [0.5, 0.5, 0.0],
        "k3": [math.exp(-1) + 1 - 1, math.exp(1) - 1 - 1, 0.0],
    }
    # d k / d logp = -(d k / d d)
    want_grad = {
        "k1": [1.0, 1.0, 1.0],
        "k2": [-x for x in d],
        "k3": [-(math.exp(x) - 1) for x in d],
    }
    for est in ("k1", "k2", "k3"):
        kl = kl_penalty(logp, ref, est)
        assert kl.tolist() == pytest.approx(want[est], rel=1e-12, abs=1e-15)
        (g,) = torch.autograd.grad(kl.sum(), logp)
        assert g.tolist() == pytest.approx(want_grad[est], rel=1e-12, abs=1e-15)


def test_k3_clamps_log_ratio_and_value():
    logp = torch.tensor([-40.0, 0.0, -3.0])
    ref = torch.tensor([0.0, -40.0, -3.0 + 2.5])
    kl = kl_penalty(logp, ref, "k3")
    # d = 40 -> clamp 20 -> exp(20) - 21 -> clamp 10; d = -40 -> clamp -20 -> e^-20 + 19; d = 2.5
    assert kl.tolist() == pytest.approx([10.0, min(math.exp(-20) + 19, 10.0), math.exp(2.5) - 3.5], rel=1e-6)
    assert torch.isfinite(kl).all()


def test_unknown_kl_estimator_lists_names():
    with pytest.raises(ValueError, match=r"k1.*k2.*k3"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")


def test_kl_loss_term_in_policy_loss_uses_its_coefficient_and_estimator():
    logp = torch.tensor([[-1.0, -2.0, -0.3]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, -0.3]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    base, _ = compute_policy_loss(
        "ppo", log_prob=logp, old_log_prob=logp.detach(), advantages=torch.tensor([0.0]), response_mask=mask
    )
    loss, metrics = compute_policy_loss(
        "ppo",
        log_prob=logp,
        old_log_prob=logp.detach(),
        advantages=torch.tensor([0.0]),
        response_mask=mask,
        ref_log_prob=ref,
        kl_coef=0.1,
        kl_estimator="k2",
    )
    want_kl = (0.5**2 / 2 + 1.0**2 / 2) / 2
    assert loss.item() - base.item() == pytest.approx(0.1 * want_kl)
    assert metrics["kl"] == pytest.approx(want_kl) and metrics["kl_loss"] == pytest.approx(0.1 * want_kl)


def test_kl_reward_penalty_is_negative_coef_times_kl_on_mask():
    old = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0]])
    pen = kl_reward_penalty(old, ref, torch.tensor([[1, 1, 0]]), kl_coef=0.2, estimator="k1")
    assert pen.flatten().tolist() == pytest.approx([-0.2 * 0.5, -0.2 * -1.0, 0.0])


def test_entropy_bonus_value_and_gradient():
    h = torch.tensor([[1.0, 2.0, 9.0], [3.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    bonus = entropy_bonus(h, mask, coef=0.01)
    assert bonus.item() == pytest.approx(-0.01 * (1 + 2 + 3) / 3)
    (g,) = torch.autograd.grad(bonus, h)
    assert g.flatten().tolist() == pytest.approx([-0.01 / 3, -0.01 / 3, 0, -0.01 / 3, 0, 0])


def test_entropy_coef_in_policy_loss_matches_entropy_bonus():
    h = torch.tensor([[1.0, 2.0, 9.0]], requires_grad=True)
    lp = torch.tensor([[-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = compute_policy_loss(
        "ppo",
        log_prob=lp,
        old_log_prob=lp,
        advantages=torch.tensor([0.0]),
        response_mask=mask,
        entropy=h,
        entropy_coef=0.5,
    )
    assert loss.item() == pytest.approx(-0.5 * 1.5) and metrics["entropy_loss"] == pytest.approx(-0.75)
    (g,) = torch.autograd.grad(loss, h)
    assert g.flatten().tolist() == pytest.approx([-0.25, -0.25, 0.0])


def test_adaptive_entropy_controller_rule():
    ctl = AdaptiveEntropyController(target=0.2, delta=1e-4, c_max=2.5e-4)
    assert ctl.alpha == 0.0
    assert ctl.update(0.1) == pytest.approx(1e-4)  # below target: c += delta, active
    assert ctl.update(0.15) == pytest.approx(2e-4)
    assert ctl.update(0.1) == pytest.approx(2.5e-4)  # clipped at c_max
    assert ctl.update(0.3) == 0.0  # above target: inactive, c -= delta
    assert ctl.coef == pytest.approx(1.5e-4)
    assert ctl.update(0.2) == 0.0 and ctl.coef == pytest.approx(0.5e-4)  # e == target is not below
    ctl.update(0.5)
    assert ctl.coef == 0.0  # clipped at 0
    ctl.update(0.5)
    assert ctl.coef == 0.0


def test_adaptive_entropy_controller_measure_and_checkpoint():
    old = torch.tensor([[-0.1, -0.3, -9.0]])
    mask = torch.tensor([[1, 1, 0]])
    e = AdaptiveEntropyController.measure(old, mask)
    assert e == pytest.approx(0.2)
    assert AdaptiveEntropyController.measure(old, torch.zeros(1, 3)) == 0.0
    ctl = AdaptiveEntropyController()
    ctl.update(0.1)
    ctl.update(0.1)
    restored = AdaptiveEntropyController()
    restored.load_state_dict(ctl.state_dict())
    assert restored == ctl and restored.alpha == pytest.approx(2e-4)
    with pytest.raises(KeyError, match="bogus"):
        restored.load_state_dict({"bogus": 1})
    with pytest.raises(ValueError, match="c_max"):
        AdaptiveEntropyController(c_max=-1.0)


def test_positive_nll_over_correct_responses():
    logp = torch.tensor([[-1.0, -2.0, -5.0], [-0.5, -0.5, -0.5], [-3.0, -1.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    rewards = torch.tensor([1.0, 0.0, 1.0])
    loss = positive_nll_loss(logp, mask, rewards, coef=0.1)
    assert loss.item() == pytest.approx(0.1 * (1 + 2 + 3 + 1 + 1) / 5)
    (g,) = torch.autograd.grad(loss, logp)
    assert g[1].tolist() == [0.0, 0.0, 0.0] and g[0, 2].item() == 0.0
    assert g[0, 0].item() == pytest.approx(-0.1 / 5)
    # explicit max reward and global token count (gradient accumulation)
    loss = positive_nll_loss(logp, mask, rewards, coef=0.1, max_reward=2.0)
    assert loss.item() == 0.0
    loss = positive_nll_loss(logp, mask, rewards, coef=0.1, total_tokens=10)
    assert loss.item() == pytest.approx(0.1 * 8 / 10)


def test_truncated_is_weights_values():
    old = torch.tensor([-1.0, -1.0, -1.0, -1.0])
    rollout = torch.tensor([-1.5, -0.5, -1.0, -100.0])
    w = truncated_is_weights(old, rollout, cap=2.0)
    assert w.tolist() == pytest.approx([math.exp(0.5), math.exp(-0.5), 1.0, 2.0])
    with pytest.raises(ValueError, match="tis_cap"):
        truncated_is_weights(old, rollout, cap=0.0)


def test_split_kl_per_response_normalisation_hand_values_and_accumulation():
    """kl_norm="response" (released Archer): mean over responses of each response's low-entropy token
    mean; "subset": one token mean over all low-entropy tokens. Hand values, and micro-batches with the
    mini-batch normaliser sum to the whole batch's loss."""
    import torch

    from archer.algo import compute_policy_loss, loss_normalizer

    lp = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[0.0, 0.1, 0.2, 0.0], [0.3, 0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    ent = torch.tensor([[0.1, 0.2, 0.3, 0.0], [0.5, 0.6, 0.0, 0.0]], dtype=torch.float64)  # no ties
    k3 = lambda d: math.exp(d) - d - 1  # noqa: E731
    common = dict(
        log_prob=lp,
        old_log_prob=lp.detach(),
        advantages=torch.zeros(2, dtype=torch.float64),
        response_mask=mask,
        entropy=ent,
        ref_log_prob=ref,
        kl_coef=1.0,
        entropy_quantile=0.5,
    )
    # quantile 0.5 per response: row 0 high = {0.3}, low = {0.1, 0.2}; row 1 high = {0.6}, low = {0.5}
    _, m_sub = compute_policy_loss("dtc", **common)
    loss_resp, _ = compute_policy_loss("dtc", kl_norm="response", **common)
    want_sub = (k3(0.0) + k3(0.1) + k3(0.3)) / 3
    want_resp = ((k3(0.0) + k3(0.1)) / 2 + k3(0.3) / 1) / 2
    assert m_sub["kl_loss"] == pytest.approx(want_sub, rel=1e-9)
    assert float(loss_resp.detach()) == pytest.approx(want_resp, rel=1e-9)
    norm = loss_normalizer([mask[:1], mask[1:]], entropy_quantile=0.5)
    parts = [
        compute_policy_loss(
            "dtc",
            kl_norm="response",
            loss_normalizer=norm,
            **dict(
                common,
                log_prob=lp[i : i + 1],
                old_log_prob=lp[i : i + 1].detach(),
                advantages=torch.zeros(1, dtype=torch.float64),
                response_mask=mask[i : i + 1],
                entropy=ent[i : i + 1],
                ref_log_prob=ref[i : i + 1],
            ),
        )[0]
        for i in range(2)
    ]
    assert float(sum(parts).detach()) == pytest.approx(want_resp, rel=1e-9)
    with pytest.raises(ValueError, match="kl_norm"):
        compute_policy_loss("dtc", kl_norm="batch", **common)
