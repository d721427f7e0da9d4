"""The policy update of one RL step: token log-probs, and mini-batch optimizer steps with exact
gradient accumulation over token-budgeted micro-batches.

- :func:`sequence_logprobs` runs the model's base (``model.model``) once and scores only the response
  positions with :func:`archer.algo.token_logprobs` against ``model.lm_head.weight`` (chunked over the
  vocabulary, never the full ``[B, T, V]`` logits). Position t's log-prob comes from hidden state t-1.
- :func:`update_minibatch` performs one optimizer step: the loss normaliser (token count, sequence
  count, entropy-split sizes) is built once from the whole mini-batch, every micro-batch loss uses it,
  so the accumulated gradient equals the big batch's (ALGORITHMS.md section 1). A non-finite loss or
  gradient norm skips the step (gradients dropped, weights untouched) and is reported.

The policy loss (``archer.algo.losses``) carries the KL term, the entropy bonus (fixed or the adaptive
controller's alpha) and truncated IS; the Klear positive-sample NLL is added here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

ENTROPY_SPLIT_LOSSES = ("dtc", "aspo")
PLAIN_KEYS = ("loss", "pg_loss", "kl_loss", "entropy_loss")


def sequence_logprobs(model: Any, batch: dict[str, torch.Tensor], *, temperature: float = 1.0,
                      chunk_size: int | None = None, with_entropy: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-prob and entropy of the response tokens, as [B, T] tensors (0 off the mask)."""
    from archer.algo import token_logprobs

    input_ids, attn, mask = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    hidden = model.model(input_ids=input_ids, attention_mask=attn).last_hidden_state  # [B, T, d]
    sel = mask[:, 1:] != 0  # [B, T-1]: predict token t+1 from hidden t
    h = hidden[:, :-1][sel]  # [N, d]
    labels = input_ids[:, 1:][sel]  # [N]
    lp, ent = token_logprobs(h, model.lm_head.weight, labels, chunk_size=chunk_size, temperature=temperature)
    out_lp = torch.zeros(mask.shape, dtype=lp.dtype, device=lp.device)  # [B, T]
    out_lp[:, 1:][sel] = lp
    out_ent = None
    if with_entropy:
        out_ent = torch.zeros(mask.shape, dtype=ent.dtype, device=ent.device)
        out_ent[:, 1:][sel] = ent  # keeps its gradient (entropy bonus); detach for the token split
    return out_lp, out_ent


@dataclass
class UpdateSettings:
    loss: str
    agg: str
    loss_params: dict[str, Any]
    entropy_coef: float = 0.0
    pos_nll_coef: float = 0.0
    max_reward: float = 1.0
    max_len: float | None = None
    grad_clip: float = 1.0
    temperature: float = 1.0
    chunk_size: int | None = None
    tis_cap: float | None = None


