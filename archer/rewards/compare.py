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


def _decimals(line: str) -> list[Decimal] | None:
    try:
        out = [Decimal(tok) for tok in line.split()]
    except (InvalidOperation, ValueError):
        return None
    return None if any(d.is_nan() for d in out) else out


def lines_match(got: str, want: str) -> bool:
    """One output line against the expected line (already split, not yet stripped)."""
    got, want = got.strip(), want.strip()
    if got == want:
        return True
    a, b = _decimals(got), _decimals(want)
    return a is not None and b is not None and a == b


def stdout_matches(output: str, expected: str) -> bool:
    """LiveCodeBench's stdin/stdout rule (see module docstring); False, never an exception."""
    try:
        return _stdout_matches(output, expected)
    except Exception:
        return False


def _stdout_matches(output: str, expected: str) -> bool:
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
