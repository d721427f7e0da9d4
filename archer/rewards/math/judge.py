"""One math judgement (gold vs predicted answer), run inside a pool worker process.

The comparison is math-verify's ``parse`` + ``verify`` (Kydlicek et al., *Math-Verify*, HuggingFace
2025) with sympy, behind two layers of our own:

1. before it, :mod:`archer.rewards.math.normalize` (percent as a unit, multiple-choice letters,
   equivalent spellings such as e-notation, repeating decimals, Unicode and inequalities, units, a
   nesting guard and a static guard against integer towers and huge factorials) and the refusals of
   reward-hacking forms listed in :func:`judge` (a letter followed by a second letter, a second value
   in ``\\text{}``, one-sided relations, mismatched units, a set against a tuple);
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
import re
from collections.abc import Callable
from typing import Any

from archer.rewards.math.normalize import (
    choice_letter,
    nesting_ok,
    normalize_answer,
    plain_number,
    slow_form,
    split_unit,
    too_large,
)

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
    ``bad_gold``, ``too_long``, ``too_deep``, ``too_large``, ``hedged``, ``unit_mismatch``,
    ``parse_error``. May raise (the worker catches).

    Refused before any parsing (a policy maximising reward would find each of these):

    - a gold that is a choice letter is only equal to the same letter (``choice_letter``), never to
      ``(B) ... (C)`` nor to an expression in the symbol ``B``;
    - ``hedged``: the prediction carries a second value in ``\\text{}`` (``3\\text{ (or 4)}``) or a
      relation of which math-verify reads one side (``3 \\approx 4``, ``4 \\to 3``, ``\\pm``) that
      the gold lacks;
    - ``unit_mismatch``: both sides carry units and they differ (``5\\text{ cm}`` vs ``5\\text{ m}``);
      a unit on one side only is dropped (``5\\text{ cm}`` equals ``5``);
    - ``too_deep``: brackets nested deeper than ``MAX_NESTING`` (parse time is exponential in it).

    After math-verify says equal: a set written with braces never equals a tuple or an interval
    (``\\{1,2\\}`` vs ``(1,2)``), a false numeric equation (``4 = 3``) is not the answer 3, and the
    exact layer (module doc) re-checks numbers."""
    return _judge(gold, pred, 0)


_MAX_CHAIN = 8  # "a = b = c ..." with more parts is refused


def _judge(gold: str, pred: str, depth: int) -> tuple[bool, str]:
    g, p = normalize_answer(gold), normalize_answer(pred)
    if not g:
        return False, "bad_gold"
    if not p:
        return False, "no_answer"
    if len(g) > MAX_ANSWER_CHARS or len(p) > MAX_ANSWER_CHARS:
        return False, "too_long"
    if g == p:
        return True, "equal"
    if not nesting_ok(g):
        return False, "bad_gold"
    if not nesting_ok(p):
        return False, "too_deep"
    gold_letter = choice_letter(g)
    if gold_letter is None and choice_letter(p) is not None:
        gold_letter = choice_letter(g, allow_trailing=True)  # a gold "C. x = 42" names option C
    if gold_letter is not None:
        pred_letter = choice_letter(p, allow_trailing=True)
        return (gold_letter == pred_letter), ("equal" if gold_letter == pred_letter else "not_equal")
    if _hedged(g, p):
        return False, "hedged"
    p_segments = _segments(p)
    chains = [parts for parts in map(_equation_parts, p_segments) if len(parts) >= 3]
    if chains and not any(len(_equation_parts(seg)) >= 3 for seg in _segments(g)):
        # "1+1 = 3 = 2" for the answer 2: math-verify reads the last side only. Every step of a chain
        # is judged (each of "x = 1 = 1, y = 3 = 2" separately); a leading label ("x", "f(2)") is
        # kept, and the chain stands for its last value.
        if depth > 0 or len(p_segments) > _MAX_CHAIN or any(len(c) > _MAX_CHAIN for c in chains):
            return False, "not_equal"
        reduced = []
        for segment in p_segments:
            parts = _equation_parts(segment)
            if len(parts) < 3:
                reduced.append(segment)
                continue
            label = parts[0] if _is_label(parts[0]) else None
            values = parts[1:] if label else parts
            for a, b in zip(values, values[1:]):
                if not _judge(a, b, depth + 1)[0]:
                    return False, "false_chain"
            reduced.append(f"{label} = {values[-1]}" if label else values[-1])
        return _judge(gold, ", ".join(reduced), depth + 1)
    (g, g_unit), (p, p_unit) = split_unit(g), split_unit(p)
    if g_unit and p_unit and g_unit != p_unit:
        return False, "unit_mismatch"
    if g == p:
        return True, "equal"
    gold_num, pred_num = plain_number(g), plain_number(p)
    if gold_num is not None and pred_num is not None:
        if gold_num[0] == pred_num[0]:
            return True, "equal"
        if not (gold_num[1] or pred_num[1]):  # both exact: no tolerance, no need for sympy
            return False, "not_equal"
    if too_large(g) or too_large(p):
        return False, "too_large"
    if slow_form(g) or slow_form(p):
        return False, "too_slow"
    gold_parsed = _parse_gold(g)
    if not gold_parsed:
        return False, "bad_gold"
    pred_parsed = _parse(p)
    if not pred_parsed:
        return False, "parse_error"
    if _clearly_different(gold_parsed[0], pred_parsed[0]) or _false_equation(pred_parsed[0]):
        return False, "not_equal"
    if not _mv().verify(gold_parsed, pred_parsed, timeout_seconds=None):
        if _equivalent_relations(gold, pred, gold_parsed[0], pred_parsed[0]):
            return True, "equal"
        return False, "not_equal"
    if _kind_conflict(g, p, gold_parsed[0], pred_parsed[0]):
        return False, "not_equal"
    if _exact_conflict(gold_parsed[0], pred_parsed[0]):
        return False, "not_equal"
    return True, "equal"