def _slice(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """Rows of a packed batch, trimmed to the longest row (less padding per micro-batch)."""
    idx = torch.tensor(rows, dtype=torch.long)
    width = int(batch["attention_mask"][idx].sum(-1).max())
    return {k: v[idx][:, :width] if v.dim() == 2 else v[idx] for k, v in batch.items()}


def update_minibatch(model: Any, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                     micro: list[list[int]], s: UpdateSettings, *, dist: bool = False) -> dict[str, float]:
    """One optimizer step over the rows in ``micro`` (a list of micro-batches of row indices).

    ``batch`` holds the packed rows plus ``old_log_prob`` [B, T], ``advantages`` [B], ``rewards`` [B]
    and optionally ``ref_log_prob`` / ``rollout_log_prob`` [B, T]. Returns token-weighted metrics;
    ``skipped_nonfinite`` is 1 when the step was dropped because of a NaN/inf loss or gradient.

    ``dist=True`` (data parallel, replicated model, ``archer.train.rl_dist``): ``micro`` holds this
    rank's rows of the mini-batch (may be empty). The normaliser and the positive-NLL token count are
    all-reduced first, the NaN/inf skip is agreed by all ranks, gradients are summed over ranks before
    clipping, and metrics are merged, so every rank takes the step a single process would take on all
    rows. Every rank must call it the same number of times.
    """
    from archer.algo.aggregation import loss_normalizer
    from archer.algo.losses import compute_policy_loss
    from archer.algo.regularizers import positive_nll_loss

    parts = [_slice(batch, rows) for rows in micro if rows]
    quantile = s.loss_params.get("entropy_quantile", 0.8) if s.loss in ENTROPY_SPLIT_LOSSES else None
    pos_tokens = float(sum(((p["rewards"] >= s.max_reward).unsqueeze(-1) & (p["response_mask"] != 0)).sum()
                           for p in parts))
    if dist:
        from archer.distributed.fsdp import all_reduce_sum, global_loss_normalizer
        from archer.train import rl_dist

        device = next(model.parameters()).device
        norm = global_loss_normalizer([p["response_mask"] for p in parts], max_len=s.max_len,
                                      entropy_quantile=quantile, device=device)
        pos_tokens = all_reduce_sum(pos_tokens, device)
    else:
        norm = loss_normalizer([p["response_mask"] for p in parts], max_len=s.max_len, entropy_quantile=quantile)
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}  # token-weighted metrics
    plain: dict[str, float] = {}  # loss values: each micro-batch's is already its share of the total
    ratio_max = 0.0
    nonfinite = False  # a flag, not an early return: under dist every rank must reach the collectives
    for p in parts:
        mask = p["response_mask"]
        logp, ent = sequence_logprobs(model, p, temperature=s.temperature, chunk_size=s.chunk_size)
        params = dict(s.loss_params)
        if s.tis_cap is not None and "rollout_log_prob" in p:
            params.update(rollout_log_prob=p["rollout_log_prob"], tis_cap=s.tis_cap)
        # the bonus needs the entropy's gradient; the dtc/aspo split only reads its value
        loss, metrics = compute_policy_loss(
            s.loss, log_prob=logp, old_log_prob=p["old_log_prob"], advantages=p["advantages"],
            response_mask=mask, entropy=ent if s.entropy_coef > 0 else ent.detach(),
            ref_log_prob=p.get("ref_log_prob"), agg=s.agg, loss_normalizer=norm,
            entropy_coef=s.entropy_coef, **params)
        if s.pos_nll_coef > 0:
            nll = positive_nll_loss(logp, mask, p["rewards"], coef=s.pos_nll_coef, max_reward=s.max_reward,
                                    total_tokens=pos_tokens)
            loss = loss + nll
            plain["pos_nll"] = plain.get("pos_nll", 0.0) + float(nll.detach())
        if not torch.isfinite(loss):
            nonfinite = True
            break
        loss.backward()
        n = metrics.get("num_tokens", float(mask.sum()))
        ratio_max = max(ratio_max, metrics.get("ratio_max", 0.0))
        for k, v in metrics.items():
            if k in PLAIN_KEYS:
                plain[k] = plain.get(k, 0.0) + v
            elif k not in ("num_tokens", "num_seqs", "ratio_max") and math.isfinite(v):
                sums[k] = sums.get(k, 0.0) + n * v
        sums["entropy"] = sums.get("entropy", 0.0) + float((ent.detach() * mask).sum())
    if dist:
        nonfinite = rl_dist.any_rank(nonfinite, device)
    if nonfinite:
        optimizer.zero_grad(set_to_none=True)
        return {"skipped_nonfinite": 1.0}
    if dist:  # every rank's loss is its share of the global one: the summed gradient is the global one
        rl_dist.allreduce_grads(model)
        sums, plain, ratio_max = rl_dist.merge_update_metrics(sums, plain, ratio_max)
    total = max(norm.tokens, 1.0)
    out = {k: v / total for k, v in sums.items()}
    out["ratio_max"] = ratio_max
    out.update(plain)
    out["loss"] = out.get("loss", 0.0) + plain.get("pos_nll", 0.0)
    params_with_grad = [q for q in model.parameters() if q.grad is not None]
    if params_with_grad:
        grad_norm = torch.nn.utils.clip_grad_norm_(params_with_grad, s.grad_clip)
    else:
        grad_norm = torch.tensor(0.0)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return dict(out, skipped_nonfinite=1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return dict(out, skipped_nonfinite=0.0, grad_norm=float(grad_norm))
