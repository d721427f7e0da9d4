"""The run configuration's sections: nested dataclasses with a help text per setting.

Each setting's help is the string right below its field (an attribute docstring, as Sphinx reads it):
:func:`field_help` collects them for ``archer train --print-config --explain``, and a test requires one
for every setting. Defaults live here and only here; a loss's own defaults (clip values, aggregation)
live in its registry entry (:mod:`archer.algo.losses`) and are resolved at load time.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any

import yaml

from archer.distributed.nccl import NCCLConfig

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


@dataclass
class LoraConfig:
    """LoRA adapters through PEFT (``archer.models.loader``); ``rank`` 0 = full fine-tuning. The KL
    reference is the base model with adapters disabled. ``target_modules``: module names, or
    ``[all-linear]`` (every linear layer but the output head). ``save_merged``: checkpoints also hold
    ``merged/``, a plain Hugging Face model with the adapter merged in."""

    rank: int = 0
    """LoRA rank (0: full fine-tuning)."""
    alpha: float = 16.0
    """LoRA scaling numerator (the update is scaled by alpha / rank)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt, or [all-linear] (every linear layer but the output head)."""
    save_merged: bool = False
    """Checkpoints also hold merged/, a plain Hugging Face model with the adapter merged in."""


@dataclass
class ModelConfig:
    """The policy. ``path`` is a local Hugging Face checkpoint folder (any causal LM); ``None`` builds a
    tiny Qwen2-style model and a tokenizer from scratch (the CPU demo) and warms it up with SFT on the
    task data. ``dtype`` is the compute precision (float32 or bfloat16 autocast); weights and optimizer
    state stay float32."""

    path: str | None = None
    """A local Hugging Face checkpoint folder (any causal LM); null builds a tiny Qwen2-style model and a
    tokenizer from the task (the CPU demo)."""
    dtype: str = "float32"
    """Compute precision: float32, or bfloat16 autocast (weights and optimizer state stay float32)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters (rank 0: full fine-tuning)."""
    disable_dropout: bool = True
    """Turn dropout off: RL compares two forwards of the same tokens, and dropout would make them differ
    even on-policy."""
    hidden_size: int = 64
    """Tiny model (model.path null): hidden size."""
    num_layers: int = 2
    """Tiny model: decoder layers."""
    num_heads: int = 4
    """Tiny model: attention heads (must divide hidden_size)."""
    intermediate_size: int = 256
    """Tiny model: MLP width."""
    vocab_size: int = 512
    """Tiny model: size of the byte-level BPE vocabulary trained on the task text."""
    sft_epochs: int = 0
    """SFT warm-up epochs before RL (0: none)."""
    sft_lr: float = 1e-3
    """SFT warm-up learning rate."""
    sft_examples: int = 0
    """SFT warm-up demonstrations drawn from the task (train split, a seed disjoint from RL)."""
    sft_batch_size: int = 8
    """SFT warm-up rows per optimizer step (packed rows hold several examples)."""
    sft_max_len: int = 256
    """packed row length (tokens) of the SFT warm-up"""
    sft_noise: float = 0.0
    """share of SFT demonstrations with one deliberate slip (imperfect teacher, see archer.tasks.synthetic)"""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about a third more compute)."""
    sft_warmup: Any = "auto"
    """when the SFT warm-up runs: auto = only for a model built from scratch (model.path null); true = also for
    a given model.path (needs a bundled generator as data.train); false = never"""


