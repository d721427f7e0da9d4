"""compute_policy_loss: names, parameters, shapes, dtypes, edge cases, metrics, entropy split."""

from __future__ import annotations

import pytest
import torch

from archer.algo import AGG_MODES, compute_policy_loss, policy_loss_names, split_by_entropy

NAMES = ["ppo", "dapo", "gspo", "cispo", "gppo", "dtc", "aspo"]


def batch(b=4, t=6, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 2
    logp = old + 0.5 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    mask = torch.rand(b, t, generator=gen) > 0.3
    mask[:, 0] = True
    return {
        "log_prob": logp.to(dtype),
        "old_log_prob": old.to(dtype),
        "advantages": torch.randn(b, generator=gen, dtype=torch.float64).to(dtype),
        "response_mask": mask,
        "entropy": torch.rand(b, t, generator=gen, dtype=torch.float64).to(dtype),
        "ref_log_prob": (old + 0.1).to(dtype),
    }


def test_registry_holds_the_documented_losses():
    assert policy_loss_names() == sorted(NAMES)


def test_unknown_loss_and_parameter_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"aspo.*cispo.*dapo.*dtc.*gppo.*gspo.*ppo"):
        compute_policy_loss("grpo", **batch())
    with pytest.raises(ValueError, match=r"clip_eps.*valid: .*clip_high.*clip_low"):
        compute_policy_loss("ppo", clip_eps=0.2, **batch())
    with pytest.raises(ValueError, match="beta_low"):
        compute_policy_loss("gppo", beta_lo=0.2, **batch())
    # a parameter of another loss is unknown here
    with pytest.raises(ValueError, match="entropy_quantile"):
        compute_policy_loss("ppo", entropy_quantile=0.5, **batch())


@pytest.mark.parametrize(
    ("name", "param", "value", "field"),
    [
        ("ppo", "clip_low", -0.1, "clip_low"),
        ("ppo", "dual_clip_c", 0.5, "dual_clip_c"),
        ("ppo", "agg", "mean", "seq-mean-token-mean"),
        ("dtc", "entropy_quantile", 1.5, "entropy_quantile"),
        ("aspo", "dual_clip_c", None, "dual_clip_c"),
        ("ppo", "kl_estimator", "k9", "kl_estimator"),
        ("ppo", "tis_cap", 0.0, "tis_cap"),
        ("ppo", "loss_normalizer", 3, "loss_normalizer"),
    ],
)
def test_bad_parameter_values_name_the_field(name, param, value, field):
    with pytest.raises(ValueError, match=field):
        compute_policy_loss(name, **{param: value}, **batch())


def test_entropy_split_losses_need_entropy_and_shapes_are_checked():
    kw = batch()
    kw["entropy"] = None
    for name in ("dtc", "aspo"):
        with pytest.raises(ValueError, match="entropy"):
            compute_policy_loss(name, **kw)
    kw = batch()
    kw["old_log_prob"] = kw["old_log_prob"][:, :3]
    with pytest.raises(ValueError, match="old_log_prob shape"):
        compute_policy_loss("ppo", **kw)
    kw = batch()
    kw["advantages"] = torch.zeros(7)
    with pytest.raises(ValueError, match="advantages"):
        compute_policy_loss("ppo", **kw)


