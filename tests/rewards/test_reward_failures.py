"""Issue 24: a user's reward function that raises, returns the wrong count, NaN/inf or a non-number, or
reads TRL's conversational format stops the run with its own traceback and the sample (the exact
message below); reward.on_error=zero tolerates it, printing each distinct failure once on stderr.
Several weighted functions (reward.functions), each logged as reward/fn/<name>; the verifier's verdict
is the accuracy whatever the functions; module:NAME resolves from the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from archer.config import load_config
from archer.data.schema import Problem
from archer.errors import ConfigError, RewardFunctionError
from archer.rewards.custom import load_reward_function
from archer.rewards.scoring import CustomRewardScorer, build_run_scorer, describe_reward, function_metrics
from archer.rewards.types import safe_score

SOURCE = """\
def broken(completions, **kwargs):
    raise RuntimeError('boom')
def short(completions, **kwargs):
    return [1.0]
def nan(completions, **kwargs):
    return [float('nan') for c in completions]
def text(completions, **kwargs):
    return ['high' for c in completions]
def conversational(completions, **kwargs):
    return [len(c[0]['content']) for c in completions]
def verl_broken(data_source, solution_str, ground_truth, extra_info=None):
    return 1 / 0
def length_penalty(completions, **kwargs):
    return [-len(c) / 100 for c in completions]
def one(completions, **kwargs):
    return [1.0 for c in completions]
