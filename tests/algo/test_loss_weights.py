"""Per-token gradient weights of every policy loss against the weight tables of ALGORITHMS.md.

For a token t with aggregation share ``s_t``, ``d loss / d logp_t = -w_t * s_t``; with token-mean over n
tokens ``s_t = 1/n``, so ``w_t = -n * grad_t``. The tables below are written from the document, not
from the implementation, and every region of every table is required to be hit.
"""

from __future__ import annotations

import math

import pytest
import torch

from archer.algo import compute_policy_loss

# ratios covering every region for the default and test parameters (no value sits on a boundary)
RATIOS = [0.01, 0.2, 0.3, 0.55, 0.7, 0.79, 0.85, 1.0, 1.1, 1.25, 1.35, 1.45, 2.0, 3.5, 5.0, 12.0, 50.0]
ADVS = [1.5, -0.7]


def autograd_weights(name, ratios, adv, entropy=None, **params):
    """w_t of a single response with the given ratios, token-mean aggregation."""
    r = torch.tensor(ratios, dtype=torch.float64)
    old = torch.full_like(r, -1.3)
    logp = (old + torch.log(r)).clone().requires_grad_(True)
    n = len(ratios)
    loss, _ = compute_policy_loss(
        name,
        log_prob=logp[None],
        old_log_prob=old[None],
        advantages=torch.tensor([adv], dtype=torch.float64),
        response_mask=torch.ones(1, n, dtype=torch.bool),
        entropy=None if entropy is None else entropy[None],
        agg="token-mean",
        **params,
    )
    (grad,) = torch.autograd.grad(loss, logp)
    return (-n * grad).tolist()


def ppo_table(r, a, lo, hi, c):
    if a > 0:
        return ("pos_upper_clip", 0.0) if r > 1 + hi else ("pos_in", a * r)
    if r < 1 - lo:
        return "neg_lower_clip", 0.0
    if c is not None and r > c:
        return "neg_dual", 0.0
    return "neg_in", a * r


def gppo_table(r, a, lo, hi, beta_lo, beta_hi, c):
    if a > 0:
        return ("pos_high", beta_hi * (1 + hi) * a) if r > 1 + hi else ("pos_in", a * r)
    if r < 1 - lo:
        return "neg_low", beta_lo * (1 - lo) * a
    if r > c:
        return "neg_dual", 0.0
    return "neg_in", a * r


def aspo_table(r, a, eps, c):
    if a > 0:
        if r > 1 + eps:
            return "pos_upper_clip", 0.0
        if r < 1 / c:
            return "pos_soft_dual", c * a
        return "pos_inverted", a / r
    if r < 1 - eps:
        return "neg_lower_clip", 0.0
    if r > c:
        return "neg_soft_dual", c * a
    return "neg_in", a * r


def check(name, table, expected_regions, entropy=None, **params):
    seen = set()
    for a in ADVS:
        got = autograd_weights(name, RATIOS, a, entropy=entropy, **params)
        for i, (r, w) in enumerate(zip(RATIOS, got)):
            region, want = table(i, r, a)
            seen.add(region)
            assert w == pytest.approx(want, rel=1e-9, abs=1e-12), (name, region, r, a)
    assert seen == expected_regions


def test_ppo_weights_with_and_without_dual_clip():
    regions = {"pos_in", "pos_upper_clip", "neg_in", "neg_lower_clip"}
    check("ppo", lambda i, r, a: ppo_table(r, a, 0.2, 0.2, None), regions)
    check("ppo", lambda i, r, a: ppo_table(r, a, 0.2, 0.2, 3.0), regions | {"neg_dual"}, dual_clip_c=3.0)


def test_dapo_is_clip_higher_ppo():
    regions = {"pos_in", "pos_upper_clip", "neg_in", "neg_lower_clip"}
    check("dapo", lambda i, r, a: ppo_table(r, a, 0.2, 0.28, None), regions)


def test_cispo_weight_is_clipped_ratio_times_advantage():
    def table(i, r, a):
        w = a * min(max(r, 1 - 0.1), 1 + 0.28)
        region = "upper" if r > 1.28 else "lower" if r < 0.9 else "in"
        return region, w

    check("cispo", table, {"upper", "lower", "in"}, clip_low=0.1)
    # default: no lower bound (weight A r below 1), capped at 1.28 above
    check("cispo", lambda i, r, a: ("any", a * min(r, 1.28)), {"any"})


def test_gppo_weights_default_and_klear_betas():
    regions = {"pos_in", "pos_high", "neg_in", "neg_low", "neg_dual"}
    check("gppo", lambda i, r, a: gppo_table(r, a, 0.2, 0.28, 1.0, 1.0, 10.0), regions)
    check(
        "gppo",
        lambda i, r, a: gppo_table(r, a, 0.2, 0.28, 0.25, 0.5, 10.0),
        regions,
        beta_low=0.25,
        beta_high=0.5,
    )


def test_aspo_weights_low_entropy_tokens():
    # constant entropy: nothing is strictly above the quantile, so every token is low-entropy (eps 0.2)
    ent = torch.ones(len(RATIOS), dtype=torch.float64)
    regions = {
        "pos_upper_clip",
        "pos_soft_dual",
        "pos_inverted",
        "neg_lower_clip",
        "neg_soft_dual",
        "neg_in",
    }
    check("aspo", lambda i, r, a: aspo_table(r, a, 0.2, 3.0), regions, entropy=ent, kl_coef=0.0)


