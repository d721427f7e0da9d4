"""The multi-path sum task (archer.tasks.synthetic_paths) and its registration as data.train=synthetic_paths."""

from __future__ import annotations

import itertools

import pytest

from archer.config import load_config
from archer.errors import ConfigError
from archer.rewards.math.score import score_math
from archer.tasks.synthetic_paths import (
    PathsTaskConfig,
    paths_problems,
    paths_sft_examples,
    paths_solution,
    solution_path,
)


def test_every_order_is_a_correct_solution_and_reads_back_as_its_own_path():
    (p,) = paths_problems(1, seed=3)
    nums = p.meta["nums"]
    assert p.answer == str(sum(nums)) and p.prompt == "Compute " + "+".join(map(str, nums)) + "."
    paths = set()
    for order in itertools.permutations(range(len(nums))):
        text = paths_solution(p, list(order))
        assert score_math(text, p.answer).reward == 1.0, text
        path = solution_path(text, p)
        assert path is not None and len(path) == len(nums) - 1
        paths.add(path)
    # distinct paths = distinct operand sequences (repeated operands merge some orders)
    assert len(paths) == len({tuple(nums[i] for i in o) for o in itertools.permutations(range(len(nums)))})


def test_hand_checked_solution_and_wrong_paths_are_rejected():
    (p,) = paths_problems(1, seed=0)
    p.meta["nums"] = [3, 8, 5, 2]  # a hand-written case (the object is ours)
    p.answer = "18"
    assert paths_solution(p, [0, 1, 2, 3]) == "3+8=11, 11+5=16, 16+2=18. \\boxed{18}"
    assert solution_path("5+2=7, 7+3=10, 10+8=18. \\boxed{18}", p) == ("5+2=7", "7+3=10", "10+8=18")
    slipped = paths_solution(p, [0, 1, 2, 3], slip=(1, 2))
    assert slipped == "3+8=11, 11+5=18, 18+2=20. \\boxed{20}" and solution_path(slipped, p) is None
    assert score_math(slipped, p.answer).reward == 0.0
    assert solution_path("3+8=11, 11+5=16. \\boxed{18}", p) is None  # an operand left out
    assert solution_path("3+8=11, 12+5=17, 17+1=18. \\boxed{18}", p) is None  # broken chain / wrong operand
    assert solution_path("\\boxed{18}", p) is None  # no work shown: not a path
    with pytest.raises(ValueError):
        paths_solution(p, [0, 0, 1, 2])


def test_sft_demonstrations_vary_the_order_and_noise_slips_some():
    probs = paths_problems(400, seed=1)
    rows = paths_sft_examples(probs, seed=1)
    firsts = [tuple(r["meta"]["order"])[0] for r in rows]
    assert {0, 1, 2, 3} == set(firsts)
    share = max(firsts.count(i) for i in range(4)) / len(firsts)
    assert share < 0.35  # uniform over 4 positions: ~0.25 each
    assert all(score_math(r["messages"][1]["content"], p.answer).reward == 1.0 for r, p in zip(rows, probs))
    noisy = paths_sft_examples(probs, noise=0.5, seed=1)
    wrong = [
        r for r, p in zip(noisy, probs) if score_math(r["messages"][1]["content"], p.answer).reward == 0.0
    ]
    assert len(wrong) == sum(r["meta"]["noisy"] for r in noisy) and 120 < len(wrong) < 280
    assert all(len(r["messages"][1]["content"]) >= 30 for r in rows)  # 20+ tokens under any small tokenizer


def test_split_is_disjoint_and_generation_is_deterministic():
    train = paths_problems(500, split="train", seed=0)
    test = paths_problems(100, split="test", seed=0)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert len({p.prompt for p in train}) == 500
    again = paths_problems(500, split="train", seed=0)
    assert [p.prompt for p in again] == [p.prompt for p in train]
    assert [p.prompt for p in paths_problems(50, seed=1)] != [p.prompt for p in train[:50]]
    rows_a = paths_sft_examples(train[:50], seed=4)
    rows_b = paths_sft_examples(train[:50], seed=4)
    assert rows_a == rows_b and rows_a != paths_sft_examples(train[:50], seed=5)


def test_config_options_and_errors():
    probs = paths_problems(20, seed=0, config={"operands": 5, "max_value": 3})
    assert all(len(p.meta["nums"]) == 5 and max(p.meta["nums"]) <= 3 for p in probs)
    with pytest.raises(ValueError, match="operands"):
        PathsTaskConfig(operands=2)
    with pytest.raises(ValueError, match="known: operands"):
        paths_problems(1, config={"level": "easy"})


def test_registered_as_a_bundled_generator_with_sft_rows():
    from archer.tasks.problems import load_problems, sft_examples
    from archer.tasks.registry import task_names

    assert "synthetic_paths" in task_names()
    cfg = load_config("tiny_paths", ["data.num_train=30", "data.num_eval=10", "model.sft_examples=12"])
    train, evals = load_problems(cfg)
    assert len(train) == 30 and len(evals) == 10 and all(p.data_source == "synthetic_paths" for p in train)
    assert not {p.prompt for p in train} & {p.prompt for p in evals}
    rows = sft_examples(cfg)
    assert len(rows) == 12 and rows[0]["messages"][0]["content"].startswith("Compute ")
    bad = load_config("tiny_paths", ["data.generator={operands: 9}"])
    with pytest.raises(ConfigError, match="data.generator"):
        load_problems(bad)


def test_held_out_sums_are_disjoint_from_training_by_operand_multiset():
    """A reordered training sum is the same problem: no held-out multiset appears in train or SFT data
    (60 of 64 held-out problems shared one with an RL training problem before)."""
    train = paths_problems(2000, split="train", seed=0, unique=False)
    sft = paths_problems(2000, split="train", seed=7919, unique=False)
    test = paths_problems(64, split="test", seed=1)
    key = lambda p: tuple(sorted(p.meta["nums"]))  # noqa: E731
    assert not {key(p) for p in test} & ({key(p) for p in train} | {key(p) for p in sft})
