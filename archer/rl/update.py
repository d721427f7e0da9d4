"""The policy update of one RL step: token log-probs, and mini-batch optimizer steps with exact
gradient accumulation over token-budgeted micro-batches (:func:`archer.rl.batch.micro_batches`).

- :class:`TokenScorer` wraps the policy (any Hugging Face causal LM, LoRA or not) and returns the
  per-token log-prob and entropy of the response tokens, as [B, T] tensors. It runs the model's
  decoder once and scores only the response positions with :func:`archer.algo.token_logprobs` against
  the output embedding (chunked over the vocabulary, never the full ``[B, T, V]`` logits; an output
  bias is one extra column). Position t's log-prob comes from hidden state t-1. Models whose logits are
  not a plain projection use the full forward (:func:`archer.models.loader.lm_head`). It is a module so
  that FSDP2 can shard it as the root (its hooks then run around the whole computation).
  With ``pack_sequences`` the rows of a micro-batch run concatenated without padding (positions
  restarting per row, block-diagonal causal attention built by transformers from the positions; one
  packed row for flash attention, rows as wide as the longest row for sdpa/eager).
- :func:`update_minibatch` performs one optimizer step: the loss normaliser (token count, sequence
  count, entropy-split sizes) is built once from the whole mini-batch (over every rank, by the
  :class:`~archer.distributed.world.World`), every micro-batch loss uses it, so the accumulated
  gradient equals the big batch's (ALGORITHMS.md section 1). A non-finite loss or gradient norm skips
  the step on every rank (gradients dropped, weights untouched) and is reported.

The policy loss (``archer.algo.losses``) carries the KL term, the entropy bonus (fixed or the adaptive
controller's alpha) and the rollout correction (``archer.algo.rollout_correction``, truncated IS by
default); the Klear positive-sample NLL is added here.
"""

from __future__ import annotations

import inspect
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from archer.algo import token_logprobs
from archer.algo.losses import POLICY_LOSSES, compute_policy_loss, split_by_entropy
from archer.algo.regularizers import positive_nll_loss
from archer.algo.rollout_correction import correction_in_force
from archer.distributed.world import World
from archer.models.loader import lm_head, unwrap
from archer.rl.batch import fill_rows
from archer.rollout.hf import cache_kwarg, new_cache

PLAIN_KEYS = ("loss", "pg_loss", "kl_loss", "entropy_loss")
SEQ_KEYS = ("rc_seq_rejected_frac",)  # shares of responses: averaged over responses, not tokens
FORK_QUANTILE = 0.8  # "fork" tokens: above each response's 80th entropy percentile (Wang et al. 2025, 80/20)


