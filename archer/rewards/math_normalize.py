"""String-level answer normalisation that runs before math-verify, and cheap guards against hostile input.

Why a layer in front of math-verify (Kydlicek et al., *Math-Verify*, HuggingFace 2025): its parser is
good, but a few of its choices are too lenient for a reward signal, and some inputs make sympy
compute for ever. This module is pure string work (no sympy), so it is cheap and safe to run anywhere:

- ``normalize_answer``: strips what never changes the value (``$``, ``\\(``, trailing dots,
  ``\\dfrac``/``\\tfrac``, ``^\\circ``, ``\\%``, ``\\!``, ``\\,``, a leading ``x =`` is left to
  math-verify). A percentage is treated as a unit: ``50\\%`` equals ``50`` but NOT ``0.5``
  (math-verify accepts both; a grader that cannot tell 50% from 0.5 rewards the wrong scale).
- ``choice_letter``: ``(B)``, ``B``, ``\\text{(B)}``, ``\\textbf{(B)}`` -> ``"B"`` for multiple choice.
- ``plain_number``: integers, decimals and simple fractions (``-3``, ``0.25``, ``\\frac{3}{4}``,
  ``3/4``) as exact ``Fraction`` values, so the commonest answers are compared without sympy.
- ``too_large``: a static bound on integer power towers (``9^{9^{9^9}}``, ``10^{10^{10}}``) and
  factorials (``(10^8)!``) whose exact value has more than ``MAX_DIGITS`` digits; sympy would try
  to compute them (in C, beyond the reach of signals). Such answers are only equal when their
  normalised strings are equal.

Limits: the guard recognises towers of integer literals written with ``^``/``**`` and braces, and
factorials of integer literals; an exotic spelling still falls back to the pool's hard timeout.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

MAX_DIGITS = 1_000_000  # exact integers beyond this many digits are not computed
MAX_FACTORIAL = 100_000  # n! beyond this n is not computed (100000! has ~456k digits)

_DELIMS = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]
_REPLACEMENTS = [
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree"), ""),
    (re.compile(r"\\%|%"), ""),
    (re.compile(r"(?<=\d)\\,(?=\d{3})"), ""),  # 1\,000 is a thousands separator
    (re.compile(r"(?<!\\)\\[!,;: ]|~"), " "),  # spacing commands, not the row break "\\\\ "
    (re.compile(r"\\displaystyle"), ""),
]
_CHOICE = re.compile(r"^\s*(?:\\(?:text|textbf|mathrm|mathbf)\s*\{\s*)?\(?\s*([A-E])\s*\)?\s*\}?\s*$")
_CHOICE_PRED = re.compile(
    r"^\s*(?:\\(?:text|textbf|mathrm|mathbf)\s*\{\s*)?\(\s*([A-E])\s*\)"  # "(B) 12", "\text{(B) }12"
)


def normalize_answer(answer: object) -> str:
    """Return a canonical string for ``answer`` (numbers via ``str``); never raises."""
    if answer is None:
        return ""
    if isinstance(answer, bool):
        return str(int(answer))
    if isinstance(answer, float) and answer.is_integer() and abs(answer) < 1e15:
        text = str(int(answer))  # amc23 stores 27.0 for 27: the gold is the integer
    else:
        text = str(answer)
    text = text.strip()
    for left, right in _DELIMS:
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            text = text[len(left) : len(text) - len(right)].strip()
            break
    for pattern, repl in _REPLACEMENTS:
        text = pattern.sub(repl, text)
    text = text.strip().rstrip(".").strip()
    return re.sub(r"\s+", " ", text)


def choice_letter(answer: str, *, allow_trailing: bool = False) -> str | None:
    """``"B"`` for a multiple-choice answer such as ``(B)`` / ``B`` / ``\\text{(B)}``, else None."""
    match = _CHOICE.match(answer)
    if match is None and allow_trailing:
        match = _CHOICE_PRED.match(answer)
    return match.group(1) if match else None


_INT_OR_DEC = re.compile(r"(-?)(\d{1,400}|\d{0,400}\.\d{1,400})")
_FRAC = re.compile(r"(-?)\\frac\s*(?:\{\s*(\d{1,400})\s*\}|(\d))\s*(?:\{\s*(\d{1,400})\s*\}|(\d))")
_SLASH = re.compile(r"(-?)(\d{1,400})\s*/\s*(\d{1,400})")


def plain_number(text: str) -> tuple[Fraction, bool] | None:
    """``(value, is_decimal)`` for a plain integer, decimal or fraction of integers, else None."""
    text = text.strip()
    if m := _INT_OR_DEC.fullmatch(text):
        value = Fraction(m.group(2))
        return (-value if m.group(1) else value), "." in text
    for pattern in (_FRAC, _SLASH):
        if m := pattern.fullmatch(text):
            num, den = [g for g in m.groups()[1:] if g is not None]
            if int(den) == 0:
                return None
            value = Fraction(int(num), int(den))
            return (-value if m.group(1) else value), False
    return None


# --- hostile-size guard ---------------------------------------------------------------------------


def _group_end(text: str, start: int) -> int:
    """Index after the brace group opening at ``text[start] == '{'``, or -1 if unbalanced."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def _tower_log10(expr: str, depth: int = 0) -> float | None:
    """log10 of an integer power tower like ``9^{9^{9}}`` (inf when it overflows), None if ``expr``
    is not a tower of integer literals."""
    expr = expr.strip()
    if depth > 50:
        return math.inf
    while expr.startswith("{") and _group_end(expr, 0) == len(expr):
        expr = expr[1:-1].strip()
    m = re.match(r"(\d+)\s*(?:\^|\*\*)\s*", expr)
    if m is None:
        return math.log10(int(expr)) if re.fullmatch(r"\d{1,400}", expr) and int(expr) > 0 else None
    base = int(m.group(1)[:400]) if len(m.group(1)) <= 400 else 10**400
    rest = expr[m.end() :]
    if rest.startswith("{"):
        end = _group_end(rest, 0)
        if end != len(rest):
            return None
    exp_log = _tower_log10(rest, depth + 1)
    if exp_log is None:
        return None
    if base <= 1:
        return 0.0
    if exp_log > 300:
        return math.inf
    return (10.0**exp_log) * math.log10(base)


def _operand_after(text: str, i: int) -> str:
    """The exponent operand starting at ``text[i]`` (a brace group, a digit run or one character)."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return ""
    if text[i] == "{":
        end = _group_end(text, i)
        return text[i:] if end < 0 else text[i:end]
    m = re.match(r"\d+(?:\s*(?:\^|\*\*)\s*(?:\d+|\{[^{}]*\}))*", text[i:])
    return m.group(0) if m else text[i]


def too_large(text: str) -> bool:
    """True when ``text`` holds an integer power or factorial too large to compute exactly."""
    if "^" not in text and "**" not in text and "!" not in text:
        return False
    flat = text.replace("**", "^")
    for m in re.finditer(r"(\d+)\s*\^", flat):
        operand = _operand_after(flat, m.end())
        log10 = _tower_log10(f"{m.group(1)}^{{{operand}}}") if operand else None
        if log10 is not None and log10 > MAX_DIGITS:
            return True
    for m in re.finditer(r"(\{[^{}]*\}|\([^()]*\)|\d+)\s*!", flat):
        inner = m.group(1)
        inner = inner[1:-1] if inner[0] in "({" else inner
        log10 = _tower_log10(inner)
        if log10 is not None and log10 > math.log10(MAX_FACTORIAL):
            return True
    return False
