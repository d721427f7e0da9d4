"""Run configuration: nested dataclasses, YAML recipes, dotted ``key=value`` overrides, validation.

A run is described by one :class:`Config` with ten sections (``model``, ``data``, ``rollout``,
``algo``, ``reward``, ``optim``, ``trainer``, ``eval``, ``resources``, ``logging``). Recipes are YAML files with the
same nesting; bundled ones live in ``archer/recipes/`` and are found by name (``tiny_math``) or by path.
Overrides use dotted names: ``algo.loss=dapo optim.lr=1e-5 rollout.length_stages=[[0,32],[20,48]]``;
the value is parsed as YAML, so numbers, booleans, lists and ``null`` work as expected.

Everything is validated at load time, before any compute starts: an unknown key, a value of the wrong
type, a value out of range or an unknown registry name (loss, advantage estimator, backend) raises
:class:`ConfigError` whose message names the dotted field and, for names, lists the valid ones.

Limits: the type checker understands the annotations used here (bool, int, float, str, ``X | None``,
``list[...]``, ``dict[str, ...]`` and nested dataclasses), not arbitrary typing constructs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from archer.algo import AGG_MODES, advantage_names, policy_loss_names
from archer.algo.losses import POLICY_LOSSES
from archer.data.curriculum import CURRICULA
from archer.data.schema import KINDS
from archer.distributed.nccl import NCCLConfig
from archer.errors import ConfigError
from archer.models.reward_model import check_reward_model_dir
from archer.rewards.code import REWARD_MODES
from archer.rollout import engine_problem
from archer.rollout.tools import TOOL_FORMATS, TOOLS
from archer.safe_yaml import load_yaml
from archer.tracking.sinks import SINKS

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"

# Settings that moved: each setting has one home (a second one would silently override the first).
MOVED_KEYS = {
    "algo.kl_coef": "algo.loss_params.kl_coef",
    "algo.kl_estimator": "algo.loss_params.kl_estimator",
    "eval.num_problems": "data.num_eval (the held-out problems a run evaluates on)",
    "logging.tensorboard": "logging.sinks (e.g. logging.sinks=[tensorboard, wandb]; [] for none)",
    "logging.wandb": "logging.sinks (e.g. logging.sinks=[tensorboard, wandb]; [] for none)",
    "logging.log_samples": "metrics.jsonl (each step's 'sample' holds one response)",
    "resources.nccl": "nccl (a top-level section)",
    "cluster": "nccl (a top-level section; the cluster itself is started with `archer cluster`)",
}
_BACKENDS = ("local", "ray")
_DIST_BACKENDS = ("auto", "gloo", "nccl")
_SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class LoraConfig:
    """LoRA adapters through PEFT (``archer.models.loader``); ``rank`` 0 = full fine-tuning. The KL
    reference is the base model with adapters disabled. ``target_modules``: module names, or
    ``[all-linear]`` (every linear layer but the output head). ``save_merged``: checkpoints also hold
    ``merged/``, a plain Hugging Face model with the adapter merged in."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    save_merged: bool = False


@dataclass
class ModelConfig:
    """The policy. ``path`` is a local Hugging Face checkpoint folder (any causal LM); ``None`` builds a
    tiny Qwen2-style model and a tokenizer from scratch (the CPU demo) and warms it up with SFT on the
    task data. ``dtype`` is the compute precision (float32 or bfloat16 autocast); weights and optimizer
    state stay float32."""

    path: str | None = None
    dtype: str = "float32"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # RL compares two forwards of the same tokens: dropout would make them differ even on-policy
    disable_dropout: bool = True
    # tiny model built from scratch when path is None
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    vocab_size: int = 512
    # SFT warm-up of the from-scratch model (ignored for a given checkpoint unless sft_epochs > 0)
    sft_epochs: int = 0
    sft_lr: float = 1e-3
    sft_examples: int = 0
    sft_batch_size: int = 8
    sft_max_len: int = 256  # packed row length (tokens) of the SFT warm-up
    # share of SFT demonstrations with one deliberate slip (imperfect teacher, see archer.tasks.synthetic)
    sft_noise: float = 0.0
    gradient_checkpointing: bool = False
    # when the SFT warm-up runs: auto = only for a model built from scratch (model.path null); true = also
    # for a given model.path (needs a bundled generator as data.train); false = never
    sft_warmup: Any = "auto"