"""


def _p(i: int) -> Problem:
    return Problem(id=f"p{i}", prompt=f"What is {i}+{i}?", kind="math", answer=str(2 * i), data_source="toy")


@pytest.fixture
def rf(tmp_path: Path) -> Path:
    path = tmp_path / "rf.py"
    path.write_text(SOURCE)
    return path


def _error(rf: Path, name: str) -> str:
    with pytest.raises(RewardFunctionError) as exc:
        load_reward_function(f"{rf}:{name}").values(["ab", "\\boxed{2}"], [_p(0), _p(1)])
    return str(exc.value)


SAMPLE_1 = "  prompt: 'What is 0+0?'\n  answer: '0'\n  completion: 'ab'\n"
BATCH = "sample 1 of 2 (id 'p0'; the function was called on the whole batch, the first sample is shown):\n"
TAIL = "(reward.on_error=zero counts such failures as reward 0 and goes on)"


def test_raising_function_shows_its_traceback_and_the_sample(rf):
    assert _error(rf, "broken") == (
        f"reward function '{rf}:broken' failed: RuntimeError: boom\n" + BATCH + SAMPLE_1 + "Traceback "
        f'(most recent call last):\n  File "{rf}", line 2, in broken\n'
        "    raise RuntimeError('boom')\nRuntimeError: boom\n" + TAIL
    )


@pytest.mark.parametrize(
    "name,head,sample",
    [
        ("short", "returned 1 values for 2 completions", BATCH + SAMPLE_1),
        ("nan", "value 1: non-finite reward nan", "sample 1 of 2 (id 'p0'):\n" + SAMPLE_1),
        ("text", "value 1: expected a number, got str 'high'", "sample 1 of 2 (id 'p0'):\n" + SAMPLE_1),
    ],
)
def test_wrong_values_name_the_value_and_sample(rf, name, head, sample):
    assert _error(rf, name) == f"reward function '{rf}:{name}' failed: {head}\n" + sample + TAIL


def test_conversational_indexing_gets_a_hint(rf):
    message = _error(rf, "conversational")
    assert message.startswith(
        f"reward function '{rf}:conversational' failed: TypeError: string indices must be integers"
    )
    assert message.endswith(
        "hint: archer passes each completion as a plain string (TRL's standard format), not TRL's "
        "conversational [{'role': 'assistant', 'content': ...}] list: use the completion itself, "
        "not completion[0]['content']\n" + TAIL
    )


def test_verl_failure_names_its_own_sample(rf):
    message = _error(rf, "verl_broken")
    assert message.startswith(
        f"reward function '{rf}:verl_broken' failed: ZeroDivisionError: division by zero\n"
        "sample 1 of 2 (id 'p0'):\n"
    )
    assert "    return 1 / 0\n" in message and message.endswith(
        "ZeroDivisionError: division by zero\n" + TAIL
    )


def test_safe_score_lets_a_reward_function_error_through_but_tolerates_verifiers(rf):
    scorer = CustomRewardScorer(None, [("broken", 1.0, load_reward_function(f"{rf}:broken"))])
    with pytest.raises(RewardFunctionError, match="^reward function .*broken' failed: RuntimeError: boom"):
        safe_score(scorer, ["a"], [_p(0)])

    class Failing:
        def score(self, responses, problems):
            raise OSError("sandbox gone")

    assert safe_score(Failing(), ["a"], [_p(0)])[0].info["reason"] == "scorer failed: OSError: sandbox gone"


def test_on_error_zero_prints_each_distinct_failure_once(rf, capsys):
    cfg = load_config("tiny_math", [f"reward.functions=[{rf}:broken,{rf}:one]", "reward.on_error=zero"])
    scorer = build_run_scorer(cfg)
    assert (
        capsys.readouterr().err == "archer: accuracy = the built-in verifier's verdict for the problem's "
        "kind (math, code, ...; where there is none: a verl 'acc', else reward > 0); reward = 1 x broken + 1 x one\n"
    )
    for _ in range(3):
        out = scorer.score(["a"], [_p(0)])
    assert [r.reward for r in out] == [1.0]
    assert out[0].info["reason"] == f"reward function '{rf}:broken' failed: RuntimeError: boom"
    err = capsys.readouterr().err
    assert err.count("RuntimeError: boom\n") == 2 and err.count("archer: reward.on_error=zero") == 1
    assert err.startswith(
        "archer: reward.on_error=zero: reward 0 for a failed reward function call (1 failed calls so far, "
        f"1 distinct; each is shown once):\nreward function '{rf}:broken' failed: RuntimeError: boom\n"
    )
    assert scorer.tally.counts[out[0].info["reason"]] == 3
    scorer.close()


def test_several_weighted_functions_logged_apart_and_verifier_accuracy(rf):
    cfg = load_config(
        "tiny_math",
        [f"reward.functions=[{rf}:length_penalty,{rf}:one]", "reward.function_weights=[1.0,0.5]"],
    )
    assert describe_reward(cfg.reward).endswith("reward = 1 x length_penalty + 0.5 x one")
    scorer = build_run_scorer(cfg)
    # a shaping-only reward: negative for every response, yet the right answer is accurate
    out = scorer.score(["\\boxed{2}", "\\boxed{7}"], [_p(1), _p(1)])
    assert [r.correct for r in out] == [True, False]
    assert [r.reward for r in out] == pytest.approx([-0.09 + 0.5, -0.09 + 0.5])
    assert function_metrics([r.info for r in out]) == pytest.approx(
        {"reward/fn/length_penalty": -0.09, "reward/fn/one": 1.0}
    )
    scorer.close()


def test_reward_function_config_errors(rf):
    with pytest.raises(ConfigError) as exc:
        load_config("tiny_math", [f"reward.function={rf}:one", f"reward.functions=[{rf}:one]"])
    assert str(exc.value) == (
        "reward.functions: set reward.function (one function) or reward.functions (several), not both"
    )
    with pytest.raises(ConfigError) as exc:
        load_config("tiny_math", [f"reward.functions=[{rf}:one]", "reward.function_weights=[1, 2]"])
    assert str(exc.value) == "reward.function_weights: 2 weights for 1 reward.functions"
    with pytest.raises(ConfigError) as exc:
        load_config("tiny_math", [f"reward.functions=[{rf}:one,{rf}:nope]"])
    assert str(exc.value) == f"reward.functions[1]: '{rf}' has no attribute 'nope'"
    with pytest.raises(ConfigError, match="^reward.on_error: "):
        load_config("tiny_math", ["reward.on_error=skip"])


def test_module_name_resolves_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "cwd_rewards_mod.py").write_text(
        "def f(completions, **kw):\n    return [2.0 for _ in completions]\n"
    )
    monkeypatch.chdir(tmp_path)
    import sys

    before = list(sys.path)
    fn = load_reward_function("cwd_rewards_mod:f")
    assert fn.values(["a"], [_p(0)])[0][0] == 2.0
    assert sys.path == before  # the working directory was on the path for that lookup only


def test_archer_train_stops_on_the_first_failure_with_exit_2(rf, tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    overrides = [
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.sft_epochs=0",
        "data.num_train=4",
        "rollout.batch_size=2",
        "rollout.n=2",
        "rollout.max_new_tokens=4",
        "trainer.steps=2",
        "trainer.save_every=0",
        "trainer.save_final=false",
        "eval.enabled=false",
        "logging.progress=false",
        "logging.plots=false",
        "logging.sinks=[]",
        f"reward.function={rf}:broken",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "archer", "train", "tiny_math", *overrides, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 2
    assert f"archer train: error: reward function '{rf}:broken' failed: RuntimeError: boom\n" in proc.stderr
    assert proc.stderr.rstrip().endswith("RuntimeError: boom\n" + TAIL)
