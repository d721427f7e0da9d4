"""Synthetic tasks: correct unique answers, determinism, disjoint splits, noisy demonstrations."""

from __future__ import annotations

import re

import pytest

from archer.tasks.synthetic import (
    CODE_FAMILIES,
    MATH_LEVELS,
    MathTaskConfig,
    code_problems,
    code_sft_examples,
    code_solution,
    math_problems,
    math_sft_examples,
    math_solution,
)


def _boxed(text: str) -> str | None:
    m = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return m[-1] if m else None


@pytest.mark.parametrize("level", sorted(MATH_LEVELS))
def test_math_answers_match_python_eval(level):
    for p in math_problems(200, seed=1, level=level):
        assert p.kind == "math" and p.data_source == "synthetic_math"
        if p.meta["family"] == "arith":
            expr = p.prompt.removeprefix("Compute ").removesuffix(".")
            assert str(eval(expr)) == p.answer  # python precedence == the worked solution's
        else:
            a, b, c = p.meta["a"], p.meta["b"], p.meta["c"]
            assert a * int(p.answer) + b == c
        assert _boxed(math_solution(p)) == p.answer


def test_math_deterministic_and_splits_disjoint():
    a = math_problems(300, seed=5)
    b = math_problems(300, seed=5)
    assert [p.prompt for p in a] == [p.prompt for p in b]
    assert [p.prompt for p in math_problems(300, seed=6)] != [p.prompt for p in a]
    test = math_problems(300, seed=5, split="test")
    assert not {p.prompt for p in a} & {p.prompt for p in test}
    assert len({p.prompt for p in a}) == 300  # unique within a split


def test_math_noise_makes_wrong_answers_at_the_given_rate():
    probs = math_problems(1000, seed=2)
    clean = math_sft_examples(probs, noise=0.0)
    assert all(_boxed(r["messages"][1]["content"]) == p.answer for r, p in zip(clean, probs))
    noisy = math_sft_examples(probs, noise=0.3, seed=1)
    flagged = [r["meta"]["noisy"] for r in noisy]
    wrong = [_boxed(r["messages"][1]["content"]) != p.answer for r, p in zip(noisy, probs)]
    assert 0.25 < sum(flagged) / len(flagged) < 0.35
    # a slip always changes the answer except when later multiplication by 0 hides it
    assert sum(wrong) <= sum(flagged) and sum(wrong) > 0.8 * sum(flagged)
    assert all(not w for w, f in zip(wrong, flagged) if not f)
    assert noisy == math_sft_examples(probs, noise=0.3, seed=1)
    with pytest.raises(ValueError, match="noise"):
        math_sft_examples(probs, noise=1.5)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="operands"):
        MathTaskConfig(min_operands=1)
    with pytest.raises(ValueError, match="ops"):
        MathTaskConfig(ops=("/",))
    with pytest.raises(KeyError, match="easy"):
        math_problems(1, level="impossible")
    with pytest.raises(ValueError, match="split"):
        math_problems(1, split="valid")


@pytest.mark.parametrize("families", [None, ("poly", "clamp")])
def test_code_problems_demo_passes_its_asserts_and_noise_fails(families):
    kw = {"families": families} if families else {}
    probs = code_problems(60, seed=0, **kw)
    assert {p.meta["family"] for p in probs} == set(families or CODE_FAMILIES)
    assert not {p.prompt for p in probs} & {p.prompt for p in code_problems(60, seed=0, split="test", **kw)}
    clean = code_sft_examples(probs)
    noisy = code_sft_examples(probs, noise=1.0)
    for p, c, n in zip(probs, clean, noisy):
        assert p.tests["entry_point"] == "f" and p.data_source == "synthetic_code"
        for row, should_pass in ((c, True), (n, False)):
            code = row["messages"][1]["content"].split("```python\n")[1].split("```")[0]
            env: dict = {}
            exec(code, env)  # noqa: S102 - our own generated one-liners
            try:
                exec("\n".join(p.tests["assert"]), env)
                passed = True
            except AssertionError:
                passed = False
            # a shifted constant on the cond family only fails when the else-branch is tested: it is
            assert passed == should_pass, (p.prompt, code)


def test_code_families_default_unchanged_and_unknown_rejected():
    # the default draw is the original four one-line families, problem for problem
    assert CODE_FAMILIES == ("affine_neg", "cond", "linear", "square")
    first = code_problems(3, seed=0)
    assert [p.prompt for p in first] == [
        "Write a Python function f(x) that returns 26 minus 8 times x. Example: f(2) == 10.",
        first[1].prompt,
        first[2].prompt,
    ]
    assert code_solution(first[0]) == "```python\ndef f(x):\n    return 26-8*x\n```"
    clamp = next(p for p in code_problems(20, families=("clamp",)))
    a, b = clamp.meta["a"], clamp.meta["b"]
    assert (
        code_solution(clamp)
        == f"```python\ndef f(x):\n    if x < {a}:\n        return {a}\n    return x+{b}\n```"
    )
    with pytest.raises(ValueError, match="unknown code families"):
        code_problems(1, families=("cubic",))


def test_code_families_from_the_config():
    from archer.config import load_config
    from archer.errors import ConfigError
    from archer.tasks.problems import load_problems

    cfg = load_config(
        "tiny_code", ["data.generator={families: [poly]}", "data.num_train=5", "data.num_eval=5"]
    )
    train, evals = load_problems(cfg)
    assert {p.meta["family"] for p in train + evals} == {"poly"}
    with pytest.raises(ConfigError, match="^data.generator.families: unknown"):
        load_problems(load_config("tiny_code", ["data.generator={families: [cubic]}"]))


def test_code_tests_are_one_per_assert_so_partly_right_programs_score_partly():
    from archer.rewards.code import score_code_problems

    probs = code_problems(40, seed=0, families=("cond", "clamp", "linear"))
    cond = next(p for p in probs if p.meta["family"] == "cond")
    clamp = next(p for p in probs if p.meta["family"] == "clamp")
    linear = next(p for p in probs if p.meta["family"] == "linear")
    assert all(isinstance(p.tests["assert"], list) and len(p.tests["assert"]) == 4 for p in probs)
    # a wrong constant: cond's else-branch holds it (inputs 0 and a fail, a+1 and a+3 pass); clamp's
    # second return holds it (only input 0 takes the first branch); linear's every value is off
    wrong = [code_solution(p, wrong_constant=1) for p in (cond, clamp, linear)]
    soft = score_code_problems(wrong, [cond, clamp, linear], reward_mode="soft")
    assert [r.reward for r in soft] == [0.5, 0.25, 0.0] and not any(r.correct for r in soft)
    hard = score_code_problems(wrong + [code_solution(cond)], [cond, clamp, linear, cond])
    assert [r.reward for r in hard] == [0.0, 0.0, 0.0, 1.0]