@dataclass
class DataConfig:
    """Training and evaluation problems. ``train``/``eval`` are a bundled generator name
    (``synthetic_math``, ``synthetic_code``) or a dataset file (jsonl/parquet, ``archer.data.formats``)."""

    train: str = "synthetic_math"
    eval: str | None = None
    num_train: int = 512
    num_eval: int = 64
    seed: int = 0
    # keyword options for the bundled generator (difficulty, number ranges, ...)
    generator: dict[str, Any] = field(default_factory=dict)
    shuffle: bool = True
    # online easy-prompt removal (Skywork-OR1): drop a prompt whose group accuracy reached this value
    remove_solved_threshold: float | None = None
    max_prompt_tokens: int = 512
    # prompt template of archer.data.prompts ("auto" picks by problem kind; "raw" = the problem text)
    prompt_template: str = "auto"
    # chat template of the tokenizer: a Jinja file (*.jinja / *.j2 / an existing path) or the Jinja
    # text itself; null keeps the tokenizer's own (a base model like gpt2 has none: prompts stay plain)
    chat_template: str | None = None
    # prompt curriculum (archer.data.curriculum): none | potential (R1-Code-Interpreter: highest-potential
    # quarter first, then half, three quarters, all) | kind_order (AceReason: curriculum_kinds in order).
    # curriculum_steps: each stage's start step (default: trainer.steps split evenly)
    curriculum: str = "none"
    curriculum_steps: list[int] = field(default_factory=list)
    curriculum_stages: int = 4
    curriculum_kinds: list[str] = field(default_factory=lambda: ["math", "code"])
    # the potential: read from this JSONL ({id, potential} or {id, pass_rates}), else computed before
    # training with potential_samples samples per prompt at each temperature (+ without tools)
    potential_file: str | None = None
    potential_samples: int = 4
    potential_temperatures: list[float] = field(default_factory=lambda: [1.0, 0.6])


@dataclass
class RolloutConfig:
    """Sampling. ``batch_size`` prompts per step, ``n`` responses each (the group).
    ``length_stages`` is a staged response-length curriculum: ``[[step, max_new_tokens], ...]``
    sorted by step; the stage whose start step was reached last applies (AceReason, Skywork-OR1)."""

    engine: str = "hf"
    batch_size: int = 8
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    length_stages: list[list[int]] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    # DAPO dynamic sampling: refill zero-variance groups, at most this many generation rounds per step
    dynamic_sampling: bool = True
    max_gen_batches: int = 3
    # the algo.tis_cap a run gets when it leaves algo.tis_cap unset and its engine holds its own copy of
    # the weights (engine vllm, or resources.rollout_workers > 0); null keeps truncated IS off there too
    default_tis_cap: float | None = 2.0
    # vLLM engine (archer/rollout/vllm.py): KV cache bytes (null: 256 MiB on CPU, a share of the GPU on
    # CUDA), that share of GPU memory, and prompt+response length (null: data.max_prompt_tokens + the
    # longest response of the run, capped at the model's max positions)
    vllm_kv_cache_bytes: int | None = None
    vllm_gpu_memory_utilization: float = 0.5
    vllm_max_model_len: int | None = None
    # generate step t+1 on the Ray rollout workers while step t trains (staleness 1, recorded; needs
    # resources.rollout_workers > 0; archer.rollout.ray_pool.OneStepOffPolicy)
    one_step_off_policy: bool = False
    # tool rollouts (archer.rollout.tools, R1-Code-Interpreter / ToRA): [python] lets the model run code
    # blocks in the sandbox and continue on their output, for any engine; observation tokens are masked
    # from the loss. max_turns model turns; per-call wall clock, output cap (characters) and memory;
    # tool_overlap: a row's program runs while other rows generate (false: lock-step, reproducible)
    tools: list[str] = field(default_factory=list)
    max_turns: int = 4
    tool_timeout_s: float = 5.0
    tool_output_chars: int = 512
    tool_memory_mb: int = 512
    tool_overlap: bool = True
    tool_format: str = "output_block"
    # sandbox workers (one zygote each, apart from the reward pool) running tool calls at once; 0 = CPUs
    tool_workers: int = 0


