"""One RL step as its stages, each a function over typed values that returns its own metrics.

    draw -> generate -> score -> shape  (one round; :func:`rollout_round`)
    filter (DAPO dynamic sampling over rounds) -> advantages (a frozen :class:`TrainBatch`)
    -> old / reference log-probs -> update (``ppo_epochs`` x ``mini_batches`` AdamW steps) -> engine sync

:func:`run_step` is the step written out in that order. The run's state (policy, engine, optimizer,
data order) is an :class:`archer.rl.run.RLRun`; what the config implies for a step (response budget,
sampling seeds, schedule) is in :mod:`archer.rl.settings`; the metrics are in :mod:`archer.rl.metrics`.

- score: the verifier scorer (a broken verifier is reward 0 with its reason);
- shape: DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, eq. 13) and
  R1-Code-Interpreter's format and turn terms for tool rollouts;
- filter: :func:`archer.rl.batch.collect_groups` (zero-variance groups dropped, more rounds generated
  until ``rollout.batch_size`` groups carry signal or ``max_gen_batches`` rounds were generated);
- old log-probs: the sampler's own when the rollout is exactly on-policy, else recomputed.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections import Counter
from typing import Any

import torch

from archer.algo.rollout_correction import correction_in_force
from archer.config import Config
from archer.models.loader import unwrap
from archer.rewards.shaping import overlong_penalty
from archer.rewards.tool_reward import tool_terms
from archer.rewards.types import safe_score
from archer.rl.batch import (
    Group,
    Round,
    TrainBatch,
    balanced_split,
    build_batch,
    group_rows,
    micro_batches,
    split_mini_batches,
)
from archer.rl.metrics import entropy_measure, mean_update_metrics, mismatch_metrics, round_metrics
from archer.rl.run import RLRun
from archer.rl.settings import needs_reference, response_budget, sampling_params
from archer.rl.update import UpdateSettings, update_minibatch
from archer.rollout.base import shares_policy

# ------------------------------------------------------------------------------- the step


def run_step(run: RLRun) -> dict[str, Any]:
    """One RL step (the stages below, in order); returns the step's metrics."""
    cfg = run.cfg
    t_start = time.time()
    stage = run.stage(run.step)
    max_new = stage.max_new_tokens
    # generate (sync) or take from the async producer's buffer; filter: DAPO dynamic sampling
    groups, stats, rounds = run.rounds.collect(run, max_new)
    m = round_metrics(rounds, stats, max_new)
    m.update(
        {
            "data/removed_prompts": len(run.sampler.removed),
            "data/epoch": run.sampler.epoch,
            "data/curriculum_pool": len(stage.pool) if stage.pool is not None else len(run.train_ids),
            "optim/lr": run.scheduler.get_last_lr()[0],
        }
    )
    t_train = time.time()
    if groups:
        m.update(train_on(run, groups, response_budget(cfg, max_new)))
    else:
        m["update/skipped_no_signal"] = 1
    with warnings.catch_warnings():  # a step with no update still advances the schedule
        warnings.simplefilter("ignore", UserWarning)
        run.scheduler.step()
    m["time/train"] = time.time() - t_train
    m["time/step"] = time.time() - t_start
    m.update(getattr(run.engine, "metrics", dict)())  # weight version, sync time, staleness, ...
    run.rounds.after_step(run)  # async: the producer gets this step's weights
    m.update(run.rounds.metrics())  # async: staleness histogram, buffer depth, idle times, drops
    m.update(_sample(run, rounds))
    return m


def rollout_round(run: RLRun, round_index: int, max_new: int) -> Round:
    """One round: draw, generate, score and shape ``rollout.batch_size`` prompts' groups."""
    prompts = draw(run)
    run.world.mark("generate", run.step + 1)  # the stage the heartbeat and the watchdog report
    t0 = time.time()
    outs = generate(run, prompts, round_index, max_new)  # [P_rank][n]
    t1 = time.time()
    run.world.mark("score")
    scored = score(run, prompts, outs)
    groups, reasons = shape(run, prompts, scored, max_new)
    return Round(prompts, groups, t1 - t0, time.time() - t1, reasons)


def train_on(run: RLRun, groups: list[Group], max_new: int) -> dict[str, Any]:
    """Advantages, old and reference log-probs, the update and the engine sync, on the kept groups."""
    run.world.mark("logprobs")
    batch = build_batch(run.cfg, groups, run.tokenizer.pad_token_id, run.world.device)  # advantages
    # rows this rank trains: those of its groups, the groups split over ranks with near-equal token
    # sums (a group stays on one rank: its rows share their prompt); all rows in one process
    tokens = [sum(len(g.prompt_ids) + len(ro.response_ids) for ro in g.responses) for g in groups]
    mine = group_rows(groups, balanced_split(tokens, run.world.size)[run.world.rank])
    batch = with_old_and_ref_logprobs(run, batch, mine)
    run.world.mark("update")
    out = update(run, batch, mine, max_new)
    out.update(mismatch_metrics(batch, mine, run.world))
    out.update(sync_engine(run))
    return out


