"""One math judgement (gold vs predicted answer), run inside a pool worker process.

The comparison is math-verify's ``parse`` + ``verify`` (Kydlicek et al., *Math-Verify*, HuggingFace
2025) with sympy, behind two layers of our own:

1. before it, :mod:`archer.rewards.math_normalize` (percent as a unit, multiple-choice letters, a
   static guard against integer towers and huge factorials);
2. after it, an exact check: math-verify compares numbers after rounding (``float_rounding=6``), so
   it calls ``1/2004!`` equal to ``1/2006!``. When both sides are exact numbers (integers, rationals,
   radicals, factorials, powers, with no decimal literal), we compare them exactly (rationals) or to
   ``50 + digits`` significant digits (irrationals), element by element inside tuples and matrices.
   A side with a decimal literal keeps math-verify's tolerance, so ``\\pi`` vs ``3.14159`` stays
   unequal (math-verify's rounding) while ``0.5`` vs ``\\frac12`` is equal.

Plain integers, decimals and fractions of integers on both sides are compared as exact fractions
without sympy (the commonest case, and the fastest); a decimal that differs falls through to
math-verify's tolerance. Two numbers that differ by far more than that tolerance (relative 1e-4)
are unequal without math-verify's symbolic simplification. Gold answers are parsed once per worker (LRU cache), so a GRPO group of n responses to one problem
parses its gold once. math-verify's own SIGALRM timeouts are switched off here: the pool kills a
worker that overruns, which also stops C-level sympy/GMP work that no signal can interrupt.

Assumes it is imported only in a worker (it imports sympy and math-verify at first use).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from archer.rewards.math_normalize import choice_letter, normalize_answer, plain_number, too_large

MAX_ANSWER_CHARS = 20_000  # longer "answers" are not parsed (a 1 MB string is an attack, not a number)


@functools.lru_cache(maxsize=1)
def _mv() -> Any:
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # silence "timeout disabled" warnings
    return math_verify


@functools.lru_cache(maxsize=1)
def _configs() -> list[Any]:
    mv = _mv()
    return [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]


def _parse(text: str) -> list[Any]:
    # \boxed{} makes math-verify take the whole string as one answer (it ranks boxed matches first)
    return _mv().parse("\\boxed{" + text + "}", extraction_config=_configs(), parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_gold(text: str) -> list[Any]:
    return _parse(text)


def judge(gold: str, pred: str) -> tuple[bool, str]:
    """``(equal, reason)`` for two answer strings; reasons: ``equal``, ``not_equal``, ``no_answer``,
    ``bad_gold``, ``too_long``, ``too_large``, ``parse_error``. May raise (the worker catches)."""
    g, p = normalize_answer(gold), normalize_answer(pred)
    if not g:
        return False, "bad_gold"
    if not p:
        return False, "no_answer"
    if len(g) > MAX_ANSWER_CHARS or len(p) > MAX_ANSWER_CHARS:
        return False, "too_long"
    if g == p:
        return True, "equal"
    if not _braces_ok(p):
        return False, "parse_error"
    gold_letter = choice_letter(g)
    if gold_letter is not None:
        pred_letter = choice_letter(p, allow_trailing=True)
        if pred_letter is not None:
            return (gold_letter == pred_letter), ("equal" if gold_letter == pred_letter else "not_equal")
    gold_num, pred_num = plain_number(g), plain_number(p)
    if gold_num is not None and pred_num is not None:
        if gold_num[0] == pred_num[0]:
            return True, "equal"
        if not (gold_num[1] or pred_num[1]):  # both exact: no tolerance, no need for sympy
            return False, "not_equal"
    if too_large(g) or too_large(p):
        return False, "too_large"
    gold_parsed = _parse_gold(g)
    if not gold_parsed:
        return False, "bad_gold"
    pred_parsed = _parse(p)
    if not pred_parsed:
        return False, "parse_error"
    if _clearly_different(gold_parsed[0], pred_parsed[0]):
        return False, "not_equal"
    if not _mv().verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return False, "not_equal"
    if _exact_conflict(gold_parsed[0], pred_parsed[0]):
        return False, "not_equal"
    return True, "equal"


def _braces_ok(text: str, max_depth: int = 64) -> bool:
    """Balanced and not absurdly deep: the LaTeX parser is slow on such input and it is never an answer."""
    depth = 0
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if depth < 0 or depth > max_depth:
            return False
    return depth == 0


# --- exact comparison ------------------------------------------------------------------------------


def _exact_conflict(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are both exact and provably different (math-verify was lenient)."""
    import sympy

    if isinstance(a, sympy.Eq):
        a = a.rhs
    if isinstance(b, sympy.Eq):
        b = b.rhs
    if isinstance(a, (sympy.Tuple, tuple, list)) and isinstance(b, (sympy.Tuple, tuple, list)):
        return len(a) == len(b) and any(_exact_conflict(x, y) for x, y in zip(a, b))
    if isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase):
        return a.shape == b.shape and any(_exact_conflict(x, y) for x, y in zip(a, b))
    if not (_is_exact_number(a) and _is_exact_number(b)):
        return False
    return not _exact_equal(a, b)


def _clearly_different(a: Any, b: Any) -> bool:
    """Two plain numbers whose values differ far beyond math-verify's rounding: skip its symbolic
    ``simplify(a - b)``, the most expensive step, for the commonest kind of wrong answer."""
    import sympy

    if not all(isinstance(x, sympy.Expr) and not x.free_symbols and x.is_number for x in (a, b)):
        return False
    try:
        va, vb = complex(sympy.N(a, 30)), complex(sympy.N(b, 30))
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return False
    if any(v != v or abs(v) == float("inf") for v in (va, vb)):  # nan / inf: let math-verify decide
        return False
    return abs(va - vb) > 1e-4 * max(1.0, abs(va), abs(vb))


def _is_exact_number(x: Any) -> bool:
    import sympy

    return (
        isinstance(x, sympy.Expr)
        and not x.free_symbols
        and not x.atoms(sympy.Float)
        and x.is_number
        and x.is_finite is not False
    )


def _exact_equal(a: Any, b: Any) -> bool:
    import sympy

    a, b = sympy.sympify(a).doit(), sympy.sympify(b).doit()
    if a.is_Rational and b.is_Rational:
        return bool(a == b)
    if a == b:
        return True
    # irrationals: compare to more significant digits than any integer literal inside carries
    digits = max([len(str(abs(int(n)))) for n in (a.atoms(sympy.Integer) | b.atoms(sympy.Integer))] or [1])
    dps = 50 + min(digits, 10_000)
    va, vb = sympy.N(a, dps), sympy.N(b, dps)
    scale = max(abs(va), abs(vb))
    if scale == 0:
        return True
    return bool(abs(va - vb) <= scale * sympy.Float(10) ** (-(dps - 10)))
