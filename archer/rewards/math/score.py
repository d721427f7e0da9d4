"""Math rewards: extract the final answer from a response and compare it with the gold answer.

Follows the rule-based outcome reward of DeepSeek-R1 (Guo et al., 2025) and Archer (Wang et al.,
2025, "Stabilizing Knowledge, Promoting Reasoning"): the last ``\\boxed{...}`` after ``</think>``,
else an ``Answer:`` line, judged symbolically against the gold answer; reward 1/0 (or +1/-1), with
the optional format penalties of Klear-Reasoner (Su et al., 2025).

Judging is done by :class:`archer.rewards.math.pool.MathVerifierPool` worker processes (math-verify
+ sympy + an exact-comparison layer, see :mod:`archer.rewards.math.judge`), so it never hangs past
its timeout and never raises, from any thread. Calls without ``pool=`` use the lazily created
:func:`archer.rewards.math.pool.default_pool`.

Extraction policy (``extraction=``, :func:`extract_answer`): ``"answer_line"`` (default) reads the
last ``\\boxed{...}`` (adjacent boxes as one list), else the last ``Answer:`` line; ``"boxed"`` the
box only; ``"lenient"`` also "the answer is X" / the last maths span / the only number of the last
paragraph. Limits: boxes separated by words keep the last one only; ``Answer:`` lines are read to
the end of the line, in the last 20,000 characters.
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
    "EXTRACTIONS",
]

_MAX_BOXES_TRIED = 16
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "Answer:" lines are looked for line by line, from the end, in the last _ANSWER_SCAN_CHARS characters:
# linear in the response (the former multi-line regex was quadratic in blank lines: 20k of them 10-15 s)
_ANSWER_SCAN_CHARS = 20_000
_ANSWER_LINE = re.compile(r"[ \t*#>_-]*(?:final\s+)?answer\s*(?:is)?\s*[:：]\**(.*)", re.I)
# what may stand between two boxes that together state one answer ("\boxed{1}, \boxed{2}")
_BOX_GAP = re.compile(
    r"(?:\s|[,;.$&]|\\[,;:! ]|\\q?quad|\\\\|\\[()\[\]]|\\text\s*\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b)*"
)
_MAX_BOX_GAP = 200
EXTRACTIONS = ("boxed", "answer_line", "lenient")
DEFAULT_EXTRACTION = "answer_line"


def _after_think(response: str) -> str | None:
    """The text after the last ``</think>``; None when a ``<think>`` was opened and never closed."""
    if "</think>" in response:
        return response.rsplit("</think>", 1)[1]
    if "<think>" in response:
        return None
    return response


def _boxed_content(text: str, start: int) -> tuple[str, int] | None:
    """``(content, end)`` of the box whose command ends at ``start``: ``{...}`` with nesting, or
    ``\\boxed 5``; ``end`` is the index after the box."""
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
                    return text[i + 1 : j].strip(), j + 1
        return None  # unbalanced
    if i == start:  # "\boxedx" is another command, "\boxed 5" needs the space
        return None
    match = re.match(r"[^\s$]+", text[i:])
    return (match.group(0).rstrip(".,;"), i + match.end()) if match else None


def _boxed_answer(text: str) -> str | None:
    """The last box; boxes that follow one another with only separators between them (``,``, ``and``,
    ``or``, ``\\quad``, ``$``) are one answer, read as the list of their distinct contents:
    ``\\boxed{(2,2)}, \\boxed{(6,2)}`` is ``(2,2), (6,2)``, and ``\\boxed{3} or \\boxed{4}`` is
    ``3, 4`` (never the 4 alone). Boxes with words between them keep the last one only."""
    boxes = []  # (start, end, content), in order, the last _MAX_BOXES_TRIED only
    for match in list(_BOX.finditer(text))[-_MAX_BOXES_TRIED:]:
        found = _boxed_content(text, match.end())
        boxes.append((match.start(), found[1] if found else -1, found[0] if found else ""))
    while boxes and not boxes[-1][2]:
        boxes.pop()  # an empty or unbalanced last box: try the one before
    if not boxes:
        return None
    run = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        gap_start, gap_end = prev[1], run[0][0]
        if not prev[2] or gap_start < 0 or gap_end - gap_start > _MAX_BOX_GAP:
            break
        gap = text[gap_start:gap_end]
        if _BOX_GAP.fullmatch(gap) is None:
            break
        run.insert(0, prev)
    contents = list(dict.fromkeys(content for _, _, content in run))
    return ", ".join(contents)


def _answer_line(text: str) -> str | None:
    for line in reversed(text[-_ANSWER_SCAN_CHARS:].splitlines()):
        match = _ANSWER_LINE.match(line)
        if match is None:
            continue
        answer = match.group(1).strip().strip("*").strip().rstrip(".").strip()
        if answer.startswith("$") and answer.endswith("$"):
            answer = answer.strip("$").strip().rstrip(".").strip()
        return answer or None
    return None


_LENIENT_SCAN_CHARS = 2_000
_HEDGE = re.compile(
    r"\b(?:or|either|maybe|perhaps|possibly|probably|might|could|not sure|unsure|guess|between|approximately"
    r"|about|roughly|around|unless|if|nearly|almost)\b|\\approx|≈|~",
    re.I,
)
_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z_]+\|>")
_ANSWER_PHRASE = re.compile(r"\b(?:answer|result|solution)\s*(?::|=|\bis\b)\s*", re.I)
_MATH_SPAN = re.compile(
    r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|\\\[(.+?)\\\]|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)", re.S
)  # "\\$" is a dollar sign, not a delimiter
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:/\d+)?(?![\w])")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\$])|\n")
_FORMULA_ONLY = re.compile(r"[^\n]{1,200}")


def _sentences(paragraph: str) -> list[str]:
    """The paragraph cut into sentences, never inside a ``$...$`` span."""
    out, start, inside = [], 0, False
    i = 0
    while i < len(paragraph):
        if paragraph[i] == "$" and (i == 0 or paragraph[i - 1] != "\\"):
            inside = not inside
        elif not inside:
            m = _SENTENCE_END.match(paragraph, i)
            if m and m.end() > i:
                out.append(paragraph[start:i])
                start = i = m.end()
                continue
        i += 1
    out.append(paragraph[start:])
    return [x.strip() for x in out if x.strip()]


def _single_value(sentence: str) -> str | None:
    """The one maths span, else the one number, of a sentence that does not hedge."""
    if _HEDGE.search(re.sub(r"\\(?!approx)[A-Za-z]+", " ", sentence)):
        return None
    spans = _MATH_SPAN.findall(sentence)
    if spans:
        return next(g for g in spans[-1] if g).strip() if len(spans) == 1 else None
    numbers = _NUMBER.findall(sentence)
    return numbers[0] if len(numbers) == 1 else None


def _lenient(text: str) -> str | None:
    """No box and no ``Answer:`` line. In the last paragraph: the value after its last "answer is" /
    "result:" / "solution =" (to the end of that sentence), else the one maths span or number of its
    last sentence that holds one; a response that is one short formula (``x^2+2x+1``, ``\\text{odd}``)
    is that formula. Nothing when the sentence read hedges (or, maybe, approximately, \\approx ...) or
    holds two values: a lenient reader must not turn "it is 3 or 4" into an answer."""
    special = _SPECIAL_TOKEN.search(text)
    text = (text[: special.start()] if special else text)[-_LENIENT_SCAN_CHARS:].strip()
    if not text:
        return None
    if _FORMULA_ONLY.fullmatch(text) and not re.search(
        r"[A-Za-z]{2,}[^A-Za-z{}]+[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+\s*(?:\{[^{}]*\})?", " ", text)
    ):
        stripped = text.strip().rstrip(".").strip()
        span = _MATH_SPAN.fullmatch(stripped)
        value = next(g for g in span.groups() if g).strip() if span else stripped
        if "$" not in value and not _HEDGE.search(re.sub(r"\\(?!approx)[A-Za-z]+", " ", value)):
            return value or None
    paragraph = re.split(r"\n\s*\n", text)[-1].strip()
    phrases = list(_ANSWER_PHRASE.finditer(paragraph))
    if phrases:
        rest = _sentences(paragraph[phrases[-1].end() :])
        if rest:
            value = rest[0].strip().strip("*").strip().rstrip(".").strip()
            if _HEDGE.search(re.sub(r"\\(?!approx)[A-Za-z]+", " ", value)):
                return None
            span = _MATH_SPAN.fullmatch(value)
            if span:
                value = next(g for g in span.groups() if g).strip()
            return value or None
    for sentence in reversed(_sentences(paragraph)):
        if _MATH_SPAN.search(sentence) or _NUMBER.search(sentence):
            return _single_value(sentence)
    return None


def extract_answer(response: str, extraction: str = DEFAULT_EXTRACTION) -> str | None:
    """The final answer of ``response``, read after ``</think>`` when there is one; None when there
    is no answer. ``extraction`` (see :data:`EXTRACTIONS`):

    - ``"boxed"``: the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces kept; adjacent boxes
      as one list, see :func:`_boxed_answer`);
    - ``"answer_line"`` (default): the box, else the last ``Answer:`` / ``Final answer:`` line;
    - ``"lenient"``: those, else "the answer is X", the last maths span or the only number of the
      last paragraph, unless it hedges (its false-positive rate is measured in docs/MATH_VERIFIER.md).
    """
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
    if not isinstance(response, str):
        return None
    text = _after_think(response)
    if text is None:
        return None
    # only the last few boxes are tried, and each brace scan is bounded: a hostile response made of
    # a million unbalanced "\\boxed{" must not cost quadratic time
    boxed = _boxed_answer(text)
    if boxed or extraction == "boxed":
        return boxed
    line = _answer_line(text)
    if line or extraction == "answer_line":
        return line
    return _lenient(text)


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
    extraction: str = DEFAULT_EXTRACTION,
) -> list[RewardResult]:
    """Score ``responses[i]`` against ``golds[i]``: extract, group by gold (each distinct gold is
    parsed once per worker job), judge in parallel on the pool, then map verdicts to rewards.

    With ``format_penalty`` the reward of a response without ``</think>`` is replaced by
    ``missing_think_close_penalty`` (``<think>`` opened) or ``missing_think_open_penalty`` (no think
    tags at all); ``correct`` still reports the answer's verdict. ``extraction`` is the answer
    extraction policy of :func:`extract_answer` (``"boxed"``, ``"answer_line"``, ``"lenient"``).

    Identical ``(gold, answer)`` pairs in a batch (a GRPO group often repeats an answer) are judged
    once; every judgement runs in the pool's time-limited workers.
    """
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses for {len(golds)} gold answers")
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {extraction!r}")
    extracted = [extract_answer(r, extraction) for r in responses]
    verdicts: list[tuple[bool, str]] = [(False, "no_answer")] * len(responses)
    jobs: dict[str, dict[str, list[int]]] = {}  # gold -> distinct answer -> indices
    for i, (gold, pred) in enumerate(zip(golds, extracted)):
        g = _as_text(gold)
        if not g:
            verdicts[i] = (False, "bad_gold")
        elif pred is None:
            verdicts[i] = (False, "no_answer")
        elif len(pred) > MAX_ANSWER_CHARS:
            verdicts[i] = (False, "too_long")
        else:
            jobs.setdefault(g, {}).setdefault(pred, []).append(i)
    if jobs:
        try:
            golds_in_order = list(jobs)
            judged = (pool or default_pool()).judge_many(
                [(g, list(jobs[g])) for g in golds_in_order], timeout
            )
            for g, job_verdicts in zip(golds_in_order, judged):
                for indices, verdict in zip(jobs[g].values(), job_verdicts):
                    for i in indices:
                        verdicts[i] = verdict
        except Exception as exc:  # noqa: BLE001 - e.g. workers cannot start: zero reward, reason kept
            for by_pred in jobs.values():
                for indices in by_pred.values():
                    for i in indices:
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
    extraction: str = DEFAULT_EXTRACTION,
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
        extraction=extraction,
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
    extraction: str = DEFAULT_EXTRACTION,
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
        extraction=extraction,
    )
