"""Validation of a whole config at load time: ranges, registry names, files, the first-hour checks.

Every problem is a :class:`archer.errors.ConfigError` whose message starts with the dotted name of the
setting; registry names are checked against the registries themselves (losses, advantage estimators,
aggregation modes, curricula, tools, sinks, reward modes), so a new entry needs no edit here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archer.algo import AGG_MODES, advantage_names, policy_loss_names
from archer.algo.losses import POLICY_LOSSES
from archer.algo.rollout_correction import ROLLOUT_CORRECTIONS, correction_in_force, correction_names
from archer.config.schema import (
    AlgoConfig,
    Config,
    EvalConfig,
    OptimConfig,
    ResourcesConfig,
    RewardConfig,
    RolloutConfig,
    TrainerConfig,
)
from archer.data.curriculum import CURRICULA
from archer.data.observations import TOOL_FORMATS
from archer.data.schema import KINDS
from archer.distributed.placement import PLACEMENT_ROLES
from archer.distributed.weight_sync import TRANSPORTS as WEIGHT_SYNC_TRANSPORTS
from archer.errors import ConfigError
from archer.models.reward_model import check_reward_model_dir
from archer.rewards.code import REWARD_MODES
from archer.rewards.math.score import EXTRACTIONS
from archer.rollout import engine_problem
from archer.rollout.tools import TOOLS
from archer.tasks.problems import EVAL_SPLITS
from archer.tasks.registry import is_task
from archer.tracking.sinks import SINKS

_BACKENDS = ("local", "ray")
_DIST_BACKENDS = ("auto", "gloo", "nccl")
_SCHEDULES = ("constant", "cosine", "linear")


# loss parameters the trainer sets from elsewhere in the config: their one home is named here
_TRAINER_SET_PARAMS = {
    "agg": "algo.agg",
    "loss_normalizer": "the trainer",
    "rollout_log_prob": "the trainer",
    "entropy_coef": "algo.entropy_coef",
    "tis_cap": "algo.tis_cap",
    "rollout_correction": "algo.rollout_correction",
    "rollout_correction_params": "algo.rollout_correction_params",
}


def _check_loss_params(loss: str, params: dict[str, Any]) -> None:
    """Unknown or out-of-range loss parameters fail at load time, not at the first update."""

    reserved = sorted(set(params) & set(_TRAINER_SET_PARAMS))
    if reserved:
        raise ConfigError(
            f"algo.loss_params.{reserved[0]}: set by the trainer; use "
            f"{_TRAINER_SET_PARAMS[reserved[0]]} instead"
        )
    try:
        POLICY_LOSSES[loss].resolve(loss, dict(params))
    except ValueError as exc:
        raise ConfigError(f"algo.loss_params: {exc}") from None


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _one_of(value: Any, valid: tuple[str, ...] | list[str], name: str) -> None:
    if value not in valid:
        raise ConfigError(f"{name}: unknown value {value!r}; valid: {sorted(valid)}")


def validate(cfg: Config) -> Config:
    """Range and name checks across the whole config; raises :class:`ConfigError` naming the field."""
    _check_model(cfg)
    _check_data(cfg)
    _check_rollout(cfg.rollout)
    _check_algo(cfg.algo)
    _check_optim(cfg.optim)
    _check_trainer(cfg.trainer)
    _check_eval(cfg.eval)
    _check_resources(cfg.resources)
    _check_first_hour(cfg)
    _check_mode(cfg)
    return cfg


_MODES = ("sync", "one_step_off", "async")
_STALE_POLICIES = ("drop", "downweight")
_PRODUCERS = ("auto", "thread", "process")  # archer.rl.rounds.PRODUCER_ENGINES, plus auto


def _check_mode(cfg: Config) -> None:
    """``trainer.mode`` and what it needs; ``rollout.one_step_off_policy`` is the deprecated spelling of
    ``trainer.mode=one_step_off`` (mapped here, so the rest of the code reads the mode only)."""
    r, t, res = cfg.rollout, cfg.trainer, cfg.resources
    _one_of(t.mode, _MODES, "trainer.mode")
    if r.one_step_off_policy:
        _check(
            t.mode in ("sync", "one_step_off"),
            "rollout.one_step_off_policy",
            f"is the old spelling of trainer.mode=one_step_off; it contradicts trainer.mode={t.mode}",
        )
        t.mode = "one_step_off"
    _check(
        t.mode != "one_step_off" or res.rollout_workers > 0,
        "rollout.one_step_off_policy" if r.one_step_off_policy else "trainer.mode",
        "one_step_off needs resources.rollout_workers > 0 (generation overlaps training on other processes)",
    )
    _check(t.max_staleness >= 0, "trainer.max_staleness", "must be >= 0")
    _one_of(t.stale_policy, _STALE_POLICIES, "trainer.stale_policy")
    _one_of(t.async_producer, _PRODUCERS, "trainer.async_producer")
    _check(0 < t.stale_weight <= 1, "trainer.stale_weight", "must be in (0, 1]")
    _check(
        t.async_buffer == 0 or t.async_buffer >= r.batch_size,
        "trainer.async_buffer",
        f"must be 0 (auto) or >= rollout.batch_size={r.batch_size} (one round must fit)",
    )
    _check(r.partial_chunk_tokens >= 1, "rollout.partial_chunk_tokens", "must be >= 1")
    if t.mode == "async":
        _check(
            res.train_procs * max(res.nodes, 1) == 1 or res.rollout_workers == 0,
            "trainer.mode",
            "async with several training processes generates on the main rank; Ray rollout workers "
            "(resources.rollout_workers > 0) are not supported with it",
        )
    if r.partial:
        _check(t.mode == "async", "rollout.partial", "needs trainer.mode=async")
        _check(
            not r.tools,
            "rollout.partial",
            "with rollout.tools is not supported (a tool conversation is not cut into chunks; use partial=false)",
        )


def _check_model(cfg: Config) -> None:
    """``model.*`` (and LoRA against the training strategy)."""
    m, t = cfg.model, cfg.trainer
    _one_of(m.dtype, ("float32", "bfloat16"), "model.dtype")
    _check(m.lora.rank >= 0, "model.lora.rank", "must be >= 0")
    _check(m.lora.alpha > 0, "model.lora.alpha", "must be > 0")
    _check(0 <= m.lora.dropout < 1, "model.lora.dropout", "must be in [0, 1)")
    _check(len(m.lora.target_modules) > 0, "model.lora.target_modules", "must not be empty")
    _check(
        not (m.lora.rank > 0 and t.strategy == "fsdp"),
        "model.lora",
        "LoRA with trainer.strategy=fsdp is not supported (adapters are small: use ddp)",
    )
    for name in (
        "hidden_size",
        "num_layers",
        "num_heads",
        "intermediate_size",
        "vocab_size",
        "sft_batch_size",
        "sft_max_len",
    ):
        _check(getattr(m, name) > 0, f"model.{name}", "must be > 0")
    _check(m.hidden_size % m.num_heads == 0, "model.num_heads", "must divide model.hidden_size")
    _check(m.sft_epochs >= 0 and m.sft_examples >= 0, "model.sft_epochs", "must be >= 0")
    _check(m.sft_lr > 0, "model.sft_lr", "must be > 0")
    _check(0 <= m.sft_noise <= 1, "model.sft_noise", "must be in [0, 1]")


def _check_data(cfg: Config) -> None:
    """``data.*``, the curriculum and the prompt template."""
    d = cfg.data
    _check(d.num_train > 0, "data.num_train", "must be > 0")
    _check(d.num_eval >= 0, "data.num_eval", "must be >= 0")
    _check(d.eval_split in EVAL_SPLITS, "data.eval_split", f"must be one of {list(EVAL_SPLITS)}")
    if d.remove_solved_threshold is not None:
        _check(0 < d.remove_solved_threshold <= 1, "data.remove_solved_threshold", "must be in (0, 1]")
    _check(d.max_prompt_tokens > 0, "data.max_prompt_tokens", "must be > 0")
    for key in ("prompt_key", "answer_key"):
        if getattr(d, key) is not None:
            _check(
                not is_task(d.train) or (d.eval is not None and not is_task(d.eval)),
                f"data.{key}",
                f"maps the columns of a dataset file, but data.train {d.train!r} is a task (generated problems)",
            )
    _check_curriculum(cfg)
    try:
        from archer.data.prompts import template_names

        _one_of(d.prompt_template, template_names(), "data.prompt_template")
    except ImportError:
        pass


def _check_rollout(r: RolloutConfig) -> None:
    """``rollout.*``: engine, sampling, vLLM, tools, length stages."""
    problem = engine_problem(r.engine)
    if problem:
        raise ConfigError(f"rollout.engine: {problem}")
    _check(r.batch_size > 0, "rollout.batch_size", "must be > 0")
    _check(r.n >= 1, "rollout.n", "must be >= 1")
    _check(r.temperature > 0, "rollout.temperature", "must be > 0")
    _check(0 < r.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
    _check(r.top_k >= 0, "rollout.top_k", "must be >= 0")
    _check(r.max_new_tokens > 0, "rollout.max_new_tokens", "must be > 0")
    _check(r.max_gen_batches >= 1, "rollout.max_gen_batches", "must be >= 1")
    _one_of(r.weight_sync, WEIGHT_SYNC_TRANSPORTS, "rollout.weight_sync")
    _check(r.weight_sync_bucket_mb > 0, "rollout.weight_sync_bucket_mb", "must be > 0")
    if r.default_tis_cap is not None:
        _check(r.default_tis_cap >= 1, "rollout.default_tis_cap", "must be >= 1")
    if r.vllm_kv_cache_bytes is not None:
        _check(r.vllm_kv_cache_bytes > 0, "rollout.vllm_kv_cache_bytes", "must be > 0")
    _check(0 < r.vllm_gpu_memory_utilization <= 1, "rollout.vllm_gpu_memory_utilization", "must be in (0, 1]")
    if r.vllm_max_model_len is not None:
        _check(r.vllm_max_model_len > 0, "rollout.vllm_max_model_len", "must be > 0")

    for i, tool in enumerate(r.tools):
        _one_of(tool, TOOLS, f"rollout.tools[{i}]")
    _check(r.max_turns >= 1, "rollout.max_turns", "must be >= 1")
    _check(r.tool_timeout_s > 0, "rollout.tool_timeout_s", "must be > 0")
    _check(r.tool_output_chars >= 1, "rollout.tool_output_chars", "must be >= 1")
    _check(r.tool_memory_mb >= 16, "rollout.tool_memory_mb", "must be >= 16")
    _check(r.tool_workers >= 0, "rollout.tool_workers", "must be >= 0 (0: one per CPU core)")
    _one_of(r.tool_format, tuple(TOOL_FORMATS), "rollout.tool_format")
    prev = -1
    for i, stage in enumerate(r.length_stages):
        _check(len(stage) == 2, f"rollout.length_stages[{i}]", "must be [start_step, max_new_tokens]")
        _check(stage[0] > prev, f"rollout.length_stages[{i}]", "start steps must be increasing and >= 0")
        _check(stage[1] > 0, f"rollout.length_stages[{i}]", "max_new_tokens must be > 0")
        prev = stage[0]


def _check_algo(a: AlgoConfig) -> None:
    """``algo.*``: registry names, loss parameters, coefficients."""
    _one_of(a.loss, policy_loss_names(), "algo.loss")
    _one_of(a.advantage, advantage_names(), "algo.advantage")
    if a.agg is None:  # one home: the registry entry of the loss
        a.agg = POLICY_LOSSES[a.loss].resolve(a.loss, {})["agg"]
    _one_of(a.agg, tuple(AGG_MODES), "algo.agg")
    _check_loss_params(a.loss, a.loss_params)
    for name in ("entropy_coef", "entropy_delta", "entropy_max_coef", "pos_nll_coef", "overlong_penalty"):
        _check(getattr(a, name) >= 0, f"algo.{name}", "must be >= 0")
    _check(a.overlong_buffer >= 0, "algo.overlong_buffer", "must be >= 0")
    if a.tis_cap is not None:
        _check(a.tis_cap >= 1, "algo.tis_cap", "must be >= 1")
    _check_rollout_correction(a)
    if a.entropy_target is not None:
        _check(a.entropy_target > 0, "algo.entropy_target", "must be > 0")


def _check_rollout_correction(a: AlgoConfig) -> None:
    """``algo.rollout_correction`` names a registry entry; its params are that entry's thresholds."""
    if a.rollout_correction is not None:
        _one_of(a.rollout_correction, correction_names(), "algo.rollout_correction")
    _check(
        a.tis_cap is None or a.rollout_correction in (None, "token_tis"),
        "algo.tis_cap",
        f"is the token_tis cap; algo.rollout_correction={a.rollout_correction} takes its thresholds from "
        "algo.rollout_correction_params",
    )
    name = correction_in_force(a.rollout_correction, a.tis_cap)
    params = dict(a.rollout_correction_params or {})
    if not params:
        return
    _check(
        name != "none",
        "algo.rollout_correction_params",
        "set, but no rollout correction is on (set algo.rollout_correction)",
    )
    _check(
        not (name == "token_tis" and "cap" in params),
        "algo.rollout_correction_params.cap",
        "token_tis takes its cap from algo.tis_cap",
    )
    try:
        ROLLOUT_CORRECTIONS[name].resolve(name, params)
    except ValueError as exc:
        raise ConfigError(f"algo.rollout_correction_params: {exc}") from None


