"""``reward.model`` in RL: a reward model's score, alone or mixed with the rule reward, and ``rm/*`` metrics.

AceCoder (arXiv:2502.01718, Sec. 3.3) trains with Reinforce++ on either the reward model's score or the
rule reward (tests passed), and found the rule reward more robust: the policy learnt to please the
reward model. This scorer makes that visible in every step. Per response::

    reward = reward.model_weight * r_RM(prompt, response) + reward.rule_weight * rule reward

where the rule reward is what the run would get without a model (the built-in verifier, or
``reward.function`` mixed as configured). The verdict (``correct``: accuracy, eval pass rates) is
always the rule's. The RM runs batched (``reward.model_batch_size``) without gradients on the
trainer's device, in the trainer's process (also with ``resources.backend=ray``: only the rule
verifiers go to Ray workers). The RM score is its raw logit (no squashing): with group-normalised
advantages (GRPO, Reinforce++) only differences within a group matter, but a mix with the 0/1 rule
reward weighs the two by their scales, so pick the weights with the score's spread in mind.

:func:`rm_metrics` (in every step's metrics): ``rm/score_mean``, ``rm/rule_pass_rate`` (fraction of
responses the rule calls correct), ``rm/rule_reward_mean``, ``rm/score_rule_corr`` (Pearson, absent
when either side is constant) and ``rm/score_mean_pass`` / ``rm/score_mean_fail``: a rising RM score
with a flat or falling rule pass rate, or a failing response out-scoring passing ones, is reward hacking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from archer.data.schema import Problem
from archer.models.reward_model import RewardModel
from archer.rewards.types import RewardResult, safe_score


class RewardModelScorer:
    """Wraps the run's rule scorer; ``rm`` is anything with ``score(prompts, responses) -> list[float]``."""

    def __init__(self, rule: Any, rm: Any, *, model_weight: float = 1.0, rule_weight: float = 0.0) -> None:
        if model_weight < 0 or rule_weight < 0:
            raise ValueError(f"weights must be >= 0, got model {model_weight}, rule {rule_weight}")
        self.rule, self.rm = rule, rm
        self.model_weight, self.rule_weight = float(model_weight), float(rule_weight)

    def score(self, responses: list[str], problems: list[Problem]) -> list[RewardResult]:

        rule = safe_score(self.rule, responses, problems)
        scores = self.rm.score([p.prompt for p in problems], responses)
        if len(scores) != len(responses):
            raise RuntimeError(f"reward model returned {len(scores)} scores for {len(responses)} responses")
        out = []
        for s, r in zip(scores, rule):
            s = float(s) if math.isfinite(float(s)) else 0.0
            info = dict(r.info, rm_score=s, rule_reward=float(r.reward), rule_correct=bool(r.correct))
            out.append(
                RewardResult(
                    self.model_weight * s + self.rule_weight * float(r.reward), bool(r.correct), info
                )
            )
        return out

    def close(self) -> None:
        self.rule.close()


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    if vx <= 0 or vy <= 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(vx * vy)


def rm_metrics(infos: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``rm/*`` metrics over a step's responses (empty when no reward model scored them)."""
    rows = [i for i in infos if "rm_score" in i]
    if not rows:
        return {}
    s = [float(i["rm_score"]) for i in rows]
    r = [float(i["rule_reward"]) for i in rows]
    ok = [bool(i["rule_correct"]) for i in rows]
    out = {
        "rm/score_mean": sum(s) / len(s),
        "rm/rule_pass_rate": sum(ok) / len(ok),
        "rm/rule_reward_mean": sum(r) / len(r),
    }
    corr = _pearson(s, r)
    if corr is not None:
        out["rm/score_rule_corr"] = corr
    passing = [x for x, c in zip(s, ok) if c]
    failing = [x for x, c in zip(s, ok) if not c]
    if passing:
        out["rm/score_mean_pass"] = sum(passing) / len(passing)
    if failing:
        out["rm/score_mean_fail"] = sum(failing) / len(failing)
    return out


def build_rm_scorer(rule: Any, cfg: Any, device: Any = None) -> RewardModelScorer:
    """The ``reward.model*`` scorer of a run around its ``rule`` scorer; the RM on ``device``."""

    rw = cfg.reward
    rm = RewardModel(
        rw.model, device or "cpu", batch_size=rw.model_batch_size, max_length=rw.model_max_length
    )
    return RewardModelScorer(rule, rm, model_weight=rw.model_weight, rule_weight=rw.rule_weight)