class TokenScorer(torch.nn.Module):
    """Per-token log-probs and entropies of a causal LM's response tokens (see the module docstring).

    Shared prompts: the rows of a GRPO group repeat one prompt ``n`` times. Given ``prompt_len`` and
    ``group`` ([B] each), the scorer runs each distinct prompt of the micro-batch once (left-padded,
    with a KV cache), copies its cache to the rows of its group and runs only the responses on top, so
    a prompt's forward and backward cost is paid once instead of ``n`` times. The result equals the
    padded forward up to float rounding (tested per architecture, gradients included). It is used
    when the decoder takes a KV cache and activation checkpointing is not active in training (HF's
    checkpointed layers drop the cache); otherwise, and without ``group``, rows run padded.

    Packed rows (``pack_sequences``, ``trainer.pack_sequences``): the micro-batch's rows run concatenated,
    positions restarting per row, the attention block-diagonal causal, so (almost) no padding is
    computed; each row's log-probs are read back from its span. Flash attention gets one packed row;
    sdpa and eager, whose masks are dense, get packed rows as wide as the longest row (see
    ``_packed_hidden``). It replaces prompt sharing
    (each row then runs its own prompt) and applies where :func:`pack_unsupported` finds nothing
    against the model; elsewhere rows run as above, and the reason is logged once through ``log``
    (default: a warning). Equal to the padded forward up to float rounding (tests/rl/test_packing.py).
    """

    def __init__(
        self,
        policy: Any,
        share_prompts: bool = True,
        pack_sequences: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.share_prompts = share_prompts
        self.pack_sequences = pack_sequences
        self.log = log or (lambda text: warnings.warn(text, stacklevel=3))
        self._no_pack: str | None = None  # why packing does not apply to this model ("" when it does)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        *,
        temperature: float = 1.0,
        chunk_size: int | None = None,
        with_entropy: bool = True,
        prompt_len: torch.Tensor | None = None,
        group: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:

        head = lm_head(self.policy)
        packed = self.pack_sequences and self._can_pack(head)
        if head.decoder is None:
            rows, cols, lp, ent = self._full_logits(input_ids, attention_mask, response_mask, temperature)
        else:
            if packed:
                rows, cols, h, labels = self._packed_hidden(
                    head.decoder, input_ids, attention_mask, response_mask
                )
            elif group is not None and prompt_len is not None and self._can_share(head.decoder):
                rows, cols, h, labels = self._shared_prompt_hidden(
                    head.decoder, input_ids, attention_mask, response_mask, prompt_len, group
                )
            else:
                hidden = head.decoder(
                    input_ids=input_ids, attention_mask=attention_mask, use_cache=False
                ).last_hidden_state  # [B, T, d]
                # [N], [N]: position t predicts token t+1
                rows, cols = (response_mask[:, 1:] != 0).nonzero(as_tuple=True)
                h, labels, cols = hidden[rows, cols], input_ids[rows, cols + 1], cols + 1  # [N, d], [N], [N]
            lp, ent = _project(h, head, labels, chunk_size, temperature)
        out_lp = torch.zeros(response_mask.shape, dtype=lp.dtype, device=lp.device)  # [B, T]
        out_lp[rows, cols] = lp
        out_ent = None
        if with_entropy:
            out_ent = torch.zeros(response_mask.shape, dtype=ent.dtype, device=ent.device)  # [B, T]
            out_ent[rows, cols] = ent  # keeps its gradient (entropy bonus); detach for the token split
        return out_lp, out_ent

    def packs(self) -> bool:
        """Whether this scorer runs packed rows (``pack_sequences`` on and the model able to)."""
        return self.pack_sequences and self._can_pack(lm_head(self.policy))

    def _can_pack(self, head: Any) -> bool:
        """Whether this model runs packed rows; the first time it cannot, the reason is logged (one line)."""
        if self._no_pack is None:
            self._no_pack = pack_unsupported(head) or ""
            if self._no_pack:
                self.log(f"trainer.pack_sequences: padded rows instead, {self._no_pack}")
        return not self._no_pack

    def _packed_hidden(
        self,
        decoder: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, hidden [N, d], labels [N]) of the trained tokens, the rows run packed.

        The right-padded rows' real tokens are placed one after another into packed rows, positions
        restarting at 0 per row, with no attention mask: transformers' mask builder finds the rows from
        the position resets and makes the attention block-diagonal causal
        (``transformers.masking_utils.find_packed_sequence_indices``). Flash-attention kernels read the
        resets as variable-length sequences of one packed row only, so they get one row of every real
        token. sdpa and eager take the mask dense (every query x key pair is computed), so there the
        rows fill packed rows as wide as the longest row (:func:`archer.rl.batch.fill_rows`): a few
        tail positions of padding (a segment of their own) instead of a quadratic attention over the
        whole micro-batch."""

        keep = attention_mask != 0  # [B, T] right-padded: the first lengths[b] columns of row b
        lengths = keep.sum(-1).tolist()  # [B]
        one_row = "flash" in str(getattr(decoder.config, "_attn_implementation", ""))
        slots = fill_rows(lengths, sum(lengths) if one_row else max(lengths))
        dev = input_ids.device
        slot, offset = [0] * len(lengths), [0] * len(lengths)
        used = []
        for r, members in enumerate(slots):
            total = 0
            for i in members:
                slot[i], offset[i], total = r, total, total + lengths[i]
            used.append(total)
        slot_t, offset_t = torch.tensor(slot, device=dev), torch.tensor(offset, device=dev)  # [B], [B]
        width = max(used)
        cols_all = torch.arange(width, device=dev)
        positions = (cols_all[None] - torch.tensor(used, device=dev)[:, None]).clamp(
            min=0
        )  # [R, W] the tails
        ids = torch.zeros(len(slots), width, dtype=input_ids.dtype, device=dev)  # [R, W]
        b, t = keep.nonzero(as_tuple=True)  # [S], [S]
        ids[slot_t[b], offset_t[b] + t] = input_ids[b, t]
        positions[slot_t[b], offset_t[b] + t] = t
        hidden = decoder(
            input_ids=ids, position_ids=positions, attention_mask=None, use_cache=False
        ).last_hidden_state  # [R, W, d]
        rows, cols = (response_mask[:, 1:] != 0).nonzero(as_tuple=True)  # [N], [N]: t predicts t+1
        return rows, cols + 1, hidden[slot_t[rows], offset_t[rows] + cols], input_ids[rows, cols + 1]

    def _can_share(self, decoder: Any) -> bool:
        if not self.share_prompts or cache_kwarg(decoder) is None:
            return False
        return not (
            self.training
            and any(getattr(m, "gradient_checkpointing", False) is True for m in decoder.modules())
        )

    def _shared_prompt_hidden(
        self,
        decoder: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        prompt_len: torch.Tensor,
        group: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, hidden [N, d], labels [N]) of the trained tokens, each distinct prompt run once."""

        dev = input_ids.device
        plen = prompt_len.long()  # [B]
        rlen = attention_mask.sum(-1).long() - plen  # [B] response tokens (padding excluded)
        uniq, inv = torch.unique(group, return_inverse=True)  # [U], [B]
        first = torch.full((len(uniq),), input_ids.shape[0], dtype=torch.long, device=dev)
        first = first.scatter_reduce(0, inv, torch.arange(len(inv), device=dev), reduce="amin")  # [U]
        upl = plen[first]  # [U]
        width = int(upl.max())
        col = torch.arange(width, device=dev)[None] - (width - upl)[:, None]  # [U, Lp] left padding
        p_mask = (col >= 0).long()  # [U, Lp]
        p_ids = input_ids[first].gather(1, col.clamp(min=0)) * p_mask  # [U, Lp]
        p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)  # [U, Lp]
        cache = new_cache(unwrap(self.policy))
        arg = cache_kwarg(decoder)
        out = decoder(
            input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, use_cache=True, **{arg: cache}
        )
        h_last = out.last_hidden_state[:, -1]  # [U, d]: predicts each response's first token
        cache.batch_select_indices(inv)  # every row gets its prompt's cache (differentiable indexing)
        r_width = max(int(rlen.max()), 1)
        j = torch.arange(r_width, device=dev)[None]  # [1, Lr]
        pos = (plen[:, None] + j).clamp(max=input_ids.shape[1] - 1)  # [B, Lr] columns in the packed layout
        live = j < rlen[:, None]  # [B, Lr]
        r_ids = input_ids.gather(1, pos) * live  # [B, Lr]
        r_mask = torch.cat([p_mask[inv], live.long()], dim=1)  # [B, Lp + Lr]
        r_pos = p_pos[inv, -1:] + 1 + j  # [B, Lr]
        out = decoder(
            input_ids=r_ids, attention_mask=r_mask, position_ids=r_pos, use_cache=True, **{arg: cache}
        )
        hidden = torch.cat([h_last[inv][:, None], out.last_hidden_state[:, :-1]], dim=1)  # [B, Lr, d]
        sel = live & (response_mask.gather(1, pos) != 0)  # [B, Lr] trained response tokens
        rows, js = sel.nonzero(as_tuple=True)  # [N], [N]
        return rows, plen[rows] + js, hidden[rows, js], r_ids[rows, js]

    def _full_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exact path for any model: its own logits (materialises [B, T, V])."""
        logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        rows, cols = (response_mask[:, 1:] != 0).nonzero(as_tuple=True)  # [N], [N]
        z = logits[rows, cols].float() / temperature  # [N, V]
        logp_all = torch.log_softmax(z, dim=-1)  # [N, V]
        lp = logp_all.gather(1, input_ids[rows, cols + 1][:, None]).squeeze(1)  # [N]
        ent = -(logp_all.exp() * logp_all).sum(-1)  # [N]
        return rows, cols + 1, lp, ent


PACKED_ATTENTION = (
    "sdpa",
    "eager",
    "flex_attention",
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
)
"""Attention implementations whose mask (or kernel) transformers makes block-diagonal from packed position_ids."""


def pack_unsupported(head: Any) -> str | None:
    """Why the model of ``head`` (:func:`archer.models.loader.lm_head`) cannot run packed rows; None when
    it can. Checked statically: a decoder (logits a plain projection) whose ``forward`` takes
    ``position_ids``, whose class builds its mask with ``transformers.masking_utils`` (which detects
    packed rows), an attention implementation of :data:`PACKED_ATTENTION`, and only full or sliding
    attention layers (recurrent or linear-attention layers would carry state from one row into the
    next). Limit: a decoder that imports the mask builder but bypasses it is not detected."""

    decoder = head.decoder
    if decoder is None:
        return "the model's logits are not a plain projection of its decoder's output"
    if "position_ids" not in inspect.signature(decoder.forward).parameters:
        return f"{type(decoder).__name__}.forward takes no position_ids"
    if not any(hasattr(sys.modules.get(c.__module__), "create_causal_mask") for c in type(decoder).__mro__):
        return f"{type(decoder).__name__} does not build its mask with transformers.masking_utils"
    config = getattr(decoder, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl not in PACKED_ATTENTION:
        return f"attention implementation {impl!r} is not one of {', '.join(PACKED_ATTENTION)}"
    other = sorted(set(getattr(config, "layer_types", None) or ()) - {"full_attention", "sliding_attention"})
    if other:
        return f"layers of type {', '.join(other)} would carry state from one row into the next"
    return None


def _project(
    h: torch.Tensor, head: Any, labels: torch.Tensor, chunk_size: int | None, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of ``labels`` [N] from hidden states ``h`` [N, d] through the head, in float32."""

    weight = head.weight  # [V, d]
    with torch.autocast(device_type=h.device.type, enabled=False):
        h = h.to(weight.dtype)
        if head.bias is not None:  # logits = [h, 1] @ [W, b].T
            h = torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)  # [N, d+1]
            weight = torch.cat([weight, head.bias.to(weight.dtype)[:, None]], dim=1)  # [V, d+1]
        return token_logprobs(h, weight, labels, chunk_size=chunk_size, temperature=temperature)


