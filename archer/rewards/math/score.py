"""Math rewards: extract the final answer from a response and compare it with the gold answer.

Follows the rule-based outcome reward of DeepSeek-R1 (Guo et al., 2025) and Archer (Wang et al.,
2025, "Stabilizing Knowledge, Promoting Reasoning"): the last ``\\boxed{...}`` after ``</think>``,
else an ``Answer:`` line, judged symbolically against the gold answer; reward 1/0 (or +1/-1), with
the optional format penalties of Klear-Reasoner (Su et al., 2025).

Judging is done by :class:`archer.rewards.math.pool.MathVerifierPool` worker processes (math-verify
+ sympy + an exact-comparison layer, see :mod:`archer.rewards.math.judge`), so it never hangs past
its timeout and never raises, from any thread. Calls without ``pool=`` use the lazily created
:func:`archer.rewards.math.pool.default_pool`.

Limits: extraction reads the last boxed answer only (a response that boxes several sub-answers is
judged on the last one); ``Answer:`` lines are read to the end of the line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from archer.rewards.math.judge import MAX_ANSWER_CHARS
from archer.rewards.math.pool import MathVerifierPool, default_pool
from archer.rewards.types import RewardResult

__all__ = [
    "MathVerifierPool",
    "extract_answer",
    "math_equal",
    "score_math",
    "score_math_batch",
    "score_math_problems",
]

_MAX_BOXES_TRIED = 16
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_LINE = re.compile(r"^[\s*#>_-]*(?:final\s+)?answer\s*(?:is)?\s*[:：]\**\s*(.+?)\s*$", re.I | re.M)


def _after_think(response: str) -> str | None:
    """The text after the last ``</think>``; None when a ``<think>`` was opened and never closed."""
    if "</think>" in response:
        return response.rsplit("</think>", 1)[1]
    if "<think>" in response:
        return None
    return response


def _boxed_content(text: str, start: int) -> str | None:
    """Content of the box whose command ends at ``start``: ``{...}`` with nesting, or ``\\boxed 5``."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, min(len(text), i + MAX_ANSWER_CHARS + 2)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j].strip()
        return None  # unbalanced
    if i == start:  # "\boxedx" is another command, "\boxed 5" needs the space
        return None
    match = re.match(r"[^\s$]+", text[i:])
    return match.group(0).rstrip(".,;") if match else None


def extract_answer(response: str) -> str | None:
    """The last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces kept), else the last ``Answer:``
    line, read after ``</think>`` when there is one; None when there is no answer."""
    if not isinstance(response, str):
        return None
    text = _after_think(response)
    if text is None:
        return None
    # only the last few boxes are tried, and each brace scan is bounded: a hostile response made of
    # a million unbalanced "\\boxed{" must not cost quadratic time
    for match in reversed(list(_BOX.finditer(text))[-_MAX_BOXES_TRIED:]):
        content = _boxed_content(text, match.end())
        if content:
            return content
    lines = _ANSWER_LINE.findall(text)
    if lines:
        answer = lines[-1].strip().strip("*").strip().rstrip(".").strip()
        if answer.startswith("$") and answer.endswith("$"):
            answer = answer.strip("$").strip().rstrip(".").strip()
        return answer or None
    return None


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else None


def math_equal(gold: Any, pred: Any, timeout: float = 5.0, *, pool: MathVerifierPool | None = None) -> bool:
    """True when ``pred`` is mathematically equal to ``gold``; never raises, never runs past
    ``timeout`` (plus process overhead). Non-string numbers (amc23's ``27.0``) are accepted."""
    try:
        g, p = _as_text(gold), _as_text(pred)
        if not g or not p or len(g) > MAX_ANSWER_CHARS or len(p) > MAX_ANSWER_CHARS:
            return False
        return (pool or default_pool()).judge(g, p, timeout)[0]
    except Exception:  # noqa: BLE001 - a verifier must not crash a run
        return False


def _format_check(response: str) -> str:
    # </think> present: fine (the chat template may have opened <think> in the prompt);
    # <think> without </think>: unclosed reasoning; neither: no reasoning format at all
    if "</think>" in response:
        return "ok"
    return "missing_think_close" if "<think>" in response else "missing_think_open"