@dataclass
class AlgoConfig:
    """Objective: policy loss (``archer.algo`` registry), advantage estimator, regularisers, shaping.
    ``loss_params`` go to the loss by name (clip_low, clip_high, dual_clip_c, ...); unset ones keep
    the defaults of ALGORITHMS.md."""

    loss: str = "aspo"
    advantage: str = "grpo"
    # loss aggregation (archer.algo.aggregation); null: the loss's own default from the registry (its
    # paper's: seq-mean-token-mean for gspo, token-mean otherwise), resolved at load time
    agg: str | None = None
    loss_params: dict[str, Any] = field(default_factory=dict)
    filter_zero_variance: bool = True
    # KL to the reference is a loss parameter (loss_params.kl_coef / kl_estimator / high_entropy_kl_coef,
    # defaults in the loss registry); the reference model is built only when a coefficient is > 0.
    # entropy bonus; adaptive control after Skywork-OR1 when entropy_target is set
    entropy_coef: float = 0.0
    entropy_target: float | None = None
    entropy_delta: float = 1e-4
    entropy_max_coef: float = 0.005
    # Klear-Reasoner positive-sample NLL
    pos_nll_coef: float = 0.0
    # DAPO overlong shaping: buffer in tokens (0 = off); truncated responses can also be masked out
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0
    mask_truncated: bool = False
    # truncated IS against the rollout engine's log-probs (None = off)
    tis_cap: float | None = None


@dataclass
class RewardConfig:
    """Reward of a response (``archer.rewards.custom``). ``function``: a user reward, ``PATH.py:NAME`` or
    ``module:NAME``, with TRL's signature ``fn(completions, **columns) -> list[float | None]`` or verl's
    ``compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict``. The reward is
    ``verifier_weight * built-in verifier + function_weight * function``; ``function_weight`` 0 keeps
    the function's value as a logged metric only. ``none_reward``: what a TRL ``None`` counts as.

    The built-in code verifier: ``code_mode`` is ``hard`` (1 when every test passes; DeepCoder, Archer),
    ``soft`` (the fraction of tests passed; Klear) or ``soft_pm1`` (the mean of +1/-1 per test; Klear's
    variant); ``code_max_tests`` caps the tests run per response (a seeded random subset, as the Archer
    recipes do). A sample counts as correct in evaluations only when every test passes, whatever the
    mode.

    ``model``: a reward-model folder (``archer rm train``) scoring every response on the trainer's
    device; the reward is then ``model_weight * RM score + rule_weight * the reward above``
    (``archer.rewards.reward_model``), and the rule reward is still computed for the accuracy and ``rm/*`` metrics."""

    function: str | None = None
    # auto: verl when the function's parameters are (data_source, solution_str, ground_truth, ...)
    signature: str = "auto"
    function_weight: float = 1.0
    verifier_weight: float = 0.0
    none_reward: float = 0.0
    code_mode: str = "hard"
    code_max_tests: int | None = None
    # R1-Code-Interpreter terms of a tool rollout (archer.rewards.tool_reward): + / - format_weight when
    # every intermediate format is right / not, - turn_penalty beyond turn_limit model turns (0 = off)
    tool_format_weight: float = 0.0
    tool_turn_penalty: float = 0.0
    tool_turn_limit: int = 6
    model: str | None = None
    model_weight: float = 1.0
    rule_weight: float = 0.0
    model_batch_size: int = 16
    model_max_length: int = 2048


@dataclass
class OptimConfig:
    """AdamW with linear warmup then a constant/cosine/linear schedule, global-norm gradient clipping."""

    lr: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0


