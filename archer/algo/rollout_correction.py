"""Rollout correction: weights and masks for the gap between the rollout engine and the trainer
(registry :data:`ROLLOUT_CORRECTIONS`, ALGORITHMS.md section 3b).

A rollout engine with its own copy of the weights (vLLM, bf16 kernels, a stale worker) samples from
``pi_rollout``, which differs slightly from the trainer's ``pi_old`` of the same weights. Every entry
here reads the same per-token log-ratio, **old minus rollout** (``log pi_old(y_t) - log pi_rollout(y_t)``,
the trainer's recomputed sampling-policy log-prob against the engine's; never the current policy, so the
weights are constants of the update), and returns a per-token factor ``w`` [B, T] that multiplies each
token's policy loss:

- ``none``: ``w = 1``.
- ``token_tis``: ``min(rho_t, cap)`` (Yao et al. 2025, "Your efficient RL framework secretly brings you
  off-policy RL training"); archer's default, ``cap`` is ``algo.tis_cap``.
- ``seq_tis``: ``min(rho_seq, cap)`` with ``rho_seq = exp(sum_t log rho_t)`` over the response's trained
  tokens (verl ``rollout_is=sequence``).
- ``token_mis`` / ``seq_mis``: masked IS, ``rho * 1[rho <= cap]``: a token / response whose ratio exceeds
  the cap drops out instead of being truncated (Liu, Li et al. 2025, "When speed kills stability").
- ``token_rs`` / ``seq_rs`` / ``geo_rs``: rejection sampling, ``w = 1[lower <= r <= upper]`` with ``r``
  the token ratio, the sequence ratio or the geometric mean ``exp(mean_t log rho_t)`` of the response
  (verl ``rollout_rs=token/sequence/geometric``; ``lower`` defaults to ``1 / upper``).
- ``icepop``: ``rho_t * 1[lower <= rho_t <= upper]`` per token (Ling team 2025, Ring-1T, "Every step
  evolves"; OpenRLHF ``vllm_is_correction_type=icepop`` uses the same weight).

Conventions shared by every entry:

- The factor is detached: it reweights or masks the gradient of the policy loss and has no gradient of
  its own. Rejected tokens get the factor 0, hence a loss of exactly 0 and a gradient of exactly 0.
- The aggregation normaliser is unchanged: a rejected token still counts in the token-mean's denominator
  (as a token with zero loss), exactly as a truncated weight does not change it. verl instead removes
  rejected tokens from its ``response_mask``, so its denominators shrink; archer's choice keeps the
  mini-batch normaliser independent of the correction, so gradient accumulation stays exact with no
  extra pass, at the price of a step smaller by the rejected share.
- Sequence sums and means run over the response's trained tokens (``response_mask``; tool observations
  are not in it). Thresholds are compared in log space; ratios are ``exp`` of the log-ratio clamped to
  ``[-20, 20]`` (the bound verl uses), so nothing overflows; a sequence ratio below ``exp(-20)`` counts as
  ``exp(-20)`` in a weight. Off the mask the factor is of no consequence (the loss there is already 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

SAFETY_BOUND = 20.0  # log-ratios are clamped to [-20, 20] before exp (exp(20) ~ 4.9e8)
LOGR_BOUND = 1e4  # each token's log-ratio first, so sums stay finite (thresholds are far inside)


@dataclass(frozen=True)
class Correction:
    """What an entry returns: the factor and which trained tokens it truncated or rejected.

    ``weight`` [B, T] detached; ``truncated`` [B, T] bool, trained tokens whose factor was lowered to the
    cap; ``rejected`` [B, T] bool, trained tokens whose factor was set to 0 by the rule.
    """

    weight: torch.Tensor
    truncated: torch.Tensor
    rejected: torch.Tensor


CorrectionFn = Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], Correction]


@dataclass(frozen=True)
class CorrectionSpec:
    """A registered correction: its function ``fn(log_ratio, mask, params)`` and parameter defaults."""

    fn: CorrectionFn
    defaults: dict[str, Any] = field(default_factory=dict)

    def resolve(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The entry's parameters: ``params`` over the defaults; unknown or out-of-range ones raise."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} for rollout correction {name!r}; valid: {sorted(self.defaults)}"
            )
        p = {**self.defaults, **params}
        for key in ("cap", "upper") + (("lower",) if p.get("lower") is not None else ()):
            if key in p and not (_is_number(p[key]) and p[key] > 0):
                raise ValueError(
                    f"rollout correction {name!r}: parameter {key}={p[key]!r} must be a number > 0"
                )
        if "upper" in p:
            p["lower"] = 1.0 / p["upper"] if p["lower"] is None else p["lower"]
            if not p["lower"] <= p["upper"]:
                raise ValueError(
                    f"rollout correction {name!r}: lower={p['lower']!r} must be <= upper={p['upper']!r}"
                )
        return p


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ratio(log_ratio: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND))


def _seq_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """[B, 1] sum (or mean) of the log-ratio over each response's trained tokens (empty: 0)."""
    total = torch.where(mask, log_ratio, 0.0).sum(-1, keepdim=True)
    return total / mask.sum(-1, keepdim=True).clamp(min=1) if mean else total


