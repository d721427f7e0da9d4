"""The policy model: one loader for every entry point, devices, precision, LoRA, and the LM head.

Every place that needs a trainable or evaluable causal LM goes through :func:`load_policy` (a fresh RL
run, a resumed one, data-parallel ranks, ``archer sft``, ``archer eval``), so a setting such as
gradient checkpointing, dropout or LoRA cannot be lost on one path and kept on another.

- **Any causal LM.** Hidden states come from the model's own decoder (``get_decoder()``, else
  ``base_model``) and the output projection from ``get_output_embeddings()``, so Qwen2, Llama,
  Mistral, Phi, GPT-2, GPT-NeoX and Gemma models all train, with tied or untied embeddings and with or
  without an output bias (the bias is folded into the chunked projection as one extra column).
  :func:`lm_head` proves the fast path applies; a model whose logits are not ``h @ W.T + b`` (Gemma-2
  soft-capping, Cohere/Granite logit scales) falls back to the model's full forward, which is exact
  for any model but materialises ``[B, T, V]`` logits.
- **Dropout off.** RL compares the log-probs of the same tokens under two forwards (the sampler's and
  the trainer's); with dropout on, they differ even on-policy. ``model.disable_dropout`` (default on,
  as in TRL's and verl's RL trainers) sets every dropout probability to 0.
- **LoRA** through PEFT (Hu et al. 2021, "LoRA", arXiv 2106.09685): ``model.lora.rank > 0`` wraps the
  model; the KL reference is the same model with adapters disabled (``disable_adapter()``), never a
  second copy. Checkpoints hold the adapter (and, with ``model.lora.save_merged``, a merged model).
- **Devices and precision.** ``trainer.device=auto`` picks CUDA when present. ``model.dtype`` is the
  compute dtype: weights and optimizer state stay float32 and forwards run under ``torch.autocast``
  (bfloat16), the usual mixed-precision recipe; log-probs are computed in float32 from the hidden
  states.

Limits: float16 compute is refused (it needs loss scaling, which the loop does not do); a model whose
decoder cannot be found is trained through the full-logits path.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archer.errors import ConfigError

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------------ devices


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable device is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device: {name!r} asked for, but CUDA is not available here "
                "(use trainer.device=auto or cpu)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device: {name!r} does not exist ({torch.cuda.device_count()} GPUs)")
    elif device.type != "cpu":
        raise ConfigError(f"trainer.device: {name!r}: only cpu and cuda are supported")
    return device


def autocast(device: torch.device | str, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``model.dtype`` (a no-op for float32)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=COMPUTE_DTYPES[dtype])


# ------------------------------------------------------------------------------------ loading


def _check_model_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(
            f"model.path: {str(path)!r} is not a Hugging Face model directory (no such folder; "
            "archer loads local folders, it never downloads)"
        )
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise ConfigError(f"model.path: {str(path)!r} is not a Hugging Face model directory (no config.json)")
    return p


def _from_pretrained(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure is the folder's: one line naming it
        raise ConfigError(f"model.path: cannot load the tokenizer from {path}: {_one_line(exc)}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(
            f"model.path: cannot load the model weights from {path}: {_one_line(exc)}"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def position_limit(config: Any) -> int | None:
    """The most tokens (prompt + response) a model with learned absolute positions can take:
    ``max_position_embeddings`` (``n_positions`` for GPT-2), where position ids beyond it end in an
    ``IndexError``. None for rotary or ALiBi models (Qwen, Llama, GPT-NeoX, GPT-J, Falcon, ...: longer
    sequences run, only quality degrades) and when the config names no limit. Takes a model, a config or
    a model folder (its config.json)."""
    if isinstance(config, (str, Path)):
        import json

        try:
            config = json.loads((Path(config) / "config.json").read_text())
        except (OSError, ValueError):
            return None
    config = getattr(config, "config", config)
    if not isinstance(config, dict):
        config = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    if any(word in key for key in config for word in ("rope", "rotary", "alibi")):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


@dataclass(frozen=True)
class PolicyOptions:
    """What :func:`load_policy` applies to every model it returns (from ``model.*`` of the config)."""

    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ("all-linear",)
    gradient_checkpointing: bool = False
    disable_dropout: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> PolicyOptions:
        m = cfg.model
        return cls(
            lora_rank=m.lora.rank,
            lora_alpha=m.lora.alpha,
            lora_dropout=m.lora.dropout,
            lora_target_modules=tuple(m.lora.target_modules),
            gradient_checkpointing=m.gradient_checkpointing,
            disable_dropout=m.disable_dropout,
        )


def load_policy(
    path: str | Path, options: PolicyOptions | None = None, *, adapter: str | Path | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) from a local Hugging Face folder, float32 on the CPU, prepared by ``options``.

    ``adapter``: a folder with a saved LoRA adapter (a LoRA run's checkpoint) loaded onto the base
    ``path`` as trainable. Any unreadable folder or weight file is a one-line :class:`ConfigError`.
    """
    model, tokenizer = _from_pretrained(_check_model_dir(path))
    return prepare_policy(model, options or PolicyOptions(), adapter=adapter), tokenizer


