"""The RL loop (ALGORITHMS.md), written out: ``train(config) -> summary``.

One step:
 1. take ``rollout.batch_size`` prompts from the seeded data order, sample ``rollout.n`` responses each
    (``max_new_tokens`` from the length curriculum ``rollout.length_stages``);
 2. score them with the verifier scorer (``resources.backend``: local pools or Ray), add DAPO overlong
    shaping, record accuracy per prompt (online removal of solved prompts);
 3. DAPO dynamic sampling: drop zero-variance groups and generate more rounds until ``batch_size``
    groups carry signal or ``max_gen_batches`` rounds were generated; then train on what there is
    (nothing at all is a logged no-op step, never an abort);
 4. group advantages (``algo.advantage``), recompute the sampling policy's log-probs (``old``) and, when
    a KL term is on, the frozen reference's;
 5. ``trainer.ppo_epochs`` passes over ``trainer.mini_batches`` mini-batches, each one AdamW step with
    micro-batches cut by ``trainer.micro_batch_tokens`` and the mini-batch's loss normaliser, gradient
    clipping, NaN/inf steps skipped; then the warmup/decay schedule and the adaptive entropy controller
    (Skywork-OR1) advance once per RL step;
 6. log ``metrics.jsonl`` (+ TensorBoard/W&B), checkpoint atomically every ``trainer.save_every`` steps.
Before the first step and after the last, the policy is evaluated on held-out problems (avg@k, pass@k)
and ``summary.json`` records both.

Data parallel (``resources.train_procs=N``, or N processes under ``torchrun``; ``archer.train.rl_dist``):
``archer train RECIPE resources.train_procs=2`` starts 2 local processes (gloo on CPU, nccl on CUDA
with ``resources.dist_backend=auto``). Every rank holds a full replica of the policy (generation runs on
it; FSDP2 shards could not generate rank-dependent lengths without matching collectives), draws the
same prompt batch, generates and scores its slice ``[rank::world]`` with a rank-offset seed, and gathers
all groups, so dynamic sampling, prompt removal, group advantages and the step metrics are global and
identical on every rank. Group ``g`` is trained by rank ``g % world`` inside the global mini-batch split;
each mini-batch step all-reduces the loss normaliser, the NaN/inf skip and the gradients (sum), so the
replicas stay bitwise equal (checked at the end: ``summary["dist"]``). Rank 0 alone writes the run
directory (metrics, TensorBoard, plots, checkpoints) and evaluates; the others wait for it. Resuming
loads the same checkpoint on every rank. With one process nothing of this runs (no collectives).
Untested here: nccl/GPU multi-process runs; FSDP2 sharding is not used by the loop.

Simplifications (stated, on purpose): one device per process; the rollout engine shares the policy
module (no weight sync); outcome rewards only (one advantage per response); the reference model is a
frozen copy of the initial policy; evaluation uses the same engine with ``eval.*`` sampling settings.
Resuming restores weights, optimizer, scheduler, RNG, data order and controller state from the last
complete checkpoint; the steps after it are recomputed with the same seeds.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archer.config import Config, save_config
from archer.train import checkpoint as ckpt
from archer.train.batching import (
    Group,
    PromptSampler,
    collect_groups,
    micro_batches,
    pack,
    split_mini_batches,
)
from archer.train.logging import MetricsLogger
from archer.train.rl_eval import evaluate_policy
from archer.train.rl_update import ENTROPY_SPLIT_LOSSES, UpdateSettings, sequence_logprobs, update_minibatch
from archer.train.scorer import Scorer, build_scorer, safe_score

StepCallback = Callable[[int, dict[str, Any]], None]


# ------------------------------------------------------------------------------- small pieces


def max_new_tokens_at(cfg: Config, step: int) -> int:
    """The length curriculum: the last stage whose start step is <= ``step`` (default max_new_tokens)."""
    value = cfg.rollout.max_new_tokens
    for start, tokens in cfg.rollout.length_stages:
        if step >= start:
            value = tokens
    return value


def needs_reference(cfg: Config) -> bool:
    """A reference model is built only when some KL coefficient of the loss is > 0."""
    a = cfg.algo
    if a.kl_coef is not None:
        kl = a.kl_coef
    elif a.loss in ENTROPY_SPLIT_LOSSES:
        kl = a.loss_params.get("kl_coef", 0.001)
    else:
        kl = a.loss_params.get("kl_coef", 0.0)
    return kl > 0 or a.loss_params.get("high_entropy_kl_coef", 0.0) > 0


def lr_lambda(cfg: Config) -> Callable[[int], float]:
    o, total = cfg.optim, max(cfg.trainer.steps, 1)

    def fn(step: int) -> float:
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        shape = 0.5 * (1 + torch.cos(torch.tensor(frac * torch.pi)).item()) if o.schedule == "cosine" else 1 - frac
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return fn


def overlong_shaping(length: int, max_len: int, buffer: int) -> float:
    """DAPO soft overlong punishment (arXiv 2503.14476, eq. 13); uses archer.rewards.shaping when present."""
    try:
        from archer.rewards.shaping import overlong_penalty
    except ImportError:
        if length <= max_len - buffer:
            return 0.0
        return ((max_len - buffer) - length) / buffer if length <= max_len else -1.0
    return float(overlong_penalty(length, max_len, buffer))


# ------------------------------------------------------------------------------- the run


class RLRun:
    """State of one run; :func:`train` is the entry point. Separate methods keep each stage readable."""

    def __init__(self, cfg: Config, run_dir: Path, *, model: Any, tokenizer: Any, train_problems: list[Any],
                 eval_problems: list[Any], scorer: Scorer | None = None, engine: Any = None,
                 log: Callable[[str], None] = print, ranks: Any = None) -> None:
        from archer.train.rl_setup import encode_prompts

        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        self.ranks = ranks  # archer.train.rl_dist.Ranks when data parallel, else None
        self.model, self.tokenizer = model, tokenizer
        self.train_problems, self.eval_problems = train_problems, eval_problems
        d = cfg.data
        self.train_ids = encode_prompts(train_problems, tokenizer, d.max_prompt_tokens, d.prompt_template)
        self.eval_ids = encode_prompts(eval_problems, tokenizer, d.max_prompt_tokens, d.prompt_template)
        r = cfg.resources
        self.scorer = scorer or build_scorer(r.backend, num_workers=r.num_reward_workers,
                                             cpus_per_worker=r.cpus_per_worker, address=r.address,
                                             timeout=r.verifier_timeout)
        if engine is None:
            from archer.train.rl_setup import build_engine

            engine = build_engine(cfg.rollout.engine, model, tokenizer,
                                  str(ranks.device) if ranks is not None else cfg.trainer.device)
        self.engine = engine
        o = cfg.optim
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=o.lr,
                                           betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.ref_model = None
        if needs_reference(cfg):
            self.ref_model = copy.deepcopy(model).eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)
        self.controller = None
        if cfg.algo.entropy_target is not None:
            from archer.algo.regularizers import AdaptiveEntropyController

            self.controller = AdaptiveEntropyController(target=cfg.algo.entropy_target,
                                                        delta=cfg.algo.entropy_delta,
                                                        c_max=cfg.algo.entropy_max_coef)
        self.sampler = PromptSampler(len(train_problems), seed=cfg.data.seed, shuffle=cfg.data.shuffle,
                                     remove_threshold=cfg.data.remove_solved_threshold,
                                     min_keep=cfg.rollout.batch_size)
        self.step = 0
        self.update_gen = torch.Generator().manual_seed(cfg.trainer.seed)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(), "update_gen": self.update_gen.get_state(),
                "controller": self.controller.state_dict() if self.controller else None,
                "ref_model": self.ref_model.state_dict() if self.ref_model is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.update_gen.set_state(state["update_gen"])
        if self.controller is not None and state.get("controller"):
            self.controller.load_state_dict(state["controller"])
        if self.ref_model is not None and state.get("ref_model") is not None:
            self.ref_model.load_state_dict(state["ref_model"])
        self.step = int(state["step"])
        ckpt.set_rng_state(state["rng"])

    def save(self) -> Path:
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.tokenizer, self.state_dict(),
                                    keep_last=self.cfg.trainer.keep_last)

    # -- one step ---------------------------------------------------------------------------
    def _generate_round(self, round_index: int, max_new: int, acc: dict[str, Any]) -> list[Group]:
        from archer.rollout.base import SamplingParams

        cfg, r = self.cfg, self.cfg.rollout
        idx = self.sampler.next(r.batch_size)  # the same on every rank
        acc["prompts"] += idx
        dp = self.ranks
        mine = idx[dp.rank::dp.world] if dp is not None else idx
        seed = cfg.trainer.seed * 1_000_003 + self.step * 101 + round_index + (dp.rank << 40 if dp else 0)
        params = SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                max_new_tokens=max_new, stop=tuple(r.stop), seed=seed)
        t0 = time.time()
        self.model.eval()
        with torch.no_grad():
            outs = self.engine.generate([self.train_ids[i] for i in mine], params)  # [P][n]
        t1 = time.time()
        flat = [ro for group in outs for ro in group]
        problems = [self.train_problems[i] for i, group in zip(mine, outs) for _ in group]
        results = safe_score(self.scorer, [ro.text for ro in flat], problems)
        acc["time/generate"] += t1 - t0
        acc["time/reward"] += time.time() - t1
        scored = [(group, results[gi * r.n:(gi + 1) * r.n]) for gi, group in enumerate(outs)]
        if dp is not None:  # every rank sees every group, in the global prompt order
            scored = dp.gather(scored)
        groups = []
        for pidx, (group, res) in zip(idx, scored):
            rewards = []
            for ro, rr in zip(group, res):
                reward = float(rr.reward)
                if cfg.algo.overlong_buffer > 0:
                    reward += cfg.algo.overlong_penalty * overlong_shaping(
                        len(ro.response_ids), max_new, cfg.algo.overlong_buffer)
                rewards.append(reward)
                if rr.info.get("reason") and not rr.correct:
                    acc["reasons"][rr.info["reason"]] = acc["reasons"].get(rr.info["reason"], 0) + 1
            g = Group(pidx, list(group[0].prompt_ids) if group else [], list(group), rewards,
                      [bool(rr.correct) for rr in res], [rr.info for rr in res])
            acc["all_rewards"] += rewards
            acc["all_correct"] += g.correct
            acc["lengths"] += [len(ro.response_ids) for ro in group]
            acc["truncated"] += [bool(ro.truncated) for ro in group]
            acc["removed"] += int(self.sampler.observe(pidx, g.accuracy))
            groups.append(g)
        if not acc.get("sample") and groups and groups[0].responses:
            acc["sample"] = {"prompt": self.train_problems[idx[0]].id,
                             "response": groups[0].responses[0].text[:300], "reward": groups[0].rewards[0]}
        return groups

    def run_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t_start = time.time()
        max_new = max_new_tokens_at(cfg, self.step)
        acc: dict[str, Any] = {"time/generate": 0.0, "time/reward": 0.0, "all_rewards": [], "all_correct": [],
                               "lengths": [], "truncated": [], "removed": 0, "reasons": {}, "prompts": []}
        groups, stats = collect_groups(lambda i: self._generate_round(i, max_new, acc), cfg.rollout.batch_size,
                                       cfg.rollout.max_gen_batches if cfg.rollout.dynamic_sampling else 1,
                                       cfg.algo.filter_zero_variance)
        n_all = max(len(acc["all_rewards"]), 1)
        m: dict[str, Any] = {
            "reward/mean": sum(acc["all_rewards"]) / n_all,
            "reward/accuracy": sum(acc["all_correct"]) / n_all,
            "response/length_mean": sum(acc["lengths"]) / n_all,
            "response/length_max": max(acc["lengths"], default=0),
            "response/truncation_rate": sum(acc["truncated"]) / n_all,
            "rollout/max_new_tokens": max_new,
            "filter/rounds": stats.rounds,
            "filter/kept_groups": stats.kept_groups,
            "filter/zero_variance_groups": stats.zero_variance_groups,
            "filter/short_batch": int(stats.short),
            "data/removed_prompts": len(self.sampler.removed),
            "data/epoch": self.sampler.epoch,
            # identifies the prompts of this step: a resumed run must reproduce it step for step
            "data/prompt_hash": zlib.crc32(",".join(map(str, acc["prompts"])).encode()),
            "optim/lr": self.scheduler.get_last_lr()[0],
        }
        if acc["reasons"]:
            m["reward/failure_reasons"] = dict(sorted(acc["reasons"].items(), key=lambda kv: -kv[1])[:5])
        t_train = time.time()
        if groups:
            m.update(self._update(groups, max_new))
        else:
            m["update/skipped_no_signal"] = 1
        with warnings.catch_warnings():  # a step with no update still advances the schedule
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        m["time/train"] = time.time() - t_train
        m["time/generate"] = acc["time/generate"]
        m["time/reward"] = acc["time/reward"]
        m["time/step"] = time.time() - t_start
        if acc.get("sample"):
            m["sample"] = acc["sample"]
        return m

    def _update(self, groups: list[Group], max_new: int) -> dict[str, Any]:
        from archer.algo.advantages import compute_advantages

        cfg, a = self.cfg, self.cfg.algo
        rewards = torch.tensor([g.rewards for g in groups], dtype=torch.float32)  # [G, n]
        adv = compute_advantages(a.advantage, rewards)  # [G, n]
        rows = [(g.prompt_ids, ro.response_ids) for g in groups for ro in g.responses]
        batch = pack(rows, self.tokenizer.pad_token_id)
        batch["advantages"] = adv.reshape(-1)  # [B]
        batch["rewards"] = rewards.reshape(-1)  # [B]
        if a.mask_truncated:  # overlong filtering: truncated responses do not train
            trunc = torch.tensor([ro.truncated for g in groups for ro in g.responses], dtype=torch.bool)
            batch["response_mask"][trunc] = 0.0
        if a.tis_cap is not None:
            rl = torch.zeros_like(batch["response_mask"])
            for i, ro in enumerate(ro for g in groups for ro in g.responses):
                start = len(rows[i][0])
                rl[i, start:start + len(ro.logprobs)] = torch.tensor(ro.logprobs, dtype=rl.dtype)
            batch["rollout_log_prob"] = rl
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        lengths = [len(p) + len(r) for p, r in rows]
        # rows this rank trains: those of its groups (g % world == rank); all rows in one process
        dp = self.ranks
        mine = list(range(len(rows))) if dp is None else _group_rows(groups, dp.owned(len(groups)))
        mine_set = set(mine)
        chunk, temp = cfg.trainer.logprob_chunk_size, cfg.rollout.temperature
        self.model.eval()
        with torch.no_grad():  # the sampling policy's log-probs, recomputed by the trainer
            old = torch.zeros_like(batch["response_mask"])
            ref = torch.zeros_like(batch["response_mask"]) if self.ref_model is not None else None
            for local_mb in micro_batches([lengths[i] for i in mine], cfg.trainer.micro_batch_tokens):
                mb = [mine[j] for j in local_mb]
                part = _rows(batch, mb)
                lp, _ = sequence_logprobs(self.model, part, temperature=temp, chunk_size=chunk, with_entropy=False)
                old[mb, : lp.shape[1]] = lp
                if ref is not None:
                    lp_ref, _ = sequence_logprobs(self.ref_model, part, temperature=temp, chunk_size=chunk,
                                                  with_entropy=False)
                    ref[mb, : lp_ref.shape[1]] = lp_ref
        batch["old_log_prob"] = old
        if ref is not None:
            batch["ref_log_prob"] = ref
        self.model.train()
        entropy_alpha = a.entropy_coef + (self.controller.alpha if self.controller is not None else 0.0)
        params = dict(a.loss_params)
        if a.kl_coef is not None:
            params["kl_coef"] = a.kl_coef
        if a.kl_estimator != "k3":
            params["kl_estimator"] = a.kl_estimator
        settings = UpdateSettings(loss=a.loss, agg=a.agg, loss_params=params, entropy_coef=entropy_alpha,
                                  pos_nll_coef=a.pos_nll_coef, max_reward=float(rewards.max()),
                                  max_len=float(max_new), grad_clip=cfg.optim.grad_clip, temperature=temp,
                                  chunk_size=chunk, tis_cap=a.tis_cap)
        updates: list[dict[str, float]] = []
        for _epoch in range(cfg.trainer.ppo_epochs):
            # the global split (same generator state on every rank); each rank takes its rows of it
            for mini in split_mini_batches(len(rows), cfg.trainer.mini_batches, self.update_gen):
                if dp is not None:
                    mini = [i for i in mini if i in mine_set]  # may be empty: the rank still syncs
                mb = micro_batches([lengths[i] for i in mini], cfg.trainer.micro_batch_tokens)
                updates.append(update_minibatch(self.model, self.optimizer, batch, [[mini[j] for j in m] for m in mb],
                                                settings, dist=dp is not None))
        self.model.eval()
        if self.controller is not None:
            from archer.algo.regularizers import AdaptiveEntropyController

            if dp is None:
                measured = AdaptiveEntropyController.measure(old, batch["response_mask"])
            else:
                from archer.train.rl_dist import global_entropy_measure

                measured = global_entropy_measure(old, batch["response_mask"], mine)
            self.controller.update(measured)
        out = _mean_metrics(updates)
        out["update/optimizer_steps"] = sum(1 for u in updates if not u.get("skipped_nonfinite"))
        out["update/skipped_nonfinite"] = sum(int(u.get("skipped_nonfinite", 0)) for u in updates)
        out["update/rows"] = len(rows)
        out["update/entropy_coef"] = entropy_alpha
        out["advantage/abs_mean"] = float(adv.abs().mean())
        return out


def _rows(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    idx = torch.tensor(rows, dtype=torch.long)
    width = int(batch["attention_mask"][idx].sum(-1).max())
    return {k: batch[k][idx][:, :width] for k in ("input_ids", "attention_mask", "response_mask")}


def _group_rows(groups: list[Group], owned: list[int]) -> list[int]:
    """Row indices (in the packed batch of all groups) of the groups in ``owned``."""
    starts = [0]
    for g in groups:
        starts.append(starts[-1] + len(g.responses))
    return [i for gi in owned for i in range(starts[gi], starts[gi + 1])]


def _mean_metrics(updates: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for u in updates for k in u if k != "skipped_nonfinite"}
    out = {}
    for k in sorted(keys):
        vals = [u[k] for u in updates if k in u]
        agg = max(vals) if k == "ratio_max" else sum(vals) / len(vals)
        out[f"actor/{k}"] = agg
    return out


# ------------------------------------------------------------------------------- entry point


def make_run_dir(cfg: Config, out: str | Path | None) -> Path:
    if out is not None:
        return Path(out)
    name = cfg.logging.run_name or f"{cfg.recipe or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.logging.out_dir) / name


def train(cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False, model: Any = None,
          tokenizer: Any = None, train_problems: list[Any] | None = None, eval_problems: list[Any] | None = None,
          scorer: Scorer | None = None, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Run RL as configured; returns the summary (also written to ``<run_dir>/summary.json``) plus
    ``history`` (the per-step metrics) and ``run_dir``.

    ``model``/``tokenizer`` (an SFT checkpoint already in memory) and the problem lists override what
    the config would build; ``on_step(step, metrics)`` is called after every step (on every rank).
    ``resources.train_procs > 1`` outside a process group starts that many local processes and returns
    rank 0's summary (``model``, ``scorer`` and ``on_step`` are not passed to them).
    """
    from archer.train import rl_dist
    from archer.train.rl_setup import load_problems

    if rl_dist.should_launch(cfg):
        given = [k for k, v in dict(model=model, tokenizer=tokenizer, train_problems=train_problems,
                                    eval_problems=eval_problems, scorer=scorer, on_step=on_step).items() if v is not None]
        if given:
            warnings.warn(f"resources.train_procs > 1: {given} not passed to the spawned ranks (they build "
                          "their own from the config); start the ranks yourself (torchrun) to pass objects",
                          stacklevel=2)
        return rl_dist.launch_local(cfg, make_run_dir(cfg, run_dir), resume=resume)
    t0 = time.time()
    ranks = rl_dist.join(cfg)  # None in a single process
    main = ranks is None or ranks.main
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    torch.manual_seed(cfg.trainer.seed)
    out = make_run_dir(cfg, run_dir)
    if ranks is not None:
        out = ranks.broadcast(out)  # a time-stamped name could differ between ranks
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    def log(text: str) -> None:
        if main:
            print(text, flush=True)

    # problems first: a malformed dataset row fails here, before any model is built
    if train_problems is None or eval_problems is None:
        tp, ep = load_problems(cfg)
        train_problems = tp if train_problems is None else train_problems
        eval_problems = ep if eval_problems is None else eval_problems
    eval_problems = eval_problems[: cfg.eval.num_problems] if cfg.eval.enabled else []
    last = rl_dist.on_main(ranks, lambda: ckpt.latest_checkpoint(out) if resume else None)
    sft_info: dict[str, Any] = {}
    if last is not None:
        model, tokenizer = rl_dist.load_hf(last, cfg)
        log(f"resuming from {last}")
    elif model is None or tokenizer is None:  # rank 0 builds (and SFT-warms); the others load its copy
        model, tokenizer, sft_info = rl_dist.build_policy_once(cfg, ranks, out, train_problems, log)
    model.to(ranks.device if ranks is not None else cfg.trainer.device)
    if ranks is not None:
        rl_dist.broadcast_params(model)
    run = RLRun(cfg, out, model=model, tokenizer=tokenizer, train_problems=train_problems,
                eval_problems=eval_problems, scorer=scorer, log=log, ranks=ranks)
    if last is not None:
        run.load_state_dict(ckpt.load_trainer_state(last))
    before_path = out / "eval_before.json"
    history: list[dict[str, Any]] = []
    if main:
        logger: Any = MetricsLogger(out, total_steps=cfg.trainer.steps, start_step=run.step,
                                    tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                                    wandb_project=cfg.logging.wandb_project, progress=cfg.logging.progress,
                                    config=cfg.to_dict())
    else:
        logger = rl_dist.SilentLogger()
    for note in logger.notes:
        log(note)

    def evaluate_before() -> dict[str, Any]:
        if before_path.is_file():
            return json.loads(before_path.read_text())
        ev = _evaluate(run, cfg, 0) if eval_problems else {}
        before_path.write_text(json.dumps(ev, indent=2))
        if ev:
            logger.log(0, {f"eval/{k}": v for k, v in ev.items() if "@" in k})
            log(f"before RL: {_fmt(ev)}")
        return ev

    def save_final() -> None:
        last_saved = ckpt.latest_checkpoint(out)
        if last_saved is None or not last_saved.name.endswith(f"{run.step:06d}"):
            run.save()

    try:
        before = rl_dist.on_main(ranks, evaluate_before)
        while run.step < cfg.trainer.steps:
            metrics = run.run_step()
            run.step += 1
            if cfg.eval.every and run.step % cfg.eval.every == 0 and run.step < cfg.trainer.steps and eval_problems:
                ev = rl_dist.on_main(ranks, lambda: _evaluate(run, cfg, run.step))
                metrics.update({f"eval/{k}": v for k, v in ev.items() if "@" in k})
            if run.controller is not None:
                metrics["entropy/controller_coef"] = run.controller.coef
            logger.log(run.step, metrics)
            history.append(dict(metrics, step=run.step))
            if on_step is not None:
                on_step(run.step, metrics)
            every = cfg.trainer.save_every
            if every and run.step % every == 0 and run.step < cfg.trainer.steps:
                rl_dist.on_main(ranks, run.save)  # the others wait: the replicas are identical
        if cfg.trainer.save_final and cfg.trainer.steps > 0:
            rl_dist.on_main(ranks, save_final)
        logger.stop_progress()
        after = rl_dist.on_main(ranks, lambda: _evaluate(run, cfg, run.step) if eval_problems else {})
        if after:
            logger.log(run.step, {f"eval/{k}": v for k, v in after.items() if "@" in k})
            log(f"after RL:  {_fmt(after)}")
    finally:
        logger.close()
        run.scorer.close()
    final = ckpt.latest_checkpoint(out)
    summary = {
        "recipe": cfg.recipe, "run_dir": str(out), "steps": run.step, "before": before, "after": after,
        "improvement": {k: after[k] - before[k] for k in after if "@" in k and k in before},
        "sft": sft_info, "seconds": round(time.time() - t0, 1),
        "final_checkpoint": str(final) if final else None,
    }
    if ranks is not None:
        digests = ranks.gather([rl_dist.replica_digest(run.model)])
        summary["dist"] = {"world_size": ranks.world, "replica_digests": digests,
                           "replicas_identical": len(set(digests)) == 1}
        if not summary["dist"]["replicas_identical"]:
            log("warning: the data-parallel replicas diverged (summary.json: dist.replica_digests)")
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if cfg.logging.plots:
            from archer.train.plots import plot_run

            plot_run(out)
    rl_dist.leave(ranks)
    return dict(summary, history=history)


def _evaluate(run: RLRun, cfg: Config, step: int) -> dict[str, Any]:
    return evaluate_policy(run.engine, run.scorer, run.eval_ids, run.eval_problems, cfg,
                           cfg.eval.max_new_tokens or max_new_tokens_at(cfg, cfg.trainer.steps),
                           seed=cfg.trainer.seed + 7)


def _fmt(ev: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in ev.items() if "@" in k)