# ------------------------------------------------------------------------------- the stages


def draw(run: RLRun) -> list[int]:
    """``rollout.batch_size`` prompt indices from the seeded data order, from the curriculum stage's
    pool when it has one; the same on every rank."""
    return run.sampler.next(run.cfg.rollout.batch_size, run.stage(run.step).pool)


def generate(run: RLRun, prompts: list[int], round_index: int, max_new: int) -> list[list[Any]]:
    """This rank's share of ``prompts``, ``rollout.n`` samples each, from the current policy (full
    weights, compute precision, no gradients): ``[P_rank][n]`` rollouts."""
    params = sampling_params(run.cfg, run.step, round_index, run.world.rank, max_new)
    ids = [run.train_ids[i] for i in run.world.mine(prompts)]
    with run.world.full_weights(run.token_scorer), run.precision(), torch.no_grad():
        return run.engine.generate(ids, params)


def score(run: RLRun, prompts: list[int], outs: list[list[Any]]) -> list[tuple[list[Any], list[Any]]]:
    """Verifier results of this rank's rollouts, gathered from every rank in the global prompt order."""
    mine = run.world.mine(prompts)
    problems = [run.train_problems[i] for i, group in zip(mine, outs) for _ in group]
    results = safe_score(run.scorer, [ro.text for group in outs for ro in group], problems)
    n = run.cfg.rollout.n
    return run.world.gather([(group, results[gi * n : (gi + 1) * n]) for gi, group in enumerate(outs)])


def shape(
    run: RLRun, prompts: list[int], scored: list[tuple[list[Any], list[Any]]], max_new: int
) -> tuple[list[Group], Counter]:
    """Groups with shaped rewards (every rank: all groups, global order); each group's accuracy feeds
    the online removal of solved prompts."""
    kinds = [run.train_problems[i].kind for i in prompts]
    groups, reasons = make_groups(run.cfg, prompts, scored, response_budget(run.cfg, max_new), kinds)
    for g in groups:
        run.sampler.observe(g.prompt_index, g.accuracy)
    return groups, reasons


def with_old_and_ref_logprobs(run: RLRun, batch: TrainBatch, mine: list[int]) -> TrainBatch:
    """The batch with the sampling policy's log-probs (the sampler's own when exactly on-policy: an engine
    sampling like the policy, every token of the current version; else recomputed under the current
    weights, the proximal policy of decoupled PPO) and, when a KL term is on, the reference's (under
    LoRA: adapters disabled)."""
    reuse = run.rollout_is_policy() and fresh(batch, run.step)
    old = batch.rollout_log_prob if reuse else logprobs(run, run.token_scorer, batch, mine)
    ref = None
    if run.ref_scorer is not None:
        ref = logprobs(run, run.ref_scorer, batch, mine)
    elif needs_reference(run.cfg):  # LoRA: the reference is the base model, adapters disabled
        with run.model.disable_adapter():
            ref = logprobs(run, run.token_scorer, batch, mine)
    return dataclasses.replace(batch, old_log_prob=old, ref_log_prob=ref)


def fresh(batch: TrainBatch, version: int) -> bool:
    """Every trained token was sampled by weights of ``version`` (a batch without versions: True)."""
    if batch.token_version is None:
        return True
    return bool((batch.token_version[batch.response_mask != 0] == version).all())


def update(run: RLRun, batch: TrainBatch, mine: list[int], max_new: int) -> dict[str, Any]:
    """``trainer.ppo_epochs`` passes over ``trainer.mini_batches`` mini-batches, one AdamW step each
    (token-balanced micro-batches of at most ``trainer.micro_batch_tokens`` real tokens); then the adaptive entropy controller."""
    cfg, a, world = run.cfg, run.cfg.algo, run.world
    mine_set = set(mine)
    entropy_alpha = a.entropy_coef + (run.controller.alpha if run.controller is not None else 0.0)
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
        rollout_correction=correction_in_force(a.rollout_correction, a.tis_cap),
        rollout_correction_params=dict(a.rollout_correction_params),
    )
    tensors = batch.tensors(with_rollout=settings.rollout_correction != "none")
    run.token_scorer.train()
    packed = run.token_scorer.packs()  # packed rows: balanced bins; padded: rows of similar length together
    updates: list[dict[str, float]] = []
    for _epoch in range(cfg.trainer.ppo_epochs):
        # the global split (same generator state on every rank); each rank takes its rows of it
        for mini in split_mini_batches(len(batch.lengths), cfg.trainer.mini_batches, run.update_gen):
            mini = [i for i in mini if i in mine_set]  # this rank's rows; may be empty: it still syncs
            mb = micro_batches([batch.lengths[i] for i in mini], cfg.trainer.micro_batch_tokens, packed)
            with run.precision():
                updates.append(
                    update_minibatch(
                        run.token_scorer,
                        run.optimizer,
                        tensors,
                        [[mini[j] for j in m] for m in mb],
                        settings,
                        world,
                    )
                )
    run.token_scorer.eval()
    if run.controller is not None:
        run.controller.update(entropy_measure(batch.old_log_prob, batch.response_mask, mine, world))
    out = mean_update_metrics(updates)
    out["update/optimizer_steps"] = sum(1 for u in updates if not u.get("skipped_nonfinite"))
    out["update/skipped_nonfinite"] = sum(int(u.get("skipped_nonfinite", 0)) for u in updates)
    out["update/rows"] = len(batch.lengths)
    out["update/entropy_coef"] = entropy_alpha
    out["advantage/abs_mean"] = float(batch.advantages.abs().mean())
    return out


