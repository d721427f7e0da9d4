"""Policy-loss registry and :func:`compute_policy_loss` (ALGORITHMS.md sections 1-3).

``compute_policy_loss(name, *, log_prob, old_log_prob, advantages, response_mask, entropy=None,
ref_log_prob=None, **params) -> (loss, metrics)``. ``name`` is one of :data:`POLICY_LOSSES`
(``ppo``, ``dapo``, ``gspo``, ``cispo``, ``gppo``, ``dtc``, ``aspo``); ``params`` are keyword arguments
whose defaults are those of ALGORITHMS.md; an unknown loss or parameter raises ``ValueError`` listing
the valid ones.

Parameters shared by every loss:

- ``agg``: aggregation mode (:mod:`archer.algo.aggregation`); ``loss_normalizer``: the whole
  mini-batch's :class:`LossNormalizer` for gradient accumulation (None: this batch is the mini-batch).
- ``kl_coef``, ``kl_estimator`` (k1/k2/k3): KL-to-reference term, added when ``ref_log_prob`` is given
  and the coefficient is > 0; aggregated like the policy term (``dtc``/``aspo``: see below).
- ``rollout_log_prob``, ``rollout_correction``, ``rollout_correction_params``, ``tis_cap``: the
  rollout-engine correction (:mod:`archer.algo.rollout_correction`), off when ``rollout_log_prob`` is
  None. Each token's policy loss is multiplied by the entry's detached factor; the default
  ``token_tis`` is ``min(exp(old - rollout), tis_cap)``, the other entries take their thresholds from
  ``rollout_correction_params``. The aggregation normaliser is unchanged (a rejected token counts as a
  token with zero loss); the KL and entropy terms are not corrected.
- ``entropy_coef``: entropy bonus ``-entropy_coef * agg(entropy)`` (``entropy`` must then carry its
  gradient; the Skywork-OR1 controller's ``alpha`` goes here).

``dtc``/``aspo`` split tokens by entropy (detached ``entropy`` required): per response, tokens above the
``entropy_quantile`` quantile (``torch.nanquantile``, linear) are high-entropy. Their KL is two
token-means, ``kl_coef`` over low-entropy tokens and ``high_entropy_kl_coef`` over high-entropy tokens,
each over its own subset. Under accumulation, exactness needs the mini-batch subset sizes:
:func:`~archer.algo.aggregation.loss_normalizer` computes them (exact from entropies, or predicted from
the masks, exact unless entropies tie at the quantile); without them each micro-batch uses its own.

Dtypes: inputs may be any float dtype; the computation and the loss are float32 (float64 when
``log_prob`` is float64). Masked positions are zeroed before use, so NaN/inf there never propagate;
log-probs of trained tokens below -1e4 (e.g. -inf) count as -1e4, with no gradient.
Metrics are python floats over this batch's trained tokens; average them across micro-batches weighted
by ``num_tokens`` (``ratio_max``: take the max).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from archer.algo.aggregation import LossNormalizer, aggregate_loss, check_agg_mode
from archer.algo.objectives import (
    SurrogateFn,
    SurrogateInputs,
    aspo_surrogate,
    cispo_surrogate,
    gppo_surrogate,
    gspo_surrogate,
    ppo_surrogate,
)
from archer.algo.regularizers import KL_ESTIMATORS, kl_penalty
from archer.algo.rollout_correction import (
    DEFAULT_CORRECTION,
    ROLLOUT_CORRECTIONS,
    Correction,
    correction_names,
    rollout_correction,
)

LOGP_FLOOR = -1e4

_COMMON_DEFAULTS: dict[str, Any] = {
    "agg": "token-mean",
    "loss_normalizer": None,
    "kl_coef": 0.0,
    "kl_estimator": "k3",
    "rollout_log_prob": None,
    "tis_cap": 2.0,
    "rollout_correction": DEFAULT_CORRECTION,
    "rollout_correction_params": None,
    "entropy_coef": 0.0,
}
_SPLIT_DEFAULTS: dict[str, Any] = {
    "entropy_quantile": 0.8,
    "high_entropy_clip_low": 0.5,
    "high_entropy_clip_high": 0.5,
    "kl_coef": 0.001,
    "high_entropy_kl_coef": 0.0,
    # "subset": each KL part is a token mean over its subset in the whole mini-batch; "response": a
    # token mean over each response's subset tokens, then a mean over responses (the released Archer runs)
    "kl_norm": "subset",
}
KL_NORMS = ("subset", "response")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its surrogate, its parameter defaults, and whether it splits by entropy."""

    surrogate: SurrogateFn
    defaults: dict[str, Any] = field(default_factory=dict)
    entropy_split: bool = False

    def resolve(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        allowed = {**_COMMON_DEFAULTS, **self.defaults}
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for loss {name!r}; valid: {sorted(allowed)}")
        resolved = {**allowed, **params}
        _validate(name, resolved)
        return resolved


POLICY_LOSSES: dict[str, LossSpec] = {
    "ppo": LossSpec(ppo_surrogate, {"clip_low": 0.2, "clip_high": 0.2, "dual_clip_c": None}),
    "dapo": LossSpec(ppo_surrogate, {"clip_low": 0.2, "clip_high": 0.28, "dual_clip_c": None}),
    "gspo": LossSpec(
        gspo_surrogate,
        {"clip_low": 3e-4, "clip_high": 4e-4, "dual_clip_c": None, "agg": "seq-mean-token-mean"},
    ),
    # MiniMax-M1 sets no lower bound on the IS weight (eps_low large); 1.0 puts it at 0.
    "cispo": LossSpec(cispo_surrogate, {"clip_low": 1.0, "clip_high": 0.28}),
    "gppo": LossSpec(
        gppo_surrogate,
        {"clip_low": 0.2, "clip_high": 0.28, "beta_low": 1.0, "beta_high": 1.0, "dual_clip_c": 10.0},
    ),
    "dtc": LossSpec(
        ppo_surrogate, {"clip_low": 0.2, "clip_high": 0.2, "dual_clip_c": 10.0, **_SPLIT_DEFAULTS}, True
    ),
    "aspo": LossSpec(
        aspo_surrogate,
        {
            "clip_low": 0.2,
            "clip_high": 0.2,
            "dual_clip_c": 3.0,
            **_SPLIT_DEFAULTS,
            "high_entropy_clip_low": 0.4,
            "high_entropy_clip_high": 0.4,
        },
        True,
    ),
}


def policy_loss_names() -> list[str]:
    return sorted(POLICY_LOSSES)


def _validate(name: str, p: dict[str, Any]) -> None:
    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"loss {name!r}: parameter {key}={p[key]!r} {why}")

    check_agg_mode(p["agg"])
    for key in ("clip_low", "high_entropy_clip_low"):
        if key in p and not 0 <= p[key] <= 1:
            raise bad(key, "must be in [0, 1]")
    for key in ("clip_high", "high_entropy_clip_high", "beta_low", "beta_high"):
        if key in p and not p[key] >= 0:
            raise bad(key, "must be >= 0")
    for key in ("kl_coef", "high_entropy_kl_coef", "entropy_coef"):
        if key in p and not p[key] >= 0:
            raise bad(key, "must be >= 0")
    if p.get("dual_clip_c") is not None and not p["dual_clip_c"] > 1:
        raise bad("dual_clip_c", "must be > 1 (or None)")
    if name == "aspo" and p["dual_clip_c"] is None:
        raise bad("dual_clip_c", "is required by aspo")
    if "entropy_quantile" in p and not 0 <= p["entropy_quantile"] <= 1:
        raise bad("entropy_quantile", "must be in [0, 1]")
    if not p["tis_cap"] > 0:
        raise bad("tis_cap", "must be > 0")
    _correction_params(name, p)
    if "kl_norm" in p and p["kl_norm"] not in KL_NORMS:
        raise bad("kl_norm", f"is unknown; valid: {list(KL_NORMS)}")
    if p["kl_estimator"] not in KL_ESTIMATORS:
        raise bad("kl_estimator", f"is unknown; valid: {sorted(KL_ESTIMATORS)}")
    if p["loss_normalizer"] is not None and not isinstance(p["loss_normalizer"], LossNormalizer):
        raise bad("loss_normalizer", "must be a LossNormalizer (see archer.algo.loss_normalizer)")


