"""A rollout engine on any Hugging Face causal LM: batched KV-cache sampling in a plain loop.

Why not ``model.generate``: the per-token overhead of its logits-processor / stopping-criteria stack
dominates for the tiny CPU models of the demo (see ``benchmarks/rollout_speed.py``), it does not return
the sampler's log-probs cheaply, and it keeps finished rows in the batch. This loop:

- prefills each distinct prompt once (left padded, attention mask, position ids counted from the first
  real token) and then copies its KV cache ``n`` times, so ``n`` samples cost one prefill;
- samples with temperature, top-k and top-p from one seeded ``torch.Generator`` (reproducible for the
  same seed, prompts and ``max_batch_size``);
- drops finished rows (EOS or stop string) from the batch and the cache, so the batch shrinks as
  responses end and the loop stops when all have ended;
- checks stop strings by decoding only the last few tokens of the unfinished rows, in one
  ``batch_decode`` call per step.

The engine shares the model object it is given (no copy): a trainer updating that model in place
needs no weight sync. ``generate`` runs under ``torch.inference_mode`` with ``model.eval()`` and puts
the model back in its previous train/eval mode.

Limits: one process, one device; prompts are grouped by length to limit padding but not re-batched
while decoding (no continuous batching); the cache is transformers' ``DynamicCache``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch

from archer.rollout.base import Rollout, SamplingParams, encode_prompts, resolve_seed


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; returns ``(tokens [B], logprobs [B])``.

    The log-prob is under ``softmax(logits / T)`` before top-k/top-p truncation (``softmax(logits)``
    when greedy), the distribution a trainer recomputes.
    """
    logits = logits.float()  # [B, V]
    if params.greedy:
        logp = torch.log_softmax(logits, dim=-1)
        tokens = logp.argmax(dim=-1)
        return tokens, logp.gather(1, tokens[:, None]).squeeze(1)
    scaled = logits / params.temperature
    logp = torch.log_softmax(scaled, dim=-1)  # [B, V]
    filtered = scaled
    vocab = scaled.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(filtered, params.top_k, dim=-1).values[:, -1:]  # [B, 1]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, dim=-1, descending=True)  # [B, V]
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (the top token always stays)
        drop = (probs.cumsum(dim=-1) - probs) >= params.top_p
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        filtered = torch.full_like(filtered, float("-inf")).scatter(1, order, sorted_logits)
    probs = logp.exp() if filtered is scaled else torch.softmax(filtered, dim=-1)
    # inverse-CDF sampling: same distribution as torch.multinomial, several times faster on CPU.
    # searchsorted(right=True) returns i with cdf[i-1] <= u < cdf[i], so a zero-probability token
    # (cdf flat there) is never chosen.
    cdf = probs.cumsum(dim=-1)  # [B, V]
    u = torch.rand((cdf.shape[0], 1), generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=vocab - 1)  # [B]
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)