def _none(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """No correction: ``w = 1``."""
    no = torch.zeros_like(mask)
    return Correction(torch.ones_like(log_ratio), no, no)


def token_tis(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """Token-level truncated IS (Yao et al. 2025): ``w_t = min(rho_t, cap)``, ``rho_t = exp(old - rollout)``.

    The same numbers as :func:`archer.algo.regularizers.truncated_is_weights` (archer's behaviour before
    the registry): biased, low variance; small ratios are kept, only large ones are truncated."""
    w = _ratio(log_ratio).clamp(max=p["cap"])
    return Correction(w, mask & (log_ratio > math.log(p["cap"])), torch.zeros_like(mask))


def seq_tis(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """Sequence-level truncated IS: every token of a response gets ``min(exp(sum_t log rho_t), cap)``.

    The product of the token ratios, computed as the exp of the clamped log-sum (no overflow); the
    unbiased sequence weight, truncated (verl ``rollout_is=sequence``, cap 2)."""
    s = _seq_log_ratio(log_ratio, mask)  # [B, 1]
    w = _ratio(s).clamp(max=p["cap"]).expand_as(log_ratio)
    return Correction(w, mask & (s > math.log(p["cap"])), torch.zeros_like(mask))


def token_mis(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """Token-level masked IS (Liu, Li et al. 2025): ``w_t = rho_t * 1[rho_t <= cap]``; a token whose ratio
    exceeds the cap drops out of the loss instead of being truncated."""
    out = log_ratio > math.log(p["cap"])
    w = torch.where(out, 0.0, _ratio(log_ratio))
    return Correction(w, torch.zeros_like(mask), mask & out)


def seq_mis(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """Sequence-level masked IS (Liu, Li et al. 2025): ``w = rho_seq * 1[rho_seq <= cap]`` for every token
    of the response, ``rho_seq = exp(sum_t log rho_t)``; a response above the cap drops out whole."""
    s = _seq_log_ratio(log_ratio, mask)  # [B, 1]
    out = (s > math.log(p["cap"])).expand_as(log_ratio)
    w = torch.where(out, 0.0, _ratio(s).expand_as(log_ratio))
    return Correction(w, torch.zeros_like(mask), mask & out)


def _reject(
    r_log: torch.Tensor, log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]
) -> Correction:
    """``w = 1[lower <= exp(r_log) <= upper]`` (compared in log space), broadcast to [B, T]."""
    keep = (r_log >= math.log(p["lower"])) & (r_log <= math.log(p["upper"]))
    keep = keep.expand_as(log_ratio)
    return Correction(keep.to(log_ratio.dtype), torch.zeros_like(mask), mask & ~keep)


def token_rs(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """Token rejection sampling (verl ``rollout_rs=token``): ``w_t = 1[lower <= rho_t <= upper]``."""
    return _reject(log_ratio, log_ratio, mask, p)


def seq_rs(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """Sequence rejection sampling (verl ``rollout_rs=sequence``): the whole response is kept when
    ``lower <= exp(sum_t log rho_t) <= upper``, else every token gets 0."""
    return _reject(_seq_log_ratio(log_ratio, mask), log_ratio, mask, p)


def geo_rs(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """Geometric-mean rejection sampling (verl ``rollout_rs=geometric``): the response is kept when
    ``lower <= exp(mean_t log rho_t) <= upper``; length-invariant, hence the tight default bounds
    ``[1/1.001, 1.001]`` of verl's geo-RS presets."""
    return _reject(_seq_log_ratio(log_ratio, mask, mean=True), log_ratio, mask, p)


def icepop(log_ratio: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]) -> Correction:
    """IcePop (Ling team 2025, Ring-1T): ``w_t = rho_t * 1[lower <= rho_t <= upper]``; tokens whose
    train/rollout ratio leaves ``[lower, upper]`` get no gradient, the others are IS-weighted (defaults
    ``[0.5, 5]``, OpenRLHF's ``vllm_is_truncated_threshold`` for icepop)."""
    keep = (log_ratio >= math.log(p["lower"])) & (log_ratio <= math.log(p["upper"]))
    w = torch.where(keep, _ratio(log_ratio), 0.0)
    return Correction(w, torch.zeros_like(mask), mask & ~keep)


ROLLOUT_CORRECTIONS: dict[str, CorrectionSpec] = {
    "none": CorrectionSpec(_none),
    "token_tis": CorrectionSpec(token_tis, {"cap": 2.0}),
    "seq_tis": CorrectionSpec(seq_tis, {"cap": 2.0}),
    "token_mis": CorrectionSpec(token_mis, {"cap": 2.0}),
    "seq_mis": CorrectionSpec(seq_mis, {"cap": 2.0}),
    "token_rs": CorrectionSpec(token_rs, {"lower": None, "upper": 2.0}),
    "seq_rs": CorrectionSpec(seq_rs, {"lower": None, "upper": 2.0}),
    "geo_rs": CorrectionSpec(geo_rs, {"lower": None, "upper": 1.001}),
    "icepop": CorrectionSpec(icepop, {"lower": 0.5, "upper": 5.0}),
}
DEFAULT_CORRECTION = "token_tis"


def correction_names() -> list[str]:
    return sorted(ROLLOUT_CORRECTIONS)


def correction_in_force(name: str | None, tis_cap: float | None) -> str:
    """The entry a run uses: ``name``, or when it is None today's rule: ``token_tis`` when a TIS cap is
    set (``algo.tis_cap``, filled from ``rollout.default_tis_cap`` for engines with their own weights),
    else ``none``."""
    if name is not None:
        return name
    return DEFAULT_CORRECTION if tis_cap is not None else "none"


def rollout_correction(
    name: str,
    old_log_prob: torch.Tensor,
    rollout_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    **params: Any,
) -> Correction:
    """Entry ``name`` of :data:`ROLLOUT_CORRECTIONS` on [B, T] log-probs (see the module docstring).

    The log-ratio ``old - rollout`` is taken in float32 (float64 if ``old_log_prob`` is float64), detached,
    with positions off ``response_mask`` set to 0. Unknown names or parameters raise ``ValueError``
    listing the valid ones.
    """
    if name not in ROLLOUT_CORRECTIONS:
        raise ValueError(f"unknown rollout correction {name!r}; valid: {correction_names()}")
    spec = ROLLOUT_CORRECTIONS[name]
    p = spec.resolve(name, params)
    dtype = torch.float64 if old_log_prob.dtype == torch.float64 else torch.float32
    mask = response_mask != 0
    # a -inf log-prob on either side gives a finite log-ratio: no inf - inf = NaN in a sequence sum
    diff = (old_log_prob.detach().to(dtype) - rollout_log_prob.detach().to(dtype)).clamp(
        -LOGR_BOUND, LOGR_BOUND
    )
    log_ratio = torch.where(mask, diff, torch.zeros((), dtype=dtype, device=diff.device))
    c = spec.fn(log_ratio, mask, p)
    return Correction(c.weight.detach(), c.truncated, c.rejected)
