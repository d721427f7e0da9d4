"""archer's ``aspo``, ``dtc`` and ``gppo`` against float64 transcriptions of the released code.

Value and gradient with respect to ``log_prob`` must agree to ~1e-10 on random float64 batches (ragged
masks, both advantage signs and zero, ratios in every clip region), so any drift in a surrogate, the
entropy split, the KL or the aggregation fails here. The reference and its deliberate differences from
the released code are documented in ``released_reference.py``.
"""

from __future__ import annotations

import math

import pytest
import released_reference as ref
import torch

from archer.algo import compute_policy_loss, loss_normalizer

SEEDS = [0, 1, 2, 3, 4]
RTOL, ATOL = 1e-10, 1e-13


def make_batch(seed: int, b: int = 12, t: int = 40) -> dict[str, torch.Tensor]:
    """Random float64 batch; padding positions hold finite garbage (both sides must ignore it)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0], lengths[1] = 1, t  # a one-token response and a full-width one
    mask = torch.arange(t)[None, :] < lengths[:, None]  # [B, T] bool
    log_prob = -torch.rand(b, t, generator=g, dtype=torch.float64) * 5.0 - 0.01
    log_ratio = (torch.rand(b, t, generator=g, dtype=torch.float64) * 2 - 1) * 3.5  # r in [0.03, 33]
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    adv[2] = 0.0
    adv[3], adv[4] = abs(adv[3]) + 0.1, -abs(adv[4]) - 0.1  # both signs present whatever the seed
    return {
        "log_prob": log_prob,
        "old_log_prob": log_prob - log_ratio,
        "advantages": adv,
        "response_mask": mask,
        "entropy": torch.rand(b, t, generator=g, dtype=torch.float64) * 3.0,
        "ref_log_prob": log_prob + 0.5 * torch.randn(b, t, generator=g, dtype=torch.float64),
    }


def archer_value_and_grad(name: str, batch: dict[str, torch.Tensor], **params) -> tuple[float, torch.Tensor]:
    lp = batch["log_prob"].clone().requires_grad_(True)
    loss, _ = compute_policy_loss(name, **{**batch, "log_prob": lp}, **params)
    loss.backward()
    return loss.item(), lp.grad


def reference_value_and_grad(fn, batch: dict[str, torch.Tensor], split: bool, **params):
    lp = batch["log_prob"].clone().requires_grad_(True)
    adv = batch["advantages"][:, None].expand_as(lp)
    args = [lp, batch["old_log_prob"], adv, batch["response_mask"]]
    if split:
        args += [batch["entropy"], params.pop("ref_log_prob", batch["ref_log_prob"])]
    loss = fn(*args, **params)
    loss.backward()
    return loss.item(), lp.grad


def assert_same(a: tuple[float, torch.Tensor], b: tuple[float, torch.Tensor]) -> None:
    assert math.isclose(a[0], b[0], rel_tol=RTOL, abs_tol=ATOL), (a[0], b[0])
    torch.testing.assert_close(a[1], b[1], rtol=RTOL, atol=ATOL)


def regions(batch: dict[str, torch.Tensor], low_eps: float, high_eps: float, c: float) -> set[str]:
    """The clip regions the batch's trained tokens reach, per entropy subset (the released split)."""
    r = torch.exp(batch["log_prob"] - batch["old_log_prob"])
    a = batch["advantages"][:, None].expand_as(r)
    m = batch["response_mask"]
    high = torch.cat([ref.released_split(h, mm)[1] for h, mm in zip(batch["entropy"][:, None], m[:, None])])
    out = set()
    for eps, tag, subset in ((low_eps, "low", m & ~high), (high_eps, "high", high)):
        checks = {
            "pos_clip": (a > 0) & (r > 1 + eps),
            "pos_inside": (a > 0) & (r < 1 + eps) & (r > 1 / c),
            "pos_below_1/c": (a > 0) & (r < 1 / c),
            "neg_clip": (a < 0) & (r < 1 - eps),
            "neg_inside": (a < 0) & (r > 1 - eps) & (r < c),
            "neg_dual": (a < 0) & (r > c),
            "zero_adv": a == 0,
        }
        out |= {f"{tag}:{k}" for k, v in checks.items() if bool((v & subset).any())}
    return out


@pytest.mark.parametrize("eps_low, eps_high, c", [(0.2, 0.4, 3.0), (0.2, 0.5, 10.0), (0.2, 0.28, 10.0)])
def test_batches_cover_every_clip_region(eps_low, eps_high, c):
    seen = set().union(*(regions(make_batch(seed), eps_low, eps_high, c) for seed in SEEDS))
    kinds = ("pos_clip", "pos_inside", "pos_below_1/c", "neg_clip", "neg_inside", "neg_dual", "zero_adv")
    assert {f"{tag}:{k}" for tag in ("low", "high") for k in kinds} <= seen


