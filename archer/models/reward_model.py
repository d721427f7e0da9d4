"""Reward-model checkpoints: a causal LM's backbone with a scalar head (``num_labels=1``).

A reward model is a Hugging Face ``*ForSequenceClassification`` (Qwen2, Llama, ...) whose logit at the
last non-padding token is the score ``r(prompt, response)``. :func:`init_reward_model` builds one from
a causal-LM folder (the backbone's weights are reused, the head starts at zero so every score starts
at 0); :func:`save_reward_model` writes a plain checkpoint (LoRA merged) that
``AutoModelForSequenceClassification.from_pretrained(DIR)`` reloads; :class:`RewardModel` scores
(prompt, response) pairs in batches on one device.

The scored text is :func:`rm_input`: the tokenizer's chat template over ``[user: prompt, assistant:
response]`` (the raw problem statement, no prompt template), so training, RL and best-of-N score the
same text. Without a chat template: ``prompt + "\\n" + response``. Texts longer than ``max_length``
tokens keep their end (the response), cut on the left.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RM_META = "archer_rm.json"


def rm_input(tokenizer: Any, prompt: Any, response: str) -> str:
    """The text a reward model scores for ``response`` to ``prompt`` (a string or a chat list)."""
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    messages = messages + [{"role": "assistant", "content": str(response)}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(str(m.get("content", "")) for m in messages)


def check_reward_model_dir(path: str | Path) -> dict[str, Any]:
    """The config.json of a reward-model folder; ValueError (one line) when it is not one."""
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ValueError(f"{str(path)!r} is not a reward-model directory (no such folder or no config.json)")
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}/config.json is unreadable: {exc}") from None
    archs = cfg.get("architectures") or []
    labels = len(cfg.get("id2label") or {}) or cfg.get("num_labels", 2)
    if not any(str(a).endswith("ForSequenceClassification") for a in archs) or labels != 1:
        raise ValueError(
            f"{path} is not a reward model (architectures {archs}, {labels} labels); "
            "expected a *ForSequenceClassification with num_labels=1, as `archer rm train` saves"
        )
    return cfg


def _tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def init_reward_model(path: str | Path, *, lora_rank: int = 0, lora_alpha: float = 16.0) -> tuple[Any, Any]:
    """(model, tokenizer): a float32 scalar-head model on ``path``'s backbone (a causal LM or a reward
    model folder); with ``lora_rank > 0`` only LoRA adapters and the head train."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    p = Path(path)
    if not (p / "config.json").is_file():
        raise ValueError(f"--model {str(path)!r}: not a Hugging Face model directory (no config.json)")
    tok = _tokenizer(p)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(p), num_labels=1, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tok.pad_token_id
    head = _head(model)
    if not (p / RM_META).is_file():  # a fresh head: zero, so every score starts at 0 (no random bias)
        with torch.no_grad():
            head.weight.zero_()
            if getattr(head, "bias", None) is not None:
                head.bias.zero_()
    if lora_rank > 0:
        import peft

        cfg = peft.LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            target_modules="all-linear",
            task_type="SEQ_CLS",
            lora_dropout=0.0,
        )
        with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = peft.get_peft_model(model, cfg)  # SEQ_CLS keeps the head ("score"/"classifier") trainable
    return model, tok


def _head(model: Any) -> torch.nn.Module:
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return getattr(model, name)
    raise ValueError(f"{type(model).__name__}: no 'score' or 'classifier' head found")


def save_reward_model(
    model: Any, tokenizer: Any, out: str | Path, meta: dict[str, Any] | None = None
) -> Path:
    """Write a loadable checkpoint atomically (a temporary folder renamed into place); LoRA is merged."""
    out = Path(out)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / RM_META).write_text(json.dumps(meta or {}, indent=2, default=str) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def encode(tokenizer: Any, texts: Sequence[str], max_length: int, device: Any) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask of ``texts``, each cut to its last ``max_length`` tokens."""
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"][-max_length:] for t in texts]
    width = max(max(len(r) for r in rows), 1)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def forward_scores(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] scalar scores: the head's logit at each row's last non-pad token (transformers' rule for
    ``*ForSequenceClassification``; right padding, so that is the text's last token)."""
    return model(**batch).logits[:, 0]  # [B, 1] -> [B]


class RewardModel:
    """A saved reward model on one device, scoring (prompt, response) pairs in batches without gradients."""

    def __init__(
        self, path: str | Path, device: Any = "cpu", *, batch_size: int = 16, max_length: int = 2048
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        check_reward_model_dir(path)
        self.path, self.device = str(path), torch.device(device)
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.tokenizer = _tokenizer(path)
        model = AutoModelForSequenceClassification.from_pretrained(self.path, dtype=torch.float32)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
        texts = [rm_input(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        out: list[float] = []
        for lo in range(0, len(texts), self.batch_size):
            batch = encode(self.tokenizer, texts[lo : lo + self.batch_size], self.max_length, self.device)
            out.extend(float(x) for x in forward_scores(self.model, batch).float().cpu())
        return out
