"""The tool task (archer.tasks.synthetic_interpreter): disjoint splits, right answers, demonstrations
with tool calls whose observations are masked in SFT, imperfect ones wrong by construction."""

from __future__ import annotations

import re

import pytest

from archer.data.observations import TOOL_FORMATS
from archer.rewards import math_equal
from archer.tasks.synthetic_interpreter import (
    interpreter_problems,
    interpreter_sft_examples,
    task_config,
    tool_solution,
)

F = "`" * 3


def test_splits_are_disjoint_and_answers_right():
    train = interpreter_problems(300, split="train", seed=0)
    test = interpreter_problems(60, split="test", seed=1)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    for p in train[:50] + test:
        a, op, b = p.meta["a"], p.meta["op"], p.meta["b"]
        assert p.prompt == f"Compute {a}{op}{b}." and int(p.answer) == a * b and 100 <= a <= 9999
    with pytest.raises(ValueError, match="unknown synthetic_interpreter option"):
        task_config({"digits": 3})
    with pytest.raises(ValueError, match="min_digits"):
        task_config({"min_digits": 5, "max_digits": 3})


def test_demonstrations_call_the_tool_and_noisy_ones_are_wrong():
    probs = interpreter_problems(400, split="train", seed=0)
    rows = interpreter_sft_examples(probs, noise=0.4, seed=0)
    noisy = [r for r in rows if r["meta"]["noisy"]]
    assert 0.3 < len(noisy) / len(rows) < 0.5
    assert {r["meta"]["noise_kind"] for r in noisy} == {"guess", "typo"}
    for p, r in zip(probs, rows):
        text = r["messages"][1]["content"]
        boxed = re.findall(r"\\boxed\{(-?\d+)\}", text)[-1]
        if r["meta"]["noisy"]:
            assert not math_equal(boxed, p.answer)
            if r["meta"]["noise_kind"] == "guess":
                assert F not in text  # answered without the tool
        else:
            assert text == tool_solution(p.meta["a"], p.meta["op"], p.meta["b"]) and boxed == p.answer
        if F in text:  # the observation is what the program prints
            code = re.search(rf"{F}python\n(.*?)\n{F}", text, re.S).group(1)
            out = re.search(rf"{F}output\n(.*?)\n{F}", text, re.S).group(1)
            a, b = code[len("print(") : -1].split("*")
            assert int(out) == int(a) * int(b) and boxed == out


def test_sft_masks_observations_only():
    from archer.models.tiny import build_tokenizer
    from archer.sft.train import tokenize_example
    from archer.tasks.synthetic import tokenizer_corpus

    tok = build_tokenizer(tokenizer_corpus(200, seed=0), vocab_size=400)
    answer = tool_solution(123, "*", 456)
    msgs = [{"role": "user", "content": "Compute 123*456."}, {"role": "assistant", "content": answer}]
    ids, plain = tokenize_example(tok, msgs, 512)
    ids2, masked = tokenize_example(tok, msgs, 512, TOOL_FORMATS["output_block"].pattern)
    assert ids == ids2
    dropped = [i for i, (a, b) in enumerate(zip(plain, masked)) if a and not b]
    assert dropped and all(not b for a, b in zip(plain, masked) if not a)  # only targets are dropped
    assert tok.decode([ids[i] for i in dropped]) == f"{F}output\n56088\n{F}\n"
    kept = tok.decode([t for t, m in zip(ids, masked) if m])
    assert kept.startswith(f"{F}python\nprint(123*456)\n{F}\n") and "\\boxed{56088}" in kept


def test_demonstrations_write_observations_in_the_runs_tool_format():
    """One home for the observation format: with rollout.tool_format=chatml the SFT warm-up shows the
    program's output as a tool turn (as RL will), and the SFT mask finds it there."""
    from archer.config import load_config
    from archer.tasks.problems import observation_pattern, sft_examples

    for fmt in ("output_block", "chatml"):
        cfg = load_config(
            "tiny_interpreter", [f"rollout.tool_format={fmt}", "model.sft_examples=4", "model.sft_noise=0"]
        )
        rows = sft_examples(cfg)
        pattern = observation_pattern(cfg)
        assert pattern == TOOL_FORMATS[fmt].pattern
        for row in rows:
            answer = row["messages"][1]["content"]
            value = answer.rsplit("\\boxed{", 1)[1].rstrip("}")
            assert TOOL_FORMATS[fmt](f"{value}\n") in answer
            assert len(re.findall(pattern, answer, re.S)) == 1
    assert "<|im_start|>tool" in rows[0]["messages"][1]["content"]
