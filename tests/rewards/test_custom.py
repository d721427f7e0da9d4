"""reward.function: loading (file and module), TRL and verl signatures, weighted combination with the
built-in verifier, None handling, failures, config-time validation; expectations computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from archer.config import load_config
from archer.data.schema import Problem
from archer.errors import ConfigError
from archer.rewards.custom import combine, load_reward_function, trl_columns
from archer.rewards.scoring import CustomRewardScorer, build_run_scorer
from archer.rewards.types import RewardResult

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_reward.py"


def _p(i: int, answer: str = "4", **meta) -> Problem:
    return Problem(
        id=f"p{i}", prompt=f"What is {i}?", kind="math", answer=answer, data_source="toy", meta=meta
    )


@pytest.fixture
def reward_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_reward.py"
    path.write_text(
        "def length_reward(completions, answer, **kwargs):\n"
        "    return [None if c == 'skip' else len(c) / 10 for c in completions]\n"
        "def strict(completions, answer):\n"
        "    return [1.0 if a in c else 0.0 for c, a in zip(completions, answer)]\n"
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    return {'score': 2.0 if ground_truth in solution_str else -1.0, 'acc': ground_truth in solution_str,\n"
        "            'src': data_source, 'idx': extra_info['index'], 'lvl': extra_info.get('level')}\n"
        "def broken(completions, **kwargs):\n"
        "    raise RuntimeError('boom')\n"
        "def wrong_length(completions, **kwargs):\n"
        "    return [1.0]\n"
        "NOT_CALLABLE = 3\n"
    )
    return path


def test_trl_signature_values_and_none(reward_file):
    fn = load_reward_function(f"{reward_file}:length_reward")
    assert fn.signature == "trl"
    values = fn.values(["abcd", "skip", ""], [_p(0), _p(1), _p(2)])
    assert [v for v, _ in values] == [0.4, None, 0.0]
    # None -> reward.none_reward (0 by default, -1 here), flagged in info; weight 0.5 applies to it too
    out = combine([("length_reward", 0.5, values)], None, verifier_weight=0.0, none_reward=-1.0)
    assert [r.reward for r in out] == [0.2, -0.5, 0.0]
    assert [r.correct for r in out] == [True, False, False]
    assert out[1].info["function_none"] is True and "function_none" not in out[0].info


def test_trl_function_without_kwargs_gets_only_named_columns(reward_file):
    fn = load_reward_function(f"{reward_file}:strict")
    assert [v for v, _ in fn.values(["x 4", "5"], [_p(0), _p(1)])] == [1.0, 0.0]


def test_trl_columns_carry_prompt_answer_and_meta():
    cols = trl_columns([_p(0, level=3), _p(1)])
    assert cols["prompts"] == ["What is 0?", "What is 1?"]
    assert cols["answer"] == cols["ground_truth"] == cols["solution"] == ["4", "4"]
    assert cols["level"] == [3, None] and cols["data_source"] == ["toy", "toy"]


def test_verl_signature(reward_file):
    fn = load_reward_function(f"{reward_file}:compute_score")
    assert fn.signature == "verl"
    values = fn.values(["the answer is 4", "no"], [_p(0, level=2), _p(1)])
    assert values[0] == (2.0, {"acc": True, "src": "toy", "idx": 0, "lvl": 2})
    assert values[1][0] == -1.0 and values[1][1]["idx"] == 1
    out = combine([("compute_score", 1.0, values)], None, verifier_weight=0.0)
    assert [(r.reward, r.correct) for r in out] == [(2.0, True), (-1.0, False)]  # verdict from "acc"


def test_weighted_combination_with_verifier():
    values = [(0.4, {}), (None, {}), (1.0, {})]
    verifier = [
        RewardResult(1.0, True, {"extracted": "4"}),
        RewardResult(0.0, False, {}),
        RewardResult(0.0, False, {"reason": "no boxed"}),
    ]
    out = combine([("f", 0.5, values)], verifier, verifier_weight=2.0)
    # 2*1 + 0.5*0.4 = 2.2 ; 2*0 + 0.5*0 (None -> 0) = 0 ; 2*0 + 0.5*1 = 0.5
    assert [r.reward for r in out] == pytest.approx([2.2, 0.0, 0.5])
    assert [r.correct for r in out] == [True, False, False]  # the verifier's verdict when it is weighted
    assert (
        out[0].info["extracted"] == "4" and out[0].info["verifier"] == 1.0 and out[0].info["function"] == 0.4
    )
    assert out[2].info["reason"] == "no boxed"


def test_scorer_combines_with_the_verifier(reward_file):
    calls = []

    class Inner:
        def score(self, responses, problems):
            calls.append(len(responses))
            return [RewardResult(1.0, True) for _ in responses]

        def close(self):
            calls.append("closed")

    fn = load_reward_function(f"{reward_file}:length_reward")
    alone = CustomRewardScorer(None, [("len", 1.0, fn)], verifier_weight=0.0)
    assert [r.reward for r in alone.score(["ab"], [_p(0)])] == [0.2]
    both = CustomRewardScorer(Inner(), [("len", 1.0, fn)], verifier_weight=1.0)
    assert [r.reward for r in both.score(["ab", "skip"], [_p(0), _p(1)])] == pytest.approx([1.2, 1.0])
    both.close()
    assert calls == [2, "closed"]


def test_example_file():
    short = load_reward_function(f"{EXAMPLE}:short_and_correct")
    # boxed right answer, 40 chars -> 1 - 40/400 = 0.9; wrong -> 0; nothing boxed -> None
    text = "so the answer is \\boxed{4} for sure!!!!!"
    assert len(text) == 40
    values = short.values([text, "\\boxed{5}", "no box"], [_p(0), _p(1), _p(2)])
    assert [v for v, _ in values] == pytest.approx([0.9, 0.0, None])
    verl = load_reward_function(f"{EXAMPLE}:compute_score")
    assert verl.signature == "verl" and verl.values(["\\boxed{4}"], [_p(0)])[0] == (1.0, {"acc": True})


def test_module_path_import(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text(
        "def f(completions, **kw):\n    return [1.0 for _ in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward_function("my_rewards_mod:f")
    assert fn.values(["a"], [_p(0)])[0][0] == 1.0


@pytest.mark.parametrize(
    "spec,message",
    [
        ("missing_file.py:f", "file 'missing_file.py' not found"),
        ("{file}:nope", "has no attribute 'nope'"),
        ("{file}:NOT_CALLABLE", "is a int, not a callable"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("{file}", "expected PATH.py:NAME or module:NAME"),
    ],
)
def test_config_rejects_bad_reward_function_before_compute(reward_file, spec, message):
    spec = spec.format(file=reward_file)
    with pytest.raises(ConfigError, match="^reward.function: ") as exc:
        load_config("tiny_math", [f"reward.function={spec}"])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_config_reward_weights_and_scorer(reward_file):
    with pytest.raises(ConfigError, match="^reward.function_weight: must be >= 0"):
        load_config("tiny_math", [f"reward.function={reward_file}:strict", "reward.function_weight=-1"])
    with pytest.raises(ConfigError, match="^reward.signature: "):
        load_config("tiny_math", ["reward.signature=openrlhf"])
    with pytest.raises(ConfigError, match="^reward.function_weight: .*both 0"):
        load_config("tiny_math", [f"reward.function={reward_file}:strict", "reward.function_weight=0"])
    with pytest.raises(ConfigError, match="takes no 'completions'"):
        load_config("tiny_math", [f"reward.function={reward_file}:compute_score", "reward.signature=trl"])
    cfg = load_config("tiny_math", [f"reward.function={reward_file}:strict", "reward.verifier_weight=0.5"])
    scorer = build_run_scorer(cfg)
    assert (
        isinstance(scorer, CustomRewardScorer) and scorer.inner is not None and scorer.verifier_weight == 0.5
    )
    scorer.close()
    assert not isinstance(build_run_scorer(load_config("tiny_math")), CustomRewardScorer)


def test_reward_score_fn_for_eval(reward_file, monkeypatch):
    from archer.rewards import custom, registry

    monkeypatch.setitem(
        registry._VERIFIERS,
        "math",
        lambda responses, problems, **_: [RewardResult(1.0, True) for _ in responses],
    )
    score = custom.reward_score_fn(f"{reward_file}:length_reward", function_weight=2.0, verifier_weight=1.0)
    # 1*1 + 2*(4/10) = 1.8 ; 1*1 + 2*0 (None) = 1.0
    out = score(["abcd", "skip"], [_p(0), _p(1)])
    assert [r.reward for r in out] == pytest.approx([1.8, 1.0]) and [r.correct for r in out] == [True, True]
    with pytest.raises(ValueError, match="not found"):
        custom.reward_score_fn("nowhere.py:f")