@dataclass
class DataConfig:
    """Training and evaluation problems. ``train``/``eval`` are a bundled generator name
    (``synthetic_math``, ``synthetic_code``) or a dataset file (jsonl/parquet, ``archer.data.formats``)."""

    train: str = "synthetic_math"
    """A task of the registry (synthetic_math, synthetic_code, synthetic_paths, synthetic_interpreter), a
    bundled sample (math500, ...) or a dataset file (jsonl/json/parquet)."""
    eval: str | None = None
    """Held-out problems: a task, a bundled sample or a file; null with a task as data.train evaluates on its
    test split."""
    prompt_key: str | None = None
    """The prompt column of a flat data.train / data.eval file (verl's name; e.g. question for GSM8K); with
    answer_key it maps any layout (archer.data.formats_math 'columns'); null: the layout is sniffed."""
    answer_key: str | None = None
    """The reference-answer column of a flat file (GSM8K's '#### 72' keeps 72); null: 'answer' when
    data.prompt_key is set, else the layout is sniffed."""
    num_train: int = 512
    """Training problems (generated, or the first rows of the file)."""
    num_eval: int = 64
    """Held-out problems evaluated before and after RL (0 with a file: all of it)."""
    eval_split: str = "test"
    """The split a task's held-out problems come from: test, or validation (for tuning a recipe without looking at
    its test problems; the task needs data.generator.validation_fraction > 0, which takes that share of the hash
    space from the train split)."""
    seed: int = 0
    """Seed of the task generators and the data order (held-out problems use seed + 1)."""
    generator: dict[str, Any] = field(default_factory=dict)
    """keyword options for the bundled generator (difficulty, number ranges, ...)"""
    shuffle: bool = True
    """Walk the training prompts in a seeded permutation each epoch (false: file order)."""
    remove_solved_threshold: float | None = None
    """online easy-prompt removal (Skywork-OR1): drop a prompt whose group accuracy reached this value"""
    max_prompt_tokens: int = 512
    """Longest prompt allowed; a longer one is an error naming the problem, before training."""
    prompt_template: str = "auto"
    """prompt template of archer.data.prompts ("auto" picks by problem kind; "raw" = the problem text)"""
    chat_template: str | None = None
    """chat template of the tokenizer: a Jinja file (*.jinja / *.j2 / an existing path) or the Jinja text
    itself; null keeps the tokenizer's own (a base model like gpt2 has none: prompts stay plain)"""
    curriculum: str = "none"
    """Prompt curriculum (archer.data.curriculum): none, potential (R1-Code-Interpreter: highest-potential
    quarter first, then half, three quarters, all) or kind_order (AceReason: curriculum_kinds in order)."""
    curriculum_steps: list[int] = field(default_factory=list)
    """Start step of each curriculum stage (default: trainer.steps split evenly)."""
    curriculum_stages: int = 4
    """Stages of the potential curriculum (4: a quarter, half, three quarters, all of the ranking)."""
    curriculum_kinds: list[str] = field(default_factory=lambda: ["math", "code"])
    """Problem kinds in the order the kind_order curriculum trains them."""
    potential_file: str | None = None
    """The potential of each prompt from this JSONL ({id, potential} or {id, pass_rates}); null computes it
    before training."""
    potential_samples: int = 4
    """Samples per prompt and temperature when the potential is computed before training."""
    potential_temperatures: list[float] = field(default_factory=lambda: [1.0, 0.6])
    """Sampling temperatures of the potential computation (each one a sampling mode)."""