# --- hedging, kinds, equations ---------------------------------------------------------------------

_TEXT_GROUP = re.compile(
    r"\\(?:text|textrm|textbf|textit|textsf|texttt|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}"
)
# relations of which math-verify keeps one side only ("3 \approx 4" is read as 3, "4 \to 3" as 3),
# and \pm, which it expands to both signs
_ONE_SIDED = re.compile(
    r"\\(?:approx|to|rightarrow|Rightarrow|longrightarrow|Longrightarrow|implies|mapsto|sim|simeq|cong"
    r"|iff|Leftrightarrow|lor|vee|land|wedge|pm|mp"
    # relations other than equality: math-verify reads one side of most of them ("3 \propto 2" is 2)
    r"|propto|Leftarrow|leftarrow|longleftarrow|Longleftarrow|impliedby|leftrightarrow|longleftrightarrow"
    r"|asymp|not|ne|neq|notin|in|ni|mid|nmid|divides|parallel|perp|gg|ll|ggg|lll|subset|subseteq|supset"
    r"|supseteq|subsetneq|supsetneq|equiv|prec|succ|preceq|succeq|vdash|dashv|models|vDash|bowtie|approxeq"
    r"|lesssim|gtrsim|backsim|circeq|bumpeq|Bumpeq|risingdotseq|fallingdotseq|thicksim|thickapprox"
    r"|therefore|because)(?![A-Za-z])"
    r"|!=|<>|≈"
)
# "x \in S" names the set S: a single letter (optionally subscripted) before \in is a label
_IN_LABEL = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*\\in(?![A-Za-z])")


def _hedged(gold: str, pred: str) -> bool:
    """The prediction states more than one value where the gold does not (see :func:`judge`)."""
    gold_texts = {t.strip() for t in _TEXT_GROUP.findall(gold)}
    if any(re.search(r"\d", t) and t.strip() not in gold_texts for t in _TEXT_GROUP.findall(pred)):
        return True
    gold, pred = _IN_LABEL.sub("", gold), _IN_LABEL.sub("", pred)
    gold_rel = {_SYNONYM.get(r, r) for r in _ONE_SIDED.findall(gold)}
    if "," in gold:  # "\\pm 3" is the list "3, -3"
        gold_rel |= {"\\pm", "\\mp"}
    return any(_SYNONYM.get(r, r) not in gold_rel for r in _ONE_SIDED.findall(pred))


# spellings of one relation: a gold "x \\ne 3" accepts "x \\neq 3" and "x != 3"
_SYNONYM = {
    "\\neq": "\\ne",
    "\\not": "\\ne",
    "!=": "\\ne",
    "<>": "\\ne",
    "\\rightarrow": "\\to",
    "\\longrightarrow": "\\to",
    "\\Rightarrow": "\\implies",
    "\\Longrightarrow": "\\implies",
    "\\Leftrightarrow": "\\iff",
    "\\vee": "\\lor",
    "\\wedge": "\\land",
    "\\Leftarrow": "\\impliedby",
    "\\Longleftarrow": "\\impliedby",
    "\\leftarrow": "\\gets",
    "\\longleftarrow": "\\gets",
    "≈": "\\approx",
}


