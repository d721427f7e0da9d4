"""Loading a checkpoint as a generation engine for evaluation (the trainer's loader, then an HF engine)."""

from __future__ import annotations

from typing import Any

import torch

from archer.data.prompts import apply_chat_template_option, build_prompt
from archer.errors import ConfigError
from archer.models.checkpoint import is_sharded_checkpoint
from archer.models.loader import PolicyOptions, load_policy, position_limit, resolve_device
from archer.rollout.hf import HFEngine


def load_engine(
    model_dir: str, device: str | None = None, dtype: str = "auto", chat_template: str | None = None
):
    """(engine, tokenizer) for a Hugging Face model directory, on ``device`` (default: CUDA when present).

    The model is read by the trainer's loader (:func:`archer.models.loader.load_policy`: a local folder,
    one-line errors for a missing folder or broken weights, a LoRA checkpoint loaded onto its base), so
    a checkpoint is evaluated as it was trained. ``dtype``: ``auto`` keeps the checkpoint's saved dtype.
    A sharded (FSDP) checkpoint must be merged first with ``archer export``.
    """
    if is_sharded_checkpoint(model_dir):
        raise FileNotFoundError(
            f"--model {model_dir}: a sharded (FSDP) checkpoint; merge it first with "
            f"`archer export {model_dir} --out DIR` and evaluate DIR"
        )
    try:
        target = resolve_device(device or "auto")
        model, tokenizer = load_policy(model_dir, PolicyOptions())
        apply_chat_template_option(tokenizer, chat_template)
    except ConfigError as exc:
        message = str(exc).replace("model.path", "--model", 1).replace("trainer.device", "--device", 1)
        raise FileNotFoundError(message) from None
    if dtype == "auto":
        saved = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
        torch_dtype = saved if isinstance(saved, torch.dtype) else getattr(torch, str(saved), torch.float32)
    elif isinstance(getattr(torch, dtype, None), torch.dtype):
        torch_dtype = getattr(torch, dtype)
    else:
        raise ValueError(f"--dtype {dtype!r}: not a torch dtype (auto, float32, bfloat16, float16)")
    model = model.to(device=target, dtype=torch_dtype)
    return HFEngine(model, tokenizer, device=target), tokenizer


DEFAULT_MAX_NEW_TOKENS = 4096


def fit_max_new_tokens(
    model: Any, tokenizer: Any, problems: list[Any], template: str, asked: int | None
) -> tuple[int, str | None]:
    """(max new tokens, a note or None) that fit the model's positions after the longest prompt: the
    default (``asked`` None, 4096) is capped with a note; a given ``--max-new-tokens`` that does not fit
    is a ValueError naming it and the limit (a GPT-2 would end in an ``IndexError`` mid-run)."""
    wanted = asked or DEFAULT_MAX_NEW_TOKENS
    limit = position_limit(model)
    if limit is None or not problems:
        return wanted, None
    longest = max(len(tokenizer(build_prompt(p, tokenizer, template))["input_ids"]) for p in problems)
    if longest + wanted <= limit:
        return wanted, None
    room = limit - longest
    if asked is None and room > 0:
        return room, (
            f"--max-new-tokens capped to {room}: the model's limit of {limit} positions minus the longest "
            f"prompt ({longest} tokens)"
        )
    fix = (
        f"pass --max-new-tokens {room} or less"
        if room > 0
        else "the prompts alone do not fit; use --limit or shorter prompts"
    )
    raise ValueError(
        f"--max-new-tokens {wanted}: the longest prompt ({longest} tokens) + {wanted} new tokens = "
        f"{longest + wanted} exceeds the model's limit of {limit} positions (its config.json); {fix}"
    )
