"""What a run needs before its first step: problems, tokenizer, policy (optionally SFT-warmed), prompts.

- Problems: :func:`archer.tasks.problems.load_problems` (a registered task or a dataset file; a
  malformed row is an error naming the file and the row, raised before any training).
- Policy: ``model.path`` loads a Hugging Face checkpoint (``from_pretrained``); ``None`` builds a tiny
  Qwen2 model and a byte-level BPE tokenizer from the task text (``archer.models.tiny``) and, with
  ``model.sft_epochs > 0``, warms it up by SFT on worked solutions from the generator
  (``archer.sft.train.train_sft``), possibly with imperfect demonstrations (``model.sft_noise``).
  ``model.sft_warmup`` decides when that warm-up runs: ``auto`` (default) only for a from-scratch
  model, so ``model.path=<an SFT'd model>`` with a recipe that sets ``sft_epochs`` goes straight to
  RL; ``true`` also warms a given ``model.path``; ``false`` never warms.
- Tokenizer: ``data.chat_template`` (a Jinja file or text) replaces the tokenizer's chat template
  wherever the run gets its tokenizer (built, loaded from ``model.path``, or resumed), so prompts,
  the SFT warm-up and the saved checkpoints all use it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archer.config import Config
from archer.data.prompts import (
    apply_chat_template_option,
    build_prompt,
    end_of_turn_stop,
    no_chat_template_hint,
)
from archer.data.schema import Problem
from archer.errors import ConfigError
from archer.models import checkpoint as ckpt
from archer.models.loader import PolicyOptions, is_lora, load_policy, position_limit, prepare_policy, unwrap
from archer.rl.settings import needs_reference
from archer.sft.train import train_sft
from archer.tasks.problems import observation_pattern, sft_examples, tokenizer_texts


def sft_configured(cfg: Config) -> bool:
    """True when the run SFT-warms its policy before RL (``model.sft_warmup``, see the module docstring)."""
    m = cfg.model
    if m.sft_warmup is False or m.sft_warmup == "false":
        return False
    if m.sft_warmup in ("auto", None) and m.path is not None:
        return False  # a given model is taken as trained; model.sft_warmup=true to warm it anyway
    return m.sft_epochs > 0 and m.sft_examples > 0


def apply_tokenizer_options(cfg: Config, tokenizer: Any) -> Any:
    """The run's tokenizer settings (``data.chat_template``) applied to ``tokenizer``, in place."""

    try:
        return apply_chat_template_option(tokenizer, cfg.data.chat_template)
    except ValueError as exc:
        raise ConfigError(f"data.chat_template: {exc}") from None


def build_policy(
    cfg: Config, train: list[Problem], log: Callable[[str], None] = print
) -> tuple[Any, Any, dict]:
    """(model, tokenizer, sft_info) of the initial policy, float32, before LoRA and checkpointing
    (:func:`archer.models.loader.load_policy` applies those when the run loads it). From scratch + SFT
    when ``model.path`` is None; ``model.path`` (+ SFT when configured) otherwise."""
    m = cfg.model
    if m.path is not None:
        from pathlib import Path

        from archer.models.loader import _check_model_dir, _from_pretrained

        model, tokenizer = _from_pretrained(_check_model_dir(Path(m.path)))
    else:
        from archer.models import tiny as models

        corpus = tokenizer_texts(cfg, train)
        tokenizer = models.build_tokenizer(corpus, vocab_size=m.vocab_size)
        model = models.build_tiny_model(
            tokenizer,
            hidden_size=m.hidden_size,
            num_layers=m.num_layers,
            num_heads=m.num_heads,
            num_kv_heads=m.num_heads,
            intermediate_size=m.intermediate_size,
            seed=cfg.trainer.seed,
        )
        log(
            f"built a tiny Qwen2 model: {models.count_parameters(model):,} parameters, vocab {len(tokenizer)}"
        )
    apply_tokenizer_options(cfg, tokenizer)
    info: dict[str, Any] = {}
    if sft_configured(cfg):
        info = sft_warmup(cfg, model, tokenizer, log)
    return model, tokenizer, info