def _check_optim(o: OptimConfig) -> None:
    """``optim.*``."""
    _check(o.lr > 0, "optim.lr", "must be > 0")
    _check(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "must be two values in [0, 1)"
    )
    _check(o.eps > 0, "optim.eps", "must be > 0")
    _check(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    _one_of(o.schedule, _SCHEDULES, "optim.schedule")
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
    _check(o.grad_clip > 0, "optim.grad_clip", "must be > 0")


def _check_trainer(t: TrainerConfig) -> None:
    """``trainer.*``."""
    _check(t.steps >= 0, "trainer.steps", "must be >= 0")
    _check(t.ppo_epochs >= 1, "trainer.ppo_epochs", "must be >= 1")
    _check(t.mini_batches >= 1, "trainer.mini_batches", "must be >= 1")
    _check(t.micro_batch_tokens > 0, "trainer.micro_batch_tokens", "must be > 0")
    _check(t.save_every >= 0, "trainer.save_every", "must be >= 0")
    _check(t.keep_last >= 1, "trainer.keep_last", "must be >= 1")
    _check(t.max_restarts >= 0, "trainer.max_restarts", "must be >= 0")
    _one_of(t.strategy, ("ddp", "fsdp"), "trainer.strategy")
    _check(
        t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
        "trainer.device",
        f"unknown device {t.device!r}; valid: auto, cpu, cuda, cuda:N",
    )
    if t.threads is not None:
        _check(t.threads >= 1, "trainer.threads", "must be >= 1")


def _check_eval(e: EvalConfig) -> None:
    """``eval.*``."""
    _check(e.n >= 1, "eval.n", "must be >= 1")
    _check(len(e.ks) > 0, "eval.ks", "must not be empty")
    for i, k in enumerate(e.ks):
        _check(1 <= k <= e.n, f"eval.ks[{i}]", f"must be in [1, eval.n={e.n}]")
    _check(e.temperature > 0, "eval.temperature", "must be > 0")
    _check(e.every >= 0, "eval.every", "must be >= 0")


def _check_resources(res: ResourcesConfig) -> None:
    """``resources.*``."""
    _one_of(res.backend, _BACKENDS, "resources.backend")
    _check(res.num_reward_workers >= 1, "resources.num_reward_workers", "must be >= 1")
    _check(res.cpus_per_worker > 0, "resources.cpus_per_worker", "must be > 0")
    _check(res.train_procs >= 1, "resources.train_procs", "must be >= 1")
    _one_of(res.dist_backend, _DIST_BACKENDS, "resources.dist_backend")
    _check(res.dist_timeout_s > 0, "resources.dist_timeout_s", "must be > 0")
    _check(res.watchdog_s is None or res.watchdog_s > 0, "resources.watchdog_s", "must be > 0 (or null)")
    _check(res.rollout_workers >= 0, "resources.rollout_workers", "must be >= 0")
    _check(res.rollout_cpus_per_worker > 0, "resources.rollout_cpus_per_worker", "must be > 0")
    _check(res.nodes >= 0, "resources.nodes", "must be >= 0 (0: local processes)")
    _check(
        res.min_nodes is None or 1 <= res.min_nodes <= max(res.nodes, 1),
        "resources.min_nodes",
        f"must be between 1 and resources.nodes ({res.nodes}), or null",
    )
    _check(res.min_nodes is None or res.nodes > 0, "resources.min_nodes", "needs resources.nodes > 0")
    _check(res.rank_cpus > 0, "resources.rank_cpus", "must be > 0")
    _check(res.placement_timeout_s > 0, "resources.placement_timeout_s", "must be > 0")
    for role, label in res.placement.items():
        _one_of(role, PLACEMENT_ROLES, "resources.placement")
        _check(
            isinstance(label, str) and bool(label), f"resources.placement.{role}", "must be a resource name"
        )


def _check_curriculum(cfg: Config) -> None:

    d = cfg.data
    _one_of(d.curriculum, tuple(CURRICULA), "data.curriculum")
    prev = -1
    for i, start in enumerate(d.curriculum_steps):
        _check(start > prev, f"data.curriculum_steps[{i}]", "start steps must be increasing and >= 0")
        prev = start
    _check(d.curriculum_stages >= 1, "data.curriculum_stages", "must be >= 1")
    _check(len(d.curriculum_kinds) >= 1, "data.curriculum_kinds", "must not be empty")
    for i, kind in enumerate(d.curriculum_kinds):
        _one_of(kind, tuple(KINDS), f"data.curriculum_kinds[{i}]")
    count = {"potential": d.curriculum_stages, "kind_order": len(d.curriculum_kinds)}.get(d.curriculum)
    if count is not None and d.curriculum_steps:
        _check(
            len(d.curriculum_steps) == count,
            "data.curriculum_steps",
            f"needs one start step per stage ({count} for data.curriculum={d.curriculum})",
        )
    _check(d.potential_samples >= 1, "data.potential_samples", "must be >= 1")
    _check(len(d.potential_temperatures) >= 1, "data.potential_temperatures", "must not be empty")
    for i, t in enumerate(d.potential_temperatures):
        _check(t > 0, f"data.potential_temperatures[{i}]", "must be > 0")
    if d.potential_file is not None:
        _check(
            Path(d.potential_file).is_file(), "data.potential_file", f"file {d.potential_file!r} not found"
        )


_SFT_WARMUP = {"auto": "auto", "true": True, "false": False, True: True, False: False}


def _check_reward_functions(rw: Any) -> None:
    """``reward.function`` / ``reward.functions``: one form, one weight per function, each importable."""
    _one_of(rw.on_error, ("raise", "zero"), "reward.on_error")
    if rw.function is not None and rw.functions:
        raise ConfigError(
            "reward.functions: set reward.function (one function) or reward.functions (several), not both"
        )
    if rw.function_weights:
        _check(
            len(rw.function_weights) == len(rw.functions),
            "reward.function_weights",
            f"{len(rw.function_weights)} weights for {len(rw.functions)} reward.functions",
        )
        for i, w in enumerate(rw.function_weights):
            _check(isinstance(w, (int, float)) and w >= 0, f"reward.function_weights[{i}]", "must be >= 0")
    specs = [("reward.function", rw.function)] if rw.function is not None else []
    specs += [(f"reward.functions[{i}]", spec) for i, spec in enumerate(rw.functions)]
    if not specs:
        return
    from archer.rewards.custom import load_reward_function

    for name, spec in specs:
        try:
            load_reward_function(spec, rw.signature)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    weights = list(rw.function_weights) or [rw.function_weight if rw.function is not None else 1.0]
    _check(
        any(w > 0 for w in weights) or rw.verifier_weight > 0,
        "reward.function_weights" if rw.functions else "reward.function_weight",
        (
            "every reward.function_weights entry and reward.verifier_weight are 0"
            if rw.functions
            else "reward.function_weight and reward.verifier_weight are both 0"
        )
        + ": every reward would be 0",
    )


def _check_first_hour(cfg: Config) -> None:
    """``model.sft_warmup``, ``data.chat_template``, ``reward.*`` and ``logging.sinks``: a bad value fails
    here, before any model is built (the reward function is imported and its signature read)."""
    m, d, rw, lg = cfg.model, cfg.data, cfg.reward, cfg.logging
    key = m.sft_warmup.lower() if isinstance(m.sft_warmup, str) else m.sft_warmup
    if not isinstance(key, (str, bool)) or key not in _SFT_WARMUP:
        raise ConfigError(f"model.sft_warmup: unknown value {m.sft_warmup!r}; valid: auto, true, false")
    m.sft_warmup = _SFT_WARMUP[key]
    _check(
        m.sft_warmup is not True or (m.sft_epochs > 0 and m.sft_examples > 0),
        "model.sft_warmup",
        "true needs model.sft_epochs > 0 and model.sft_examples > 0",
    )
    if d.chat_template is not None:
        from archer.data.prompts import read_chat_template

        try:
            read_chat_template(d.chat_template)
        except ValueError as exc:
            raise ConfigError(f"data.chat_template: {exc}") from None
    _one_of(rw.signature, ("auto", "trl", "verl"), "reward.signature")
    _check(rw.function_weight >= 0, "reward.function_weight", "must be >= 0")
    _check(rw.verifier_weight >= 0, "reward.verifier_weight", "must be >= 0")

    _one_of(rw.code_mode, tuple(REWARD_MODES), "reward.code_mode")
    _one_of(rw.math_extraction, EXTRACTIONS, "reward.math_extraction")
    _check(
        rw.code_max_tests is None or rw.code_max_tests >= 1, "reward.code_max_tests", "must be >= 1 or null"
    )
    _check(rw.tool_format_weight >= 0, "reward.tool_format_weight", "must be >= 0")
    _check(rw.tool_turn_penalty >= 0, "reward.tool_turn_penalty", "must be >= 0")
    _check(rw.tool_turn_limit >= 1, "reward.tool_turn_limit", "must be >= 1")
    _check_reward_functions(rw)
    _check_reward_model(rw)

    for i, name in enumerate(lg.sinks):
        _one_of(name, tuple(SINKS), f"logging.sinks[{i}]")


def _check_reward_model(rw: RewardConfig) -> None:
    """``reward.model*``: the folder must hold a scalar-head reward model (config.json read only)."""
    _check(rw.model_weight >= 0, "reward.model_weight", "must be >= 0")
    _check(rw.rule_weight >= 0, "reward.rule_weight", "must be >= 0")
    _check(rw.model_batch_size >= 1, "reward.model_batch_size", "must be >= 1")
    _check(rw.model_max_length >= 8, "reward.model_max_length", "must be >= 8")
    if rw.model is None:
        return

    try:
        check_reward_model_dir(rw.model)
    except ValueError as exc:
        raise ConfigError(f"reward.model: {exc}") from None
    _check(
        rw.model_weight > 0 or rw.rule_weight > 0,
        "reward.model_weight",
        "reward.model_weight and reward.rule_weight are both 0: every reward would be 0",
    )


def loss_params_in_force(cfg: Config) -> dict[str, Any]:
    """The loss parameters a run trains with: ``algo.loss_params`` over the loss's registry defaults
    (its paper's clip values, KL, split), without the ones the trainer sets from other settings."""
    a = cfg.algo
    resolved = POLICY_LOSSES[a.loss].resolve(a.loss, dict(a.loss_params))
    return {k: v for k, v in resolved.items() if k not in _TRAINER_SET_PARAMS}
