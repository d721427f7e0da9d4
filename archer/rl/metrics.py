"""A step's metrics: rollouts (rewards, lengths, filtering, tools, each verifier family's own),
the update (means over optimizer steps), the sampler/trainer log-prob gap and the entropy measure."""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import torch

from archer.distributed.world import World
from archer.rewards.scoring import step_metrics
from archer.rewards.tool_reward import tool_metrics
from archer.rl.batch import CollectStats, Round, TrainBatch


def round_metrics(rounds: list[Round], stats: CollectStats, max_new: int) -> dict[str, Any]:
    """Rollout metrics of a step over every round's groups (kept or not)."""
    groups = [g for r in rounds for g in r.groups]
    rewards = [x for g in groups for x in g.rewards]
    correct = [x for g in groups for x in g.correct]
    lengths = [len(ro.response_ids) for g in groups for ro in g.responses]
    truncated = [bool(ro.truncated) for g in groups for ro in g.responses]
    n = max(len(rewards), 1)
    prompts = [p for r in rounds for p in r.prompts]
    m: dict[str, Any] = {
        "reward/mean": sum(rewards) / n,
        "reward/accuracy": sum(correct) / n,
        "response/length_mean": sum(lengths) / n,
        "response/length_max": max(lengths, default=0),
        "response/truncation_rate": sum(truncated) / n,
        # distinct responses per group (1 = every sample differs): the diversity that entropy collapse removes
        "rollout/distinct_frac": (
            sum(len({ro.text for ro in g.responses}) / len(g.responses) for g in groups if g.responses)
            / max(sum(1 for g in groups if g.responses), 1)
        ),
        "rollout/max_new_tokens": max_new,
        "filter/rounds": stats.rounds,
        "filter/kept_groups": stats.kept_groups,
        "filter/zero_variance_groups": stats.zero_variance_groups,
        "filter/short_batch": int(stats.short),
        # identifies the prompts of this step: a resumed run must reproduce it step for step
        "data/prompt_hash": zlib.crc32(",".join(map(str, prompts)).encode()),
        "time/generate": sum(r.seconds_generate for r in rounds),
        "time/reward": sum(r.seconds_reward for r in rounds),
    }
    m.update(step_metrics([i for g in groups for i in g.infos]))  # each verifier family's own
    if "code/tests_passed_frac" in m:
        # the sandbox's wall time: each round's code responses run as one sandbox batch (batch_seconds);
        # with Ray reward workers the chunks run apart, and their longest is the round's wall time
        m["code/sandbox_seconds"] = sum(
            max((i.get("batch_seconds", 0.0) for g in r.groups for i in g.infos), default=0.0) for r in rounds
        )

    m.update(tool_metrics([ro for g in groups for ro in g.responses]))
    reasons = sum((r.failure_reasons for r in rounds), Counter())
    if reasons:
        m["reward/failure_reasons"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
    return m


def mean_update_metrics(updates: list[dict[str, float]]) -> dict[str, float]:
    """``actor/*`` metrics: the mean over a step's optimizer steps (``ratio_max``: the max)."""
    keys = {k for u in updates for k in u if k != "skipped_nonfinite"}
    out = {}
    for k in sorted(keys):
        vals = [u[k] for u in updates if k in u]
        out[f"actor/{k}"] = max(vals) if k == "ratio_max" else sum(vals) / len(vals)
    return out


def entropy_measure(old: torch.Tensor, mask: torch.Tensor, rows: list[int], world: World) -> float:
    """``-mean(old_log_prob)`` over the trained tokens of every rank's own rows (the controller's input)."""
    m = mask[rows] != 0  # [R, T]
    total = world.sum(float(-(old[rows][m]).double().sum()) if rows else 0.0)
    count = world.sum(float(m.sum()) if rows else 0.0)
    return total / count if count > 0 else 0.0


def mismatch_metrics(batch: TrainBatch, rows: list[int], world: World) -> dict[str, float]:
    """The sampler/trainer gap over the trained tokens of every rank's rows (all 0 when the sampler's
    log-probs are reused as the old ones), with ``d = old - rollout`` per token:

    - ``rollout/logprob_diff_mean`` / ``_max``: mean and max of ``|d|``;
    - ``rollout/kl_k1``: mean of ``-d``, and ``rollout/kl_k3``: mean of ``exp(d) - d - 1`` (``d``
      clamped to [-20, 20]); both estimate KL(pi_rollout || pi_old) from the sampler's tokens (the
      estimators of verl's ``rollout_corr/kl`` and ``k3_kl``).
    """
    m = batch.response_mask[rows] != 0  # [R, T]
    d = (batch.old_log_prob[rows].double() - batch.rollout_log_prob[rows].double())[m]  # [N]
    diff = d.abs()
    dc = d.clamp(-20.0, 20.0)
    count = max(world.sum(float(diff.numel())), 1.0)
    return {
        "rollout/logprob_diff_mean": world.sum(float(diff.sum())) / count,
        "rollout/logprob_diff_max": world.max_float(float(diff.max()) if diff.numel() else 0.0),
        "rollout/kl_k1": world.sum(float((-d).sum())) / count,
        "rollout/kl_k3": world.sum(float((torch.exp(dc) - dc - 1.0).sum())) / count,
    }