@dataclass
class TrainerConfig:
    """Loop sizes. Each rollout batch is split into ``mini_batches`` optimizer steps, repeated
    ``ppo_epochs`` times; mini-batches are cut into micro-batches of at most ``micro_batch_tokens``
    padded tokens for gradient accumulation (the loss normaliser stays the mini-batch's)."""

    steps: int = 20
    ppo_epochs: int = 1
    mini_batches: int = 1
    micro_batch_tokens: int = 8192
    logprob_chunk_size: int | None = None
    seed: int = 0
    # auto: CUDA when available, else CPU
    device: str = "auto"
    # data parallel across processes (resources.train_procs or torchrun): ddp (replicas) or fsdp (FSDP2)
    strategy: str = "ddp"
    # when the rollout is exactly on-policy (the engine samples from the float32 policy itself at the
    # training temperature), its log-probs serve as the old log-probs: one forward pass saved per step
    reuse_rollout_logprobs: bool = True
    threads: int | None = None
    save_every: int = 10
    keep_last: int = 2
    save_final: bool = True


@dataclass
class EvalConfig:
    """Before/after evaluation on held-out problems: ``n`` samples each, avg@k and pass@k for ``ks``."""

    enabled: bool = True
    n: int = 8
    ks: list[int] = field(default_factory=lambda: [1, 8])
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int | None = None
    every: int = 0


@dataclass
class ResourcesConfig:
    """Where rewards are computed: ``local`` (in-process verifier pools) or ``ray``
    (``archer.rewards.ray_pool.RayRewardScorer``); how many data-parallel training processes
    (``train_procs``, ``archer.distributed.launch``; under ``torchrun`` its ``WORLD_SIZE`` wins) and their
    torch.distributed backend (``auto``: nccl on CUDA, gloo on CPU). The recipe is otherwise unchanged."""

    backend: str = "local"
    num_reward_workers: int = 1
    cpus_per_worker: float = 1.0
    address: str | None = None
    verifier_timeout: float = 5.0
    train_procs: int = 1
    dist_backend: str = "auto"
    # collective timeout; ranks > 0 wait this long in a barrier while rank 0 evaluates or saves
    dist_timeout_s: float = 3600.0
    # rollout engines on this many Ray actors (0: the engine runs in the trainer's process), each with
    # a GPU when the cluster has them and this many CPUs (archer.rollout.ray_pool)
    rollout_workers: int = 0
    rollout_cpus_per_worker: float = 1.0


@dataclass
class LoggingConfig:
    """Run-directory outputs and sinks. ``metrics.jsonl`` (one object per step, with one sample
    response) and ``plots/`` are always written; ``sinks`` are the optional loggers of
    ``archer.tracking.sinks.SINKS`` (``tensorboard``, ``wandb``, ``mlflow``, ``trackio``), each an
    extra (``pip install 'archer[NAME]'``); one that is not installed is reported once with that hint
    and skipped."""

    out_dir: str = "runs"
    run_name: str | None = None
    sinks: list[str] = field(default_factory=lambda: ["tensorboard"])
    wandb_project: str = "archer"
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "archer"
    trackio_project: str = "archer"
    plots: bool = True
    progress: bool = True


