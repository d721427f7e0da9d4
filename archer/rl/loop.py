"""The RL loop (ALGORITHMS.md), written out: ``train(config) -> summary``.

One step, as named stages (``archer.rl.step``; each returns its own metrics):
 1. take ``rollout.batch_size`` prompts from the seeded data order (only the current stage's pool under
    ``data.curriculum``), sample ``rollout.n`` responses each (``max_new_tokens`` from the curriculum's
    length stages; with ``rollout.tools`` multi-turn, the model's python run in the sandbox and its
    output appended as observation tokens that the response mask leaves out of every loss term);
 2. score them with the verifier scorer (``resources.backend``: local pools or Ray), add DAPO overlong
    shaping, record accuracy per prompt (online removal of solved prompts);
 3. DAPO dynamic sampling: drop zero-variance groups and generate more rounds until ``batch_size``
    groups carry signal or ``max_gen_batches`` rounds were generated; then train on what there is
    (nothing at all is a logged no-op step, never an abort);
 4. group advantages (``algo.advantage``) into a packed ``TrainBatch``; the sampling policy's log-probs
    (``old``: the sampler's own when the rollout is exactly on-policy, else recomputed) and, when a KL
    term is on, the reference's; each distinct prompt of a micro-batch runs once for its group
    (``TokenScorer``'s shared-prompt forward);
 5. ``trainer.ppo_epochs`` passes over ``trainer.mini_batches`` mini-batches, each one AdamW step with
    micro-batches cut by ``trainer.micro_batch_tokens`` and the mini-batch's loss normaliser, gradient
    clipping, NaN/inf steps skipped; then the warmup/decay schedule and the adaptive entropy controller
    (Skywork-OR1) advance once per RL step; an engine with its own weights is synced;
 6. log ``metrics.jsonl`` (+ TensorBoard/W&B), checkpoint atomically every ``trainer.save_every`` steps.
Before the first step and after the last, the policy is evaluated on held-out problems (avg@k, pass@k)
and ``summary.json`` records both.

Data parallel (``resources.train_procs=N``, or N processes under ``torchrun``): the loop talks to a
:class:`~archer.distributed.world.World`, whose single-process form makes every collective a no-op, so
the step has no distributed branches. Each rank generates and scores its slice of the global prompt
batch; the groups are gathered back so dynamic sampling, prompt removal, advantages and metrics are
global; group ``g`` is trained by rank ``g % world``; the loss normaliser, the NaN/inf skip and the
gradients are global, so an update equals the single-process one. ``trainer.strategy=ddp`` keeps a
full replica per rank; ``fsdp`` shards parameters, gradients and optimizer state with FSDP2 and
gathers the full weights for generation (``World.full_weights``). Rank 0 alone writes the run
directory and evaluates. ``time/*`` metrics are rank 0's own.

The policy is loaded by :func:`archer.models.loader.load_policy` on every path (fresh, resumed, every
rank), so LoRA, dropout and gradient checkpointing settings hold everywhere. The initial policy (the
SFT-warmed or given model) is kept in ``<run>/sft_model`` unless it is ``model.path`` itself; the KL
reference is reloaded from it (a frozen copy), or is the policy with adapters disabled under LoRA.

Simplifications (stated, on purpose): one device per process; the HF rollout engine shares the policy
module (no weight sync); outcome rewards only (one advantage per response); evaluation uses the same
engine with ``eval.*`` sampling settings. Resuming restores weights, optimizer, scheduler, RNG, data
order and controller state from the last complete checkpoint (sharded checkpoints on any world size);
the steps after it are recomputed with the same seeds.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archer.config import Config, save_config
from archer.data.curriculum import build_curriculum
from archer.distributed import launch
from archer.distributed.world import World, join_world
from archer.models import checkpoint as ckpt
from archer.models.loader import COMPUTE_DTYPES, resolve_device, unwrap
from archer.rewards.scoring import build_run_scorer
from archer.rewards.types import Scorer, safe_score
from archer.rl.batch import Group, PromptSampler, collect_groups, micro_batches, split_mini_batches
from archer.rl.evaluate import evaluate_policy, headline_metric, improvement
from archer.rl.potential import compute_potentials, read_potential_file
from archer.rl.setup import encode_prompts, load_run_policy, prepare_initial_policy
from archer.rl.step import (  # noqa: F401 - helpers re-exported for callers of archer.rl.loop
    Round,
    TrainBatch,
    build_batch,
    group_rows,
    lr_lambda,
    make_groups,
    max_new_tokens_at,
    mean_update_metrics,
    needs_reference,
    overlong_shaping,
    round_metrics,
    sampling_params,
)
from archer.rl.update import TokenScorer, UpdateSettings, update_minibatch
from archer.rollout.base import shares_policy
from archer.rollout.tools import lockstep
from archer.tasks.problems import load_problems
from archer.tracking.sinks import MetricsLogger

StepCallback = Callable[[int, dict[str, Any]], None]


# ------------------------------------------------------------------------------- the run


class RLRun:
    """State of one run; :func:`train` is the entry point. Separate methods keep each stage readable.

    ``model`` is the policy as loaded (a Hugging Face model, or a PEFT model under LoRA); the trainer
    works on ``self.scorer`` (the policy wrapped for log-probs and sharded by the world's strategy) and
    the engine generates from the plain model inside ``world.full_weights``.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        *,
        model: Any,
        tokenizer: Any,
        train_problems: list[Any],
        eval_problems: list[Any],
        scorer: Scorer | None = None,
        engine: Any = None,
        log: Callable[[str], None] = print,
        world: World | None = None,
        ref_model: Any = None,
    ) -> None:

        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        self.world = world or World(next(model.parameters()).device)
        self.model, self.tokenizer = model, tokenizer
        self.train_problems, self.eval_problems = train_problems, eval_problems
        d = cfg.data
        self.train_ids = encode_prompts(train_problems, tokenizer, d.max_prompt_tokens, d.prompt_template)
        # evaluation prompts are encoded by the eval runner; encoding them here checks their length up front
        encode_prompts(eval_problems, tokenizer, d.max_prompt_tokens, d.prompt_template)
        # verifiers (local or Ray) + reward.function, weighted, + reward.model on this rank's device
        self.scorer = scorer or build_run_scorer(cfg, self.world.device)
        mp_dtype = getattr(torch, cfg.model.dtype)
        self.token_scorer = self.world.shard(TokenScorer(model), mp_dtype)
        self.ref_scorer = None
        if ref_model is not None:
            for p in ref_model.parameters():
                p.requires_grad_(False)
            self.ref_scorer = self.world.shard(TokenScorer(ref_model.eval()), mp_dtype)
        if engine is None:  # rollout.engine (auto: vllm on CUDA when installed), on Ray workers when asked
            from archer.rollout import build_rollout

            with self.world.full_weights(self.token_scorer):  # a separate engine starts from these weights
                engine, self.cfg = build_rollout(
                    cfg, unwrap(model), tokenizer, device=self.world.device, log=log
                )
            cfg = self.cfg  # algo.tis_cap may now be rollout.default_tis_cap (an engine with its own weights)
            if cfg.rollout.one_step_off_policy:  # the pool generates step t+1 while step t trains
                from archer.rollout.ray_pool import OneStepOffPolicy

                engine = OneStepOffPolicy(engine, self.predict_next_round)
        self.engine = engine
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            [p for p in self.token_scorer.parameters() if p.requires_grad],
            lr=o.lr,
            betas=tuple(o.betas),
            eps=o.eps,
            weight_decay=o.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.controller = None
        if cfg.algo.entropy_target is not None:
            from archer.algo.regularizers import AdaptiveEntropyController

            self.controller = AdaptiveEntropyController(
                target=cfg.algo.entropy_target, delta=cfg.algo.entropy_delta, c_max=cfg.algo.entropy_max_coef
            )
        self.sampler = PromptSampler(
            len(train_problems),
            seed=cfg.data.seed,
            shuffle=cfg.data.shuffle,
            remove_threshold=cfg.data.remove_solved_threshold,
            min_keep=cfg.rollout.batch_size,
        )

        # prompt stages that need the potential are set by prepare_curriculum, once the engine exists
        self.curriculum = (
            build_curriculum(cfg, train_problems) if cfg.data.curriculum != "potential" else None
        )
        self.step = 0
        self.policy_version = 0  # optimizer updates so far: the weights a rollout engine must hold
        self.update_gen = torch.Generator().manual_seed(cfg.trainer.seed)

    def precision(self) -> Any:
        """The compute-precision context of every forward (``model.dtype``; FSDP casts by itself)."""
        dtype = self.cfg.model.dtype
        return self.world.precision(None if dtype == "float32" else COMPUTE_DTYPES[dtype])

    # -- state ------------------------------------------------------------------------------
    def state_dict(self, with_optimizer: bool = True) -> dict[str, Any]:
        state = {
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "update_gen": self.update_gen.get_state(),
            "controller": self.controller.state_dict() if self.controller else None,
        }
        if with_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.update_gen.set_state(state["update_gen"])
        if self.controller is not None and state.get("controller"):
            self.controller.load_state_dict(state["controller"])
        self.step = int(state["step"])
        ckpt.set_rng_state(state["rng"])

    def save(self) -> Path:
        """A complete checkpoint of this step (collective under a process world)."""
        if self.world.sharded:
            return ckpt.save_sharded_checkpoint(
                self.run_dir,
                self.step,
                self.token_scorer,
                self.optimizer,
                self.tokenizer,
                self.state_dict(with_optimizer=False),
                keep_last=self.cfg.trainer.keep_last,
                main=self.world.main,
                barrier=self.world.barrier,
            )
        return self.world.on_main(
            lambda: ckpt.save_checkpoint(
                self.run_dir,
                self.step,
                self.model,
                self.tokenizer,
                self.state_dict(),
                keep_last=self.cfg.trainer.keep_last,
                merged=self.cfg.model.lora.save_merged,
            )
        )

    # -- one step ---------------------------------------------------------------------------
    def generate(self, prompt_ids: list[list[int]], params: Any) -> list[list[Any]]:
        """Sample from the current policy (full weights, compute precision, no gradients)."""
        with self.world.full_weights(self.token_scorer), self.precision(), torch.no_grad():
            return self.engine.generate(prompt_ids, params)

    def prepare_curriculum(self, potential: list[float] | None) -> None:
        """The run's curriculum (:mod:`archer.data.curriculum`) with the prompts' potentials."""

        self.curriculum = build_curriculum(self.cfg, self.train_problems, potential)

    def compute_potential(self) -> tuple[list[float], dict[str, list[float]]]:
        """Each training prompt's improvement potential under the current policy (R1-CI; see
        :mod:`archer.rl.potential`), and the pass rates of each sampling mode."""

        d, cfg = self.cfg.data, self.cfg
        with self.world.full_weights(self.token_scorer), self.precision(), torch.no_grad():
            return compute_potentials(
                self.engine,
                self.train_ids,
                self.train_problems,
                lambda responses, probs: safe_score(self.scorer, responses, probs),
                temperatures=d.potential_temperatures,
                samples=d.potential_samples,
                max_new_tokens=max_new_tokens_at(cfg, 0),
                seed=cfg.trainer.seed + 31,
                batch_size=max(cfg.rollout.batch_size, 16),
            )

    def stage(self, step: int) -> Any:
        """The curriculum state of ``step`` (response budget, prompt pool)."""
        if self.curriculum is None:
            raise RuntimeError("data.curriculum=potential: prepare_curriculum() was not called")
        return self.curriculum.at(step)

    def generate_round(self, round_index: int, max_new: int) -> Round:
        """Stages generate, score and shape for one round of ``rollout.batch_size`` prompts."""
        world = self.world
        # the same on every rank; the curriculum stage's prompt pool, if any
        idx = self.sampler.next(self.cfg.rollout.batch_size, self.stage(self.step).pool)
        mine = world.mine(idx)
        t0 = time.time()
        outs = self.generate(
            [self.train_ids[i] for i in mine],
            sampling_params(self.cfg, self.step, round_index, world.rank, max_new),
        )  # [P][n]
        t1 = time.time()
        problems = [self.train_problems[i] for i, group in zip(mine, outs) for _ in group]
        results = safe_score(self.scorer, [ro.text for group in outs for ro in group], problems)
        n = self.cfg.rollout.n
        scored = world.gather([(group, results[gi * n : (gi + 1) * n]) for gi, group in enumerate(outs)])
        kinds = [self.train_problems[i].kind for i in idx]
        groups, reasons = make_groups(
            self.cfg, idx, scored, response_budget(self.cfg, max_new), kinds
        )  # every rank: all groups, global order
        for g in groups:
            self.sampler.observe(g.prompt_index, g.accuracy)  # online removal of solved prompts
        return Round(idx, groups, t1 - t0, time.time() - t1, reasons)

    def run_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t_start = time.time()
        stage = self.stage(self.step)
        max_new = stage.max_new_tokens
        rounds: list[Round] = []

        def one_round(i: int) -> list[Group]:
            rounds.append(self.generate_round(i, max_new))
            return rounds[-1].groups

        groups, stats = collect_groups(
            one_round,
            cfg.rollout.batch_size,
            cfg.rollout.max_gen_batches if cfg.rollout.dynamic_sampling else 1,
            cfg.algo.filter_zero_variance,
        )
        m = round_metrics(rounds, stats, max_new)
        m.update(
            {
                "data/removed_prompts": len(self.sampler.removed),
                "data/epoch": self.sampler.epoch,
                "data/curriculum_pool": len(stage.pool) if stage.pool is not None else len(self.train_ids),
                "optim/lr": self.scheduler.get_last_lr()[0],
            }
        )
        t_train = time.time()
        if groups:
            m.update(self.train_on(groups, response_budget(cfg, max_new)))
        else:
            m["update/skipped_no_signal"] = 1
        with warnings.catch_warnings():  # a step with no update still advances the schedule
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        m["time/train"] = time.time() - t_train
        m["time/step"] = time.time() - t_start
        m.update(getattr(self.engine, "metrics", dict)())  # weight version, sync time, staleness, ...
        first = next((g for r in rounds for g in r.groups if g.responses), None)
        if first is not None:
            m["sample"] = {
                "id": self.train_problems[first.prompt_index].id,
                "prompt": self.tokenizer.decode(self.train_ids[first.prompt_index])[:500],
                "response": first.responses[0].text[:300],
                "reward": first.rewards[0],
            }
        return m

    def logprobs(self, scorer: Any, batch: TrainBatch, mine: list[int]) -> torch.Tensor:
        """[B, T] log-probs of this rank's rows under ``scorer`` (0 elsewhere), without gradients."""
        cfg = self.cfg
        out = torch.zeros_like(batch.response_mask)  # [B, T]
        parts = [
            [mine[j] for j in mb]
            for mb in micro_batches([batch.lengths[i] for i in mine], cfg.trainer.micro_batch_tokens)
        ]
        parts = self.world.even_out(parts)  # collective forwards under FSDP: the same count on every rank
        scorer.eval()
        with torch.no_grad(), self.precision():
            for mb in parts:
                part = _rows(batch, mb or [0])
                lp, _ = scorer(
                    part["input_ids"],
                    part["attention_mask"],
                    part["response_mask"],
                    temperature=cfg.rollout.temperature,
                    chunk_size=cfg.trainer.logprob_chunk_size,
                    with_entropy=False,
                    prompt_len=part["prompt_len"],
                    group=part["group"],
                )
                if mb:
                    out[mb, : lp.shape[1]] = lp
        return out

    def train_on(self, groups: list[Group], max_new: int) -> dict[str, Any]:
        """Stages advantages, old and reference log-probs, and the update (``ppo_epochs`` x ``mini_batches``)."""
        cfg, a, world = self.cfg, self.cfg.algo, self.world
        batch = build_batch(cfg, groups, self.tokenizer.pad_token_id, world.device)
        # rows this rank trains: those of its groups (g % world == rank); all rows in one process
        mine = group_rows(groups, world.owned(len(groups)))
        mine_set = set(mine)
        if self.rollout_is_policy():  # exactly on-policy: the sampler's log-probs are the old ones
            batch.old_log_prob = batch.rollout_log_prob
        else:
            batch.old_log_prob = self.logprobs(self.token_scorer, batch, mine)
        if self.ref_scorer is not None:
            batch.ref_log_prob = self.logprobs(self.ref_scorer, batch, mine)
        elif needs_reference(cfg):  # LoRA: the reference is the base model, adapters disabled
            with self.model.disable_adapter():
                batch.ref_log_prob = self.logprobs(self.token_scorer, batch, mine)
        entropy_alpha = a.entropy_coef + (self.controller.alpha if self.controller is not None else 0.0)
        settings = UpdateSettings(
            loss=a.loss,
            agg=a.agg,
            loss_params=dict(a.loss_params),
            entropy_coef=entropy_alpha,
            pos_nll_coef=a.pos_nll_coef,
            max_reward=float(batch.rewards.max()),
            max_len=float(max_new),
            grad_clip=cfg.optim.grad_clip,
            temperature=cfg.rollout.temperature,
            chunk_size=cfg.trainer.logprob_chunk_size,
            tis_cap=a.tis_cap,
        )
        tensors = batch.tensors(with_rollout=a.tis_cap is not None)
        self.token_scorer.train()
        updates: list[dict[str, float]] = []
        for _epoch in range(cfg.trainer.ppo_epochs):
            # the global split (same generator state on every rank); each rank takes its rows of it
            for mini in split_mini_batches(len(batch.lengths), cfg.trainer.mini_batches, self.update_gen):
                mini = [i for i in mini if i in mine_set]  # this rank's rows; may be empty: it still syncs
                mb = micro_batches([batch.lengths[i] for i in mini], cfg.trainer.micro_batch_tokens)
                with self.precision():
                    updates.append(
                        update_minibatch(
                            self.token_scorer,
                            self.optimizer,
                            tensors,
                            [[mini[j] for j in m] for m in mb],
                            settings,
                            world,
                        )
                    )
        self.token_scorer.eval()
        if self.controller is not None:
            self.controller.update(_entropy_measure(batch.old_log_prob, batch.response_mask, mine, world))
        out = mean_update_metrics(updates)
        out["update/optimizer_steps"] = sum(1 for u in updates if not u.get("skipped_nonfinite"))
        out["update/skipped_nonfinite"] = sum(int(u.get("skipped_nonfinite", 0)) for u in updates)
        out["update/rows"] = len(batch.lengths)
        out["update/entropy_coef"] = entropy_alpha
        out["advantage/abs_mean"] = float(batch.advantages.abs().mean())
        out.update(_mismatch_metrics(batch, mine, world))
        self.sync_engine()
        return out

    def rollout_is_policy(self) -> bool:
        """The sampler's log-probs equal the trainer's recomputation (to float rounding): the engine
        samples from this float32 policy at the training temperature (``trainer.reuse_rollout_logprobs``)."""

        return (
            self.cfg.trainer.reuse_rollout_logprobs
            and shares_policy(self.engine)
            and self.cfg.model.dtype == "float32"
        )

    # -- one-step-off-policy (rollout.one_step_off_policy) -------------------------------------
    def predict_next_round(self, served: Any) -> tuple[list[list[int]], Any] | None:
        """What the next training round will most likely ask the engine for, so that the rollout
        workers can generate it while this step trains: the sampler's next draw (taken on a copy of its
        state) with the settings of round 0 of the next step. None when ``served`` (the sampling settings
        just served) are not a training round of this step (evaluation asks with its own seed)."""
        import copy

        cfg, rank = self.cfg, self.world.rank
        rounds = cfg.rollout.max_gen_batches if cfg.rollout.dynamic_sampling else 1
        max_new = self.stage(self.step).max_new_tokens
        if served.seed not in {sampling_params(cfg, self.step, r, rank, max_new).seed for r in range(rounds)}:
            return None
        nxt = self.stage(self.step + 1)
        idx = copy.deepcopy(self.sampler).next(cfg.rollout.batch_size, nxt.pool)
        params = sampling_params(cfg, self.step + 1, 0, rank, nxt.max_new_tokens)
        return [self.train_ids[i] for i in self.world.mine(idx)], params

    def sync_engine(self) -> None:
        """After an update: a rollout engine with its own copy of the weights gets the new ones."""

        self.policy_version += 1
        if not shares_policy(self.engine):
            with self.world.full_weights(self.token_scorer):
                self.engine.update_weights(unwrap(self.model))


