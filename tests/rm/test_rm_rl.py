"""reward.model in RL: the mix of RM score and rule reward against hand-computed values, the rm/* metrics,
config errors for a bad reward.model, and a real (tiny) RL step with a trained reward model."""

from __future__ import annotations

import json
import math

import pytest

from archer.config import load_config
from archer.data.schema import Problem
from archer.errors import ConfigError
from archer.rewards import registry
from archer.rewards.reward_model import RewardModelScorer, rm_metrics
from archer.rewards.types import RewardResult


class FixedRule:
    def __init__(self, results):
        self.results, self.closed = results, False

    def score(self, responses, problems):
        return list(self.results)

    def close(self):
        self.closed = True


class FixedRM:
    def __init__(self, scores):
        self.scores, self.seen = scores, None

    def score(self, prompts, responses):
        self.seen = (list(prompts), list(responses))
        return list(self.scores)


PROBLEMS = [Problem(f"p{i}", f"prompt {i}", "math", answer="1") for i in range(4)]
RULE = [
    RewardResult(1.0, True, {"reason": None}),
    RewardResult(0.0, False, {"reason": "wrong"}),
    RewardResult(1.0, True, {}),
    RewardResult(0.0, False, {}),
]


def test_rm_and_rule_rewards_mix_by_weight_and_the_verdict_stays_the_rules():
    rm = FixedRM([2.0, 3.0, -1.0, float("nan")])
    rule = FixedRule(RULE)
    scorer = RewardModelScorer(rule, rm, model_weight=0.5, rule_weight=2.0)
    out = scorer.score(["a", "b", "c", "d"], PROBLEMS)
    # 0.5 * s + 2 * r; a non-finite RM score counts as 0
    assert [r.reward for r in out] == [0.5 * 2 + 2 * 1, 0.5 * 3 + 0, 0.5 * -1 + 2 * 1, 0.0]
    assert [r.correct for r in out] == [True, False, True, False]
    assert out[1].info == {"reason": "wrong", "rm_score": 3.0, "rule_reward": 0.0, "rule_correct": False}
    assert rm.seen == (["prompt 0", "prompt 1", "prompt 2", "prompt 3"], ["a", "b", "c", "d"])
    alone = RewardModelScorer(FixedRule(RULE), FixedRM([2.0, 3.0, -1.0, 0.5]))  # defaults: RM only
    assert [r.reward for r in alone.score(["a"] * 4, PROBLEMS)] == [2.0, 3.0, -1.0, 0.5]
    scorer.close()
    assert rule.closed
    with pytest.raises(ValueError):
        RewardModelScorer(rule, rm, model_weight=-1)


def test_rm_metrics_against_hand_computed_values():
    infos = [
        {"rm_score": 2.0, "rule_reward": 1.0, "rule_correct": True},
        {"rm_score": 3.0, "rule_reward": 0.0, "rule_correct": False},
        {"rm_score": -1.0, "rule_reward": 1.0, "rule_correct": True},
        {"rm_score": 0.0, "rule_reward": 0.0, "rule_correct": False},
        {"other": 1},  # a response not scored by a reward model is ignored
    ]
    m = rm_metrics(infos)
    s, r = [2.0, 3.0, -1.0, 0.0], [1.0, 0.0, 1.0, 0.0]
    ms, mr = sum(s) / 4, sum(r) / 4
    cov = sum((a - ms) * (b - mr) for a, b in zip(s, r))
    corr = cov / math.sqrt(sum((a - ms) ** 2 for a in s) * sum((b - mr) ** 2 for b in r))
    assert m["rm/score_mean"] == pytest.approx(1.0)
    assert m["rm/rule_pass_rate"] == 0.5 and m["rm/rule_reward_mean"] == 0.5
    assert m["rm/score_rule_corr"] == pytest.approx(corr) and corr == pytest.approx(
        -1 / math.sqrt(10)
    )  # cov -1, var 10 and 1
    assert m["rm/score_mean_pass"] == pytest.approx(0.5) and m["rm/score_mean_fail"] == pytest.approx(1.5)
    constant = rm_metrics([{"rm_score": 1.0, "rule_reward": 1.0, "rule_correct": True}] * 3)
    assert "rm/score_rule_corr" not in constant and "rm/score_mean_fail" not in constant
    assert rm_metrics([{"passed": 1}]) == {}


def test_bad_reward_model_settings_are_config_errors(tmp_path, tiny_lm_dir):
    with pytest.raises(ConfigError, match=r"reward\.model: .*not a reward-model directory"):
        load_config("tiny_code", [f"reward.model={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match=r"reward\.model: .*not a reward model"):
        load_config("tiny_code", [f"reward.model={tiny_lm_dir}"])  # a causal LM, no scalar head
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="reward.model: .*unreadable"):
        load_config("tiny_code", [f"reward.model={tmp_path / 'broken'}"])
    with pytest.raises(ConfigError, match="reward.rule_weight"):
        load_config("tiny_code", ["reward.rule_weight=-1"])


def test_config_accepts_a_trained_reward_model(tiny_rm):
    cfg = load_config("tiny_code", [f"reward.model={tiny_rm}", "reward.rule_weight=1.0"])
    assert cfg.reward.model == str(tiny_rm) and cfg.reward.rule_weight == 1.0


def test_an_rl_run_with_reward_model_logs_rm_metrics(tmp_path, tiny_rm, monkeypatch):
    from helpers import parity_verifier as parity

    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    overrides = [
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.sft_warmup=false",
        "data.num_train=16",
        "data.num_eval=2",
        "rollout.batch_size=2",
        "rollout.n=4",
        "rollout.max_new_tokens=6",
        "rollout.max_gen_batches=1",
        "algo.filter_zero_variance=false",
        "trainer.steps=1",
        "trainer.threads=1",
        "eval.n=1",
        "eval.ks=[1]",
        "data.num_eval=2",
        "logging.progress=false",
        "logging.plots=false",
        "logging.sinks=[]",
        f"reward.model={tiny_rm}",
        "reward.model_weight=1.0",
        "reward.rule_weight=0.5",
    ]
    train(load_config("tiny_math", overrides), run_dir=tmp_path / "run")
    steps = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()
    ]
    step = next(s for s in steps if "rm/score_mean" in s)
    assert 0.0 <= step["rm/rule_pass_rate"] <= 1.0
    assert math.isfinite(step["rm/score_mean"])
