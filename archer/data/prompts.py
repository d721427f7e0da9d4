"""Prompt templates: turn a :class:`Problem` into the text a model is asked to continue.

Templates are registered by name (``math``, ``code``, ``raw``); ``template="auto"`` picks one from
``problem.kind``. A template builds the user message; :func:`build_prompt` then applies the
tokenizer's chat template (``add_generation_prompt=True``) when the tokenizer has one, else returns the
plain user text. A chat-list prompt (verl layout) is already a conversation and goes straight to the
chat template.

Assumptions and limits:
- Math follows the Qwen-math / DeepScaleR convention (instruction appended to the problem) so that
  the answer can be read from the last ``\\boxed{}`` by ``archer.rewards.extract_answer``.
- Code asks for one fenced python block, read by ``archer.rewards.extract_code``; the hint depends on
  the test format: stdin/stdout, a function called by name (``fn_name``, LiveCodeBench functional,
  with its starter code when the loader kept it in ``meta["starter_code"]``), or assert-style tests
  calling ``entry_point`` (HumanEval/MBPP).
- A problem whose text already carries its own instructions (``meta["instruction_included"]``,
  set by the LiveCodeBench loader) is used verbatim.
- Without a chat template, a chat list is rendered as its message contents joined by blank lines.

Chat templates (``data.chat_template``, for train, sft and eval): :func:`apply_chat_template_option`
sets a tokenizer's Jinja chat template from a file (a value ending in ``.jinja``/``.j2``/``.jinja2``/
``.tmpl``, or naming an existing file) or from the Jinja text itself (a value containing ``{{`` or
``{%``); it replaces the tokenizer's own and is saved with it in checkpoints. A base model such as
gpt2 has none, so its prompts are plain text unless one is given. The template is compiled at config
load so a syntax error names ``data.chat_template``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archer.data.schema import Problem

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = (
    "Write a solution in Python 3. Think step by step, then give the complete program in a single "
    "fenced code block (```python ... ```)."
)
STDIN_HINT = "Read the input from standard input and write the answer to standard output."
FUNCTION_HINT = "Implement the function `{name}` with the signature given above; do not read input."
CLASS_HINT = "Implement the method `{name}` of the starter code below; do not read input."


def _math_text(problem: Problem) -> str:
    return f"{_as_text(problem.prompt).rstrip()}\n{MATH_INSTRUCTION}"


def _code_text(problem: Problem) -> str:
    text = _as_text(problem.prompt).rstrip()
    if problem.meta.get("instruction_included"):
        return text
    tests = problem.tests or {}
    parts = [text, ""]
    starter = problem.meta.get("starter_code")
    if "assert" in tests:
        name = tests.get("entry_point") or problem.meta.get("entry_point")
        if name:
            parts.append(FUNCTION_HINT.format(name=name))
    elif tests.get("fn_name"):
        parts.append((CLASS_HINT if starter else FUNCTION_HINT).format(name=tests["fn_name"]))
    else:
        parts.append(STDIN_HINT)
    if starter:
        parts.append(f"```python\n{starter.rstrip()}\n```")
    parts.append(CODE_INSTRUCTION)
    return "\n".join(parts)


def _raw_text(problem: Problem) -> str:
    return _as_text(problem.prompt)


# template name -> function(problem) -> user message text
TEMPLATES: dict[str, Callable[[Problem], str]] = {
    "math": _math_text,
    "code": _code_text,
    "raw": _raw_text,
}


def register_template(name: str, fn: Callable[[Problem], str]) -> None:
    """Add a template usable as ``build_prompt(..., template=name)``."""
    TEMPLATES[name] = fn


def template_names() -> list[str]:
    return ["auto", *sorted(TEMPLATES)]


def _as_text(prompt: str | list[dict[str, str]]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(m.get("content", "")) for m in prompt)


def _has_chat_template(tokenizer: Any) -> bool:
    return (
        tokenizer is not None
        and bool(getattr(tokenizer, "chat_template", None))
        and hasattr(tokenizer, "apply_chat_template")
    )


_TEMPLATE_SUFFIXES = (".jinja", ".j2", ".jinja2", ".tmpl")


def read_chat_template(value: str) -> str:
    """The Jinja text of a ``data.chat_template`` value (file path or inline text), compiled once to
    check its syntax; a one-line ``ValueError`` otherwise."""
    from pathlib import Path

    text = value
    is_inline = "{{" in value or "{%" in value
    if not is_inline:
        path = Path(value).expanduser()
        if path.suffix in _TEMPLATE_SUFFIXES or path.exists() or "/" in value:
            if not path.is_file():
                raise ValueError(f"file {value!r} not found")
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read {value!r}: {exc}") from None
        else:
            raise ValueError(f"{value!r} is neither a template file (*.jinja) nor Jinja text ({{{{ or {{%)")
    try:
        import jinja2

        jinja2.Environment().parse(text)
    except ImportError:
        pass
    except Exception as exc:  # jinja2.TemplateSyntaxError
        line = getattr(exc, "lineno", "?")
        raise ValueError(f"Jinja syntax error (line {line}): {exc}") from None
    return text


def apply_chat_template_option(tokenizer: Any, value: str | None) -> Any:
    """Set ``tokenizer.chat_template`` from a ``data.chat_template`` value (None: leave it); returns the
    tokenizer. Call it right after loading a tokenizer, before any prompt is built."""
    if value:
        tokenizer.chat_template = read_chat_template(value)
    return tokenizer


def no_chat_template_hint(tokenizer: Any) -> str | None:
    """A one-line hint when ``tokenizer`` has no chat template (prompts will be plain text)."""
    if _has_chat_template(tokenizer):
        return None
    name = getattr(tokenizer, "name_or_path", "") or "this tokenizer"
    return (
        f"{name} has no chat template: prompts are plain text; set data.chat_template=FILE.jinja "
        "(or the Jinja text) to use one"
    )


def chat_end_of_turn(tokenizer: Any) -> str | None:
    """The text the chat template writes right after an assistant turn (``<|im_end|>`` for ChatML),
    read by rendering one; None without a template or when the turn ends with nothing."""
    if not _has_chat_template(tokenizer):
        return None
    marker = "ARCHER_END_OF_TURN_PROBE"
    messages = [{"role": "user", "content": "1"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses this conversation: nothing to check
        return None
    tail = text.split(marker, 1)[1].split() if marker in text else []
    return tail[0] if tail else None


def end_of_turn_stop(tokenizer: Any) -> tuple[str | None, str | None]:
    """(stop string, note) when the chat template ends a turn with text the tokenizer does not know as
    one token (GPT-2 and ``examples/chatml.jinja``: ``<|im_end|>`` is six ordinary tokens), so the
    sampler's EOS never comes and every response runs to the length limit; (None, None) otherwise."""
    end = chat_end_of_turn(tokenizer)
    if end is None or end == getattr(tokenizer, "eos_token", None):
        return None, None
    known = set(getattr(tokenizer, "all_special_tokens", []) or [])
    try:
        known |= set(tokenizer.get_added_vocab())
    except Exception:  # noqa: BLE001 - a tokenizer without added tokens
        pass
    if end in known:
        return None, None
    eos = getattr(tokenizer, "eos_token", None)
    return end, (
        f"the chat template ends a turn with {end!r}, which is not a special token of this tokenizer "
        f"(its EOS is {eos!r}), so generation would never stop there: responses now stop at {end!r}"
    )


def user_message(problem: Problem, template: str = "auto") -> str:
    """The user-turn text for a plain-text problem under ``template`` (no chat template applied)."""
    name = problem.kind if template == "auto" else template
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {template!r}; known: {template_names()}")
    return TEMPLATES[name](problem)


def build_messages(problem: Problem, template: str = "auto") -> list[dict[str, str]]:
    """The conversation for ``problem``: its own chat list, or one user turn built by ``template``."""
    if isinstance(problem.prompt, list):
        return [dict(m) for m in problem.prompt]
    return [{"role": "user", "content": user_message(problem, template)}]


def build_prompt(problem: Problem, tokenizer: Any = None, template: str = "auto") -> str:
    """The text to generate from: chat-templated when the tokenizer has a template, plain otherwise."""
    if template != "auto" and template not in TEMPLATES:
        raise KeyError(f"unknown prompt template {template!r}; known: {template_names()}")
    messages = build_messages(problem, template)
    if _has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(problem.prompt, list):
        return _as_text(messages)
    return messages[0]["content"]