def _entropy_measure(old: torch.Tensor, mask: torch.Tensor, rows: list[int], world: World) -> float:
    """``-mean(old_log_prob)`` over the trained tokens of every rank's own rows (the controller's input)."""
    m = mask[rows] != 0  # [R, T]
    total = world.sum(float(-(old[rows][m]).double().sum()) if rows else 0.0)
    count = world.sum(float(m.sum()) if rows else 0.0)
    return total / count if count > 0 else 0.0


def _mismatch_metrics(batch: TrainBatch, rows: list[int], world: World) -> dict[str, float]:
    """|sampler - trainer| log-prob gap over the trained tokens (0 when the sampler's are reused)."""
    m = batch.response_mask[rows] != 0  # [R, T]
    diff = (batch.rollout_log_prob[rows] - batch.old_log_prob[rows]).abs()[m].double()  # [N]
    count = world.sum(float(diff.numel()))
    return {
        "rollout/logprob_diff_mean": world.sum(float(diff.sum())) / max(count, 1.0),
        "rollout/logprob_diff_max": world.max_float(float(diff.max()) if diff.numel() else 0.0),
    }


def _rows(batch: TrainBatch, rows: list[int]) -> dict[str, torch.Tensor]:
    idx = torch.tensor(rows, dtype=torch.long)
    width = int(batch.attention_mask[idx].sum(-1).max())
    out = {k: getattr(batch, k)[idx][:, :width] for k in ("input_ids", "attention_mask", "response_mask")}
    return dict(out, prompt_len=batch.prompt_len[idx], group=batch.group[idx])


