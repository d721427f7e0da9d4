"""Small pieces of the loop: length curriculum, LR schedule, when a reference model is built, shaping."""

from __future__ import annotations

import pytest

from archer.config import load_config
from archer.rl.settings import lr_lambda, max_new_tokens_at, needs_reference
from archer.rl.step import overlong_shaping


def test_length_curriculum_stages():
    cfg = load_config("tiny_math", ["rollout.max_new_tokens=16", "rollout.length_stages=[[3, 24], [6, 32]]"])
    assert [max_new_tokens_at(cfg, s) for s in range(8)] == [16, 16, 16, 24, 24, 24, 32, 32]
    assert max_new_tokens_at(load_config("skywork_or1"), 1500) == 32768


def test_lr_schedule_warmup_then_cosine():
    cfg = load_config(
        "tiny_math",
        ["optim.warmup_steps=4", "optim.schedule=cosine", "trainer.steps=14", "optim.min_lr_ratio=0.1"],
    )
    f = lr_lambda(cfg)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert f(14) == pytest.approx(0.1)
    const = lr_lambda(load_config("tiny_math", ["optim.warmup_steps=0", "optim.schedule=constant"]))
    assert const(0) == const(100) == 1.0


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["algo.loss=aspo"], True),  # k3 KL 0.001 on low-entropy tokens by default
        (["algo.loss=aspo", "algo.loss_params={kl_coef: 0}"], False),
        (["algo.loss=dapo"], False),
        (["algo.loss=ppo", "algo.loss_params={kl_coef: 0.01}"], True),
        (["algo.loss=dtc", "algo.loss_params={kl_coef: 0.0, high_entropy_kl_coef: 0.01}"], True),
    ],
)
def test_reference_model_only_when_kl_is_on(overrides, expected):
    assert needs_reference(load_config("tiny_math", overrides)) is expected


@pytest.mark.parametrize(
    "key, home",
    [
        ("algo.kl_coef=0.1", "algo.loss_params.kl_coef"),
        ("algo.kl_estimator=k2", "algo.loss_params.kl_estimator"),
        ("algo.loss_params={tis_cap: 3}", "algo.tis_cap"),
    ],
)
def test_each_setting_has_one_home(key, home):
    from archer.errors import ConfigError

    with pytest.raises(ConfigError, match=home.replace(".", r"\.")):
        load_config("tiny_math", [key])


@pytest.mark.parametrize("length, expected", [(10, 0.0), (12, 0.0), (14, -0.5), (16, -1.0), (20, -1.0)])
def test_overlong_shaping(length, expected):
    # L_max 16, buffer 4: free up to 12, linear to -1 at 16 (DAPO eq. 13)
    assert overlong_shaping(length, 16, 4) == pytest.approx(expected)


def test_round_metrics_distinct_response_fraction():
    from types import SimpleNamespace

    from archer.rl.batch import CollectStats, Group, Round
    from archer.rl.metrics import round_metrics

    def ro(text):
        return SimpleNamespace(text=text, response_ids=[1] * len(text), truncated=False)

    groups = [
        Group(0, [1], [ro("a"), ro("a"), ro("b"), ro("c")], [1, 1, 0, 0], [True, True, False, False]),
        Group(1, [2], [ro("x"), ro("x"), ro("x"), ro("x")], [0, 0, 0, 0], [False] * 4),
    ]
    m = round_metrics([Round([0, 1], groups)], CollectStats(rounds=1, kept_groups=1), max_new=8)
    assert m["rollout/distinct_frac"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert m["reward/accuracy"] == pytest.approx(2 / 8)


def test_code_metrics_pass_fraction_and_outcome_mix():
    from archer.rewards.code import code_step_metrics

    infos = [
        {"passed": 3, "total": 3, "verdicts": ["ok"] * 3},
        {"passed": 1, "total": 4, "verdicts": ["ok", "wrong", "timeout", "wrong"]},
        {"passed": 0, "total": 2, "verdicts": ["error", "wrong"]},
        {"reason": "no fenced python code block after </think>"},
    ]
    m = code_step_metrics(infos)
    assert m["code/tests_passed_frac"] == pytest.approx((1 + 0.25 + 0 + 0) / 4)
    assert (
        m["code/outcome_pass"],
        m["code/outcome_timeout"],
        m["code/outcome_error"],
        m["code/outcome_no_code"],
    ) == (0.25, 0.25, 0.25, 0.25)
    assert m["code/outcome_wrong"] == 0.0
    assert code_step_metrics([{}]) == {}  # math: no code metrics


def test_sandbox_seconds_add_each_rounds_batch_time():
    from types import SimpleNamespace

    from archer.rl.batch import CollectStats, Group, Round
    from archer.rl.metrics import round_metrics

    ro = SimpleNamespace(text="t", response_ids=[1], truncated=False)

    def group(*seconds):
        infos = [{"passed": 1, "total": 1, "verdicts": ["ok"], "batch_seconds": s} for s in seconds]
        return Group(0, [1], [ro] * len(seconds), [1.0] * len(seconds), [True] * len(seconds), infos)

    # round 1: one sandbox batch of 2.0 s (every response carries it); round 2: 0.5 s
    rounds = [Round([0], [group(2.0, 2.0)]), Round([1], [group(0.5, 0.5)])]
    m = round_metrics(rounds, CollectStats(rounds=2), max_new=4)
    assert m["code/sandbox_seconds"] == pytest.approx(2.5)
    math_round = Round([0], [Group(0, [1], [ro], [1.0], [True], [{}])])
    assert "code/sandbox_seconds" not in round_metrics([math_round], CollectStats(rounds=1), max_new=4)


def test_run_data_may_name_a_bundled_sample():
    from archer.errors import ConfigError
    from archer.tasks.problems import load_problems

    _, evals = load_problems(load_config("tiny_math", ["data.eval=aime24", "data.num_eval=5"]))
    assert len(evals) == 5 and evals[0].answer
    with pytest.raises(ConfigError, match="data.eval: file 'nope.jsonl' not found.*math500"):
        load_problems(load_config("tiny_math", ["data.eval=nope.jsonl"]))


def test_improvement_carries_the_paired_standard_error(capsys):
    from archer.cli.default_run import report
    from archer.rl.evaluate import improvement

    before = {"avg@4": 5 / 12, "pass@4": 0.5, "num_problems": 3, "per_problem_avg": [0.0, 0.25, 1.0]}
    after = {"avg@4": 0.75, "pass@4": 1.0, "num_problems": 3, "per_problem_avg": [0.5, 0.75, 1.0]}
    imp = improvement(before, after)
    # differences 0.5, 0.5, 0: sample variance 1/12, standard error sqrt(1/12 / 3) = 1/6
    assert imp == pytest.approx({"avg@4": 1 / 3, "pass@4": 0.5, "avg_se": 1 / 6})
    line = report({"recipe": "x", "before": before, "after": after, "improvement": imp, "run_dir": "d"})
    assert "+0.333 +/- 0.167 s.e. over 3 problems" in line
    # different problem sets: no paired error
    assert "avg_se" not in improvement(before, dict(after, per_problem_avg=[1.0]))
