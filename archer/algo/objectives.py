"""Per-token policy-gradient surrogates, one function per registered loss (ALGORITHMS.md section 2).

Each surrogate maps :class:`SurrogateInputs` (all [B, T], already in the compute dtype, masked positions
sanitised to 0) and the resolved parameters to :class:`Surrogate`: the per-token loss and boolean
[B, T] indicators of where each clip acts, used for metrics. The "weight" ``w`` of a token is the
coefficient with ``d L_t / d logp_t = -w_t``; the weight tables in the docstrings are what the tests
check. Aggregation, KL, truncated IS and metrics are applied by :mod:`archer.algo.losses`.

Papers: PPO (arXiv 1707.06347), dual clip (Ye et al., arXiv 1912.09729), DAPO (arXiv 2503.14476),
GSPO (arXiv 2507.18071), CISPO / MiniMax-M1 (arXiv 2506.13585), GPPO / Klear-Reasoner (arXiv 2508.07629),
DTC / Archer (arXiv 2507.15778), ASPO / Archer2.0 (arXiv 2510.06062).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SurrogateInputs:
    log_prob: torch.Tensor  # [B, T] current log-probs (carries the gradient)
    old_log_prob: torch.Tensor  # [B, T] detached
    advantages: torch.Tensor  # [B, T] detached, broadcast per token
    mask: torch.Tensor  # [B, T] bool
    log_ratio: torch.Tensor  # [B, T] clamp(logp - old, -20, 20)
    ratio: torch.Tensor  # [B, T] exp(log_ratio)
    high_entropy: torch.Tensor | None  # [B, T] bool (dtc/aspo token split), else None


@dataclass(frozen=True)
class Surrogate:
    token_loss: torch.Tensor  # [B, T]
    ratio: torch.Tensor  # [B, T] the ratio the clips act on (sequence ratio for gspo), for metrics
    clip_upper: torch.Tensor  # [B, T] bool: an upper clip zeroes/bounds the gradient
    clip_lower: torch.Tensor  # [B, T] bool
    dual_clip: torch.Tensor  # [B, T] bool


def _bounds(x: SurrogateInputs, p: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper ratio bounds as [B, T] (or scalar) tensors; per-token for the entropy split."""
    kw = {"dtype": x.ratio.dtype, "device": x.ratio.device}
    lower = torch.tensor(1.0 - p["clip_low"], **kw)
    upper = torch.tensor(1.0 + p["clip_high"], **kw)
    if x.high_entropy is not None:
        lower = torch.where(x.high_entropy, torch.tensor(1.0 - p["high_entropy_clip_low"], **kw), lower)
        upper = torch.where(x.high_entropy, torch.tensor(1.0 + p["high_entropy_clip_high"], **kw), upper)
    return lower, upper


def _clipped(
    ratio: torch.Tensor,
    adv: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    dual_clip_c: float | None,
) -> Surrogate:
    """PPO-clip ``max(-A r, -A clip(r))`` with the optional hard dual clip ``min(., -A c)`` for A < 0.

    Weights: ``A r`` inside the trust region; 0 where the clip is active (A > 0, r > upper or A < 0,
    r < lower); 0 for A < 0, r > c.
    """
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * torch.minimum(torch.maximum(ratio, lower), upper)
    loss = torch.maximum(pg_unclipped, pg_clipped)
    clip_upper = (adv > 0) & (ratio > upper)
    clip_lower = (adv < 0) & (ratio < lower)
    dual = torch.zeros_like(clip_upper)
    if dual_clip_c is not None:
        pg_dual = -adv * dual_clip_c
        dual = (adv < 0) & (loss > pg_dual)
        loss = torch.where(adv < 0, torch.minimum(loss, pg_dual), loss)
    return Surrogate(loss, ratio, clip_upper, clip_lower, dual)


def ppo_surrogate(x: SurrogateInputs, p: dict[str, Any]) -> Surrogate:
    """PPO-clip (DAPO's clip-higher when ``clip_high > clip_low``), optional hard dual clip.

    The entropy split of ``dtc`` reuses it with per-token bounds (low-entropy tokens ``clip_low/high``,
    high-entropy tokens ``high_entropy_clip_low/high``).
    """
    lower, upper = _bounds(x, p)
    return _clipped(x.ratio, x.advantages, lower, upper, p["dual_clip_c"])