@dataclass
class RolloutConfig:
    """Sampling. ``batch_size`` prompts per step, ``n`` responses each (the group).
    ``length_stages`` is a staged response-length curriculum: ``[[step, max_new_tokens], ...]``
    sorted by step; the stage whose start step was reached last applies (AceReason, Skywork-OR1)."""

    engine: str = "hf"
    """hf (transformers generate on the policy itself), vllm, or auto (vllm on CUDA when installed)."""
    batch_size: int = 8
    """Prompts per step."""
    n: int = 8
    """Responses per prompt (the group of GRPO-style advantages)."""
    temperature: float = 1.0
    """Sampling temperature; the trainer computes log-probs at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling (1: off)."""
    top_k: int = 0
    """Top-k sampling (0: off)."""
    max_new_tokens: int = 64
    """Response budget per turn (the length stages may change it by step)."""
    length_stages: list[list[int]] = field(default_factory=list)
    """Staged response-length curriculum [[start_step, max_new_tokens], ...] (AceReason, Skywork-OR1)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings ending a response."""
    dynamic_sampling: bool = True
    """DAPO dynamic sampling: generate more rounds while zero-variance groups were dropped."""
    max_gen_batches: int = 3
    """At most this many generation rounds per step under dynamic sampling."""
    default_tis_cap: float | None = 2.0
    """The algo.tis_cap a run gets when it leaves it unset and its engine holds its own weights (vllm, Ray
    workers); null keeps truncated IS off."""
    vllm_kv_cache_bytes: int | None = None
    """vLLM: KV-cache bytes (null: 256 MiB on CPU, a share of the GPU on CUDA)."""
    vllm_gpu_memory_utilization: float = 0.5
    """vLLM on CUDA: share of GPU memory for weights and KV cache."""
    vllm_max_model_len: int | None = None
    """vLLM: prompt + response length (null: data.max_prompt_tokens + the longest response of the run, capped
    at the model)."""
    one_step_off_policy: bool = False
    """Deprecated alias of trainer.mode=one_step_off (generate step t+1 on the Ray rollout workers while step t
    trains; needs resources.rollout_workers > 0)."""
    partial: bool = False
    """trainer.mode=async: partial rollouts (AReaL): generate in chunks of partial_chunk_tokens new tokens; a
    weight update between chunks is loaded at once and the responses continue with the new weights (each token
    keeps the version that sampled it). Any engine: HF (thread or process producer), vLLM, Ray rollout workers; not
with rollout.tools."""
    partial_chunk_tokens: int = 16
    """Partial rollouts: new tokens per chunk (a weight update waits at most one chunk)."""
    weight_sync: str = "auto"
    """How the trainer's weights reach Ray rollout workers (resources.rollout_workers > 0): collective (a
    gloo/NCCL broadcast group, bucketed), object_store (ray.put, every worker fetches), or auto (the group
    when it forms, else the object store)."""
    weight_sync_bucket_mb: float = 64.0
    """Bucket size of the collective weight sync (MiB per broadcast)."""
    tools: list[str] = field(default_factory=list)
    """Tool rollouts (R1-Code-Interpreter, ToRA): [python] lets the model run code blocks in the sandbox and
    continue on their output, for any engine; observation tokens are masked from the loss."""
    max_turns: int = 4
    """Tool rollouts: model turns per response."""
    tool_timeout_s: float = 5.0
    """Tool rollouts: wall clock per tool call, seconds."""
    tool_output_chars: int = 512
    """Tool rollouts: characters of a call's output shown to the model."""
    tool_memory_mb: int = 512
    """Tool rollouts: memory limit per tool call, MiB."""
    tool_overlap: bool = True
    """Tool rollouts: a row's program runs while other rows generate (false: lock-step, reproducible)."""
    tool_format: str = "output_block"
    """How an observation is written into the context: output_block (a fenced output block) or chatml (a tool
    turn)."""
    tool_workers: int = 0
    """Sandbox workers running tool calls at once, apart from the reward pool (0: one per CPU core)."""


