"""R1-Code-Interpreter's reward terms for tool rollouts, and the per-step tool metrics.

Chen et al. 2025, "R1-Code-Interpreter" (arXiv 2505.21668): the reward of a multi-turn response is
the answer's correctness plus a small format term and a turn penalty. Here:

    reward = verifier + (format_weight if format_ok else -format_weight)
                      - (turn_penalty if turns > turn_limit else 0)

with the paper's values ``format_weight = 0.1``, ``turn_penalty = 0.1``, ``turn_limit = 6`` in
``archer/recipes/tiny_interpreter.yaml`` (``reward.tool_*``; both weights 0 by default = off).
``verifier`` is the built-in verifier's reward (1 correct, 0 not). ``format_ok`` is archer's reading of
"all intermediate formats right", checked on what the model itself wrote (``Rollout.meta``, filled by
:class:`archer.rollout.tools.ToolEngine`):

- the conversation ended on its own (EOS or a stop string), not by the token budget or ``max_turns``;
- every tool call's program parsed (no ``SyntaxError`` came back);
- no model turn wrote an observation block itself (a faked ```` ```output ```` block);
- the last model turn gives a final answer: ``\\boxed{...}`` for math, a python block for code.

A response without tool metadata (a plain rollout) gets no tool terms. Limits: the format rules above
are archer's; R1-CI's exact checker is task-specific and not published as a formula.
"""

from __future__ import annotations

from typing import Any

_FAKE_OUTPUT = "```output"


def format_ok(meta: dict[str, Any], kind: str = "math") -> bool:
    """True when every intermediate format of a tool rollout is right (see the module docstring)."""
    turns = meta.get("turn_texts") or []
    if not turns or meta.get("end") not in ("eos", "stop"):
        return False
    if any(str(c.get("output", "")).startswith("SyntaxError") for c in meta.get("tool_calls", [])):
        return False
    if any(_FAKE_OUTPUT in t for t in turns):
        return False
    last = turns[-1]
    return "```python" in last if kind == "code" else "\\boxed{" in last


def tool_terms(
    meta: dict[str, Any] | None, kind: str, format_weight: float, turn_penalty: float, turn_limit: int
) -> float:
    """The format and turn terms of one response (0.0 for a rollout without tool metadata)."""
    if not meta or "turn_texts" not in meta:
        return 0.0
    out = 0.0
    if format_weight:
        out += format_weight if format_ok(meta, kind) else -format_weight
    if turn_penalty and int(meta.get("turns", 0)) > turn_limit:
        out -= turn_penalty
    return out


def tool_metrics(rollouts: list[Any]) -> dict[str, float]:
    """``tool/*`` metrics over a step's responses (empty when none carries tool metadata): calls per
    response, the share of responses with a call, the share of calls that did not exit cleanly, model
    turns and observation tokens per response, and the share of responses ending at ``max_turns``."""
    metas = [ro.meta for ro in rollouts if getattr(ro, "meta", None) and "turn_texts" in ro.meta]
    if not metas:
        return {}
    n = len(metas)
    calls = [c for m in metas for c in m.get("tool_calls", [])]
    return {
        "tool/calls_per_response": len(calls) / n,
        "tool/use_rate": sum(1 for m in metas if m.get("tool_calls")) / n,
        "tool/error_rate": sum(1 for c in calls if c.get("status") != "ok") / max(len(calls), 1),
        "tool/turns_mean": sum(int(m.get("turns", 0)) for m in metas) / n,
        "tool/observation_tokens_mean": sum(int(m.get("observation_tokens", 0)) for m in metas) / n,
        "tool/max_turns_rate": sum(1 for m in metas if m.get("end") == "max_turns") / n,
    }
