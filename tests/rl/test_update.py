"""The policy update: exact gradient accumulation across micro-batches, and NaN/inf steps skipped."""

from __future__ import annotations

import copy

import pytest
import torch

from archer.rl.batch import pack
from archer.rl.update import UpdateSettings, sequence_logprobs, update_minibatch


def _model(dtype=torch.float64):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).to(dtype)


def _batch(model, with_ref=True):
    g = torch.Generator().manual_seed(1)
    rows = []
    for plen, rlen in [(3, 5), (6, 2), (2, 7), (4, 4), (5, 1), (3, 6)]:
        rows.append(
            (
                torch.randint(1, 40, (plen,), generator=g).tolist(),
                torch.randint(1, 40, (rlen,), generator=g).tolist(),
            )
        )
    batch = pack(rows, pad_id=0)
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, batch, with_entropy=False)
    mask = batch["response_mask"]
    # an older policy: perturbed log-probs, so ratios differ from 1 and clips are active somewhere
    batch["old_log_prob"] = (lp + 0.3 * torch.randn(lp.shape, generator=g, dtype=lp.dtype)) * mask
    if with_ref:
        batch["ref_log_prob"] = (lp + 0.2 * torch.randn(lp.shape, generator=g, dtype=lp.dtype)) * mask
    batch["advantages"] = torch.tensor([1.0, -0.5, 0.7, -1.2, 0.4, -0.9], dtype=lp.dtype)
    batch["rewards"] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0], dtype=lp.dtype)
    return batch


def _delta(model, batch, micro, settings):
    m = copy.deepcopy(model)
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=1.0)  # parameter change = -gradient
    metrics = update_minibatch(m, opt, batch, micro, settings)
    return [b - p.detach() for b, p in zip(before, m.parameters())], metrics


@pytest.mark.parametrize(
    "loss, agg, extra",
    [
        ("aspo", "token-mean", {}),
        ("dtc", "token-mean", {}),
        ("ppo", "seq-mean-token-mean", {"kl_coef": 0.1}),
        ("gppo", "seq-mean-token-sum-norm", {}),
        ("dapo", "token-mean", {"pos_nll": 0.1, "entropy": 0.01}),
    ],
)
def test_micro_batches_equal_one_big_batch(loss, agg, extra):
    model = _model()
    batch = _batch(model)
    settings = UpdateSettings(
        loss=loss,
        agg=agg,
        grad_clip=1e9,
        max_len=8.0,
        loss_params={k: v for k, v in extra.items() if k == "kl_coef"},
        pos_nll_coef=extra.get("pos_nll", 0.0),
        entropy_coef=extra.get("entropy", 0.0),
    )
    big, m_big = _delta(model, batch, [[0, 1, 2, 3, 4, 5]], settings)
    small, m_small = _delta(model, batch, [[0, 1], [2, 3, 4], [5]], settings)
    assert any(float(d.abs().max()) > 1e-6 for d in big)  # the update is not trivially zero
    for a, b in zip(big, small):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert m_big["loss"] == pytest.approx(m_small["loss"], rel=1e-9)
    assert m_big["clip_frac"] == pytest.approx(m_small["clip_frac"], rel=1e-9)
    assert m_big["skipped_nonfinite"] == 0.0


