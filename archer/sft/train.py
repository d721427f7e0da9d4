"""Supervised fine-tuning on chat-format data: loss on assistant tokens only, packed sequences.

An example is ``{"messages": [{"role", "content"}, ...]}`` (``{"prompt", "response"}`` rows are
converted). The conversation is rendered once with the tokenizer's chat template; the characters of
each assistant turn (its content and the end-of-turn token, not the template's trailing newline) are
found by rendering the conversation up to that turn with and without the generation prompt, and the
tokens whose characters fall in those spans are the targets (labels elsewhere are -100). This works for
any template whose rendering of a prefix of the conversation is a prefix of the full rendering (ChatML,
Llama-3, ...); otherwise the assistant content is searched for in the rendering and the span runs to
the next EOS token.

Packing: examples are concatenated into rows of at most ``max_len`` tokens (an example is never split;
a longer one is truncated). Position ids restart at 0 for every example and the model is called without
an attention mask, which transformers (>= 4.53, ``masking_utils``) turns into a block-diagonal causal
mask: attention never crosses examples, so a packed batch has exactly the loss of the same examples
unpacked (tested). Unpacked batches are right-padded with an attention mask.

Loss: mean token cross-entropy over all target tokens of a step. AdamW, linear warmup then cosine decay
to ``min_lr_ratio * lr`` (Loshchilov & Hutter 2017, "SGDR"; 2019, "Decoupled Weight Decay
Regularization"), global grad-norm clipping.

Limits: one process, one device, no gradient accumulation, full fine-tuning (no LoRA).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

IGNORE = -100


# ------------------------------------------------------------------------------------ examples


def normalize_example(row: Any) -> list[dict[str, str]]:
    """Validate one row and return its message list; a bad row raises ``ValueError`` saying why."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "messages" not in row:
        if isinstance(row.get("prompt"), str) and isinstance(row.get("response", row.get("completion")), str):
            return [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row.get("response", row.get("completion"))},
            ]
        raise ValueError("needs 'messages' (a list of {role, content}) or string 'prompt' and 'response'")
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("'messages' must be a non-empty list")
    for k, m in enumerate(msgs):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError(f"message {k} must be an object with string 'role' and 'content'")
    if not any(m["role"] == "assistant" for m in msgs):
        raise ValueError("no assistant message: nothing to train on")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_char_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character spans of its assistant turns."""
    full = _render(tokenizer, messages, False)
    spans = []
    cursor = 0
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:k], True) if k else ""
        upto = _render(tokenizer, messages[: k + 1], False)
        if full.startswith(before) and full.startswith(upto) and len(before) <= len(upto):
            start, end = len(before), len(upto)
            while end > start and upto[end - 1].isspace():  # the template's newline after end-of-turn
                end -= 1
        else:
            start = full.find(m["content"], cursor)
            if start < 0:
                raise ValueError(f"assistant message {k} not found in the rendered chat template")
            eos = tokenizer.eos_token or ""
            stop = full.find(eos, start + len(m["content"])) if eos else -1
            end = stop + len(eos) if stop >= 0 else start + len(m["content"])
        spans.append((start, end))
        cursor = end
    return full, spans


def tokenize_example(
    tokenizer, messages: list[dict[str, str]], max_len: int, context_pattern: str | None = None
) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered chat and, per token, whether it is an assistant (target) token.
    ``context_pattern``: a regex; assistant text it matches is context, not target (a tool's
    observations inside a tool-using demonstration, e.g. ``archer.tasks.synthetic_interpreter``)."""
    if not getattr(tokenizer, "is_fast", True):
        raise ValueError("SFT masking needs a fast (Rust) tokenizer: it maps tokens to characters by offsets")
    text, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    context = []
    if context_pattern:
        import re

        context = [m.span() for m in re.finditer(context_pattern, text, re.DOTALL)]
    target = [
        any(s <= a < e for s, e in spans) and not any(s <= a < e for s, e in context) for a, _ in offsets
    ]
    return ids[:max_len], target[:max_len]


# ------------------------------------------------------------------------------------ batches