def new_cache(model):
    """An empty KV cache for ``model`` (transformers' ``DynamicCache``)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers < 4.56 has no config argument
        return DynamicCache()


def cache_kwarg(module: Any) -> str | None:
    """The keyword ``module.forward`` takes its KV cache by: ``cache`` (transformers >= 5.2x),
    ``past_key_values`` before, or None when it takes none. Read once per class."""
    return _cache_kwarg(type(module))


@functools.cache
def _cache_kwarg(cls: type) -> str | None:
    params = inspect.signature(cls.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


class HFEngine:
    """Sampling engine over a transformers causal LM (see the module docstring).

    ``eos_token_ids`` defaults to the tokenizer's EOS plus the model's ``generation_config`` EOS ids.
    ``max_batch_size`` bounds the number of rows decoded together (prompt copies included).
    ``num_threads``: torch CPU threads while generating (restored afterwards; None leaves torch's
    setting). The default 1 is deliberate: decoding a small model is a stream of tiny matmuls, for which
    intra-op threads cost more in synchronisation than they save, and on a loaded machine 2 threads
    were measured 10-40x slower than 1 (``benchmarks/rollout_speed.py``). Ignored on GPU.
    """

    shares_policy = True  # it samples from the module it is given: the trainer's policy

    def __init__(
        self,
        model,
        tokenizer,
        *,
        device: str | torch.device | None = None,
        max_batch_size: int = 64,
        eos_token_ids: Sequence[int] | None = None,
        pad_token_id: int | None = None,
        num_threads: int | None = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        current = next(model.parameters()).device
        self.device = torch.device(device) if device is not None else current
        if self.device != current:
            model.to(self.device)  # moves the shared model: the caller asked for this device
        self.max_batch_size = max_batch_size
        if eos_token_ids is None:
            ids: set[int] = set()
            if tokenizer.eos_token_id is not None:
                ids.add(int(tokenizer.eos_token_id))
            gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            if gen_eos is not None:
                ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
            eos_token_ids = sorted(ids)
        if not eos_token_ids:
            raise ValueError("no EOS token id: pass eos_token_ids or use a tokenizer with an eos_token")
        self.eos_token_ids = [int(i) for i in eos_token_ids]
        self._eos = torch.tensor(self.eos_token_ids, device=self.device)
        if pad_token_id is None:
            pad_token_id = (
                tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
            )
        self.pad_token_id = int(pad_token_id)
        forward_params = inspect.signature(model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in forward_params
        self._cache_arg = cache_kwarg(model) or "past_key_values"
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        self.num_threads = num_threads

    # ------------------------------------------------------------------------------------ API

    def update_weights(self, state_dict_or_model: Any, version: int | None = None) -> None:
        """Load new weights; a no-op when given the shared model itself (``version``: accepted for the
        engine interface; this engine does not number its weights)."""
        if state_dict_or_model is self.model:
            return
        state = (
            state_dict_or_model.state_dict()
            if isinstance(state_dict_or_model, torch.nn.Module)
            else state_dict_or_model
        )
        self.model.load_state_dict(state)

    def encode(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts)

    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Rollout]]:
        """``[num_prompts][params.n]`` rollouts in prompt order."""
        prompt_ids = self.encode(prompts)
        if not prompt_ids:
            return []
        seed = resolve_seed(params)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        results: list[list[Rollout | None]] = [[None] * params.n for _ in prompt_ids]
        was_training = self.model.training
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        self.model.eval()
        try:
            with torch.inference_mode():
                for batch in self._plan(prompt_ids, params.n):
                    self._run_batch(batch, prompt_ids, params, generator, results)
        finally:
            self.model.train(was_training)
            torch.set_num_threads(threads)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------------------ internals

    def _plan(self, prompt_ids: list[list[int]], n: int) -> list[list[tuple[int, int, int]]]:
        """Batches of jobs ``(prompt_index, first_sample, count)`` with at most ``max_batch_size`` rows.

        Prompts are taken shortest first so that a batch holds prompts of similar length (less padding).
        """
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        batches, current, rows = [], [], 0
        for i in order:
            start = 0
            while start < n:
                count = min(n - start, self.max_batch_size - rows)
                current.append((i, start, count))
                rows += count
                start += count
                if rows == self.max_batch_size:
                    batches.append(current)
                    current, rows = [], 0
        if current:
            batches.append(current)
        return batches

    def _forward(self, input_ids, attention_mask, position_ids, cache, last_only: bool):
        kwargs = {"logits_to_keep": 1} if (last_only and self._logits_to_keep) else {}
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self._cache_arg: cache},
            **kwargs,
        )
        return out.logits[:, -1, :]  # [B, V]

    def _run_batch(self, jobs, prompt_ids, params: SamplingParams, generator, results) -> None:
        dev = self.device
        uniq = [prompt_ids[i] for i, _, _ in jobs]
        width = max(map(len, uniq))
        ids = torch.full((len(uniq), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(uniq), width), dtype=torch.long)
        for r, p in enumerate(uniq):  # left padding: every prompt ends at the last column
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [U, W] positions count from the first real token
        cache = new_cache(self.model)
        logits = self._forward(ids, mask, pos, cache, last_only=True)  # [U, V]

        # one row per sample: copy each prompt's cache, mask and logits `count` times
        counts = torch.tensor([c for _, _, c in jobs], device=dev)
        rep = torch.repeat_interleave(torch.arange(len(jobs), device=dev), counts)  # [B]
        cache.batch_select_indices(rep)
        logits, mask = logits[rep], mask[rep]  # [B, V], [B, W]
        next_pos = pos[rep, -1] + 1  # [B]
        slots = [(i, s + k) for i, s, c in jobs for k in range(c)]  # row -> (prompt, sample)
        rows_total = len(slots)

        max_new = params.max_new_tokens
        out_tok = torch.full((rows_total, max_new), self.pad_token_id, dtype=torch.long, device=dev)
        out_lp = torch.zeros((rows_total, max_new), dtype=torch.float32, device=dev)
        length = [max_new] * rows_total  # rows that never finish use the whole budget
        reason = ["length"] * rows_total
        active = torch.arange(rows_total, device=dev)  # current batch row -> original row
        active_list = list(range(rows_total))
        stop_window = max((len(s.encode()) for s in params.stop), default=0)
        history: list[list[int]] | None = [[] for _ in range(rows_total)] if params.stop else None

        for step in range(max_new):
            tok, lp = sample_next(logits, params, generator)  # [b], [b]
            out_tok[active, step] = tok
            out_lp[active, step] = lp
            done = (tok[:, None] == self._eos).any(dim=1)  # [b]
            any_done = bool(done.any())  # the one host sync per step
            done_list = done.tolist() if any_done else [False] * len(active_list)
            if any_done:
                for j, r in enumerate(active_list):
                    if done_list[j]:
                        reason[r] = "eos"
                        length[r] = step + 1
            if history is not None:
                tok_list = tok.tolist()
                live = [j for j, d in enumerate(done_list) if not d]
                for j in live:
                    history[active_list[j]].append(tok_list[j])
                tails = self.tokenizer.batch_decode(
                    [history[active_list[j]][-stop_window:] for j in live], skip_special_tokens=True
                )
                for j, tail in zip(live, tails):
                    if any(s in tail for s in params.stop):
                        done_list[j] = True
                        reason[active_list[j]] = "stop"
                for j in live:
                    if done_list[j]:
                        length[active_list[j]] = step + 1
                done = torch.tensor(done_list, device=dev)
            if step == max_new - 1:
                break
            if any_done or history is not None and any(done_list):
                keep = (~done).nonzero().squeeze(1)  # [b']
                if keep.numel() == 0:
                    break
                cache.batch_select_indices(keep)
                active, mask, next_pos, tok = active[keep], mask[keep], next_pos[keep], tok[keep]
                active_list = [r for r, d in zip(active_list, done_list) if not d]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)  # [b, W + step + 1]
            logits = self._forward(tok[:, None], mask, next_pos[:, None], cache, last_only=False)
            next_pos = next_pos + 1

        tok_rows = out_tok.tolist()
        lp_rows = out_lp.tolist()
        for r, (i, s) in enumerate(slots):
            resp = tok_rows[r][: length[r]]
            text = self.tokenizer.decode(resp, skip_special_tokens=True)
            if reason[r] == "stop":
                text = _cut_at_stop(text, params.stop, params.include_stop_str)
            results[i][s] = Rollout(
                prompt_index=i,
                prompt_ids=list(prompt_ids[i]),
                response_ids=resp,
                logprobs=lp_rows[r][: length[r]],
                text=text,
                truncated=reason[r] == "length",
                finish_reason=reason[r],
            )


def _cut_at_stop(text: str, stops: Sequence[str], include: bool) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string (keeping it when ``include``)."""
    best = None
    for s in stops:
        k = text.find(s)
        if k >= 0 and (best is None or k < best[0]):
            best = (k, s)
    if best is None:
        return text
    return text[: best[0] + (len(best[1]) if include else 0)]