def gspo_surrogate(x: SurrogateInputs, p: dict[str, Any]) -> Surrogate:
    """GSPO-token: ``s_it = sg(s_i) * exp(logp_it - sg(logp_it))`` with the sequence ratio
    ``s_i = exp(mean_t(logp - old))`` over the response's tokens, then PPO-clip on ``s_it``.

    Weights: ``A s_i`` inside the trust region, 0 where clipped (the whole response clips together).
    """
    m = x.mask.to(x.log_ratio.dtype)
    raw = (x.log_prob - x.old_log_prob) * m  # [B, T]
    seq_log_ratio = raw.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)  # [B, 1]
    seq_ratio = torch.exp(seq_log_ratio.clamp(-20.0, 20.0)).detach()  # [B, 1]
    token_ratio = seq_ratio * torch.exp(x.log_prob - x.log_prob.detach())  # [B, T], value s_i
    lower, upper = _bounds(x, p)
    return _clipped(token_ratio, x.advantages, lower, upper, p["dual_clip_c"])


def cispo_surrogate(x: SurrogateInputs, p: dict[str, Any]) -> Surrogate:
    """CISPO: ``L = -sg(clip(r, 1-eps_low, 1+eps_high)) A logp``; weight ``A clip(r)``, no token dropped."""
    lower, upper = _bounds(x, p)
    weight = torch.minimum(torch.maximum(x.ratio, lower), upper).detach()
    loss = -weight * x.advantages * x.log_prob
    nonzero = x.advantages != 0
    return Surrogate(
        loss, x.ratio, nonzero & (x.ratio > upper), nonzero & (x.ratio < lower), torch.zeros_like(x.mask)
    )


def gppo_surrogate(x: SurrogateInputs, p: dict[str, Any]) -> Surrogate:
    """GPPO (gradient-preserving clipping): clipped tokens keep a bounded gradient.

    Weights: ``beta_low (1-eps_low) A`` for A < 0, r < 1-eps_low; ``beta_high (1+eps_high) A`` for
    A > 0, r > 1+eps_high; ``A r`` otherwise; 0 for A < 0, r > c (hard dual clip).
    """
    adv, ratio = x.advantages, x.ratio
    lower, upper = _bounds(x, p)
    unit = torch.exp(x.log_ratio - x.log_ratio.detach())  # r / sg(r): value 1, gradient d logp
    low_region = (adv < 0) & (ratio < lower)
    high_region = (adv > 0) & (ratio > upper)
    loss = -adv * ratio
    loss = torch.where(low_region, -p["beta_low"] * lower * unit * adv, loss)
    loss = torch.where(high_region, -p["beta_high"] * upper * unit * adv, loss)
    dual = torch.zeros_like(low_region)
    if p["dual_clip_c"] is not None:
        pg_dual = -adv * p["dual_clip_c"]
        dual = (adv < 0) & (loss > pg_dual)
        loss = torch.where(adv < 0, torch.minimum(loss, pg_dual), loss)
    return Surrogate(loss, ratio, high_region, low_region, dual)


def aspo_surrogate(x: SurrogateInputs, p: dict[str, Any]) -> Surrogate:
    """ASPO: asymmetric IS. Negative tokens: PPO-clip on ``max(r, 1-eps)`` with a soft dual clip;
    positive tokens: inverted ratio ``1/r`` (value ``-A/rc``), clipped at ``1+eps``, soft dual clip.

    Weights: A >= 0: ``A/r`` for ``1/c <= r <= 1+eps``, 0 for ``r > 1+eps``, ``c A`` for ``r < 1/c``;
    A < 0: ``A r`` for ``1-eps <= r <= c``, 0 for ``r < 1-eps``, ``c A`` for ``r > c``.
    """
    adv, ratio, c = x.advantages, x.ratio, p["dual_clip_c"]
    lower, upper = _bounds(x, p)
    soft_dual = -adv * c * x.log_prob  # weight c A, gradient kept
    # A < 0
    rc_neg = torch.maximum(ratio, lower)
    neg_dual = rc_neg > c
    loss_neg = torch.where(neg_dual, soft_dual, -adv * rc_neg)
    # A >= 0: value -A / rc, gradient of -A * rc / sg(rc)^2 = weight A / r (0 where rc is clipped)
    rc_pos = torch.minimum(ratio, upper)
    pos_dual = rc_pos * c < 1.0  # 1 / rc > c without dividing by a tiny rc
    rc_pos_sg = rc_pos.detach()
    loss_pos = torch.where(pos_dual, soft_dual, -adv * (rc_pos / rc_pos_sg) / rc_pos_sg)
    negative = adv < 0
    loss = torch.where(negative, loss_neg, loss_pos)
    clip_upper = (adv > 0) & (ratio > upper)
    clip_lower = negative & (ratio < lower)
    dual = (negative & neg_dual) | ((adv > 0) & pos_dual)
    return Surrogate(loss, ratio, clip_upper, clip_lower, dual)


SurrogateFn = Callable[[SurrogateInputs, dict[str, Any]], Surrogate]
