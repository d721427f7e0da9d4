"""Output comparison for code tests, following LiveCodeBench's grader.

stdin/stdout (LiveCodeBench ``grade_stdio``): strip the whole output and the expected output, split
both into lines, and require the same number of lines; each pair of lines matches when equal after
``strip()``, or when both split on whitespace into the same number of tokens that all parse as
``decimal.Decimal`` and are equal as numbers (``"1.0" == "1"``, no float tolerance).

call-based (LiveCodeBench ``grade_call_based``): the program's return value arrives JSON-encoded
(tuples already turned into lists) and is compared with the JSON-decoded expected output with ``==``.
Expected values given as data rather than JSON strings (APPS/TACO) may also be the return value
wrapped in a one-element list, as the APPS grader accepts.

Both functions are total: they return True or False for any input and never raise, since the
output compared is written by an untrusted program (a ``sNaN`` token would make ``Decimal ==``
raise, a deeply nested JSON value would make decoding or ``==`` raise ``RecursionError``). NaN
tokens are never numerically equal to anything (``"nan"`` still matches ``"nan"`` as text).
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

# Bounds that keep the trainer's work proportional to the *expected* output, whatever a program
# prints (its stdout is capped at max_output, 4 MiB by default, but parsing millions of tokens as
# Decimal for every failing test cost 9-15 s of trainer CPU for 20 tests). An output more than
# OUTPUT_SLACK_FACTOR x longer than expected (plus OUTPUT_SLACK_CHARS) cannot be an honest match;
# nor can a numeric token more than TOKEN_SLACK_FACTOR x longer than the expected one (plus
# TOKEN_SLACK_CHARS: trailing zeros, "1.000000" for "1"). Token counts are compared before any
# number is parsed, and numbers of different magnitude are unequal without aligning exponents.
OUTPUT_SLACK_FACTOR, OUTPUT_SLACK_CHARS = 16, 4096
TOKEN_SLACK_FACTOR, TOKEN_SLACK_CHARS = 4, 64


def _decimal(tok: str) -> Decimal | None:
    try:
        d = Decimal(tok)
    except (InvalidOperation, ValueError):
        return None
    return None if d.is_nan() else d


def _numbers_equal(got: str, want: str) -> bool:
    if len(got) > TOKEN_SLACK_FACTOR * len(want) + TOKEN_SLACK_CHARS:
        return False
    a, b = _decimal(got), _decimal(want)
    if a is None or b is None:
        return False
    if a.is_zero() or b.is_zero():
        return a.is_zero() and b.is_zero()
    if a.is_infinite() or b.is_infinite() or a.adjusted() != b.adjusted():
        return a == b if a.is_infinite() or b.is_infinite() else False
    return a == b


def lines_match(got: str, want: str) -> bool:
    """One output line against the expected line (already split, not yet stripped)."""
    got, want = got.strip(), want.strip()
    if got == want:
        return True
    if len(got) > OUTPUT_SLACK_FACTOR * len(want) + OUTPUT_SLACK_CHARS:
        return False
    a, b = got.split(), want.split()
    if len(a) != len(b):
        return False
    return all(_numbers_equal(x, y) for x, y in zip(a, b))  # every token a number (LiveCodeBench)


def stdout_matches(output: str, expected: str) -> bool:
    """LiveCodeBench's stdin/stdout rule (see module docstring); False, never an exception."""
    try:
        return _stdout_matches(output, expected)
    except Exception:
        return False


def _stdout_matches(output: str, expected: str) -> bool:
    if len(output) > OUTPUT_SLACK_FACTOR * len(expected) + OUTPUT_SLACK_CHARS:
        return False  # checked before any split: the cost is bounded by the expected output
    got_lines = output.strip().split("\n")
    want_lines = expected.strip().split("\n")
    if len(got_lines) != len(want_lines):
        return False
    return all(lines_match(g, w) for g, w in zip(got_lines, want_lines))


def _json_or_raw(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def call_result_matches(result_json: str | None, expected: Any) -> bool:
    """A JSON-encoded return value against the expected output; False, never an exception."""
    try:
        return _call_result_matches(result_json, expected)
    except Exception:  # RecursionError (deep nesting), MemoryError, ...
        return False


def _call_result_matches(result_json: str | None, expected: Any) -> bool:
    if not isinstance(result_json, str):
        return False
    try:
        got = json.loads(result_json)
    except ValueError:
        return False
    want = _json_or_raw(expected)
    if isinstance(want, tuple):
        want = list(want)
    if got == want:
        return True
    # APPS/TACO store a call's expected value wrapped in a one-element list (not as a JSON string)
    return not isinstance(expected, str) and isinstance(want, list) and len(want) == 1 and got == want[0]


# ----------------------------------------------------------- LiveCodeBench's own call-based rule

_MAX_DEPTH = 100


def _untagged(value: Any, depth: int = 0) -> Any:
    """The harness's exact encoding (``archer.sandbox.zygote.harness._tagged``) back to Python values."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deep")
    if isinstance(value, list):
        return [_untagged(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
            return tuple(_untagged(v, depth + 1) for v in value["__tuple__"])
        if set(value) == {"__pairs__"} and isinstance(value["__pairs__"], list):
            return {_untagged(k, depth + 1): _untagged(v, depth + 1) for k, v in value["__pairs__"]}
        return {k: _untagged(v, depth + 1) for k, v in value.items()}
    return value


def lcb_call_result_matches(exact_json: str | None, expected: Any) -> bool:
    """LiveCodeBench's ``grade_call_based`` rule on the exact return value: a top-level tuple counts
    as a list, then ``prediction == json.loads(expected)`` - so a nested tuple, or a dict whose keys
    are ints where the expected JSON has strings, is wrong (archer's own rule compares JSON encodings,
    where both match). False, never an exception."""
    try:
        if not isinstance(exact_json, str):
            return False
        got = _untagged(json.loads(exact_json))
        if isinstance(got, tuple):
            got = list(got)
        return bool(got == _json_or_raw(expected))
    except Exception:  # unhashable keys, RecursionError, ...: not a match
        return False