def sync_engine(run: RLRun) -> dict[str, Any]:
    """After an update: a rollout engine with its own copy of the weights gets the new ones (the
    engine reports its sync time in its own metrics)."""
    run.policy_version += 1
    run.world.mark("weight_sync")
    if not shares_policy(run.engine):
        with run.world.full_weights(run.token_scorer):
            run.engine.update_weights(unwrap(run.model))
    return {}


# ------------------------------------------------------------------------------- helpers


def logprobs(run: RLRun, scorer: Any, batch: TrainBatch, mine: list[int]) -> torch.Tensor:
    """[B, T] log-probs of this rank's rows under ``scorer`` (0 elsewhere), without gradients."""
    cfg = run.cfg
    out = torch.zeros_like(batch.response_mask)  # [B, T]
    parts = [
        [mine[j] for j in mb]
        for mb in micro_batches(
            [batch.lengths[i] for i in mine], cfg.trainer.micro_batch_tokens, scorer.packs()
        )
    ]
    parts = run.world.even_out(parts)  # collective forwards under FSDP: the same count on every rank
    scorer.eval()
    with torch.no_grad(), run.precision():
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


def _sample(run: RLRun, rounds: list[Round]) -> dict[str, Any]:
    """One response of the step, for the log (the first group that has one)."""
    first = next((g for r in rounds for g in r.groups if g.responses), None)
    if first is None:
        return {}
    return {
        "sample": {
            "id": run.train_problems[first.prompt_index].id,
            "prompt": run.tokenizer.decode(run.train_ids[first.prompt_index])[:500],
            "response": first.responses[0].text[:300],
            "reward": first.rewards[0],
        }
    }


def _rows(batch: TrainBatch, rows: list[int]) -> dict[str, torch.Tensor]:
    idx = torch.tensor(rows, dtype=torch.long)
    width = int(batch.attention_mask[idx].sum(-1).max())
    out = {k: getattr(batch, k)[idx][:, :width] for k in ("input_ids", "attention_mask", "response_mask")}
    return dict(out, prompt_len=batch.prompt_len[idx], group=batch.group[idx])


# ------------------------------------------------------------------------------- shaping


def overlong_shaping(length: int, max_len: int, buffer: int) -> float:
    """DAPO soft overlong punishment (arXiv 2503.14476, eq. 13)."""

    return float(overlong_penalty(length, max_len, buffer))


def shape_reward(
    cfg: Config,
    verifier_reward: float,
    length: int,
    max_new: int,
    meta: dict[str, Any] | None = None,
    kind: str = "math",
) -> float:
    """The training reward of one response: the verifier's plus the configured length shaping, plus
    R1-Code-Interpreter's format and turn terms for a tool rollout (``reward.tool_*``,
    :mod:`archer.rewards.tool_reward`)."""
    reward = float(verifier_reward)
    if cfg.algo.overlong_buffer > 0:
        reward += cfg.algo.overlong_penalty * overlong_shaping(length, max_new, cfg.algo.overlong_buffer)
    rw = cfg.reward
    if meta and (rw.tool_format_weight or rw.tool_turn_penalty):
        reward += tool_terms(meta, kind, rw.tool_format_weight, rw.tool_turn_penalty, rw.tool_turn_limit)
    return reward


def make_groups(
    cfg: Config,
    prompts: list[int],
    scored: list[tuple[list[Any], list[Any]]],
    max_new: int,
    kinds: list[str] | None = None,
) -> tuple[list[Group], Counter]:
    """Groups with shaped rewards from ``(rollouts, reward results)`` per prompt; failure reasons counted.
    ``kinds``: each prompt's problem kind (math / code), for the tool format term."""
    groups, reasons = [], Counter()
    for gi, (pidx, (rollouts, results)) in enumerate(zip(prompts, scored)):
        kind = kinds[gi] if kinds else "math"
        rewards = [
            shape_reward(cfg, rr.reward, len(ro.response_ids), max_new, getattr(ro, "meta", None), kind)
            for ro, rr in zip(rollouts, results)
        ]
        reasons.update(rr.info["reason"] for rr in results if rr.info.get("reason") and not rr.correct)
        groups.append(
            Group(
                pidx,
                list(rollouts[0].prompt_ids) if rollouts else [],
                list(rollouts),
                rewards,
                [bool(rr.correct) for rr in results],
                [rr.info for rr in results],
            )
        )
    return groups, reasons