def pack_examples(items: Sequence[tuple[list[int], list[bool]]], max_len: int) -> list[list[int]]:
    """Greedy first-fit-in-order packing: lists of example indices whose total length is <= max_len."""
    rows, current, used = [], [], 0
    for i, (ids, _) in enumerate(items):
        if current and used + len(ids) > max_len:
            rows.append(current)
            current, used = [], 0
        current.append(i)
        used += len(ids)
    if current:
        rows.append(current)
    return rows


def collate(items, rows: Sequence[Sequence[int]], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    """Tensors for one step: ``input_ids``, ``position_ids``, ``labels`` [B, T] and, unpacked, ``attention_mask``.

    ``labels[b, t]`` is the token the model must predict at position t (i.e. already shifted), or -100.
    """
    seqs = []
    for row in rows:
        ids, tgt, pos = [], [], []
        for i in row:
            e_ids, e_tgt = items[i]
            ids += e_ids
            tgt += e_tgt
            pos += list(range(len(e_ids)))  # restart per example: isolates packed examples
        labels = [ids[t + 1] if t + 1 < len(ids) and tgt[t + 1] else IGNORE for t in range(len(ids))]
        seqs.append((ids, pos, labels))
    width = max(len(s[0]) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, (ids, pos, lab) in enumerate(seqs):
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids)
        labels[b, :n] = torch.tensor(lab)
        mask[b, :n] = 1
        position_ids[b, :n] = torch.tensor(pos)
        position_ids[b, n:] = torch.arange(width - n)  # padding is its own (ignored) segment
    out = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
    if not packed:
        out["attention_mask"] = mask
    return out


def batch_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over target tokens and their count."""
    kwargs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**kwargs, use_cache=False).logits  # [B, T, V]
    labels = batch["labels"]  # [B, T]
    n = int((labels != IGNORE).sum())
    loss = torch.nn.functional.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)).reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss / max(n, 1), n


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from ``lr`` to ``min_lr_ratio * lr`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------------ loop


def train_sft(
    model,
    tokenizer,
    examples: Sequence[Any],
    *,
    epochs: float = 1.0,
    lr: float = 1e-3,
    batch_size: int = 8,
    max_len: int = 512,
    packing: bool = True,
    warmup: int | float = 0.05,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    seed: int = 0,
    max_steps: int | None = None,
    max_time_s: float | None = None,
    num_threads: int | None = 1,
    log_fn: Callable[[int, dict[str, float]], None] | None = None,
    log_every: int = 10,
    progress: bool = True,
    context_pattern: str | None = None,
) -> dict[str, float]:
    """Fine-tune ``model`` in place on chat ``examples``; returns final metrics.

    ``batch_size`` is rows per optimizer step (with packing, each row holds several examples up to
    ``max_len`` tokens). ``epochs`` may be fractional. ``warmup``: steps, or a fraction of all steps if
    < 1. ``max_steps`` / ``max_time_s`` stop early (the schedule is still laid out over ``epochs``
    unless ``max_steps`` is given). ``context_pattern``: assistant text matching this regex is not a
    target (tool observations, see :func:`tokenize_example`). ``num_threads``: torch CPU threads during training (restored after;
    None leaves torch's setting). The default 1 is deliberate for small models: their matmuls are too
    small for intra-op threads, and on a loaded 2-core machine 2 threads ran ~10x fewer steps.
    """
    for name, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size), ("max_len", max_len)):
        if not value > 0:
            raise ValueError(f"train_sft: {name} must be > 0, got {value}")
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"train_sft: min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    items = _tokenized(tokenizer, examples, max_len, context_pattern)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(seed)
    device = next(model.parameters()).device

    def epoch_batches() -> list[list[list[int]]]:
        return _epoch_batches(items, rng, packing, max_len, batch_size)

    first = epoch_batches()
    steps_per_epoch = len(first)
    total = max_steps if max_steps is not None else max(1, math.ceil(epochs * steps_per_epoch))
    warm = int(warmup * total) if isinstance(warmup, float) and warmup < 1 else int(warmup)
    opt = _adamw(model, lr, weight_decay)
    threads = torch.get_num_threads()
    if num_threads is not None and device.type == "cpu":
        torch.set_num_threads(num_threads)
    was_training = model.training
    model.train()
    history: list[float] = []
    tokens = targets = 0
    start = time.perf_counter()
    bar = _progress(progress)
    task = bar.add_task("sft", total=total, loss=float("nan")) if bar else None
    step = 0
    batches = first
    try:
        if bar:
            bar.start()
        while step < total:
            for rows in batches:
                if step >= total or (max_time_s is not None and time.perf_counter() - start > max_time_s):
                    total = step
                    break
                batch = {k: v.to(device) for k, v in collate(items, rows, pad_id, packing).items()}
                loss, n, gnorm = _step(
                    model, opt, batch, lr_at(step, total, warm, lr, min_lr_ratio), grad_clip
                )
                history.append(loss.item())
                tokens += int(batch["input_ids"].numel())
                targets += n
                step += 1
                if bar:
                    bar.update(task, advance=1, loss=history[-1])
                if log_fn and (step % log_every == 0 or step == total):
                    grad_norm = float(gnorm) if gnorm is not None else float("nan")
                    lr_now = opt.param_groups[0]["lr"]
                    log_fn(
                        step,
                        {"loss": history[-1], "lr": lr_now, "grad_norm": grad_norm, "tokens": float(tokens)},
                    )
            batches = epoch_batches()
    finally:
        if bar:
            bar.stop()
        model.train(was_training)
        torch.set_num_threads(threads)
    return _result(
        step, step / steps_per_epoch, len(items), history, tokens, targets, time.perf_counter() - start
    )


def _result(
    step: int, epochs: float, examples: int, history: list[float], tokens: int, targets: int, elapsed: float
) -> dict[str, float]:
    tail = history[-10:] or [float("nan")]
    return {
        "steps": float(step),
        "epochs": epochs,
        "examples": float(examples),
        "first_loss": history[0] if history else float("nan"),
        "final_loss": sum(tail) / len(tail),
        "tokens": float(tokens),
        "target_tokens": float(targets),
        "time_s": elapsed,
        "tokens_per_s": tokens / max(elapsed, 1e-9),
    }


def _tokenized(
    tokenizer: Any, examples: Sequence[Any], max_len: int, context_pattern: str | None
) -> list[tuple[list[int], list[int]]]:
    """(ids, targets) of every example with at least one assistant target token within ``max_len``."""
    items = []
    for i, row in enumerate(examples):
        try:
            ids, tgt = tokenize_example(tokenizer, normalize_example(row), max_len, context_pattern)
        except ValueError as exc:
            raise ValueError(f"example {i}: {exc}") from None
        if any(tgt[1:]):
            items.append((ids, tgt))
    if not items:
        raise ValueError(
            "train_sft: no examples"
            if not examples
            else "train_sft: no example has an assistant token within max_len"
        )
    return items


def _epoch_batches(
    items: list[Any], rng: random.Random, packing: bool, max_len: int, batch_size: int
) -> list[list[list[int]]]:
    """One epoch in a fresh shuffled order: batches of rows, each row the examples packed into it."""
    order = list(range(len(items)))
    rng.shuffle(order)
    rows = (
        [[order[i] for i in r] for r in pack_examples([items[i] for i in order], max_len)]
        if packing
        else [[i] for i in order]
    )
    return [rows[k : k + batch_size] for k in range(0, len(rows), batch_size)]


def _adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on biases and norms)."""
    decay, no_decay = [], []
    for p in {id(p): p for p in model.parameters() if p.requires_grad}.values():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )


def _step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    lr: float,
    grad_clip: float,
) -> tuple[torch.Tensor, int, Any]:
    """One optimizer step at learning rate ``lr``: (loss, target tokens, gradient norm or None)."""
    for g in opt.param_groups:
        g["lr"] = lr
    loss, n = batch_loss(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    opt.step()
    return loss, n, gnorm


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]sft"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        transient=False,
    )
