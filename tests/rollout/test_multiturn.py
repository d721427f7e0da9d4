"""Multi-turn tool rollouts: tool output appended as masked context, turn and token budgets."""

from __future__ import annotations

import pytest
from test_hf import _CopyLM  # same folder (pytest prepends it to sys.path)

from archer.data.synthetic import tokenizer_corpus
from archer.models import build_tokenizer
from archer.rollout import HFEngine, SamplingParams
from archer.rollout.multiturn import chatml_tool_turn, generate_multiturn, last_python_block


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(tokenizer_corpus(300, seed=0), vocab_size=400)


def _setup(tok):
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    prompt = enc("<|im_start|>user\nCompute 1+2.<|im_end|>\n<|im_start|>assistant\n")
    part1 = enc("Let me run it.\n```python\nprint(1+2)\n```\n")
    tool_turn = enc(chatml_tool_turn("3\n"))
    part2 = enc("So \\boxed{3}")
    doc = prompt + part1 + tool_turn + part2
    engine = HFEngine(_CopyLM(doc, len(tok), tok.eos_token_id), tok)
    return engine, prompt, part1, tool_turn, part2


def test_tool_turn_is_appended_and_masked(tok):
    engine, prompt, part1, tool_turn, part2 = _setup(tok)
    seen = []

    def tool(codes):
        seen.append(list(codes))
        return ["3\n" for _ in codes]

    out = generate_multiturn(engine, [prompt], SamplingParams(n=2, temperature=0, max_new_tokens=64), tool)
    assert len(out) == 1 and len(out[0]) == 2
    assert seen == [["print(1+2)", "print(1+2)"]]  # one batched tool call per turn
    for r in out[0]:
        assert r.response_ids == part1 + tool_turn + part2 + [tok.eos_token_id]
        assert r.loss_mask == [1] * len(part1) + [0] * len(tool_turn) + [1] * (len(part2) + 1)
        assert len(r.logprobs) == len(r.response_ids)
        assert all(lp == 0.0 for lp, m in zip(r.logprobs, r.loss_mask) if m == 0)
        assert r.num_turns == 2 and r.finish_reason == "eos" and not r.truncated
        assert r.tool_calls == [{"code": "print(1+2)", "output": "3\n"}]
        assert "<|im_start|>tool\n3\n" in r.text


def test_turn_and_token_budgets(tok):
    engine, prompt, part1, tool_turn, _ = _setup(tok)
    tool = lambda codes: ["3\n"] * len(codes)  # noqa: E731
    (r,) = generate_multiturn(
        engine, [prompt], SamplingParams(temperature=0, max_new_tokens=64), tool, max_turns=1
    )[0]
    assert r.finish_reason == "max_turns" and r.response_ids == part1 + tool_turn and r.num_turns == 1
    budget = len(part1) + 2
    (r,) = generate_multiturn(
        engine, [prompt], SamplingParams(temperature=0, max_new_tokens=64), tool, max_total_tokens=budget
    )[0]
    assert r.finish_reason == "length" and len(r.response_ids) == budget == len(r.loss_mask)
    with pytest.raises(ValueError, match="outputs"):
        generate_multiturn(engine, [prompt], SamplingParams(temperature=0), lambda codes: [])


def test_last_python_block():
    assert last_python_block("a\n```python\nx=1\n```\nb\n```python\ny=2\n```") == "y=2"
    assert last_python_block("```python\nx=1") is None