def test_accumulation_matches_naive_token_mean_reference():
    """token-mean PPO loss over the big batch, written out by hand in float64."""
    model = _model()
    batch = _batch(model, with_ref=False)
    settings = UpdateSettings(loss="ppo", agg="token-mean", loss_params={}, grad_clip=1e9)
    delta, _ = _delta(model, batch, [[0, 3], [1, 2], [4, 5]], settings)
    m = copy.deepcopy(model)
    lp, _ = sequence_logprobs(m, batch, with_entropy=False)
    mask = batch["response_mask"]
    ratio = torch.exp(lp - batch["old_log_prob"])
    adv = batch["advantages"][:, None]
    token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    loss = (token * mask).sum() / mask.sum()
    grads = torch.autograd.grad(loss, list(m.parameters()))
    for d, g in zip(delta, grads):
        torch.testing.assert_close(d, g, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("poison", ["advantages", "old_log_prob"])
def test_nonfinite_loss_skips_update_and_keeps_weights(poison):
    model = _model(torch.float32)
    batch = _batch(model)
    if poison == "advantages":
        batch["advantages"][4] = float("nan")
    else:
        batch["old_log_prob"][2, -1] = float("nan")  # on a response token of row 2
        assert batch["response_mask"][2, -1] == 1
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    settings = UpdateSettings(loss="aspo", agg="token-mean", loss_params={})
    metrics = update_minibatch(model, opt, batch, [[0, 1, 2], [3, 4, 5]], settings)
    assert metrics["skipped_nonfinite"] == 1.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert not opt.state  # AdamW never stepped: no moments were created
    # the same optimizer then trains normally on a clean batch
    clean = _batch(model)
    assert update_minibatch(model, opt, clean, [[0, 1, 2, 3, 4, 5]], settings)["skipped_nonfinite"] == 0.0


def test_sign_split_ratio_and_fork_entropy_metrics_are_exact_across_micro_batches():
    """ratio_mean_pos/neg and entropy_fork are means over the mini-batch's tokens, whatever the
    micro-batch split (float64 reference from one forward over all rows)."""
    from archer.algo.losses import split_by_entropy

    model = _model()
    batch = _batch(model)
    with torch.no_grad():
        lp, ent = sequence_logprobs(model, batch)
    mask = batch["response_mask"] != 0
    r = torch.exp(lp - batch["old_log_prob"])
    adv = batch["advantages"][:, None].expand_as(lp)
    fork = split_by_entropy(ent, mask, 0.8)
    want = {
        "ratio_mean_pos": r[mask & (adv > 0)].mean().item(),
        "ratio_mean_neg": r[mask & (adv < 0)].mean().item(),
        "entropy_fork": ent[fork].mean().item(),
        "pos_frac": (mask & (adv > 0)).sum().item() / mask.sum().item(),
    }
    settings = UpdateSettings(loss="aspo", agg="token-mean", loss_params={}, max_len=16.0)
    for micro in ([[0, 1, 2, 3, 4, 5]], [[0, 3], [1], [2, 4, 5]]):
        _, metrics = _delta(model, batch, micro, settings)
        for k, v in want.items():
            assert metrics[k] == pytest.approx(v, rel=1e-9), (k, micro)


@pytest.mark.parametrize("correction", ["seq_mis", "token_rs", "icepop", None])
def test_rollout_correction_is_exact_across_micro_batches(correction):
    """A correction's factor depends on each response alone: micro-batches give the big batch's update,
    and the share of rejected responses is a mean over responses (float64 reference from the tensors).
    ``None`` with a tis_cap is today's token-level TIS."""
    model = _model()
    batch = _batch(model, with_ref=False)
    g = torch.Generator().manual_seed(2)
    mask = batch["response_mask"]
    shift = 0.6 * torch.randn(mask.shape, generator=g, dtype=torch.float64)
    batch["rollout_log_prob"] = (batch["old_log_prob"] - shift) * mask  # old - rollout = shift
    settings = UpdateSettings(
        loss="ppo",
        agg="token-mean",
        loss_params={},
        grad_clip=1e9,
        tis_cap=2.0 if correction is None else None,
        rollout_correction=correction,
    )
    big, m_big = _delta(model, batch, [[0, 1, 2, 3, 4, 5]], settings)
    small, m_small = _delta(model, batch, [[0, 1], [2, 3, 4], [5]], settings)
    for a, b in zip(big, small):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    m = mask != 0
    r = torch.exp(shift)
    if correction == "seq_mis":
        rejected = torch.exp((shift * m).sum(-1, keepdim=True)).expand_as(shift) > 2.0
    elif correction == "token_rs":
        rejected = (r < 0.5) | (r > 2.0)
    elif correction == "icepop":
        rejected = (r < 0.5) | (r > 5.0)
    else:
        rejected = torch.zeros_like(m)
    rejected = rejected & m
    want_seq = rejected.any(-1).double().mean().item()
    for metrics in (m_big, m_small):
        assert metrics["rc_rejected_frac"] == pytest.approx(rejected.sum().item() / m.sum().item(), rel=1e-12)
        assert metrics["rc_seq_rejected_frac"] == pytest.approx(want_seq, rel=1e-12)
    if correction is None:
        assert m_big["tis_mean"] == pytest.approx(r.clamp(max=2.0)[m].mean().item(), rel=1e-12)
    else:
        assert 0 < want_seq < 1  # the data rejects some responses and keeps others