def _expected_high(entropy: torch.Tensor, q: float) -> list[bool]:
    return (entropy > torch.quantile(entropy, q)).tolist()


def test_aspo_and_dtc_weights_follow_the_entropy_split():
    gen = torch.Generator().manual_seed(1)
    ent = torch.rand(len(RATIOS), generator=gen, dtype=torch.float64)
    # make sure both classes meet ratios in several regions
    for q in (0.8, 0.5):
        high = _expected_high(ent, q)
        assert 0 < sum(high) < len(high)

        def aspo(i, r, a, high=high):
            return aspo_table(r, a, 0.4 if high[i] else 0.2, 3.0)

        def dtc(i, r, a, high=high):
            eps = 0.5 if high[i] else 0.2
            return ppo_table(r, a, eps, eps, 10.0)

        got_regions = set()
        for name, table in (("aspo", aspo), ("dtc", dtc)):
            for a in ADVS:
                got = autograd_weights(name, RATIOS, a, entropy=ent, entropy_quantile=q)
                for i, (r, w) in enumerate(zip(RATIOS, got)):
                    region, want = table(i, r, a)
                    got_regions.add((name, region))
                    assert w == pytest.approx(want, rel=1e-9, abs=1e-12), (name, region, r, a, high[i])
        assert ("dtc", "neg_dual") in got_regions and ("aspo", "pos_soft_dual") in got_regions


def test_dtc_high_entropy_token_keeps_gradient_where_low_entropy_token_is_clipped():
    # same ratio 1.35 and A > 0: low-entropy (eps 0.2) clips, high-entropy (eps 0.5) does not
    ratios = [1.35] * 5
    ent = torch.tensor([0.1, 0.2, 0.3, 0.4, 5.0], dtype=torch.float64)
    w = autograd_weights("dtc", ratios, 1.0, entropy=ent)
    assert w[:4] == [0.0] * 4
    assert w[4] == pytest.approx(1.35)


@pytest.mark.parametrize("adv", ADVS)
def test_gspo_weight_is_advantage_times_sequence_ratio(adv):
    # sequence ratio = exp(mean log r); tokens have different ratios but share the sequence weight
    lo, hi = 3e-4, 4e-4
    for log_ratios in ([1e-4, -2e-4, 3e-4], [5e-4, 6e-4, 4.5e-4], [-5e-4, -3.5e-4, -4e-4], [0.3, -0.2, 0.5]):
        ratios = [math.exp(x) for x in log_ratios]
        s = math.exp(sum(log_ratios) / len(log_ratios))
        clipped = (adv > 0 and s > 1 + hi) or (adv < 0 and s < 1 - lo)
        want = 0.0 if clipped else adv * s
        # token-mean over one response equals seq-mean-token-mean
        got = autograd_weights("gspo", ratios, adv)
        assert got == pytest.approx([want] * 3, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["ppo", "dapo", "gspo", "cispo", "gppo", "dtc", "aspo"])
def test_all_ratios_one_gives_the_plain_policy_gradient(name):
    gen = torch.Generator().manual_seed(2)
    b, t = 5, 9
    logp = (-torch.rand(b, t, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    adv = torch.randn(b, generator=gen, dtype=torch.float64)
    mask = torch.rand(b, t, generator=gen) > 0.25
    ent = torch.rand(b, t, generator=gen, dtype=torch.float64)
    loss, metrics = compute_policy_loss(
        name,
        log_prob=logp,
        old_log_prob=logp.detach(),
        advantages=adv,
        response_mask=mask,
        entropy=ent,
        agg="token-mean",
    )
    (grad,) = torch.autograd.grad(loss, logp)
    want = torch.where(mask, -adv[:, None].expand(b, t) / mask.sum(), torch.zeros(()))
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-15)
    assert metrics["clip_frac"] == 0.0 and metrics["dual_clip_frac"] == 0.0
    assert metrics["ratio_mean"] == pytest.approx(1.0) and metrics["ratio_max"] == pytest.approx(1.0)


def test_truncated_is_multiplies_every_token_weight():
    ratios = [0.5, 1.0, 1.1, 2.0]
    r = torch.tensor(ratios, dtype=torch.float64)
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0], dtype=torch.float64)
    rollout = old - torch.tensor([0.3, -0.4, 1.5, 0.0], dtype=torch.float64)  # old - rollout
    tis = [min(math.exp(x), 2.0) for x in (0.3, -0.4, 1.5, 0.0)]
    logp = (old + torch.log(r)).requires_grad_(True)
    for name in ("ppo", "cispo", "gppo", "aspo"):
        loss, metrics = compute_policy_loss(
            name,
            log_prob=logp[None],
            old_log_prob=old[None],
            advantages=torch.tensor([1.0], dtype=torch.float64),
            response_mask=torch.ones(1, 4),
            entropy=torch.ones(1, 4, dtype=torch.float64),
            rollout_log_prob=rollout[None],
        )
        (g,) = torch.autograd.grad(loss, logp)
        base = autograd_weights(name, ratios, 1.0, entropy=torch.ones(4, dtype=torch.float64))
        assert (-4 * g).tolist() == pytest.approx([w * c for w, c in zip(base, tis)], rel=1e-9, abs=1e-12)
        assert metrics["tis_clip_frac"] == pytest.approx(0.25)
        assert metrics["tis_mean"] == pytest.approx(sum(tis) / 4)