# ------------------------------------------------------------------------------- entry point


def make_run_dir(cfg: Config, out: str | Path | None) -> Path:
    if out is not None:
        return Path(out)
    name = cfg.logging.run_name or f"{cfg.recipe or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.logging.out_dir) / name


def train(
    cfg: Config,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    model: Any = None,
    tokenizer: Any = None,
    train_problems: list[Any] | None = None,
    eval_problems: list[Any] | None = None,
    scorer: Scorer | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Run RL as configured; returns the summary (also written to ``<run_dir>/summary.json``) plus
    ``history`` (the per-step metrics) and ``run_dir``.

    ``model``/``tokenizer`` (an initial policy already in memory, e.g. an SFT model) and the problem
    lists override what the config would build; the model is saved as the run's ``sft_model`` (the
    KL reference and a resume start from that copy) and trained in place. ``on_step(step, metrics)``
    is called after every step (on every rank). ``resources.train_procs > 1`` outside a process group
    starts that many local processes and returns rank 0's summary (``model``, ``scorer`` and
    ``on_step`` are not passed to them).
    """
    given = dict(model=model, tokenizer=tokenizer, train_problems=train_problems, eval_problems=eval_problems)
    if launch.should_launch(cfg):
        _warn_not_passed({**given, "scorer": scorer, "on_step": on_step})
        return launch.launch_local(train, cfg, make_run_dir(cfg, run_dir), resume=resume)
    t0 = time.time()
    world, out = _start(cfg, run_dir)
    run, sft_info = _build_run(cfg, world, out, resume, given, scorer)
    logger = world.main_only(lambda: _metrics_logger(run), _SilentLogger())
    for note in logger.notes:
        world.print(note)
    try:
        with world.full_weights(run.token_scorer):
            before = world.on_main(lambda: _evaluate_before(run, logger))
        history = _run_steps(run, logger, on_step)
        if cfg.trainer.save_final and cfg.trainer.steps > 0:
            _save_final(run)
        logger.stop_progress()
        after = _evaluate_at(run, run.step)
        if after:
            logger.log(run.step, _headline(after))
            world.print(f"after RL:  {_fmt(after)}")
    finally:
        _close(run, logger)
    summary = _summary(run, before, after, sft_info, time.time() - t0)
    world.main_only(lambda: _write_summary(run, summary))
    world.close()
    return dict(summary, history=history)


def _warn_not_passed(objects: dict[str, Any]) -> None:
    given = [k for k, v in objects.items() if v is not None]
    if given:
        warnings.warn(
            f"resources.train_procs > 1: {given} not passed to the spawned ranks (they build "
            "their own from the config); start the ranks yourself (torchrun) to pass objects",
            stacklevel=3,
        )


def _start(cfg: Config, run_dir: str | Path | None) -> tuple[World, Path]:
    """Join the process world, seed, and create the run directory (rank 0) with its ``config.yaml``."""
    device = resolve_device(cfg.trainer.device)
    world = join_world(device, cfg.trainer.strategy, cfg.resources.dist_backend, cfg.resources.dist_timeout_s)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    torch.manual_seed(cfg.trainer.seed)
    out = world.broadcast(make_run_dir(cfg, run_dir))  # a time-stamped name could differ between ranks
    world.main_only(lambda: (out.mkdir(parents=True, exist_ok=True), save_config(cfg, out / "config.yaml")))
    return world, out


def _build_run(
    cfg: Config, world: World, out: Path, resume: bool, given: dict[str, Any], scorer: Scorer | None
) -> tuple[RLRun, dict[str, Any]]:
    """Problems, the initial policy (built, warmed or given; loaded on every rank), the run's state
    (restored from the last complete checkpoint when resuming) and the curriculum."""
    # problems first: a malformed dataset row fails here, before any model is built
    train_problems, eval_problems = given["train_problems"], given["eval_problems"]
    if train_problems is None or eval_problems is None:
        tp, ep = load_problems(cfg)
        train_problems = tp if train_problems is None else train_problems
        eval_problems = ep if eval_problems is None else eval_problems
    eval_problems = eval_problems[: cfg.eval.num_problems] if cfg.eval.enabled else []
    last = world.on_main(lambda: ckpt.latest_checkpoint(out) if resume else None)
    model, tokenizer = given["model"], given["tokenizer"]
    sft_info: dict[str, Any] = {}
    if last is None:  # rank 0 builds (and SFT-warms) the initial policy once; every rank loads it
        sft_info = world.on_main(
            lambda: prepare_initial_policy(
                cfg, out, train_problems, model, tokenizer, world.print, resume=resume
            )
        )
    # an object in memory cannot reach other ranks: with several, each loads the saved copy
    in_memory = (
        (model, tokenizer) if model is not None and tokenizer is not None and world.size == 1 else None
    )
    model, tokenizer, ref_model = load_run_policy(cfg, out, last, in_memory)
    model.to(world.device)
    if ref_model is not None:
        ref_model.to(world.device)
    run = RLRun(
        cfg,
        out,
        model=model,
        tokenizer=tokenizer,
        train_problems=train_problems,
        eval_problems=eval_problems,
        scorer=scorer,
        log=world.print,
        world=world,
        ref_model=ref_model,
    )
    if last is not None:
        if ckpt.is_sharded_checkpoint(last):
            ckpt.load_sharded_checkpoint(last, run.token_scorer, run.optimizer)
        run.load_state_dict(ckpt.load_trainer_state(last))
        world.print(f"resuming from {last}")
    if cfg.data.curriculum == "potential":
        with world.full_weights(run.token_scorer):
            potential = world.on_main(lambda: _potential(run, cfg, out, world.print))
        run.prepare_curriculum(world.broadcast(potential))
    return run, sft_info


def _metrics_logger(run: RLRun) -> MetricsLogger:
    lg = run.cfg.logging
    return MetricsLogger(
        run.run_dir,
        total_steps=run.cfg.trainer.steps,
        start_step=run.step,
        tensorboard=lg.tensorboard,
        wandb=lg.wandb,
        wandb_project=lg.wandb_project,
        progress=lg.progress,
        config=run.cfg.to_dict(),  # the settings in force (e.g. tis_cap)
    )


def _run_steps(run: RLRun, logger: Any, on_step: StepCallback | None) -> list[dict[str, Any]]:
    """Steps until ``trainer.steps``: train, evaluate every ``eval.every``, log, save every ``save_every``."""
    cfg, history = run.cfg, []
    while run.step < cfg.trainer.steps:
        metrics = run.run_step()
        run.step += 1
        last_step = run.step >= cfg.trainer.steps
        if cfg.eval.every and run.step % cfg.eval.every == 0 and not last_step and run.eval_problems:
            metrics.update(_headline(_evaluate_at(run, run.step)))
        if run.controller is not None:
            metrics["entropy/controller_coef"] = run.controller.coef
        logger.log(run.step, metrics)
        history.append(dict(metrics, step=run.step))
        if on_step is not None:
            on_step(run.step, metrics)
        if cfg.trainer.save_every and run.step % cfg.trainer.save_every == 0 and not last_step:
            run.save()
    return history


def _headline(ev: dict[str, Any]) -> dict[str, Any]:
    return {f"eval/{k}": v for k, v in ev.items() if headline_metric(k)}


def _evaluate_before(run: RLRun, logger: Any) -> dict[str, Any]:
    """The held-out evaluation before the first step (rank 0), kept in ``eval_before.json`` for a resume."""
    path = run.run_dir / "eval_before.json"
    if path.is_file():
        return json.loads(path.read_text())
    ev = _evaluate(run, run.cfg, 0) if run.eval_problems else {}
    path.write_text(json.dumps(ev, indent=2))
    if ev:
        logger.log(0, _headline(ev))
        run.log(f"before RL: {_fmt(ev)}")
    return ev


def _evaluate_at(run: RLRun, step: int) -> dict[str, Any]:
    """Collective: the full weights are gathered on every rank, rank 0 evaluates."""
    with run.world.full_weights(run.token_scorer):
        return run.world.on_main(lambda: _evaluate(run, run.cfg, step) if run.eval_problems else {})


def _save_final(run: RLRun) -> None:
    last_saved = run.world.on_main(lambda: ckpt.latest_checkpoint(run.run_dir))
    if last_saved is None or not last_saved.name.endswith(f"{run.step:06d}"):
        run.save()


def _close(run: RLRun, logger: Any) -> None:
    logger.close()
    run.scorer.close()
    close = getattr(run.engine, "close", None)
    if close is not None:  # Ray rollout actors, a vLLM engine's memory
        close()


def _summary(
    run: RLRun, before: dict[str, Any], after: dict[str, Any], sft_info: dict[str, Any], seconds: float
) -> dict[str, Any]:
    final = run.world.on_main(lambda: ckpt.latest_checkpoint(run.run_dir))
    summary = {
        "recipe": run.cfg.recipe,
        "run_dir": str(run.run_dir),
        "steps": run.step,
        "before": before,
        "after": after,
        "improvement": improvement(before, after),
        "sft": sft_info,
        "seconds": round(seconds, 1),
        "final_checkpoint": str(final) if final else None,
    }
    replicas = run.world.replicas(run.token_scorer)
    if replicas is not None:
        summary["dist"] = replicas
        if run.world.strategy == "ddp" and not replicas["replicas_identical"]:
            run.log("warning: the data-parallel replicas diverged (summary.json: dist.replica_digests)")
    return summary


def _write_summary(run: RLRun, summary: dict[str, Any]) -> None:
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if run.cfg.logging.plots:
        from archer.tracking.plots import plot_run

        plot_run(run.run_dir)


def response_budget(cfg: Config, max_new: int) -> int:
    """Response tokens a rollout may hold: ``max_new`` per turn, times ``rollout.max_turns`` for a tool
    rollout (observations included); the length DAPO's overlong shaping and a constant loss normaliser
    measure against."""
    return max_new * (cfg.rollout.max_turns if cfg.rollout.tools else 1)


def _potential(run: RLRun, cfg: Config, out: Path, log: Callable[[str], None]) -> list[float]:
    """The prompts' potentials: ``<run>/potential.json`` when there (a resumed run), else
    ``data.potential_file``, else computed now; saved to ``<run>/potential.json``."""

    saved = out / "potential.json"
    if saved.is_file():
        return [float(x) for x in json.loads(saved.read_text())["potential"]]
    rates: dict[str, list[float]] = {}
    if cfg.data.potential_file:
        potential = read_potential_file(cfg.data.potential_file, run.train_problems)
        log(f"curriculum: potentials of {len(potential)} prompts from {cfg.data.potential_file}")
    else:
        t0 = time.time()
        potential, rates = run.compute_potential()
        log(
            f"curriculum: potentials of {len(potential)} prompts from {len(rates)} sampling modes "
            f"({', '.join(f'{k}: pass {sum(v) / max(len(v), 1):.3f}' for k, v in rates.items())}; "
            f"{time.time() - t0:.0f} s)"
        )
    ids = [p.id for p in run.train_problems]
    saved.write_text(json.dumps({"id": ids, "potential": potential, "pass_rates": rates}))
    return potential


class _SilentLogger:
    """The metrics sink of ranks > 0: rank 0 alone writes the run directory."""

    notes: tuple[str, ...] = ()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def stop_progress(self) -> None:
        pass

    def close(self) -> None:
        pass


def _evaluate(run: RLRun, cfg: Config, step: int) -> dict[str, Any]:

    # tool rollouts lock-step: the evaluations before and after RL see the same random numbers
    with run.precision(), lockstep(run.engine):
        return evaluate_policy(
            run.engine,
            run.tokenizer,
            run.scorer,
            run.eval_problems,
            cfg,
            cfg.eval.max_new_tokens or max_new_tokens_at(cfg, cfg.trainer.steps),
            seed=cfg.trainer.seed + 7,
        )


def _fmt(ev: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in ev.items() if headline_metric(k))