def prepare_policy(model: Any, options: PolicyOptions, *, adapter: str | Path | None = None) -> Any:
    """Apply LoRA, dropout and gradient checkpointing to an in-memory model (returns the model to use)."""
    if options.disable_dropout:
        disable_dropout(model)
    if adapter is not None or options.lora_rank > 0:
        model = _with_lora(model, options, adapter)
    if options.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def disable_dropout(model: torch.nn.Module) -> None:
    """Every ``nn.Dropout`` to p=0 and every float ``*dropout*`` attribute of a module or config to 0."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    if config is not None:
        for name in list(vars(config)):
            if "dropout" in name and isinstance(getattr(config, name), float):
                setattr(config, name, 0.0)


def enable_gradient_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing (works with frozen embeddings under LoRA)."""
    target = unwrap(model)
    if not getattr(target, "supports_gradient_checkpointing", False):
        raise ConfigError(f"model.gradient_checkpointing: {type(target).__name__} does not support it")
    if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5.2x (the old name warns)
        target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(target.config, "use_cache"):
        target.config.use_cache = (
            True  # generation keeps its KV cache; training forwards pass use_cache=False
        )


def _with_lora(model: Any, options: PolicyOptions, adapter: str | Path | None) -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError("model.lora: LoRA needs the 'peft' package: pip install 'archer[lora]'") from None
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return _wrap_lora(peft, model, options, adapter)


def _wrap_lora(peft: Any, model: Any, options: PolicyOptions, adapter: str | Path | None) -> Any:
    if adapter is not None:
        return peft.PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    targets: Any = list(options.lora_target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())  # GPT-2 stores weights transposed
    lora = peft.LoraConfig(
        r=options.lora_rank,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        fan_in_fan_out=conv1d,
    )
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"model.lora.target_modules: {_one_line(exc)}") from None


def is_lora(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def unwrap(model: Any) -> Any:
    """The Hugging Face model under a PEFT wrapper (the model itself otherwise)."""
    return model.get_base_model() if is_lora(model) else model


def save_policy(model: Any, tokenizer: Any, folder: str | Path, *, merged: bool = False) -> None:
    """``save_pretrained`` of the policy (the adapter alone under LoRA) and its tokenizer; with
    ``merged`` a LoRA policy also writes ``merged/``, a plain Hugging Face model with the adapter merged."""
    folder = Path(folder)
    for lora in getattr(model, "peft_config", {}).values() if is_lora(model) else ():
        base = getattr(lora, "base_model_name_or_path", None)
        if base and Path(base).is_dir():  # as typed (model.path=../base) breaks from any other folder
            lora.base_model_name_or_path = str(Path(base).resolve())
    model.save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    if merged and is_lora(model):
        import copy

        plain = copy.deepcopy(model).merge_and_unload()
        plain.save_pretrained(str(folder / "merged"))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder / "merged"))


# ------------------------------------------------------------------------------------ the LM head


@dataclass(frozen=True)
class LMHead:
    """How to get logits from a model: ``decoder(...)`` hidden states times ``weight`` (+ ``bias``).

    ``decoder`` is None when the fast path is not provably exact; callers then use the full forward.
    """

    decoder: Any
    weight: torch.Tensor | None  # [V, d]
    bias: torch.Tensor | None  # [V]


# config attributes that transform logits after the projection: with any set, the fast path is off
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def lm_head(model: Any) -> LMHead:
    """The decoder and output projection of ``model`` (see :class:`LMHead`)."""
    base = unwrap(model)
    config = getattr(base, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in _LOGIT_TRANSFORMS:
        value = getattr(text_config, name, None)
        if value not in (None, 1, 1.0):
            return LMHead(None, None, None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None or decoder is base:
        decoder = getattr(base, "base_model", None)
    if head is None or decoder is None or decoder is base or not isinstance(head, torch.nn.Linear):
        return LMHead(None, None, None)
    return LMHead(decoder, head.weight, head.bias)
