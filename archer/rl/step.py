"""The stages of one RL step, each a function over typed data that returns its own metrics.

generate -> score -> shape -> filter -> advantages -> old/reference log-probs -> update -> schedule

- :func:`sampling_params` / generation (``RLRun.generate``) give ``[P][n]`` rollouts per round;
- :func:`score_round` scores them with the verifier scorer (a broken verifier is reward 0) and
  :func:`shape_reward` adds DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, eq. 13);
  a round is a :class:`Round` (its groups plus what the step metrics need);
- :func:`archer.rl.batch.collect_groups` is the dynamic-sampling filter over rounds;
- :func:`build_batch` computes group advantages and packs the kept groups into a :class:`TrainBatch`;
- :func:`round_metrics` turns the rounds of a step into its rollout metrics.

The old and reference log-probs and the update are methods of ``archer.rl.loop.RLRun`` (they need the
model, the world and the precision), each filling a field of the :class:`TrainBatch`.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from archer.algo.advantages import compute_advantages
from archer.algo.losses import POLICY_LOSSES
from archer.config import Config
from archer.data.curriculum import Curriculum, length_stages
from archer.rewards.code import CODE_OUTCOMES, code_outcome, is_code_info
from archer.rewards.reward_model import rm_metrics
from archer.rewards.shaping import overlong_penalty
from archer.rewards.tool_reward import tool_metrics
from archer.rl.batch import CollectStats, Group, pack
from archer.rollout.base import SamplingParams


def max_new_tokens_at(cfg: Config, step: int) -> int:
    """The length curriculum: the last stage whose start step is <= ``step`` (default max_new_tokens);
    ``rollout.length_stages`` is one instance of :mod:`archer.data.curriculum`."""

    return (
        Curriculum(length_stages(cfg.rollout.length_stages), cfg.rollout.max_new_tokens)
        .at(step)
        .max_new_tokens
    )


def needs_reference(cfg: Config) -> bool:
    """A reference model is needed only when a KL coefficient of the loss (registry default or
    ``algo.loss_params``) is > 0."""

    a = cfg.algo
    params = POLICY_LOSSES[a.loss].resolve(a.loss, dict(a.loss_params))
    return params["kl_coef"] > 0 or params.get("high_entropy_kl_coef", 0.0) > 0


def lr_lambda(cfg: Config) -> Callable[[int], float]:
    """Linear warm-up, then constant / cosine / linear decay to ``min_lr_ratio``."""
    o, total = cfg.optim, max(cfg.trainer.steps, 1)

    def fn(step: int) -> float:
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        shape = (
            0.5 * (1 + torch.cos(torch.tensor(frac * torch.pi)).item())
            if o.schedule == "cosine"
            else 1 - frac
        )
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return fn


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
        from archer.rewards.tool_reward import tool_terms

        reward += tool_terms(meta, kind, rw.tool_format_weight, rw.tool_turn_penalty, rw.tool_turn_limit)
    return reward


def sampling_params(cfg: Config, step: int, round_index: int, rank: int, max_new: int) -> Any:
    """The rollout sampling settings of one round (a distinct seed per step, round and rank)."""

    r = cfg.rollout
    seed = cfg.trainer.seed * 1_000_003 + step * 101 + round_index + (rank << 40)
    return SamplingParams(
        n=r.n,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        max_new_tokens=max_new,
        stop=tuple(r.stop),
        seed=seed,
    )


@dataclass
class Round:
    """One generation round of a step: the scored groups (global prompt order) and its costs."""

    prompts: list[int]  # global prompt indices drawn for this round
    groups: list[Group]
    seconds_generate: float = 0.0
    seconds_reward: float = 0.0
    failure_reasons: Counter = field(default_factory=Counter)


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
    m.update(code_metrics(groups))
    if "code/tests_passed_frac" in m:
        # the sandbox's wall time: each round's code responses run as one sandbox batch (batch_seconds);
        # with Ray reward workers the chunks run apart, and their longest is the round's wall time
        m["code/sandbox_seconds"] = sum(
            max((i.get("batch_seconds", 0.0) for g in r.groups for i in g.infos), default=0.0) for r in rounds
        )

    m.update(tool_metrics([ro for g in groups for ro in g.responses]))
    m.update(rm_metrics([i for g in groups for i in g.infos]))  # reward.model: RM score vs rule reward
    reasons = sum((r.failure_reasons for r in rounds), Counter())
    if reasons:
        m["reward/failure_reasons"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
    return m


def code_metrics(groups: list[Group]) -> dict[str, float]:
    """Code-reward metrics over a step's responses (empty for math): mean fraction of tests passed and
    the outcome mix (pass, wrong, timeout, error, memory, no_code, ...) as fractions of responses
    (:func:`round_metrics` adds ``code/sandbox_seconds``, the sandbox's wall time in the step)."""
    infos = [i for g in groups for i in g.infos if is_code_info(i)]
    if not infos:
        return {}
    fracs = [i["passed"] / i["total"] if i.get("total") else 0.0 for i in infos]
    mix = Counter(code_outcome(i) for i in infos)
    out = {"code/tests_passed_frac": sum(fracs) / len(fracs)}
    out.update({f"code/outcome_{k}": mix[k] / len(infos) for k in CODE_OUTCOMES})
    return out


@dataclass
class TrainBatch:
    """The kept groups of a step packed for training (row ``i`` is response ``i % n`` of group ``i // n``)."""

    input_ids: torch.Tensor  # [B, T] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] 1 on trained response tokens (t is predicted from t-1)
    rewards: torch.Tensor  # [B] shaped rewards
    advantages: torch.Tensor  # [B]
    lengths: list[int]  # [B] prompt + response tokens
    prompt_len: torch.Tensor  # [B] prompt tokens of each row
    group: torch.Tensor  # [B] the row's group: rows of a group share their prompt (one forward for it)
    rollout_log_prob: torch.Tensor  # [B, T] the sampler's log-probs (0 off the response)
    old_log_prob: torch.Tensor | None = None  # [B, T] the sampling policy's, recomputed or reused
    ref_log_prob: torch.Tensor | None = None  # [B, T] the KL reference's

    def tensors(self, with_rollout: bool) -> dict[str, torch.Tensor]:
        """The dict :func:`archer.rl.update.update_minibatch` slices."""
        out = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "response_mask": self.response_mask,
            "rewards": self.rewards,
            "advantages": self.advantages,
            "prompt_len": self.prompt_len,
            "group": self.group,
        }
        for name in ("old_log_prob", "ref_log_prob") + (("rollout_log_prob",) if with_rollout else ()):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def build_batch(cfg: Config, groups: list[Group], pad_id: int, device: torch.device) -> TrainBatch:
    """Group advantages (``algo.advantage``) and the packed rows of the kept groups."""

    rewards = torch.tensor([g.rewards for g in groups], dtype=torch.float32)  # [G, n]
    adv = compute_advantages(cfg.algo.advantage, rewards)  # [G, n]
    rollouts = [ro for g in groups for ro in g.responses]
    rows = [(g.prompt_ids, ro.response_ids) for g in groups for ro in g.responses]
    packed = pack(rows, pad_id)
    for i, ro in enumerate(rollouts):  # tool rollouts: observation tokens are context, never trained
        loss_mask = (getattr(ro, "meta", None) or {}).get("loss_mask")
        if loss_mask is not None:
            start = len(rows[i][0])
            keep = torch.tensor(loss_mask, dtype=packed["response_mask"].dtype)  # [R_i]
            packed["response_mask"][i, start : start + len(keep)] *= keep
    if cfg.algo.mask_truncated:  # overlong filtering: truncated responses do not train
        packed["response_mask"][torch.tensor([ro.truncated for ro in rollouts], dtype=torch.bool)] = 0.0
    sampler = torch.zeros_like(packed["response_mask"])  # [B, T]
    for i, ro in enumerate(rollouts):
        start = len(rows[i][0])
        sampler[i, start : start + len(ro.logprobs)] = torch.tensor(ro.logprobs, dtype=sampler.dtype)
    return TrainBatch(
        input_ids=packed["input_ids"].to(device),
        attention_mask=packed["attention_mask"].to(device),
        response_mask=packed["response_mask"].to(device),
        rewards=rewards.reshape(-1).to(device),
        advantages=adv.reshape(-1).to(device),
        lengths=[len(p) + len(r) for p, r in rows],
        prompt_len=torch.tensor([len(p) for p, _ in rows], device=device),
        group=torch.tensor([gi for gi, g in enumerate(groups) for _ in g.responses], device=device),
        rollout_log_prob=sampler.to(device),
    )


def group_rows(groups: list[Group], owned: list[int]) -> list[int]:
    """Row indices (in the packed batch of all groups) of the groups in ``owned``."""
    starts = [0]
    for g in groups:
        starts.append(starts[-1] + len(g.responses))
    return [i for gi in owned for i in range(starts[gi], starts[gi + 1])]


def mean_update_metrics(updates: list[dict[str, float]]) -> dict[str, float]:
    """``actor/*`` metrics: the mean over a step's optimizer steps (``ratio_max``: the max)."""
    keys = {k for u in updates for k in u if k != "skipped_nonfinite"}
    out = {}
    for k in sorted(keys):
        vals = [u[k] for u in updates if k in u]
        out[f"actor/{k}"] = max(vals) if k == "ratio_max" else sum(vals) / len(vals)
    return out
