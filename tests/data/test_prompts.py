"""Prompt templates: instructions by kind and test format, chat-template application."""

from __future__ import annotations

import pytest

from archer.data.prompts import MATH_INSTRUCTION, STDIN_HINT, build_messages, build_prompt
from archer.data.schema import Problem


class _ChatTok:
    """Stand-in tokenizer with a chat template: records the call and renders a fixed format."""

    chat_template = "{{ fake }}"

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        self.calls.append((messages, tokenize, add_generation_prompt))
        body = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return body + ("<assistant>" if add_generation_prompt else "")


class _PlainTok:
    chat_template = None

    def apply_chat_template(self, *a, **k):  # must not be used without a template
        raise AssertionError("chat template applied on a tokenizer without one")


def _math():
    return Problem("m", "What is 2+3?", "math", answer="5")


def test_math_prompt_plain_and_chat():
    assert build_prompt(_math()) == "What is 2+3?\n" + MATH_INSTRUCTION
    assert build_prompt(_math(), _PlainTok()) == "What is 2+3?\n" + MATH_INSTRUCTION
    tok = _ChatTok()
    out = build_prompt(_math(), tok)
    assert out == f"<user>What is 2+3?\n{MATH_INSTRUCTION}</user><assistant>"
    assert tok.calls[0][1:] == (False, True)


def test_code_prompt_hints_by_test_format():
    stdin = Problem("s", "Sum two ints.", "code", tests={"inputs": ["1 2\n"], "outputs": ["3\n"]})
    assert STDIN_HINT in build_prompt(stdin) and "```python" in build_prompt(stdin)
    fn = Problem(
        "f", "def add(a, b):\n", "code", tests={"assert": "assert add(1,2)==3", "entry_point": "add"}
    )
    assert "`add`" in build_prompt(fn) and STDIN_HINT not in build_prompt(fn)
    lc = Problem(
        "c",
        "Count.",
        "code",
        tests={"inputs": ["[1]"], "outputs": ["1"], "fn_name": "count"},
        meta={"starter_code": "class Solution:\n    def count(self, a):"},
    )
    text = build_prompt(lc)
    assert "`count`" in text and "class Solution" in text


def test_instruction_included_is_verbatim():
    p = Problem(
        "x", "Full prompt.", "code", tests={"inputs": [], "outputs": []}, meta={"instruction_included": True}
    )
    assert build_prompt(p) == "Full prompt."


def test_chat_list_goes_straight_to_template():
    chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]
    p = Problem("v", chat, "math", answer="1")
    assert build_messages(p) == chat
    assert build_prompt(p, _ChatTok()) == "<system>sys</system><user>q</user><assistant>"
    assert build_prompt(p) == "sys\n\nq"


def test_unknown_template_lists_known():
    with pytest.raises(KeyError, match="raw"):
        build_prompt(_math(), template="nope")
    assert build_prompt(_math(), template="raw") == "What is 2+3?"
