"""Float64 transcriptions of the released ``aspo``, ``dtc`` and ``gppo`` losses (test reference).

Written from the public training code of the papers, in this file's own words, deliberately in a
different shape from :mod:`archer.algo`: one response at a time, as the released runs fed the actor one
sequence per micro-batch, with the released code's own clamp/where formulation of each branch. The
tests (``test_released_reference.py``) compare :func:`archer.algo.compute_policy_loss` with these
functions, value and gradient with respect to ``log_prob``, to ~1e-10.

Sources (read at these commits):

- ASPO, Archer2.0 (arXiv 2510.06062): ``github.com/wizard-III/Archer2.0`` at
  ``b08d963d5d65909ef1f24dba2f382006d0be33e1``: ``verl/trainer/ppo/core_algos.py``
  (``compute_policy_loss_archer``, ``agg_loss``, ``kl_penalty``), ``verl/workers/actor/dp_actor.py``
  (``update_policy``: entropy split, KL, accumulation), ``verl/utils/torch_functional.py``
  (``masked_mean``), ``scripts/train/run_archer2.0_qwen2.5_1.5b_{math,code}.sh``.
- DTC, Archer (arXiv 2507.15778): ``github.com/wizard-III/ArcherCodeR`` at
  ``8a1785beff0749a5b5b7f3d8751cd19c1d0e570a``: the same three files (``compute_policy_loss`` with
  ``use_token_entropy_separate``) and ``scripts/train/run_archer_qwen2.5_1.5b_code.sh``.
- GPPO, Klear-Reasoner (arXiv 2508.07629): ``github.com/suu990901/KlearReasoner`` at
  ``5d2d0b8c5cde8527bfcd681333527562408c961e``: ``verl/trainer/ppo/core_algos.py``
  (``compute_gppo_loss``, imported as the actor's policy loss in ``verl/workers/actor/dp_actor.py``)
  and ``recipe/dapo/perf_run_dapo_ours_math.sh``.

What the released runs compute (and these functions reproduce):

- Entropy split, per response: ``q = nanquantile(H over the response's tokens, 0.8)`` (linear); a
  token with ``H <= q`` is low-entropy, ``H > q`` high-entropy. (The released variable named
  ``high_entropy_mask`` holds the *low*-entropy tokens; the clip values are paired accordingly.)
- Aggregation: ``loss_agg_mode=token-mean`` inside a micro-batch of one sequence
  (``ppo_micro_batch_size_per_gpu=1``, no dynamic batch size), each micro-batch's loss divided by the
  accumulation count, gradients averaged over ranks: the mean over responses of each response's token
  mean (archer's ``seq-mean-token-mean``). The KL parts likewise: per response, a token mean over the
  response's low- (high-) entropy tokens, then the mean over responses (archer's ``kl_norm=response``).
- Token means use ``masked_mean = sum(x m) / (sum(m) + 1e-8)``.
- GPPO (Klear): ``loss_agg_mode=token-mean`` with dynamic batch sizes: each micro-batch's token mean
  times its share of the mini-batch's sequences. With the whole mini-batch in one micro-batch this is
  the mini-batch token mean, which is what :func:`gppo_loss` computes.

Where archer deliberately differs (listed in docs/ALGORITHMS.md, "Released code vs archer"):

1. The ``+1e-8`` in the denominators: archer divides by the exact count (at least 1). The relative
   difference is about ``1e-8 / tokens``; the tests compare with ``eps=0`` and check the released
   ``eps`` stays within that bound.
2. Archer2.0's policy loss calls ``torch.where`` on the split mask ``(H <= q) & response_mask``; with
   verl's integer ``attention_mask`` that mask is an integer tensor, which ``torch.where`` rejects
   (checked with torch 2.13). The reference uses the boolean mask, the evident intent.
3. Archer2.0's actor reads ``config.use_token_entropy_separate`` with attribute access when
   ``use_kl_loss`` is on, but neither the released scripts nor ``ppo_trainer.yaml`` define that key
   (the config is in struct mode), so the KL branch as released does not run. Archer applies the KL the
   script's settings describe (k3, 0.001 on low-entropy tokens, ``high_entropy_kl_loss_scale_coef`` 0 on
   high-entropy ones), computed as ArcherCodeR's reachable branch does; that is what this reference
   does for both losses.
4. Archer2.0 hardcodes ASPO's clip values in the actor (0.2 / 0.4, dual clip 3 for both signs): the
   script's ``low/high_entropy_clip_ratio_*`` settings are not read by that path. Archer takes them
   from ``loss_params`` (defaults equal to the hardcoded values).
5. Klear's GPPO computes ``exp(logp - old)`` without the [-20, 20] clamp the other released losses use;
   archer clamps for every loss (identical for ``|logp - old| < 20``, the range tested).
6. Klear's released GPPO has no ``beta_low``/``beta_high``: it is archer's ``gppo`` with both betas 1,
   the case tested here. Other betas are archer's parametrisation (ALGORITHMS.md section 2).
7. Klear's dynamic-batch weighting of micro-batch token means (see above) is exact only for one
   micro-batch per mini-batch; archer divides every micro-batch by the whole mini-batch's token count
   (``LossNormalizer``), the token mean the paper's objective states.
8. A response with no trained token: the released code counts it in the accumulation divisor; archer's
   ``seq-mean-*`` modes do not (it neither contributes nor dilutes). Such responses do not occur in the
   released pipeline (every response has at least an end token); the tests use non-empty responses.
"""