@pytest.mark.parametrize("name", NAMES)
def test_token_advantages_equal_broadcast_response_advantages(name):
    kw = batch()
    a, _ = compute_policy_loss(name, **kw)
    kw2 = {**kw, "advantages": kw["advantages"][:, None].expand_as(kw["log_prob"]).clone()}
    b, _ = compute_policy_loss(name, **kw2)
    kw3 = {**kw, "advantages": kw["advantages"][:, None]}
    c, _ = compute_policy_loss(name, **kw3)
    assert a.item() == pytest.approx(b.item(), abs=1e-7) and a.item() == pytest.approx(c.item(), abs=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_dtypes(name):
    base = batch(dtype=torch.float64)
    l64, _ = compute_policy_loss(name, **base)
    assert l64.dtype == torch.float64
    bf = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in base.items()}
    lbf, metrics = compute_policy_loss(name, **bf)
    assert lbf.dtype == torch.float32
    # the bf16 path computes in float32 on the bf16 values
    as32 = {k: (v.float() if v.is_floating_point() else v) for k, v in bf.items()}
    l32, _ = compute_policy_loss(name, **as32)
    assert lbf.item() == pytest.approx(l32.item(), rel=1e-6, abs=1e-7)
    assert all(isinstance(v, float) for v in metrics.values())
    # gradient reaches a bf16 leaf in its own dtype
    lp = bf["log_prob"].clone().requires_grad_(True)
    loss, _ = compute_policy_loss(name, **{**bf, "log_prob": lp})
    loss.backward()
    assert lp.grad.dtype == torch.bfloat16 and torch.isfinite(lp.grad.float()).all()


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("name", NAMES)
def test_all_masked_batch_gives_zero_loss_and_finite_metrics(name, agg):
    kw = batch()
    kw["response_mask"] = torch.zeros_like(kw["response_mask"])
    kw["log_prob"] = torch.full_like(kw["log_prob"], float("-inf")).requires_grad_(True)
    kw["entropy"] = torch.full_like(kw["entropy"], float("nan"))
    loss, metrics = compute_policy_loss(name, agg=agg, kl_coef=0.1, entropy_coef=0.0, **kw)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(kw["log_prob"].grad, torch.zeros_like(kw["log_prob"]))
    assert metrics["num_tokens"] == 0.0
    assert all(v == v for v in metrics.values())  # no NaN


@pytest.mark.parametrize("name", NAMES)
def test_garbage_at_masked_positions_and_empty_rows_do_not_leak(name):
    kw = batch(b=5)
    kw["response_mask"][2] = False  # an empty response
    clean, clean_m = compute_policy_loss(name, **{**kw, "response_mask": kw["response_mask"].clone()})
    dirty = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kw.items()}
    hole = ~kw["response_mask"]
    for key, bad in (("log_prob", float("-inf")), ("old_log_prob", float("nan")), ("entropy", float("nan"))):
        dirty[key][hole] = bad
    dirty["ref_log_prob"][hole] = float("inf")
    lp = dirty["log_prob"].requires_grad_(True)
    loss, metrics = compute_policy_loss(name, **dirty)
    loss.backward()
    assert loss.item() == pytest.approx(clean.item(), abs=1e-6)
    assert torch.isfinite(lp.grad).all() and lp.grad[hole].abs().sum() == 0
    assert metrics["num_seqs"] == 4.0 and metrics["ratio_max"] == pytest.approx(clean_m["ratio_max"])


@pytest.mark.parametrize("name", NAMES)
def test_extreme_ratios_stay_finite(name):
    kw = batch()
    shift = torch.tensor([80.0, -80.0, 500.0, -500.0])[:, None]
    lp = (kw["old_log_prob"] + shift).requires_grad_(True)
    kw["log_prob"] = lp
    loss, metrics = compute_policy_loss(name, **kw)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