ASPO_RELEASED = {
    "agg": "seq-mean-token-mean",
    "kl_norm": "response",
    "clip_low": 0.2,
    "clip_high": 0.2,
    "high_entropy_clip_low": 0.4,
    "high_entropy_clip_high": 0.4,
    "dual_clip_c": 3.0,
    "entropy_quantile": 0.8,
    "kl_coef": 0.001,
    "kl_estimator": "k3",
}
DTC_RELEASED = {
    **ASPO_RELEASED,
    "high_entropy_clip_low": 0.5,
    "high_entropy_clip_high": 0.5,
    "dual_clip_c": 10.0,
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("high_kl", [0.0, 0.05])
def test_aspo_matches_released(seed, high_kl):
    batch = make_batch(seed)
    got = archer_value_and_grad("aspo", batch, **ASPO_RELEASED, high_entropy_kl_coef=high_kl)
    want = reference_value_and_grad(ref.aspo_loss, batch, True, high_kl_coef=high_kl, eps=0.0)
    assert_same(got, want)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("high_kl", [0.0, 0.05])
def test_dtc_matches_released(seed, high_kl):
    batch = make_batch(seed)
    got = archer_value_and_grad("dtc", batch, **DTC_RELEASED, high_entropy_kl_coef=high_kl)
    want = reference_value_and_grad(ref.dtc_loss, batch, True, high_kl_coef=high_kl, eps=0.0)
    assert_same(got, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_split_losses_without_reference_model(seed):
    """No ``ref_log_prob``: the policy term alone (the KL needs a reference model)."""
    batch = {**make_batch(seed), "ref_log_prob": None}
    for name, fn, params in (("aspo", ref.aspo_loss, ASPO_RELEASED), ("dtc", ref.dtc_loss, DTC_RELEASED)):
        got = archer_value_and_grad(name, batch, **params)
        want = reference_value_and_grad(fn, batch, True, ref_log_prob=None, eps=0.0)
        assert_same(got, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_gppo_matches_released(seed):
    batch = {**make_batch(seed), "entropy": None, "ref_log_prob": None}
    params = {"agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28, "dual_clip_c": 10.0}
    got = archer_value_and_grad("gppo", batch, **params, beta_low=1.0, beta_high=1.0)
    want = reference_value_and_grad(ref.gppo_loss, batch, False, eps=0.0)
    assert_same(got, want)


@pytest.mark.parametrize("name", ["aspo", "dtc", "gppo"])
def test_accumulated_micro_batches_match_released_mini_batch(name):
    """Three micro-batches with the mini-batch's normaliser sum to the released loss of the whole batch."""
    batch = make_batch(7)
    split = name != "gppo"
    params = {"aspo": ASPO_RELEASED, "dtc": DTC_RELEASED}.get(
        name, {"agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28, "dual_clip_c": 10.0}
    )
    fn = {"aspo": ref.aspo_loss, "dtc": ref.dtc_loss, "gppo": ref.gppo_loss}[name]
    if not split:
        batch = {**batch, "entropy": None, "ref_log_prob": None}
    lp = batch["log_prob"].clone().requires_grad_(True)
    chunks = [slice(0, 5), slice(5, 9), slice(9, 12)]
    norm = loss_normalizer([batch["response_mask"][s] for s in chunks])
    total = 0.0
    for s in chunks:
        part = {k: (v[s] if v is not None else None) for k, v in batch.items()}
        loss, _ = compute_policy_loss(name, **{**part, "log_prob": lp[s]}, loss_normalizer=norm, **params)
        loss.backward()
        total += loss.item()
    assert_same((total, lp.grad), reference_value_and_grad(fn, batch, split, eps=0.0))


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_released_epsilon_is_the_only_remaining_gap(seed):
    """With verl's ``+1e-8`` in each denominator the released value differs by about 1e-8 / tokens."""
    batch = make_batch(seed)
    exact = reference_value_and_grad(ref.aspo_loss, batch, True, eps=0.0)
    released = reference_value_and_grad(ref.aspo_loss, batch, True)
    assert exact[0] != released[0]
    assert math.isclose(exact[0], released[0], rel_tol=2e-8)
    torch.testing.assert_close(
        exact[1], released[1], rtol=2e-8, atol=0.0
    )  # a one-token response: 1 / (1 + 1e-8)


def test_split_puts_quantile_ties_on_the_low_side():
    """Released: ``H <= q`` is low entropy. A response of equal entropies has no high-entropy token."""
    from archer.algo.losses import split_by_entropy

    h = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    for i in range(2):
        _, high = ref.released_split(h[i : i + 1], m[i : i + 1])
        assert torch.equal(split_by_entropy(h, m, 0.8)[i : i + 1], high)