@dataclass
class AlgoConfig:
    """Objective: policy loss (``archer.algo`` registry), advantage estimator, regularisers, shaping.
    ``loss_params`` go to the loss by name (clip_low, clip_high, dual_clip_c, ...); unset ones keep
    the defaults of ALGORITHMS.md."""

    loss: str = "aspo"
    """Policy loss of the archer.algo registry: ppo, dapo, gspo, cispo, gppo, dtc, aspo."""
    advantage: str = "grpo"
    """Advantage estimator of the registry (grpo, dr_grpo, ...)."""
    agg: str | None = None
    """loss aggregation (archer.algo.aggregation); null: the loss's own default from the registry (its paper's:
    seq-mean-token-mean for gspo, token-mean otherwise), resolved at load time"""
    loss_params: dict[str, Any] = field(default_factory=dict)
    """Loss parameters by name (clip_low, clip_high, dual_clip_c, kl_coef, ...); unset ones keep the loss's
    registry defaults."""
    filter_zero_variance: bool = True
    """Drop groups whose rewards are all equal (they carry no advantage signal)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient."""
    entropy_target: float | None = None
    """Adaptive entropy control (Skywork-OR1): the target entropy (null: off)."""
    entropy_delta: float = 1e-4
    """Adaptive entropy control: coefficient step per RL step."""
    entropy_max_coef: float = 0.005
    """Adaptive entropy control: largest coefficient."""
    pos_nll_coef: float = 0.0
    """Klear-Reasoner positive-sample NLL coefficient (0: off)."""
    overlong_buffer: int = 0
    """DAPO soft overlong punishment: buffer in tokens before the budget (0: off)."""
    overlong_penalty: float = 1.0
    """DAPO soft overlong punishment: the penalty at the budget."""
    mask_truncated: bool = False
    """Overlong filtering: truncated responses do not train."""
    tis_cap: float | None = None
    """Token-level truncated importance sampling against the rollout engine's log-probs: the cap of the
    token_tis rollout correction (null: off unless algo.rollout_correction names another entry)."""
    rollout_correction: str | None = None
    """Rollout-engine correction of the archer.algo.rollout_correction registry: none, token_tis, seq_tis,
    token_mis, seq_mis, token_rs, seq_rs, geo_rs, icepop; null: token_tis when algo.tis_cap is set, else
    none (ALGORITHMS.md section 3b)."""
    rollout_correction_params: dict[str, Any] = field(default_factory=dict)
    """Thresholds of the chosen correction; unset ones keep the registry's: cap 2.0 (seq_tis, token_mis,
    seq_mis), upper 2.0 / lower 1/upper (token_rs, seq_rs), upper 1.001 / lower 1/upper (geo_rs), lower
    0.5 / upper 5.0 (icepop). token_tis's cap is algo.tis_cap."""


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
    """A user reward, PATH.py:NAME or module:NAME (TRL or verl signature)."""
    signature: str = "auto"
    """The user reward's signature: trl, verl, or auto (verl when its parameters are data_source, solution_str,
    ground_truth, ...)."""
    function_weight: float = 1.0
    """Weight of reward.function (0: logged only)."""
    verifier_weight: float = 0.0
    """Weight of the built-in verifier when reward.function(s) is set (0: the verifier's verdict is still
    the accuracy wherever the problem's kind has one)."""
    none_reward: float = 0.0
    """What a TRL reward's None counts as."""
    functions: list[str] = field(default_factory=list)
    """Several user rewards, [PATH.py:NAME, ...] (TRL's reward_funcs), summed with reward.function_weights;
    each is logged as reward/fn/<NAME>. The single reward.function is the one-function case (set one)."""
    function_weights: list[float] = field(default_factory=list)
    """One weight per reward.functions entry (TRL's reward_weights; empty: 1 each)."""
    on_error: str = "raise"
    """A user reward that raises or returns a wrong count, NaN/inf or a non-number: raise (stop the run
    with its traceback and the sample) or zero (reward 0; each distinct failure printed once on stderr)."""
    code_mode: str = "hard"
    """Code reward: hard (1 when every test passes), soft (fraction passed) or soft_pm1 (mean of +1/-1 per
    test)."""
    code_max_tests: int | None = None
    """Tests run per code response (a seeded random subset; null: all)."""
    math_extraction: str = "answer_line"
    """Where a math answer is read: answer_line (the last \\boxed{}, else an "Answer:" line; the default),
    boxed (only a \\boxed{}: what archer's recipes reward) or lenient (also a one-value final sentence,
    for evaluating base and instruct models; 0 false positives on the hostile answer corpus,
    docs/MATH_VERIFIER.md)."""
    tool_format_weight: float = 0.0
    """R1-Code-Interpreter: + / - this when every intermediate tool format is right / not (0: off)."""
    tool_turn_penalty: float = 0.0
    """R1-Code-Interpreter: penalty per model turn beyond tool_turn_limit (0: off)."""
    tool_turn_limit: int = 6
    """R1-Code-Interpreter: model turns before the turn penalty applies."""
    model: str | None = None
    """A reward-model folder (archer rm train) scoring every response on the trainer's device."""
    model_weight: float = 1.0
    """Weight of the reward model's score."""
    rule_weight: float = 0.0
    """Weight of the rule reward when reward.model is set."""
    model_batch_size: int = 16
    """Responses per reward-model forward."""
    model_max_length: int = 2048
    """Tokens of prompt + response the reward model reads."""