def sft_warmup(cfg: Config, model: Any, tokenizer: Any, log: Callable[[str], None]) -> dict[str, Any]:

    m = cfg.model
    limit = position_limit(model)
    if limit is not None and m.sft_max_len > limit:
        raise ConfigError(
            f"model.sft_max_len={m.sft_max_len}: exceeds the model's limit of {limit} positions (its "
            f"config.json); set model.sft_max_len to at most {limit}"
        )
    rows = sft_examples(cfg)
    log(f"SFT warm-up: {len(rows)} examples x {m.sft_epochs} epochs, lr {m.sft_lr}")
    result = train_sft(
        model,
        tokenizer,
        rows,
        epochs=m.sft_epochs,
        lr=m.sft_lr,
        batch_size=m.sft_batch_size,
        max_len=m.sft_max_len,
        seed=cfg.trainer.seed,
        progress=cfg.logging.progress,
        num_threads=cfg.trainer.threads,
        # tool observations in a demonstration are context, as they are in RL (rollout.tools)
        context_pattern=observation_pattern(cfg),
    )
    return result if isinstance(result, dict) else {"result": str(result)}


def encode_prompts(
    problems: list[Problem], tokenizer: Any, max_tokens: int, template: str = "auto"
) -> list[list[int]]:
    """Prompt token ids (chat template applied when the tokenizer has one); too long is an error."""

    out = []
    for i, p in enumerate(problems):
        ids = tokenizer(build_prompt(p, tokenizer, template), add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens:
            raise ConfigError(
                f"data.max_prompt_tokens: problem {i} ({p.id}) has a {len(ids)}-token prompt "
                f"> {max_tokens}; raise the limit or filter the data"
            )
        out.append(list(ids))
    return out


def end_of_turn_notes(cfg: Config, tokenizer: Any, log: Callable[[str], None]) -> None:
    """A chat template whose end of turn the tokenizer cannot emit as one token becomes a stop string of
    ``rollout.stop`` (else every response would be truncated), with a note; a given model whose
    tokenizer has no chat template gets the hint to set one."""
    stop, note = end_of_turn_stop(tokenizer)
    if stop is not None and stop not in cfg.rollout.stop:
        cfg.rollout.stop = [*cfg.rollout.stop, stop]
        log(f"note: {note} (rollout.stop)")
    hint = no_chat_template_hint(tokenizer) if cfg.model.path is not None else None
    if hint:
        log(f"note: {hint}")


def longest_response_setting(cfg: Config) -> tuple[str, int]:
    """(setting, value) of the most new tokens the run ever asks for: ``rollout.max_new_tokens``, a
    ``rollout.length_stages`` stage or ``eval.max_new_tokens``, whichever is largest."""
    found = [("rollout.max_new_tokens", cfg.rollout.max_new_tokens)]
    found += [("rollout.length_stages", int(s[1])) for s in cfg.rollout.length_stages or []]
    if cfg.eval.enabled and cfg.eval.max_new_tokens:
        found.append(("eval.max_new_tokens", cfg.eval.max_new_tokens))
    return max(found, key=lambda kv: kv[1])


def check_response_budget(cfg: Config) -> None:
    """Before the run directory exists: the longest response alone must fit ``model.path``'s positions
    (read from its config.json; the prompts are checked once encoded, :func:`check_model_limits`)."""
    limit = position_limit(cfg.model.path) if cfg.model.path is not None else None
    setting, new = longest_response_setting(cfg)
    if limit is not None and new >= limit:
        raise ConfigError(
            f"{setting}={new}: exceeds the model's limit of {limit} positions (its config.json), before "
            f"any prompt; set {setting} below {limit} minus the longest prompt"
        )


def check_model_limits(cfg: Config, model: Any, prompt_ids: list[list[int]]) -> None:
    """Refuse, before any compute, a run whose longest prompt plus its longest response exceeds the
    model's positions (a GPT-2 would end in an ``IndexError`` mid-run)."""
    limit = position_limit(model)
    if limit is None or not prompt_ids:
        return
    setting, new = longest_response_setting(cfg)
    longest = max(len(ids) for ids in prompt_ids)
    if longest + new > limit:
        fix = (
            f"set {setting} to at most {limit - longest} or lower data.max_prompt_tokens"
            if limit > longest
            else f"the prompts alone do not fit: set data.max_prompt_tokens below {limit} and filter the data"
        )
        raise ConfigError(
            f"{setting}={new}: the longest prompt ({longest} tokens) + {new} new tokens = {longest + new} "
            f"exceeds the model's limit of {limit} positions (its config.json); {fix}"
        )


def initial_policy_dir(cfg: Config, run_dir: Path) -> Path:
    """Where the run's initial policy lives: ``<run>/sft_model`` when archer built, warmed or was given
    it, else ``model.path``."""
    saved = run_dir / "sft_model"
    if saved.is_dir() or cfg.model.path is None:
        return saved
    return Path(cfg.model.path)


def prepare_initial_policy(
    cfg: Config,
    run_dir: Path,
    train_problems: list[Any],
    model: Any,
    tokenizer: Any,
    log: Callable[[str], None],
    resume: bool = False,
) -> dict[str, Any]:
    """On rank 0: build / SFT-warm the initial policy (or take the given one) and save it as
    ``<run>/sft_model``; nothing to do for a plain ``model.path``. Returns the SFT summary.

    Only a resumed run reuses an ``sft_model`` already in the folder (one killed before its first
    checkpoint does not redo the warm-up); a fresh run never inherits an earlier run's model."""
    target = run_dir / "sft_model"
    if resume and target.is_dir():
        log(f"reusing the initial policy in {target}")
        return {}
    shutil.rmtree(target, ignore_errors=True)
    if model is None and cfg.model.path is not None and not sft_configured(cfg):
        if cfg.model.sft_warmup == "auto" and cfg.model.sft_epochs > 0:
            log(
                f"model.path given: no SFT warm-up (model.sft_warmup=auto warms only a from-scratch model; "
                f"set model.sft_warmup=true to warm {cfg.model.path})"
            )
        return {}
    info: dict[str, Any] = {}
    if model is None or tokenizer is None:
        t0 = time.time()
        model, tokenizer, info = build_policy(cfg, train_problems, log)
        info["seconds"] = round(time.time() - t0, 1)

    tmp = run_dir / ".sft_model.tmp"  # written whole, then renamed: a kill never leaves half a model
    shutil.rmtree(tmp, ignore_errors=True)
    unwrap(model).save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    tmp.replace(target)
    return info


def load_run_policy(
    cfg: Config, run_dir: Path, last: Path | None, given: tuple[Any, Any] | None = None
) -> tuple[Any, Any, Any]:
    """(policy, tokenizer, frozen reference or None), every path through the same preparation.

    ``given``: a (model, tokenizer) the caller passed to ``train`` for a fresh single-process run; it is
    prepared (:func:`archer.models.loader.prepare_policy`) and trained in place, so the caller's object
    ends up trained. Otherwise the policy is loaded from disk by :func:`load_policy`.
    """

    options = PolicyOptions.from_config(cfg)
    initial = initial_policy_dir(cfg, run_dir)
    if given is not None and last is None:
        model, tokenizer = prepare_policy(given[0], options), given[1]
    elif last is None or ckpt.is_sharded_checkpoint(last):  # sharded weights are loaded after sharding
        model, tokenizer = load_policy(initial, options)
    elif (last / "adapter_config.json").is_file():
        model, tokenizer = load_policy(initial, options, adapter=last)
    else:
        model, tokenizer = load_policy(last, options)
    apply_tokenizer_options(cfg, tokenizer)
    ref_model = None
    if needs_reference(cfg) and not is_lora(model):
        ref_model, _ = load_policy(initial, PolicyOptions(disable_dropout=cfg.model.disable_dropout))
    return model, tokenizer, ref_model