def _correction_params(name: str, p: dict[str, Any]) -> dict[str, Any]:
    """The rollout correction's resolved parameters; ``token_tis`` takes its cap from ``tis_cap``."""
    rc, extra = p["rollout_correction"], dict(p["rollout_correction_params"] or {})
    if rc not in ROLLOUT_CORRECTIONS:
        raise ValueError(f"loss {name!r}: unknown rollout_correction {rc!r}; valid: {correction_names()}")
    if rc == "token_tis":
        if "cap" in extra:
            raise ValueError(
                f"loss {name!r}: token_tis takes its cap from tis_cap, not rollout_correction_params"
            )
        extra["cap"] = p["tis_cap"]
    return ROLLOUT_CORRECTIONS[rc].resolve(rc, extra)


def split_by_entropy(
    entropy: torch.Tensor, response_mask: torch.Tensor, quantile: float, max_numel: int = 1 << 24
) -> torch.Tensor:
    """High-entropy tokens [B, T] bool: ``H > nanquantile(H over the response's tokens, quantile)``.

    Rows are processed in chunks of at most ``max_numel`` elements because ``torch.nanquantile``
    limits its input size. An empty response has no high-entropy token; a one-token response neither.
    """
    mask = response_mask != 0
    h = entropy.detach().float()
    h = torch.where(mask, h, torch.full((), float("nan"), device=h.device))  # [B, T]
    rows = max(1, max_numel // max(h.shape[-1], 1))
    parts = [torch.nanquantile(chunk, quantile, dim=-1, keepdim=True) for chunk in h.split(rows, dim=0)]
    q = torch.cat(parts, dim=0) if parts else h.new_zeros(0, 1)  # [B, 1]; NaN for empty rows
    return mask & (h > q)


def _check_shapes(log_prob: torch.Tensor, **others: torch.Tensor | None) -> None:
    if log_prob.dim() != 2:
        raise ValueError(f"log_prob must be [B, T], got shape {tuple(log_prob.shape)}")
    for key, t in others.items():
        if t is not None and t.shape != log_prob.shape:
            raise ValueError(f"{key} shape {tuple(t.shape)} != log_prob shape {tuple(log_prob.shape)}")


def _broadcast_advantages(adv: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if adv.dim() == 1 or (adv.dim() == 2 and adv.shape[1] == 1):
        adv = adv.reshape(-1, 1)
        if adv.shape[0] != shape[0]:
            raise ValueError(f"advantages has {adv.shape[0]} rows for {shape[0]} responses")
        return adv.expand(shape)
    if adv.shape != shape:
        raise ValueError(f"advantages must be [B] or [B, T] = {tuple(shape)}, got {tuple(adv.shape)}")
    return adv


def compute_policy_loss(
    name: str,
    *,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    entropy: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    **params: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy loss ``name`` over a (micro-)batch; see the module docstring for parameters and metrics.

    Args:
        log_prob, old_log_prob: [B, T] current and sampling-policy log-probs of the response tokens.
        advantages: [B] (one per response) or [B, T].
        response_mask: [B, T] bool or 0/1 float.
        entropy: [B, T] full-vocabulary entropy of the current forward pass (dtc/aspo, entropy bonus).
        ref_log_prob: [B, T] reference-model log-probs; KL terms are skipped when None.
    Returns:
        ``(loss, metrics)``: scalar loss (float32, float64 for float64 inputs) and python-float metrics.
    """
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; valid: {policy_loss_names()}")
    spec = POLICY_LOSSES[name]
    p = spec.resolve(name, params)
    rollout_log_prob = p["rollout_log_prob"]
    _check_shapes(
        log_prob,
        old_log_prob=old_log_prob,
        response_mask=response_mask,
        entropy=entropy,
        ref_log_prob=ref_log_prob,
        rollout_log_prob=rollout_log_prob,
    )
    if spec.entropy_split and entropy is None:
        raise ValueError(f"loss {name!r} needs `entropy` [B, T] for its token split")
    if p["entropy_coef"] > 0 and entropy is None:
        raise ValueError("entropy_coef > 0 needs `entropy` [B, T]")

    dtype = torch.float64 if log_prob.dtype == torch.float64 else torch.float32
    mask = response_mask != 0  # [B, T]
    zero = torch.zeros((), dtype=dtype, device=log_prob.device)

    def clean(t: torch.Tensor, detach: bool = True) -> torch.Tensor:
        t = t.detach() if detach else t
        return torch.where(mask, t.to(dtype), zero)

    # a trained token the policy cannot produce (logp = -inf) gets a finite value and no gradient
    lp = clean(log_prob, detach=False).clamp(min=LOGP_FLOOR)
    old = clean(old_log_prob)
    adv = clean(_broadcast_advantages(advantages, log_prob.shape))
    log_ratio = (lp - old).clamp(-20.0, 20.0)
    high = split_by_entropy(entropy, mask, p["entropy_quantile"]) if spec.entropy_split else None
    inputs = SurrogateInputs(lp, old, adv, mask, log_ratio, torch.exp(log_ratio), high)
    sur = spec.surrogate(inputs, p)

    token_loss = sur.token_loss  # [B, T]
    rc = None
    if rollout_log_prob is not None and p["rollout_correction"] != "none":
        rc_params = _correction_params(name, p)
        rc = rollout_correction(p["rollout_correction"], old, clean(rollout_log_prob), mask, **rc_params)
        token_loss = token_loss * rc.weight  # [B, T], detached
    norm = p["loss_normalizer"]
    pg_loss = aggregate_loss(token_loss, mask, p["agg"], norm)
    loss = pg_loss

    kl_loss = torch.zeros((), dtype=dtype, device=log_prob.device)
    kl = None
    if ref_log_prob is not None:
        kl = kl_penalty(lp, clean(ref_log_prob), p["kl_estimator"])  # [B, T]
        kl = torch.where(mask, kl, zero)
        if spec.entropy_split:
            kl_loss = _split_kl(kl, mask, high, p, norm)
        elif p["kl_coef"] > 0:
            kl_loss = p["kl_coef"] * aggregate_loss(kl, mask, p["agg"], norm)
        loss = loss + kl_loss

    ent_loss = torch.zeros((), dtype=dtype, device=log_prob.device)
    if p["entropy_coef"] > 0:
        ent_loss = -p["entropy_coef"] * aggregate_loss(clean(entropy, detach=False), mask, p["agg"], norm)
        loss = loss + ent_loss

    metrics = _metrics(sur, mask, adv, high, kl, pg_loss, kl_loss, ent_loss, loss)
    if rc is not None:
        metrics.update(correction_metrics(rc, mask, p["rollout_correction"], p["tis_cap"]))
    return loss.to(dtype), metrics


def _split_kl(
    kl: torch.Tensor,
    mask: torch.Tensor,
    high: torch.Tensor | None,
    p: dict[str, Any],
    norm: LossNormalizer | None,
) -> torch.Tensor:
    """``kl_coef * mean(kl | low) + high_entropy_kl_coef * mean(kl | high)``: each a token mean over its
    subset of the mini-batch (``kl_norm="subset"``), or per response then over responses (``"response"``,
    the mini-batch's response count from the normaliser, so accumulation stays exact)."""
    assert high is not None
    low = mask & ~high
    if p["kl_norm"] == "response":
        seqs = norm.seqs if norm is not None else float(mask.any(dim=-1).sum())
        total = kl.new_zeros(())
        for coef, subset in ((p["kl_coef"], low), (p["high_entropy_kl_coef"], high)):
            if coef > 0:
                per_response = torch.where(subset, kl, 0.0).sum(-1) / subset.sum(-1).clamp(min=1)  # [B]
                total = total + coef * per_response.sum() / max(seqs, 1.0)
        return total
    n_low = norm.low_entropy_tokens if norm is not None else None
    n_high = norm.high_entropy_tokens if norm is not None else None
    n_low = float(low.sum()) if n_low is None else n_low
    n_high = float(high.sum()) if n_high is None else n_high
    total = kl.new_zeros(())
    if p["kl_coef"] > 0:
        total = total + p["kl_coef"] * torch.where(low, kl, 0.0).sum() / max(n_low, 1.0)
    if p["high_entropy_kl_coef"] > 0:
        total = total + p["high_entropy_kl_coef"] * torch.where(high, kl, 0.0).sum() / max(n_high, 1.0)
    return total


def _metrics(
    sur: Any,
    mask: torch.Tensor,
    adv: torch.Tensor,
    high: torch.Tensor | None,
    kl: torch.Tensor | None,
    pg_loss: torch.Tensor,
    kl_loss: torch.Tensor,
    ent_loss: torch.Tensor,
    loss: torch.Tensor,
) -> dict[str, float]:
    """All metrics in one device-to-host copy; fractions are over this batch's trained tokens."""
    f = torch.float64
    n = mask.sum().to(f)
    denom = n.clamp(min=1.0)
    pos, neg = mask & (adv > 0), mask & (adv < 0)

    def frac(b: torch.Tensor) -> torch.Tensor:
        return (b & mask).sum().to(f) / denom

    ratio = sur.ratio.detach().to(f)
    values = {
        "loss": loss.detach().to(f),
        "pg_loss": pg_loss.detach().to(f),
        "kl_loss": kl_loss.detach().to(f),
        "entropy_loss": ent_loss.detach().to(f),
        "num_tokens": n,
        "num_seqs": mask.any(dim=-1).sum().to(f),
        "clip_frac": frac(sur.clip_upper | sur.clip_lower),
        "clip_frac_pos_upper": frac(pos & sur.clip_upper),
        "clip_frac_pos_lower": frac(pos & sur.clip_lower),
        "clip_frac_neg_upper": frac(neg & sur.clip_upper),
        "clip_frac_neg_lower": frac(neg & sur.clip_lower),
        "dual_clip_frac": frac(sur.dual_clip),
        "ratio_mean": torch.where(mask, ratio, 0.0).sum() / denom,
        "ratio_max": torch.where(mask, ratio, 0.0).max() if mask.numel() else n * 0,
        # shares of all trained tokens, so micro-batches average exactly; the trainer divides them into
        # the mean ratio of positive- and negative-advantage tokens (ASPO flips only the former)
        "pos_frac": frac(pos),
        "neg_frac": frac(neg),
        "ratio_pos_share": torch.where(pos, ratio, 0.0).sum() / denom,
        "ratio_neg_share": torch.where(neg, ratio, 0.0).sum() / denom,
        "kl": (kl.detach().to(f).sum() / denom) if kl is not None else n * 0,
    }
    if high is not None:
        values["high_entropy_frac"] = frac(high)
    floats = torch.stack(list(values.values())).tolist()
    return dict(zip(values.keys(), floats))


def correction_metrics(rc: Correction, mask: torch.Tensor, name: str, tis_cap: float) -> dict[str, float]:
    """The rollout correction's stats over this batch's trained tokens (one device-to-host copy).

    ``rc_weight_mean``: mean factor; ``rc_truncated_frac`` / ``rc_rejected_frac``: shares of trained
    tokens whose factor was truncated at the cap / set to 0; ``rc_seq_rejected_frac``: share of this
    batch's responses with at least one rejected token (the trainer averages it over responses, not
    tokens). ``token_tis`` also keeps its historical ``tis_mean`` and ``tis_clip_frac`` (factor >= cap).
    """
    f = torch.float64
    denom = mask.sum().to(f).clamp(min=1.0)
    seqs = mask.any(dim=-1)
    w = rc.weight.to(f)
    values = {
        "rc_weight_mean": torch.where(mask, w, 0.0).sum() / denom,
        "rc_truncated_frac": (rc.truncated & mask).sum().to(f) / denom,
        "rc_rejected_frac": (rc.rejected & mask).sum().to(f) / denom,
        "rc_seq_rejected_frac": ((rc.rejected & mask).any(dim=-1) & seqs).sum().to(f)
        / seqs.sum().to(f).clamp(min=1.0),
    }
    if name == "token_tis":
        values["tis_mean"] = values["rc_weight_mean"]
        values["tis_clip_frac"] = ((w >= tis_cap) & mask).sum().to(f) / denom
    floats = torch.stack(list(values.values())).tolist()
    return dict(zip(values.keys(), floats))