@pytest.mark.parametrize("name", NAMES)
def test_minus_inf_logprob_of_a_trained_token_is_finite(name):
    kw = batch()
    lp = kw["log_prob"].clone()
    lp[0, 0] = float("-inf")
    lp[1, 0] = float("-inf")
    lp.requires_grad_(True)
    loss, metrics = compute_policy_loss(name, **{**kw, "log_prob": lp}, kl_coef=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert lp.grad[0, 0] == 0 and lp.grad[1, 0] == 0
    assert all(v == v for v in metrics.values())


def test_ppo_clip_metrics_by_sign_and_side():
    ratios = torch.tensor([[1.5, 0.5, 1.0, 5.0], [1.5, 0.5, 1.0, 5.0]], dtype=torch.float64)
    old = torch.full_like(ratios, -1.0)
    loss, m = compute_policy_loss(
        "ppo",
        log_prob=old + ratios.log(),
        old_log_prob=old,
        advantages=torch.tensor([1.0, -1.0]),
        response_mask=torch.ones(2, 4),
        dual_clip_c=3.0,
    )
    # A > 0: 1.5 and 5.0 clip above; A < 0: 0.5 clips below, 5.0 is dual-clipped
    assert m["clip_frac_pos_upper"] == pytest.approx(2 / 8)
    assert m["clip_frac_neg_lower"] == pytest.approx(1 / 8)
    assert m["clip_frac_pos_lower"] == 0.0 and m["clip_frac_neg_upper"] == 0.0
    assert m["clip_frac"] == pytest.approx(3 / 8)
    assert m["dual_clip_frac"] == pytest.approx(1 / 8)
    assert m["ratio_max"] == pytest.approx(5.0) and m["ratio_mean"] == pytest.approx(8.0 * 2 / 8)
    assert m["num_tokens"] == 8.0 and m["num_seqs"] == 2.0
    # value: A=+1: -(1.2 + 0.5 + 1 + 1.2); A=-1: max(0.5*... ) -> 0.8, 1.0 then min(5, 3) = 3, 1.5
    want = (-(1.2 + 0.5 + 1.0 + 1.2) + (1.5 + 0.8 + 1.0 + 3.0)) / 8
    assert loss.item() == pytest.approx(want)


def test_aspo_metrics_count_soft_dual_clips_of_both_signs():
    ratios = torch.tensor([[0.2, 1.5, 1.0], [4.0, 0.5, 1.0]], dtype=torch.float64)
    old = torch.full_like(ratios, -1.0)
    _, m = compute_policy_loss(
        "aspo",
        log_prob=old + ratios.log(),
        old_log_prob=old,
        advantages=torch.tensor([1.0, -1.0]),
        response_mask=torch.ones(2, 3),
        entropy=torch.ones(2, 3),
    )
    assert m["dual_clip_frac"] == pytest.approx(2 / 6)
    assert m["clip_frac_pos_upper"] == pytest.approx(1 / 6) and m["clip_frac_neg_lower"] == pytest.approx(
        1 / 6
    )
    assert m["high_entropy_frac"] == 0.0


def test_metrics_weighted_by_num_tokens_recover_the_big_batch():
    kw = batch(b=6, t=8, seed=3)
    _, big = compute_policy_loss("dapo", **kw)
    parts = [
        compute_policy_loss("dapo", **{k: v[s] for k, v in kw.items()})[1] for s in (slice(0, 2), slice(2, 6))
    ]
    total = sum(p["num_tokens"] for p in parts)
    for key in ("clip_frac", "clip_frac_pos_upper", "clip_frac_neg_lower", "ratio_mean", "kl"):
        avg = sum(p[key] * p["num_tokens"] for p in parts) / total
        assert avg == pytest.approx(big[key], rel=1e-6, abs=1e-9)
    assert max(p["ratio_max"] for p in parts) == pytest.approx(big["ratio_max"])


def test_entropy_split_matches_nanquantile_per_response():
    gen = torch.Generator().manual_seed(9)
    b, t = 7, 15
    ent = torch.rand(b, t, generator=gen)
    ent[3, :5] = 0.5  # ties
    mask = torch.rand(b, t, generator=gen) > 0.3
    mask[5] = False  # empty response
    mask[6] = False
    mask[6, 4] = True  # single token: never above its own quantile
    for q in (0.8, 0.5, 0.0, 1.0):
        for max_numel in (1 << 24, t, 2 * t + 1):  # also the row-chunked path
            high = split_by_entropy(ent, mask, q, max_numel=max_numel)
            for i in range(b):
                row = ent[i][mask[i]]
                want = torch.zeros(t, dtype=torch.bool)
                if row.numel():
                    want[mask[i]] = row > torch.quantile(row, q)
                assert torch.equal(high[i], want), (q, i)
    _, m = compute_policy_loss(
        "dtc",
        log_prob=torch.zeros(b, t),
        old_log_prob=torch.zeros(b, t),
        advantages=torch.ones(b),
        response_mask=mask,
        entropy=ent,
    )
    assert m["high_entropy_frac"] == pytest.approx(
        float(split_by_entropy(ent, mask, 0.8).sum()) / float(mask.sum())
    )