from __future__ import annotations

import torch

RELEASED_EPS = 1e-8  # verl masked_mean's denominator guard


def masked_mean(x: torch.Tensor, m: torch.Tensor, eps: float = RELEASED_EPS) -> torch.Tensor:
    """verl's masked mean: ``sum(x m) / (sum(m) + eps)``; ``eps=0`` gives archer's exact count, at least 1
    (an empty subset, e.g. the high-entropy tokens of a one-token response, then contributes 0)."""
    m = m.to(x.dtype)
    return (x * m).sum() / (m.sum() + eps if eps > 0 else m.sum().clamp(min=1.0))


def low_var_kl(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """``kl_penalty(..., "low_var_kl")``: ``e^d - d - 1`` with ``d = ref - logp`` clamped to [-20, 20], the
    result clamped to [-10, 10]."""
    d = (ref_log_prob - log_prob).clamp(-20.0, 20.0)
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


def released_split(
    entropy: torch.Tensor, mask: torch.Tensor, quantile: float = 0.8
) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) boolean masks of one response [1, T]: ``H <= q`` and ``H > q`` among its tokens."""
    keep = mask.bool()
    h = torch.where(keep, entropy.detach(), torch.tensor(float("nan"), dtype=entropy.dtype))
    q = torch.nanquantile(h, quantile, dim=-1, keepdim=True)
    return (h <= q) & keep, (h > q) & keep


def _ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    diff = log_prob - old_log_prob
    return torch.exp(diff.clamp(-20.0, 20.0) if clamp else diff)


def _rows(*tensors: torch.Tensor):
    """One-sequence micro-batches: yields each row of every tensor as [1, T]."""
    for i in range(tensors[0].shape[0]):
        yield tuple(t[i : i + 1] if t is not None else None for t in tensors)


def _split_kl(log_prob, ref_log_prob, low, high, kl_coef, high_kl_coef, eps) -> torch.Tensor:
    kld = low_var_kl(log_prob, ref_log_prob)
    return kl_coef * masked_mean(kld, low, eps) + high_kl_coef * masked_mean(kld, high, eps)


def aspo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    entropy: torch.Tensor,
    ref_log_prob: torch.Tensor | None = None,
    *,
    low_clip: float = 0.2,
    high_clip: float = 0.4,
    c: float = 3.0,
    quantile: float = 0.8,
    kl_coef: float = 0.001,
    high_kl_coef: float = 0.0,
    eps: float = RELEASED_EPS,
) -> torch.Tensor:
    """Archer2.0's ASPO step loss over a mini-batch [B, T] (advantages [B, T]), one response per micro-batch.

    Per token, ``e`` the token's clip (``low_clip`` for low-entropy tokens, ``high_clip`` otherwise):
    negative advantage: ``rn = max(r, 1 - e)``; where ``rn > c`` the loss is ``-A c logp`` (c a constant,
    so the gradient survives: the soft dual clip), else ``-A rn``. Otherwise (``A >= 0``, the flip):
    ``rp = min(r, 1 + e)``; where ``1 / rp > c`` the loss is ``-A c logp``, else
    ``-A (rp / sg(rp)) / sg(rp)`` (value ``-A / rp``).
    """
    total = log_prob.new_zeros(())
    n = log_prob.shape[0]
    for lp, old, adv, m, h, ref in _rows(log_prob, old_log_prob, advantages, mask, entropy, ref_log_prob):
        low, high = released_split(h, m, quantile)
        r = _ratio(lp, old)
        r_neg = torch.where(low, torch.clamp(r, min=1 - low_clip), torch.clamp(r, min=1 - high_clip))
        r_pos = torch.where(low, torch.clamp(r, max=1 + low_clip), torch.clamp(r, max=1 + high_clip))

        neg_over = r_neg > torch.clamp(r_neg, max=c)
        neg = torch.where(neg_over, -adv * torch.clamp(r_neg, max=c).detach() * lp, -adv * r_neg)

        inv = 1 / r_pos
        pos_over = inv > torch.clamp(inv, max=c)
        pos_flip = -adv * (r_pos / r_pos.detach()) / r_pos.detach()
        pos = torch.where(pos_over, -adv * torch.clamp(inv, max=c).detach() * lp, pos_flip)

        token_loss = torch.where(adv < 0, neg, pos)
        loss = masked_mean(token_loss, m, eps)
        if ref is not None:
            loss = loss + _split_kl(lp, ref, low, high, kl_coef, high_kl_coef, eps)
        total = total + loss / n  # gradient accumulation over the n one-sequence micro-batches
    return total


def dtc_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    entropy: torch.Tensor,
    ref_log_prob: torch.Tensor | None = None,
    *,
    low_clip: tuple[float, float] = (0.2, 0.2),
    high_clip: tuple[float, float] = (0.5, 0.5),
    c: float = 10.0,
    quantile: float = 0.8,
    kl_coef: float = 0.001,
    high_kl_coef: float = 0.0,
    eps: float = RELEASED_EPS,
) -> torch.Tensor:
    """ArcherCodeR's DTC step loss over a mini-batch [B, T], one response per micro-batch.

    PPO-clip with per-token bounds (``low_clip`` = (eps_low, eps_high) for low-entropy tokens,
    ``high_clip`` for high-entropy ones), then the hard dual clip ``min(., -A c)`` for ``A < 0``; the KL
    parts as in :func:`aspo_loss`.
    """
    total = log_prob.new_zeros(())
    n = log_prob.shape[0]
    for lp, old, adv, m, h, ref in _rows(log_prob, old_log_prob, advantages, mask, entropy, ref_log_prob):
        low, high = released_split(h, m, quantile)
        r = _ratio(lp, old)
        r_clip = torch.where(
            low,
            torch.clamp(r, 1 - low_clip[0], 1 + low_clip[1]),
            torch.clamp(r, 1 - high_clip[0], 1 + high_clip[1]),
        )
        ppo = torch.maximum(-adv * r, -adv * r_clip)
        dual = torch.min(-adv * c, ppo)
        token_loss = torch.where(adv < 0, dual, ppo)
        loss = masked_mean(token_loss, m, eps)
        if ref is not None:
            loss = loss + _split_kl(lp, ref, low, high, kl_coef, high_kl_coef, eps)
        total = total + loss / n
    return total


def gppo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    c: float = 10.0,
    eps: float = RELEASED_EPS,
) -> torch.Tensor:
    """Klear's GPPO over one micro-batch that is the whole mini-batch [B, T] (token mean).

    The clip bounds are themselves tensors proportional to the ratio, ``(1 -+ eps) r / sg(r)``, so a
    clipped token keeps the value of the bound and the gradient ``(1 -+ eps) A``; then PPO's max and, for
    ``A < 0``, the hard dual clip ``min(., -A c)``. No clamp on ``logp - old`` (difference 5 above).
    """
    r = _ratio(log_prob, old_log_prob, clamp=False)
    lower = (1 - clip_low) / r.detach() * r
    upper = (1 + clip_high) / r.detach() * r
    clipped = -advantages * torch.clamp(r, lower, upper)
    ppo = torch.maximum(-advantages * r, clipped)
    token_loss = torch.where(advantages < 0, torch.min(-advantages * c, ppo), ppo)
    return masked_mean(token_loss, mask, eps)