def score_math_batch(
    responses: Sequence[str],
    golds: Sequence[Any],
    *,
    correct_reward: float = 1.0,
    wrong_reward: float = 0.0,
    format_penalty: bool = False,
    missing_think_close_penalty: float = -0.5,
    missing_think_open_penalty: float = -2.0,
    timeout: float = 5.0,
    pool: MathVerifierPool | None = None,
) -> list[RewardResult]:
    """Score ``responses[i]`` against ``golds[i]``: extract, group by gold (each distinct gold is
    parsed once per worker job), judge in parallel on the pool, then map verdicts to rewards.

    With ``format_penalty`` the reward of a response without ``</think>`` is replaced by
    ``missing_think_close_penalty`` (``<think>`` opened) or ``missing_think_open_penalty`` (no think
    tags at all); ``correct`` still reports the answer's verdict.
    """
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses for {len(golds)} gold answers")
    extracted = [extract_answer(r) for r in responses]
    verdicts: list[tuple[bool, str]] = [(False, "no_answer")] * len(responses)
    jobs: dict[str, list[int]] = {}
    for i, (gold, pred) in enumerate(zip(golds, extracted)):
        g = _as_text(gold)
        if not g:
            verdicts[i] = (False, "bad_gold")
        elif pred is None:
            verdicts[i] = (False, "no_answer")
        elif len(pred) > MAX_ANSWER_CHARS:
            verdicts[i] = (False, "too_long")
        else:
            jobs.setdefault(g, []).append(i)
    if jobs:
        try:
            golds_in_order = list(jobs)
            judged = (pool or default_pool()).judge_many(
                [(g, [extracted[i] for i in jobs[g]]) for g in golds_in_order], timeout
            )
            for g, job_verdicts in zip(golds_in_order, judged):
                for i, verdict in zip(jobs[g], job_verdicts):
                    verdicts[i] = verdict
        except Exception as exc:  # noqa: BLE001 - e.g. workers cannot start: zero reward, reason kept
            for idx in jobs.values():
                for i in idx:
                    verdicts[i] = (False, f"verifier_error: {type(exc).__name__}: {exc}")
    results = []
    for response, pred, (correct, reason) in zip(responses, extracted, verdicts):
        reward = correct_reward if correct else wrong_reward
        info: dict[str, Any] = {"extracted": pred, "reason": reason}
        if format_penalty:
            fmt = _format_check(response if isinstance(response, str) else "")
            info["format"] = fmt
            if fmt == "missing_think_close":
                reward = missing_think_close_penalty
            elif fmt == "missing_think_open":
                reward = missing_think_open_penalty
        results.append(RewardResult(float(reward), bool(correct), info))
    return results


def score_math(
    response: str,
    gold: Any,
    *,
    correct_reward: float = 1.0,
    wrong_reward: float = 0.0,
    format_penalty: bool = False,
    missing_think_close_penalty: float = -0.5,
    missing_think_open_penalty: float = -2.0,
    timeout: float = 5.0,
    pool: MathVerifierPool | None = None,
) -> RewardResult:
    """Score one response; options as in :func:`score_math_batch`."""
    return score_math_batch(
        [response],
        [gold],
        correct_reward=correct_reward,
        wrong_reward=wrong_reward,
        format_penalty=format_penalty,
        missing_think_close_penalty=missing_think_close_penalty,
        missing_think_open_penalty=missing_think_open_penalty,
        timeout=timeout,
        pool=pool,
    )[0]


def score_math_problems(
    responses: Sequence[str],
    problems: Sequence[Any],
    *,
    correct_reward: float = 1.0,
    wrong_reward: float = 0.0,
    format_penalty: bool = False,
    missing_think_close_penalty: float = -0.5,
    missing_think_open_penalty: float = -2.0,
    timeout: float = 5.0,
    pool: MathVerifierPool | None = None,
) -> list[RewardResult]:
    """Registry entry (kind ``math``): ``problems`` are :class:`archer.data.schema.Problem`.

    Explicit keywords (no ``**opts``) so the registry drops options meant for other verifiers."""
    return score_math_batch(
        responses,
        [p.answer for p in problems],
        correct_reward=correct_reward,
        wrong_reward=wrong_reward,
        format_penalty=format_penalty,
        missing_think_close_penalty=missing_think_close_penalty,
        missing_think_open_penalty=missing_think_open_penalty,
        timeout=timeout,
        pool=pool,
    )