def sequence_logprobs(
    scorer: TokenScorer,
    batch: dict[str, torch.Tensor],
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-prob and entropy of the response tokens of a packed batch, as [B, T] tensors."""
    if not isinstance(scorer, TokenScorer):
        scorer = TokenScorer(scorer)
    return scorer(
        batch["input_ids"],
        batch["attention_mask"],
        batch["response_mask"],
        temperature=temperature,
        chunk_size=chunk_size,
        with_entropy=with_entropy,
    )


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
    rollout_correction: str | None = None  # None: token_tis when tis_cap is set, else none
    rollout_correction_params: dict[str, Any] = field(default_factory=dict)


def _slice(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """Rows of a packed batch, trimmed to the longest row (less padding per micro-batch)."""
    idx = torch.tensor(rows, dtype=torch.long)
    width = int(batch["attention_mask"][idx].sum(-1).max())
    return {k: v[idx][:, :width] if v.dim() == 2 else v[idx] for k, v in batch.items()}


def entropy_quantile_of(loss: str, params: dict[str, Any]) -> float | None:
    """The token-split quantile of an entropy-split loss (the registry's default unless set), else None."""

    spec = POLICY_LOSSES[loss]
    return spec.resolve(loss, dict(params))["entropy_quantile"] if spec.entropy_split else None


def _dummy_part(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One row with an empty response mask: a rank short of rows runs it so FSDP collectives line up."""
    part = _slice(batch, [0])
    part["response_mask"] = torch.zeros_like(part["response_mask"])
    return part


def update_minibatch(
    scorer: TokenScorer,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    micro: list[list[int]],
    s: UpdateSettings,
    world: World | None = None,
) -> dict[str, float]:
    """One optimizer step over the rows in ``micro`` (a list of micro-batches of row indices).

    ``batch`` holds the packed rows plus ``old_log_prob`` [B, T], ``advantages`` [B], ``rewards`` [B]
    and optionally ``ref_log_prob`` / ``rollout_log_prob`` [B, T]. Returns token-weighted metrics;
    ``skipped_nonfinite`` is 1 when the step was dropped because of a NaN/inf loss or gradient.

    Under a process world, ``micro`` holds this rank's rows of the mini-batch (possibly none): the
    normaliser and the positive-NLL token count are global, the NaN/inf skip is agreed, gradients are
    summed over ranks before clipping and metrics are merged, so every rank takes the step one process
    would take on all rows. Every rank must call it the same number of times.
    """

    if not isinstance(scorer, TokenScorer):  # a plain model: wrap it (no parameters are copied)
        scorer = TokenScorer(scorer)
    world = world or World(next(scorer.parameters()).device)
    parts = [_slice(batch, rows) for rows in micro if rows]
    pos_tokens = world.sum(_positive_tokens(parts, s.max_reward))
    quantile = entropy_quantile_of(s.loss, s.loss_params)
    norm = world.normalizer([p["response_mask"] for p in parts], max_len=s.max_len, entropy_quantile=quantile)
    # under FSDP every forward/backward is collective: the same number of micro-batches on each rank
    parts += [_dummy_part(batch)] * (len(world.even_out(parts)) - len(parts))
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}  # token-weighted metrics, and each micro-batch's share of the loss values
    ratio_max = 0.0
    nonfinite = False  # a flag, not an early return: every rank must reach the collectives
    for p in parts:
        mask = p["response_mask"]
        logp, ent = scorer(
            p["input_ids"],
            p["attention_mask"],
            mask,
            temperature=s.temperature,
            chunk_size=s.chunk_size,
            prompt_len=p.get("prompt_len"),
            group=p.get("group"),
        )
        if not bool(mask.any()):  # a dummy row: zero loss that still reaches every parameter
            (logp.sum() * 0.0).backward()
            continue
        loss, metrics = _micro_batch_loss(p, logp, ent, s, norm, pos_tokens, sums)
        if not torch.isfinite(loss):  # the step will be dropped; under FSDP the other ranks' backward
            nonfinite = True  # passes still need this rank's, so every rank runs all its micro-batches
            (logp.sum() * 0.0).backward()
            continue
        loss.backward()
        ratio_max = max(ratio_max, metrics.get("ratio_max", 0.0))
        _accumulate(sums, metrics, ent.detach(), mask)
    if world.any(nonfinite):
        optimizer.zero_grad(set_to_none=True)
        return {"skipped_nonfinite": 1.0}
    world.reduce_gradients(scorer)  # each rank's loss is its share of the global one: sums are global
    out = _token_means(world.merge_sums(sums), world.max_float(ratio_max), norm.tokens)
    return _clip_and_step(scorer, optimizer, s.grad_clip, out)


def _positive_tokens(parts: list[dict[str, torch.Tensor]], max_reward: float) -> float:
    """Response tokens of rows with the top reward (the positive-NLL term's denominator)."""
    return float(
        sum(((p["rewards"] >= max_reward).unsqueeze(-1) & (p["response_mask"] != 0)).sum() for p in parts)
    )


def _micro_batch_loss(
    p: dict[str, torch.Tensor],
    logp: torch.Tensor,
    ent: torch.Tensor,
    s: UpdateSettings,
    norm: Any,
    pos_tokens: float,
    sums: dict[str, float],
) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy loss of one micro-batch (+ the positive-NLL term, whose value goes into ``sums``)."""
    mask = p["response_mask"]
    params = dict(s.loss_params)
    correction = correction_in_force(s.rollout_correction, s.tis_cap)
    if correction != "none" and "rollout_log_prob" in p:
        params.update(
            rollout_log_prob=p["rollout_log_prob"],
            rollout_correction=correction,
            rollout_correction_params=dict(s.rollout_correction_params),
        )
        if s.tis_cap is not None:
            params["tis_cap"] = s.tis_cap
    # the bonus needs the entropy's gradient; the dtc/aspo split only reads its value
    loss, metrics = compute_policy_loss(
        s.loss,
        log_prob=logp,
        old_log_prob=p["old_log_prob"],
        advantages=p["advantages"],
        response_mask=mask,
        entropy=ent if s.entropy_coef > 0 else ent.detach(),
        ref_log_prob=p.get("ref_log_prob"),
        agg=s.agg,
        loss_normalizer=norm,
        entropy_coef=s.entropy_coef,
        **params,
    )
    if s.pos_nll_coef > 0:
        nll = positive_nll_loss(
            logp, mask, p["rewards"], coef=s.pos_nll_coef, max_reward=s.max_reward, total_tokens=pos_tokens
        )
        loss = loss + nll
        sums["plain/pos_nll"] = sums.get("plain/pos_nll", 0.0) + float(nll.detach())
    return loss, metrics


def _accumulate(
    sums: dict[str, float], metrics: dict[str, float], ent: torch.Tensor, mask: torch.Tensor
) -> None:
    """Add one micro-batch's metrics to ``sums``: token-weighted, or as they are for :data:`PLAIN_KEYS`."""
    n = metrics.get("num_tokens", float(mask.sum()))
    seqs = metrics.get("num_seqs", float((mask != 0).any(dim=-1).sum()))
    for k, v in metrics.items():
        if k in PLAIN_KEYS:
            sums[f"plain/{k}"] = sums.get(f"plain/{k}", 0.0) + v
        elif k in SEQ_KEYS:
            sums[f"seq/{k}"] = sums.get(f"seq/{k}", 0.0) + seqs * v
        elif k not in ("num_tokens", "num_seqs", "ratio_max") and math.isfinite(v):
            sums[k] = sums.get(k, 0.0) + n * v
    if any(k in SEQ_KEYS for k in metrics):
        sums["seq/num_seqs"] = sums.get("seq/num_seqs", 0.0) + seqs
    sums["entropy"] = sums.get("entropy", 0.0) + float((ent * mask).sum())
    fork = split_by_entropy(ent, mask != 0, FORK_QUANTILE)  # [B, T] the top-20% entropy positions
    sums["fork_frac"] = sums.get("fork_frac", 0.0) + float(fork.sum())
    sums["fork_entropy_share"] = sums.get("fork_entropy_share", 0.0) + float(ent[fork].sum())


def _token_means(sums: dict[str, float], ratio_max: float, tokens: float) -> dict[str, float]:
    """The mini-batch's metrics: token means, plain sums, and the ratio/fork means over their own tokens."""
    total = max(tokens, 1.0)
    out = {k: v / total for k, v in sums.items() if not k.startswith(("plain/", "seq/"))}
    seqs = max(sums.get("seq/num_seqs", 0.0), 1.0)
    out.update(
        {k[len("seq/") :]: v / seqs for k, v in sums.items() if k.startswith("seq/") and k != "seq/num_seqs"}
    )
    out["ratio_max"] = ratio_max
    out.update({k[len("plain/") :]: v for k, v in sums.items() if k.startswith("plain/")})
    out["loss"] = out.get("loss", 0.0) + out.get("pos_nll", 0.0)
    for num, den, name in (
        ("ratio_pos_share", "pos_frac", "ratio_mean_pos"),
        ("ratio_neg_share", "neg_frac", "ratio_mean_neg"),
        ("fork_entropy_share", "fork_frac", "entropy_fork"),
    ):
        share = out.pop(num, None)
        if share is not None and out.get(den, 0.0) > 0:
            out[name] = share / out[den]
    return out


def _clip_and_step(
    scorer: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float, out: dict[str, float]
) -> dict[str, float]:
    """Clip the global gradient norm and step, unless it is NaN/inf (then the step is dropped)."""
    params_with_grad = [q for q in scorer.parameters() if q.grad is not None]
    if params_with_grad:
        grad_norm = torch.nn.utils.clip_grad_norm_(params_with_grad, grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
    else:
        grad_norm = torch.tensor(0.0)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return dict(out, skipped_nonfinite=1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return dict(out, skipped_nonfinite=0.0, grad_norm=float(grad_norm))
