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

Training modes (``trainer.mode``, :mod:`archer.rl.rounds`): ``sync`` runs the steps as above;
``one_step_off`` generates step t+1 on Ray rollout workers while step t trains; ``async`` takes the
rounds from a producer thread that generates ahead within ``trainer.max_staleness`` versions
(:mod:`archer.rl.async_rollout`, docs/ALGORITHMS.md section 5b).

Simplifications (stated, on purpose): one device per process; the HF rollout engine shares the policy
module (no weight sync; in async mode the producer holds a copy); outcome rewards only (one advantage per response); evaluation uses the same
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
from archer.distributed import launch
from archer.distributed.health import write_status
from archer.distributed.world import World, join_world
from archer.models import checkpoint as ckpt
from archer.models.loader import resolve_device
from archer.rewards.types import Scorer
from archer.rl.evaluate import MeasurementMismatch, evaluate_policy, headline_metric, improvement, measurement
from archer.rl.potential import read_potential_file
from archer.rl.run import RLRun
from archer.rl.settings import max_new_tokens_at
from archer.rl.setup import load_run_policy, prepare_initial_policy
from archer.rl.step import refresh_engine, run_step
from archer.rollout.tools import lockstep
from archer.tasks.problems import load_problems
from archer.tracking.sinks import MetricsLogger

StepCallback = Callable[[int, dict[str, Any]], None]


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
        return launch.launch(
            train, cfg, make_run_dir(cfg, run_dir), resume=resume, latest=ckpt.latest_checkpoint
        )
    t0 = time.time()
    world, out = _start(cfg, run_dir)
    run, sft_info = _build_run(cfg, world, out, resume, given, scorer)
    logger = world.main_only(lambda: _metrics_logger(run), _SilentLogger())
    for note in logger.notes:
        world.print(note)
    world.mark("evaluate")
    try:
        with world.full_weights(run.token_scorer):
            before = world.on_main(lambda: _evaluate_before(run, logger, reuse=resume))
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
    world.main_only(lambda: write_status(out, state="finished", step=run.step))
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
    r = cfg.resources
    world = join_world(device, cfg.trainer.strategy, r.dist_backend, r.dist_timeout_s, nccl=cfg.nccl)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    torch.manual_seed(cfg.trainer.seed)
    out = world.broadcast(make_run_dir(cfg, run_dir))  # a time-stamped name could differ between ranks
    world.main_only(lambda: (out.mkdir(parents=True, exist_ok=True), save_config(cfg, out / "config.yaml")))
    world.monitor(out, r.watchdog_s or r.dist_timeout_s)  # heartbeats; a watchdog per rank of a process world
    world.main_only(
        lambda: write_status(out, recipe=cfg.recipe, state="running", world_size=world.size, error=None)
    )
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
    eval_problems = eval_problems if cfg.eval.enabled else []
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
    in_memory = world.local((model, tokenizer)) if model is not None and tokenizer is not None else None
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
        # an engine with its own weights gets the checkpoint's, numbered as the run left off: after a
        # sharded load it still held the initial policy's (built before the shards were loaded), and a
        # rebuilt Ray pool or vLLM engine would count its versions from 0 again
        refresh_engine(run, version=run.policy_version)
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
        progress=lg.progress,
        config=run.cfg.to_dict(),  # the settings in force (e.g. tis_cap)
    )


def _run_steps(run: RLRun, logger: Any, on_step: StepCallback | None) -> list[dict[str, Any]]:
    """Steps until ``trainer.steps``: train, evaluate every ``eval.every``, log, save every ``save_every``."""
    cfg, history = run.cfg, []
    truncated = _TruncationWatch(run.log)
    while run.step < cfg.trainer.steps:
        metrics = run_step(run)
        run.step += 1
        truncated.see(metrics)
        last_step = run.step >= cfg.trainer.steps
        if cfg.eval.every and run.step % cfg.eval.every == 0 and not last_step and run.eval_problems:
            run.world.mark("evaluate")
            metrics.update(_headline(_evaluate_at(run, run.step)))
        if run.controller is not None:
            metrics["entropy/controller_coef"] = run.controller.coef
        logger.log(run.step, metrics)
        history.append(dict(metrics, step=run.step))
        if on_step is not None:
            on_step(run.step, metrics)
        if cfg.trainer.save_every and run.step % cfg.trainer.save_every == 0 and not last_step:
            run.world.mark("save")
            run.save()
    return history


