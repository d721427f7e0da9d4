"""Aggregation shares on ragged masks, and exact equivalence of k micro-batches with one big batch."""

from __future__ import annotations

import pytest
import torch

from archer.algo import AGG_MODES, aggregate_loss, compute_policy_loss, loss_normalizer
from archer.algo.aggregation import high_entropy_counts_from_mask


def ragged_mask() -> torch.Tensor:
    lengths = [5, 1, 0, 7, 3]  # one empty row
    mask = torch.zeros(len(lengths), 7, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, 7 - n :] = True  # left padding would work the same; use a shifted window
    return mask


def expected_share(mode: str, mask: torch.Tensor, max_len: float) -> torch.Tensor:
    m = mask.double()
    rows = m.sum(-1, keepdim=True)  # [B, 1]
    b = float((rows > 0).sum())
    if mode == "token-mean":
        share = m / m.sum()
    elif mode == "seq-mean-token-mean":
        share = m / rows.clamp(min=1) / b
    elif mode == "seq-mean-token-sum":
        share = m / b
    else:
        share = m / (b * max_len)
    return share


@pytest.mark.parametrize("mode", AGG_MODES)
def test_shares_on_ragged_mask(mode):
    mask = ragged_mask()
    x = torch.randn(mask.shape, dtype=torch.float64, requires_grad=True)
    loss = aggregate_loss(x, mask, mode)
    (g,) = torch.autograd.grad(loss, x)
    share = expected_share(mode, mask, max_len=mask.shape[1])
    torch.testing.assert_close(g, share, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss, (x.detach() * share).sum(), rtol=1e-12, atol=1e-15)


def test_dr_grpo_uses_the_given_max_len():
    mask = ragged_mask()
    x = torch.randn(mask.shape, dtype=torch.float64, requires_grad=True)
    norm = loss_normalizer(mask, max_len=100)
    (g,) = torch.autograd.grad(aggregate_loss(x, mask, "seq-mean-token-sum-norm", norm), x)
    torch.testing.assert_close(g, expected_share("x", mask, 100.0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_all_masked_batch_gives_zero_not_nan(mode):
    mask = torch.zeros(3, 4)
    x = torch.full((3, 4), float("nan"), requires_grad=True)
    loss = aggregate_loss(x, mask, mode)
    (g,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0 and torch.equal(g, torch.zeros_like(g))


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="seq-mean-token-sum-norm"):
        aggregate_loss(torch.zeros(1, 1), torch.ones(1, 1), "mean")


def _batch(seed: int, b: int = 8, t: int = 11):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, t + 1, (b,), generator=gen)
    lengths[0] = t
    mask = torch.arange(t)[None] < lengths[:, None]  # [B, T] right padding, ragged, maybe empty rows
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 3
    logp = old + 0.4 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    ref = old + 0.2 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    rollout = old + 0.3 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    ent = torch.rand(b, t, generator=gen, dtype=torch.float64) * 2
    adv = torch.randn(b, generator=gen, dtype=torch.float64)
    return mask, old, logp, ref, rollout, ent, adv


def _run(name, mode, rows_split, normalizer_kind):
    mask, old, logp0, ref, rollout, ent0, adv = _batch(3)
    kw = {"kl_coef": 0.05, "rollout_log_prob": None, "agg": mode, "entropy_coef": 0.01}
    if name in ("dtc", "aspo"):
        kw["high_entropy_kl_coef"] = 0.02

    def call(sl, lp, ent, norm, trim=True):
        m = mask[sl]
        width = int(m.sum(-1).max()) if trim else m.shape[1]  # micro-batches padded to their own width
        width = max(width, 1)
        cut = (slice(None), slice(0, width))
        loss, _ = compute_policy_loss(
            name,
            log_prob=lp[sl][cut],
            old_log_prob=old[sl][cut],
            advantages=adv[sl],
            response_mask=m[cut],
            entropy=ent[sl][cut],
            ref_log_prob=ref[sl][cut],
            loss_normalizer=norm,
            **{**kw, "rollout_log_prob": rollout[sl][cut]},
        )
        return loss

    full_lp = logp0.clone().requires_grad_(True)
    full_ent = ent0.clone().requires_grad_(True)
    # the big batch uses max_len = T so Dr.GRPO's constant is the same for both
    big = call(slice(None), full_lp, full_ent, loss_normalizer(mask), trim=False)
    g_big = torch.autograd.grad(big, (full_lp, full_ent))

    micro_lp = logp0.clone().requires_grad_(True)
    micro_ent = ent0.clone().requires_grad_(True)
    bounds = [0, *rows_split, mask.shape[0]]
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    if normalizer_kind == "entropy":
        norm = loss_normalizer(
            [mask[s] for s in slices], max_len=mask.shape[1], entropies=[ent0[s] for s in slices]
        )
    else:
        norm = loss_normalizer([mask[s] for s in slices], max_len=mask.shape[1], entropy_quantile=0.8)
    total = sum(call(s, micro_lp, micro_ent, norm) for s in slices)
    g_micro = torch.autograd.grad(total, (micro_lp, micro_ent))
    return big, total, g_big, g_micro


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("name", ["ppo", "gspo", "cispo", "gppo", "dtc", "aspo"])
def test_accumulation_equals_big_batch(name, mode):
    for split, kind in (([3], "entropy"), ([1, 2, 6], "entropy"), ([2, 5], "predicted")):
        big, total, g_big, g_micro = _run(name, mode, split, kind)
        torch.testing.assert_close(total, big, rtol=1e-12, atol=1e-14)
        for a, b in zip(g_micro, g_big):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_predicted_subset_counts_match_the_split_for_distinct_entropies():
    mask, *_rest = _batch(5, b=20, t=13)
    ent = torch.rand(mask.shape, dtype=torch.float64)
    exact = loss_normalizer(mask, entropies=ent, entropy_quantile=0.8)
    low, high = high_entropy_counts_from_mask(mask, 0.8)
    assert (low, high) == (exact.low_entropy_tokens, exact.high_entropy_tokens)
    assert low + high == exact.tokens


def test_per_micro_batch_normalisers_would_differ_from_the_big_batch():
    """Control: the equivalence above depends on the shared normaliser (token-mean, ragged rows)."""
    mask, old, logp, *_rest, adv = _batch(3)
    kw = {"old_log_prob": old, "advantages": adv, "response_mask": mask}
    big, _ = compute_policy_loss("ppo", log_prob=logp, **kw)
    parts = [
        compute_policy_loss("ppo", **{k: v[s] for k, v in {**kw, "log_prob": logp}.items()})[0]
        for s in (slice(0, 3), slice(3, 8))
    ]
    assert abs(float(sum(parts)) - big.item()) > 1e-3


def test_loss_normalizer_counts_and_validation():
    a = torch.tensor([[1, 1, 0], [0, 0, 0]])
    b = torch.tensor([[1, 1, 1, 1, 1]])
    norm = loss_normalizer([a, b])
    assert (norm.tokens, norm.seqs, norm.max_len) == (7.0, 2.0, 5.0)
    assert norm.low_entropy_tokens is None and norm.high_entropy_tokens is None
    with pytest.raises(ValueError, match="LossNormalizer.tokens"):
        type(norm)(tokens=-1.0, seqs=1.0, max_len=1.0)
    with pytest.raises(ValueError, match="at least one mask"):
        loss_normalizer([])