_SEPARATOR_WORDS = re.compile(r"\\text\s*\{\s*(?:and|or)\s*\}|\\q?quad(?![A-Za-z])|\\\\|\band\b|\bor\b")


def _split_top_level(text: str, cut: Callable[[str, int], bool], drop_empty: bool) -> list[str]:
    """``text`` cut at every index ``i`` outside brackets (``{([`` / ``})]``) where ``cut(text, i)``;
    the pieces stripped (and the empty ones dropped when ``drop_empty``)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif depth == 0 and cut(text, i):
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return [seg for seg in out if seg] if drop_empty else out


def _segments(text: str) -> list[str]:
    """``text`` cut at top-level ``,`` / ``;`` (and ``\\quad``, ``\\\\``, "and", "or"): the
    statements of a system such as ``x = 1, y = 2``."""
    return _split_top_level(_SEPARATOR_WORDS.sub(";", text), lambda t, i: t[i] in ",;", drop_empty=True)


def _is_equals(text: str, i: int) -> bool:
    """``text[i]`` is an ``=`` of its own (not part of ``<=``, ``>=``, ``!=``, ``==``)."""
    return text[i] == "=" and (i == 0 or text[i - 1] not in "<>!=") and text[i + 1 : i + 2] != "="


def _equation_parts(text: str) -> list[str]:
    """``text`` cut at each top-level ``=`` (outside brackets; not ``<=``, ``>=``, ``!=``)."""
    return _split_top_level(text, _is_equals, drop_empty=False)


def _is_label(text: str) -> bool:
    """A name rather than a value: ``x``, ``f(2)``, ``AB``, ``a_{n}`` (a letter outside commands)."""
    return bool(re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", text))) and len(text) <= 40


_RELATION_TEXT = re.compile(r"<=|>=|<|>|\\[lg]eq?(?:slant)?(?![A-Za-z])|\\[lg]t(?![A-Za-z])|=")


def _equivalent_relations(gold: str, pred: str, a: Any, b: Any) -> bool:
    """Two relations that math-verify did not match but that state the same thing: an equation
    scaled by a non-zero constant (``x^2/16 + y^2/12 = 1/4`` is ``x^2/4 + y^2/3 = 1``), an
    inequality scaled by a positive one or flipped with its sign (``-x > -1`` is ``x < 1``), and a
    one-variable inequality against the interval it defines. Each side is read without the
    inequality-to-interval rewrite; a chain or a relation between numbers is not considered."""
    import sympy

    g_raw, p_raw = normalize_answer(gold, rewrite=False), normalize_answer(pred, rewrite=False)
    if not (_RELATION_TEXT.search(g_raw) or _RELATION_TEXT.search(p_raw)):
        return False
    if len(_RELATION_TEXT.findall(g_raw)) > 1 or len(_RELATION_TEXT.findall(p_raw)) > 1:
        return False
    try:
        ga, pb = _parse_gold(g_raw), _parse(p_raw)
        x, y = (ga[0] if ga else a), (pb[0] if pb else b)
        if isinstance(x, sympy.Set) != isinstance(y, sympy.Set):  # a relation against an interval
            rel, interval = (y, x) if isinstance(x, sympy.Set) else (x, y)
            return _relation_as_set(rel) == interval
        return _proportional(x, y)
    except Exception:  # noqa: BLE001 - sympy failures mean "not shown equal"
        return False


def _canonical(rel: Any) -> tuple[str, Any] | None:
    """``(kind, E)`` with the relation equivalent to ``E kind 0`` (kind ``=``, ``<`` or ``<=``)."""
    import sympy

    if isinstance(rel, sympy.Eq):
        return "=", rel.lhs - rel.rhs
    if isinstance(rel, (sympy.StrictLessThan, sympy.LessThan)):
        return ("<" if isinstance(rel, sympy.StrictLessThan) else "<="), rel.lhs - rel.rhs
    if isinstance(rel, (sympy.StrictGreaterThan, sympy.GreaterThan)):
        return ("<" if isinstance(rel, sympy.StrictGreaterThan) else "<="), rel.rhs - rel.lhs
    return None


def _proportional(x: Any, y: Any) -> bool:
    import sympy

    cx, cy = _canonical(x), _canonical(y)
    if cx is None or cy is None or cx[0] != cy[0]:
        return False
    ex, ey = cx[1], cy[1]
    if not ex.free_symbols or ex.free_symbols != ey.free_symbols:
        return False
    if cx[0] == "=" and all(isinstance(r.lhs, sympy.Symbol) and not r.rhs.free_symbols for r in (x, y)):
        return False  # "x = 3" vs "x = 4": labelled values, which math-verify has compared
    ratio = sympy.simplify(ey / ex)
    if ratio.free_symbols or not ratio.is_number or ratio.is_zero or ratio.is_finite is False:
        return False
    if cx[0] == "=":
        return bool(ratio.is_nonzero)
    return bool(ratio.is_positive)


def _relation_as_set(rel: Any) -> Any:
    import sympy

    if _canonical(rel) is None or isinstance(rel, sympy.Eq) or len(rel.free_symbols) != 1:
        return None
    (var,) = rel.free_symbols
    return sympy.solve_univariate_inequality(rel, var, relational=False, domain=sympy.S.Reals)


def _explicit_set(text: str) -> bool:
    text = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])", "", text).replace(" ", "")
    text = re.sub(r"^[A-Za-z]\\in", "", text)
    return text.startswith("\\{") and text.endswith("\\}")


def _kind_conflict(gold_text: str, pred_text: str, a: Any, b: Any) -> bool:
    """A set written with braces against a tuple or an interval (math-verify lets them be equal)."""
    import sympy

    def kind(x: Any, text: str) -> str | None:
        if isinstance(x, sympy.Eq):
            x = x.rhs
        if isinstance(x, sympy.FiniteSet):
            return "set" if _explicit_set(text) else None  # a bare list "1, 2" may be either
        if isinstance(x, (sympy.Tuple, tuple, sympy.Interval, sympy.Union)):
            return "sequence"
        return None

    return {kind(a, gold_text), kind(b, pred_text)} == {"set", "sequence"}


def _false_equation(x: Any) -> bool:
    """``4 = 3``: both sides plain numbers that clearly differ (math-verify would judge the 3)."""
    import sympy

    if not isinstance(x, sympy.Eq):
        return False
    if not all(isinstance(v, sympy.Expr) and not v.free_symbols for v in (x.lhs, x.rhs)):
        return False
    return _clearly_different(x.lhs, x.rhs)


# --- exact comparison ------------------------------------------------------------------------------


def _exact_conflict(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are both exact and provably different (math-verify was lenient)."""
    import sympy

    if isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq) and a.lhs != b.lhs:
        return False  # two equations, not two labelled values: math-verify compared them as equations
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
    """Exact numbers ``a`` and ``b`` are equal: never by a tolerance. Rationals compare exactly;
    otherwise ``a - b`` must be proved zero by sympy (``minimal_polynomial`` for algebraic numbers,
    ``simplify`` else), after a cheap numeric filter that calls a difference resolved as non-zero
    unequal however small it is (``\\sqrt2+\\sqrt3`` vs the same ``+10^{-60}``)."""
    import sympy

    a, b = sympy.sympify(a).doit(), sympy.sympify(b).doit()
    if a.is_Rational and b.is_Rational:
        return bool(a == b)
    if a == b:
        return True
    diff = a - b
    if diff == 0:
        return True
    try:
        # a cheap numeric filter: a difference resolved as non-zero within _EXACT_FILTER_BITS of
        # working precision is non-zero (evalf's strict mode raises rather than guess)
        if diff.evalf(30, strict=True, maxn=_EXACT_FILTER_BITS) != 0:
            return False
    except (sympy.core.evalf.PrecisionExhausted, ValueError, TypeError, ArithmeticError):
        pass
    return _proved_zero(diff)  # smaller than 2^-_EXACT_FILTER_BITS: equal only when proved


_EXACT_FILTER_BITS = 600


def _proved_zero(diff: Any) -> bool:
    import sympy

    if not diff.atoms(sympy.Function) and not diff.has(sympy.pi, sympy.E, sympy.exp, sympy.log):
        try:
            x = sympy.Dummy("x")
            return sympy.minimal_polynomial(diff, x) == x
        except (NotImplementedError, ValueError, TypeError, sympy.polys.polyerrors.PolynomialError):
            pass
    try:
        return sympy.simplify(diff) == 0
    except (TypeError, ValueError, ArithmeticError):
        return False