class _TruncationWatch:
    """Warns once when more than 90% of responses hit the length limit for 3 steps in a row: the model
    never ends its turn (an end-of-turn it cannot emit) or the budget is too small; nothing else says so."""

    def __init__(self, log: Callable[[str], None], steps: int = 3, rate: float = 0.9) -> None:
        self.log, self.steps, self.rate, self.run, self.warned = log, steps, rate, 0, False

    def see(self, metrics: dict[str, Any]) -> None:
        value = metrics.get("response/truncation_rate")
        self.run = self.run + 1 if value is not None and value > self.rate else 0
        if self.run >= self.steps and not self.warned:
            self.warned = True
            self.log(
                f"warning: over {self.rate:.0%} of responses were cut at rollout.max_new_tokens "
                f"({metrics.get('rollout/max_new_tokens')}) for {self.steps} steps in a row: the model may "
                "never end its turn (check its EOS and rollout.stop against the chat template) or the "
                "budget is too small (raise rollout.max_new_tokens)"
            )


def _headline(ev: dict[str, Any]) -> dict[str, Any]:
    return {f"eval/{k}": v for k, v in ev.items() if headline_metric(k)}


def _evaluate_before(run: RLRun, logger: Any, reuse: bool) -> dict[str, Any]:
    """The held-out evaluation before the first step (rank 0), kept in ``eval_before.json``; only a
    resumed run reads it back (a fresh run into a used folder measures its own model)."""
    path = run.run_dir / "eval_before.json"
    if reuse and path.is_file():
        before = json.loads(path.read_text())
        stored, now = before.get("measurement"), _measurement(run)
        if stored is not None and run.eval_problems and stored != now:  # found now, not after the run
            changed = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
            raise MeasurementMismatch(
                f"{path} was measured with other evaluation settings ({', '.join(changed)}): resume with "
                "the run's own eval.* settings, or start afresh (--overwrite)"
            )
        return before
    ev = _evaluate(run, run.cfg, 0) if run.eval_problems else {}
    path.write_text(json.dumps(ev, indent=2))
    if ev:
        logger.log(0, _headline(ev))
        run.log(f"before RL: {_fmt(ev)}")
    return ev


def _evaluate_at(run: RLRun, step: int) -> dict[str, Any]:
    """Collective: the full weights are gathered on every rank, rank 0 evaluates."""
    run.world.mark("evaluate")
    with run.world.full_weights(run.token_scorer):
        return run.world.on_main(lambda: _evaluate(run, run.cfg, step) if run.eval_problems else {})


def _save_final(run: RLRun) -> None:
    run.world.mark("save")
    last_saved = run.world.on_main(lambda: ckpt.latest_checkpoint(run.run_dir))
    if last_saved is None or not last_saved.name.endswith(f"{run.step:06d}"):
        run.save()


def _close(run: RLRun, logger: Any) -> None:
    run.rounds.close()  # async: the producer thread stops before its engine closes
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


def _eval_budget_and_seed(cfg: Config) -> tuple[int, int]:
    """The response budget and seed of every evaluation of a run: the same before, during and after."""
    return cfg.eval.max_new_tokens or max_new_tokens_at(cfg, cfg.trainer.steps), cfg.trainer.seed + 7


def _measurement(run: RLRun) -> dict[str, Any]:
    max_new, seed = _eval_budget_and_seed(run.cfg)
    return measurement(run.engine, run.eval_problems, run.cfg, max_new, seed)


def _evaluate(run: RLRun, cfg: Config, step: int) -> dict[str, Any]:
    max_new, seed = _eval_budget_and_seed(cfg)
    # tool rollouts lock-step: the evaluations before and after RL see the same random numbers
    with run.precision(), lockstep(run.engine):
        return evaluate_policy(
            run.engine, run.tokenizer, run.scorer, run.eval_problems, cfg, max_new, seed=seed
        )


def _fmt(ev: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in ev.items() if headline_metric(k))