@dataclass
class OptimConfig:
    """AdamW with linear warmup then a constant/cosine/linear schedule, global-norm gradient clipping."""

    lr: float = 1e-6
    """AdamW learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    schedule: str = "constant"
    """After warm-up: constant, cosine or linear decay to min_lr_ratio."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr (cosine, linear)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""


@dataclass
class TrainerConfig:
    """Loop sizes. Each rollout batch is split into ``mini_batches`` optimizer steps, repeated
    ``ppo_epochs`` times; mini-batches are cut into token-balanced micro-batches of at most
    ``micro_batch_tokens`` real (unpadded) tokens for gradient accumulation (the loss normaliser stays
    the mini-batch's); ``pack_sequences`` runs each micro-batch as one packed row without padding."""

    steps: int = 20
    """RL steps."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    mini_batches: int = 1
    """Optimizer steps per pass (the rollout batch split evenly)."""
    micro_batch_tokens: int = 8192
    """Real tokens (prompt + response, no padding) per micro-batch; micro-batches are balanced by token count
    (gradient accumulation; the loss normaliser stays the mini-batch's). A padded forward may then hold
    more than this many padded positions; a row longer than the budget is a micro-batch of its own."""
    pack_sequences: bool = False
    """Run each micro-batch's rows concatenated without padding: positions restart per row and the attention
    is block-diagonal causal (transformers builds it from the restarting position_ids). Flash attention: one
    packed row; sdpa/eager (dense masks): packed rows as wide as the longest row. Replaces the shared-prompt
    forward; falls back to padded rows, with a logged reason, for models whose attention cannot take it
    (other attention kernels, recurrent or linear-attention layers, no position_ids, logits that are not a
    plain projection)."""
    logprob_chunk_size: int | None = None
    """Rows of logits computed at once for log-probs (null: adapted to the vocabulary, ~64 MB)."""
    seed: int = 0
    """Seed of the model initialisation, sampling and mini-batch splits."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu, cuda or cuda:N."""
    strategy: str = "ddp"
    """Data parallel across processes: ddp (replicas) or fsdp (FSDP2 shards)."""
    reuse_rollout_logprobs: bool = True
    """when the rollout is exactly on-policy (the engine samples from the float32 policy itself at the training
    temperature), its log-probs serve as the old log-probs: one forward pass saved per step"""
    threads: int | None = None
    """torch CPU threads (null: torch's default; ranks share the cores)."""
    save_every: int = 10
    """Checkpoint every this many steps (0: only the final one)."""
    keep_last: int = 2
    """Checkpoints kept."""
    save_final: bool = True
    """Save a checkpoint after the last step."""
    mode: str = "sync"
    """sync (generate, then train), one_step_off (the Ray rollout workers generate step t+1 while step t trains)
    or async (a background producer generates continuously into a bounded buffer; arXiv 2505.24298)."""
    max_staleness: int = 1
    """trainer.mode=async: a round for step s starts only with weights of version >= s - max_staleness, and a
    trained sample is at most this many policy versions old (0: on-policy, identical to sync)."""
    stale_policy: str = "drop"
    """trainer.mode=async: what happens to a carried-over sample older than max_staleness: drop (counted) or
    downweight (its advantage times stale_weight, counted)."""
    stale_weight: float = 0.5
    """trainer.mode=async, stale_policy=downweight: the factor on a stale sample's advantage."""
    async_buffer: int = 0
    """trainer.mode=async: the buffer's capacity in groups (0: (max_staleness + 1) x rollout.batch_size)."""
    async_producer: str = "auto"
    """trainer.mode=async with an engine that samples from the policy (HF): where the producer generates from
    its copy of the policy: process (a child process over weights in shared memory, so generation and the
    update run on two cores; CPU only), thread (in the trainer's process, sharing Python's lock), or auto
    (process on CPU, thread on GPU; a process that cannot start, e.g. for a model class the child cannot
    import, falls back to a thread with one log line). Engines with their own weights (vLLM, Ray workers) ignore it."""
    max_restarts: int = 0
    """Restarts of a run whose rank died, hung or crashed, each from the last complete checkpoint (0: fail;
    above 0 even one process runs under the launcher, as a child it can restart)."""


@dataclass
class EvalConfig:
    """Before/after evaluation on held-out problems: ``n`` samples each, avg@k and pass@k for ``ks``."""

    enabled: bool = True
    """Evaluate before and after RL on the held-out problems."""
    n: int = 8
    """Samples per held-out problem."""
    ks: list[int] = field(default_factory=lambda: [1, 8])
    """k values of avg@k and pass@k (each <= n)."""
    temperature: float = 1.0
    """Evaluation sampling temperature."""
    top_p: float = 1.0
    """Evaluation nucleus sampling."""
    max_new_tokens: int | None = None
    """Evaluation response budget (null: the training budget at the last step)."""
    every: int = 0
    """Also evaluate every this many steps (0: before and after only)."""


@dataclass
class ResourcesConfig:
    """Where rewards are computed: ``local`` (in-process verifier pools) or ``ray``
    (``archer.rewards.ray_pool.RayRewardScorer``); how many data-parallel training processes
    (``train_procs``, ``archer.distributed.launch``; under ``torchrun`` its ``WORLD_SIZE`` wins) and their
    torch.distributed backend (``auto``: nccl on CUDA, gloo on CPU). The recipe is otherwise unchanged."""

    backend: str = "local"
    """Where rewards are computed: local (in-process verifier pools) or ray (reward actors)."""
    num_reward_workers: int = 1
    """Ray reward actors."""
    cpus_per_worker: float = 1.0
    """CPUs per Ray reward actor."""
    address: str | None = None
    """Ray cluster address (null: start or join a local one)."""
    verifier_timeout: float = 5.0
    """Seconds per math verification."""
    train_procs: int = 1
    """Data-parallel training processes started locally (under torchrun its WORLD_SIZE wins)."""
    dist_backend: str = "auto"
    """torch.distributed backend: auto (nccl on CUDA, gloo on CPU), gloo or nccl."""
    dist_timeout_s: float = 3600.0
    """Collective timeout in seconds; ranks > 0 wait this long while rank 0 evaluates or saves."""
    watchdog_s: float | None = None
    """A rank with no progress (a stage change or a collective entered) for this many seconds during the
    training steps ends the run with one line naming its stage (null: dist_timeout_s; multi-process only)."""
    rollout_workers: int = 0
    """Rollout engines on this many Ray actors (0: the engine runs in the trainer's process)."""
    rollout_cpus_per_worker: float = 1.0
    """CPUs per Ray rollout worker."""
    nodes: int = 0
    """Ray nodes the training ranks spread over, train_procs ranks on each, placed as Ray actors by
    archer.distributed.ray_launch on the cluster at resources.address (0: local processes, no Ray for
    training). The run directory must be on a filesystem every node sees."""
    min_nodes: int | None = None
    """Fewest nodes a restart after a node loss may run on (a smaller data-parallel world, resumed from the
    last checkpoint); null: resources.nodes (a restart waits for as many nodes as the first attempt had)."""
    rank_cpus: float = 1.0
    """CPUs each Ray training rank reserves (resources.nodes > 0)."""
    placement: dict[str, str] = field(default_factory=dict)
    """Where each role's Ray actors go: role (trainer, rollout, reward) -> a custom resource that the nodes
    for that role advertise (`archer cluster join ... --resources '{"NAME": 1}'`); a role left out goes
    wherever Ray finds room (colocated when it fits). Example: {trainer: gpu_node, rollout: gen_node}."""
    placement_timeout_s: float = 120.0
    """Seconds to wait for the cluster to offer the training ranks' resources before the launch fails."""


@dataclass
class LoggingConfig:
    """Run-directory outputs and sinks. ``metrics.jsonl`` (one object per step, with one sample
    response) and ``plots/`` are always written; ``sinks`` are the optional loggers of
    ``archer.tracking.sinks.SINKS`` (``tensorboard``, ``wandb``, ``mlflow``, ``trackio``), each an
    extra (``pip install 'archer[NAME]'``); one that is not installed is reported once with that hint
    and skipped."""

    out_dir: str = "runs"
    """Where run directories are created."""
    run_name: str | None = None
    """Run directory name (null: RECIPE-DATE-TIME)."""
    sinks: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Optional loggers: tensorboard, wandb, mlflow, trackio (each a pip extra; a missing one is skipped with a
    hint)."""
    wandb_project: str = "archer"
    """Weights & Biases project."""
    mlflow_tracking_uri: str | None = None
    """MLflow tracking URI (null: MLflow's own, ./mlruns)."""
    mlflow_experiment: str = "archer"
    """MLflow experiment."""
    trackio_project: str = "archer"
    """Trackio project."""
    plots: bool = True
    """Write PNG curves to plots/ at the end of the run."""
    progress: bool = True
    """Show a progress bar on the terminal."""


@dataclass
class Config:
    """A whole run. Build with :func:`load_config`, which validates."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and held-out problems."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Sampling."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """The objective."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The reward of a response."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The optimizer."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Loop sizes, device, checkpoints."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Processes and workers."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Run directory and loggers."""
    nccl: NCCLConfig = field(default_factory=NCCLConfig)
    """NCCL environment of every rank and Ray worker (archer.distributed.nccl; ignored on CPU / gloo)"""
    recipe: str | None = None
    """The recipe the config came from (set by load_config)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@functools.cache
def _docstrings(cls: type) -> dict[str, str]:
    """Field name -> the string literal right below the field in ``cls``'s source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for item, nxt in zip(body, body[1:]):
        if (
            isinstance(item, ast.AnnAssign)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            out[item.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore[union-attr]
    return out


def field_help() -> dict[str, str]:
    """Every setting's help, by dotted name (``optim.lr``), nested sections included (``model.lora.rank``)."""
    out: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        docs = _docstrings(cls)
        for f in dataclasses.fields(cls):
            name = f"{prefix}{f.name}"
            out[name] = docs.get(f.name, "")
            sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if isinstance(sub, type) and dataclasses.is_dataclass(sub):
                walk(sub, f"{name}.")

    walk(Config, "")
    return out


def explain(cfg: Config) -> str:
    """The config as YAML with each setting's help as a comment above it."""
    helps = field_help()
    lines: list[str] = []

    def emit(data: dict[str, Any], prefix: str, indent: str) -> None:
        for key, value in data.items():
            name = f"{prefix}{key}"
            text = helps.get(name, "")
            for chunk in textwrap.wrap(text, width=100 - len(indent)) if text else []:
                lines.append(f"{indent}# {chunk}")
            if isinstance(value, dict) and value and name in _SECTION_NAMES:
                lines.append(f"{indent}{key}:")
                emit(value, f"{name}.", indent + "  ")
            else:
                dumped = yaml.safe_dump({key: value}, default_flow_style=True, sort_keys=False, width=10**6)
                lines.append(indent + dumped.strip().removeprefix("{").removesuffix("}"))

    emit(cfg.to_dict(), "", "")
    return "\n".join(lines) + "\n"


def _section_names() -> set[str]:
    out: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if isinstance(sub, type) and dataclasses.is_dataclass(sub):
                out.add(f"{prefix}{f.name}")
                walk(sub, f"{prefix}{f.name}.")

    walk(Config, "")
    return out


_SECTION_NAMES = _section_names()
