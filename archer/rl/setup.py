"""What a run needs before its first step: problems, tokenizer, policy (optionally SFT-warmed), prompts.

- Problems: ``data.train``/``data.eval`` name a bundled generator (``synthetic_math``,
  ``synthetic_code``, ``synthetic_paths``; options in ``data.generator``) or a dataset file read by
  :func:`archer.data.formats.load_dataset` (a malformed row is an error naming the file and the row,
  raised here, before any training). For a generator without ``data.eval``, held-out problems come
  from its ``test`` split (disjoint by construction).
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

from archer.config import Config, ConfigError
from archer.data.schema import Problem

GENERATORS = ("synthetic_math", "synthetic_code", "synthetic_paths", "synthetic_interpreter")


def _math_level(opts: dict[str, Any]) -> Any:
    from archer.tasks.synthetic import MathTaskConfig

    opts = dict(opts)
    level = opts.pop("level", None)
    opts.pop("noise", None)
    if not opts:
        return level
    if level is not None:
        raise ConfigError("data.generator: give either 'level' or explicit MathTaskConfig fields, not both")
    if "ops" in opts:
        opts["ops"] = tuple(opts["ops"])
    try:
        return MathTaskConfig(**opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.generator: {exc}") from None


def _code_families(opts: dict[str, Any]) -> tuple[str, ...]:
    """``data.generator.families`` of the code task (default: the four one-line families)."""
    from archer.tasks import synthetic

    families = tuple(opts.get("families") or synthetic.CODE_FAMILIES)
    unknown = sorted(set(families) - set(synthetic.code_family_names()))
    if unknown:
        raise ConfigError(
            f"data.generator.families: unknown {unknown}; known: {synthetic.code_family_names()}"
        )
    return families


def generate_problems(source: str, n: int, split: str, seed: int, opts: dict[str, Any]) -> list[Problem]:
    from archer.tasks import synthetic

    if source == "synthetic_math":
        return synthetic.math_problems(n, split=split, seed=seed, level=_math_level(opts))
    if source == "synthetic_code":
        extra = {k: v for k, v in opts.items() if k in ("test_fraction",)}
        return synthetic.code_problems(n, split=split, seed=seed, families=_code_families(opts), **extra)
    if source == "synthetic_paths":  # multi-path sums (archer.tasks.synthetic_paths, the ASPO study)
        from archer.tasks.synthetic_paths import paths_problems

        try:
            return paths_problems(n, split=split, seed=seed, config=opts)
        except ValueError as exc:
            raise ConfigError(f"data.generator: {exc}") from None
    if source == "synthetic_interpreter":  # big products a one-line program answers (tool rollouts)
        from archer.tasks.synthetic_interpreter import interpreter_problems

        try:
            return interpreter_problems(n, split=split, seed=seed, config=opts)
        except ValueError as exc:
            raise ConfigError(f"data.generator: {exc}") from None
    raise ConfigError(f"data.train: unknown generator {source!r}; known: {list(GENERATORS)}")


def load_problems(cfg: Config) -> tuple[list[Problem], list[Problem]]:
    """(train, eval) problems; errors name the config field or the file and row."""
    d = cfg.data
    if d.train in GENERATORS:
        try:
            train = generate_problems(d.train, d.num_train, "train", d.seed, d.generator)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"data.num_train: {exc}") from None
    else:
        train = _load_file(d.train, "data.train")[: d.num_train]
    if d.eval in GENERATORS or (d.eval is None and d.train in GENERATORS):
        source = d.eval or d.train
        try:
            evals = (
                generate_problems(source, d.num_eval, "test", d.seed + 1, d.generator) if d.num_eval else []
            )
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"data.num_eval: {exc}") from None
    elif d.eval is not None:
        evals = _load_file(d.eval, "data.eval")[: d.num_eval or None]
    else:
        evals = []
    if not train:
        raise ConfigError(f"data.train: {d.train!r} holds no problems")
    return train, evals


def _load_file(path: str, field: str) -> list[Problem]:
    from pathlib import Path

    from archer.data.formats import bundled_names, load_dataset, resolve_data_path

    resolved = resolve_data_path(path)  # a bundled sample's name (math500, aime24, ...) or a file
    if isinstance(resolved, str) or not Path(resolved).is_file():
        raise ConfigError(f"{field}: file {path!r} not found (or use a bundled name: {bundled_names()})")
    return load_dataset(resolved)


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
    from archer.data.prompts import apply_chat_template_option

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
        from archer.tasks import synthetic

        if cfg.data.train == "synthetic_paths":
            from archer.tasks.synthetic_paths import paths_tokenizer_corpus

            corpus = paths_tokenizer_corpus(2000, seed=cfg.data.seed, config=cfg.data.generator)
        elif cfg.data.train == "synthetic_interpreter":
            from archer.tasks.synthetic_interpreter import interpreter_tokenizer_corpus

            corpus = interpreter_tokenizer_corpus(2000, seed=cfg.data.seed, config=cfg.data.generator)
        else:
            level = _math_level(cfg.data.generator) if cfg.data.train == "synthetic_math" else None
            corpus = synthetic.tokenizer_corpus(
                2000,
                seed=cfg.data.seed,
                level=level,
                include_code=cfg.data.train != "synthetic_math",
                code_families=_code_families(cfg.data.generator)
                if cfg.data.train == "synthetic_code"
                else None,
            )
        # the prompt template's instruction text, so that it tokenizes into a few merged tokens
        corpus += [_user_text(p, cfg.data.prompt_template) for p in train[:200]]
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


def sft_examples(cfg: Config) -> list[dict[str, Any]]:
    """Chat-format SFT rows from the bundled generator (train split, a seed disjoint from RL's)."""
    from archer.tasks import synthetic

    d, m = cfg.data, cfg.model
    seed = d.seed + 7919
    if d.train == "synthetic_math":
        probs = synthetic.math_problems(
            m.sft_examples, split="train", seed=seed, level=_math_level(d.generator), unique=False
        )
        rows = synthetic.math_sft_examples(probs, noise=m.sft_noise, seed=seed)
    elif d.train == "synthetic_code":
        probs = synthetic.code_problems(
            m.sft_examples, split="train", seed=seed, unique=False, families=_code_families(d.generator)
        )
        rows = synthetic.code_sft_examples(probs, noise=m.sft_noise, seed=seed)
    elif d.train == "synthetic_paths":
        from archer.tasks.synthetic_paths import paths_problems, paths_sft_examples

        probs = paths_problems(m.sft_examples, split="train", seed=seed, config=d.generator, unique=False)
        rows = paths_sft_examples(probs, noise=m.sft_noise, seed=seed)
    elif d.train == "synthetic_interpreter":
        from archer.tasks.synthetic_interpreter import interpreter_problems, interpreter_sft_examples

        probs = interpreter_problems(
            m.sft_examples, split="train", seed=seed, config=d.generator, unique=False
        )
        rows = interpreter_sft_examples(probs, noise=m.sft_noise, seed=seed)
    else:
        raise ConfigError(
            "model.sft_epochs: SFT warm-up needs a bundled generator as data.train "
            f"({list(GENERATORS)}); run `archer sft` on your data first instead"
        )
    # demonstrations are asked exactly as RL and evaluation will ask (same prompt template)
    for row, problem in zip(rows, probs):
        row["messages"][0]["content"] = _user_text(problem, d.prompt_template)
    return rows


def _user_text(problem: Problem, template: str) -> str:
    from archer.data.prompts import user_message

    return user_message(problem, template)


def sft_warmup(cfg: Config, model: Any, tokenizer: Any, log: Callable[[str], None]) -> dict[str, Any]:
    from archer.sft.train import train_sft

    m = cfg.model
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
        context_pattern=_observation_pattern(cfg),
    )
    return result if isinstance(result, dict) else {"result": str(result)}


def _observation_pattern(cfg: Config) -> str | None:
    if not cfg.rollout.tools:
        return None
    from archer.tasks.synthetic_interpreter import OBSERVATION_PATTERN

    return OBSERVATION_PATTERN


def encode_prompts(
    problems: list[Problem], tokenizer: Any, max_tokens: int, template: str = "auto"
) -> list[list[int]]:
    """Prompt token ids (chat template applied when the tokenizer has one); too long is an error."""
    from archer.data.prompts import build_prompt

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
    from archer.models.loader import unwrap

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
    from archer.models import checkpoint as ckpt
    from archer.models.loader import PolicyOptions, is_lora, load_policy, prepare_policy
    from archer.rl.step import needs_reference

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