@dataclass
class Config:
    """A whole run. Build with :func:`load_config`, which validates."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # NCCL environment of every rank and Ray worker (archer.distributed.nccl; ignored on CPU / gloo)
    nccl: NCCLConfig = field(default_factory=NCCLConfig)
    recipe: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Building from dicts with type checks


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        full = f"{where}{unknown[0]}"
        if full in MOVED_KEYS:
            raise ConfigError(f"{full}: moved to {MOVED_KEYS[full]} (one home per setting)")
        raise ConfigError(f"{full}: unknown key; valid keys here: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}.{name}" if prefix else name)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a section's own checks (NCCLConfig)
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def _coerce(tp: Any, value: Any, name: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, name)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{name}: must not be null")
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string; accept numeric strings
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported field type {tp!r}")


# ---------------------------------------------------------------------------------------------
# Validation of values


# loss parameters the trainer sets from elsewhere in the config: their one home is named here
_TRAINER_SET_PARAMS = {
    "agg": "algo.agg",
    "loss_normalizer": "the trainer",
    "rollout_log_prob": "the trainer",
    "entropy_coef": "algo.entropy_coef",
    "tis_cap": "algo.tis_cap",
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
    r, res = cfg.rollout, cfg.resources
    _check_first_hour(cfg)
    _check(
        not r.one_step_off_policy or res.rollout_workers > 0,
        "rollout.one_step_off_policy",
        "needs resources.rollout_workers > 0 (generation overlaps training on other processes)",
    )
    return cfg


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
    if d.remove_solved_threshold is not None:
        _check(0 < d.remove_solved_threshold <= 1, "data.remove_solved_threshold", "must be in (0, 1]")
    _check(d.max_prompt_tokens > 0, "data.max_prompt_tokens", "must be > 0")
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
    if a.entropy_target is not None:
        _check(a.entropy_target > 0, "algo.entropy_target", "must be > 0")


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
    _check(res.rollout_workers >= 0, "resources.rollout_workers", "must be >= 0")
    _check(res.rollout_cpus_per_worker > 0, "resources.rollout_cpus_per_worker", "must be > 0")


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
    _check(
        rw.code_max_tests is None or rw.code_max_tests >= 1, "reward.code_max_tests", "must be >= 1 or null"
    )
    _check(rw.tool_format_weight >= 0, "reward.tool_format_weight", "must be >= 0")
    _check(rw.tool_turn_penalty >= 0, "reward.tool_turn_penalty", "must be >= 0")
    _check(rw.tool_turn_limit >= 1, "reward.tool_turn_limit", "must be >= 1")
    if rw.function is not None:
        from archer.rewards.custom import load_reward_function

        try:
            load_reward_function(rw.function, rw.signature)
        except ValueError as exc:
            raise ConfigError(f"reward.function: {exc}") from None
        _check(
            rw.function_weight > 0 or rw.verifier_weight > 0,
            "reward.function_weight",
            "reward.function_weight and reward.verifier_weight are both 0: every reward would be 0",
        )
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


# ---------------------------------------------------------------------------------------------
# Recipes and overrides


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(recipe: str) -> Path:
    """A bundled recipe name (``tiny_math``) or a path to a YAML file."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe: file {recipe!r} not found")
        return path
    bundled = RECIPE_DIR / f"{recipe}.yaml"
    if not bundled.is_file():
        raise ConfigError(f"recipe: unknown recipe {recipe!r}; bundled: {recipe_names()}")
    return bundled


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"algo.loss=dapo"`` -> (["algo", "loss"], "dapo"); the value is read as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected dotted.key=value")
    try:
        value = load_yaml(raw, source=f"override {key.strip()}") if raw.strip() else ""
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (copying the path); unknown keys are caught by validation."""
    out = _deep_copy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for depth, k in enumerate(keys[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(keys[: depth + 1])}: is not a section, cannot set {item!r}")
            node = nxt
        node[keys[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml_file(path: str | Path, what: str) -> Any:
    """A YAML file through :func:`archer.safe_yaml.load_yaml` (alias bombs, depth and size refused fast);
    every problem is a one-line :class:`ConfigError` naming ``what`` and the file."""
    try:
        return load_yaml(Path(path).read_bytes(), source=f"{what} {str(path)!r}") or {}
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def config_from_dict(data: dict[str, Any]) -> Config:
    return validate(_from_dict(Config, data or {}, ""))


def load_config(recipe: str | None = "tiny_math", overrides: list[str] | None = None) -> Config:
    """Load a recipe (bundled name or YAML path; ``None`` = all defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if recipe is not None:
        path = recipe_path(recipe)
        data = read_yaml_file(path, "recipe")
        if not isinstance(data, dict):
            raise ConfigError(f"recipe {str(path)!r}: top level must be a mapping")
        data.setdefault("recipe", path.stem)
    data = apply_overrides(data, list(overrides or []))
    return config_from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(cfg.to_yaml())
