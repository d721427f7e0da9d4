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
- equivalent spellings are rewritten to one form (whole answer only): Unicode maths (``½``, ``√2``,
  ``π``, ``−``, ``×``, ``≤``, superscript digits, full-width forms; invisible format characters are
  dropped), e-notation (``1.5e-3`` -> ``0.0015``, exponents up to ``MAX_E_EXPONENT``), spaces as
  thousands separators (``1 000 000``), repeating decimals (``0.\\overline{3}``, ``0.\\dot{3}``,
  ``0.\\bar{3}`` -> an exact ``\\frac``) and one-variable inequalities with numeric bounds
  (``-1 \\le x < 2`` -> ``[-1, 2)``; unions joined by ``\\cup``/``or``).
- ``split_unit``: a trailing unit (``5\\text{ cm}``, ``5\\mathrm{m}^2``, ``5 cm``) and its canonical
  name, so that two answers with different units are never equal (math-verify drops units).
- ``nesting_ok``: balanced ``{([``/``})]`` no deeper than ``MAX_NESTING`` (the LaTeX parser is
  exponential in nesting: 22 nested ``\\frac`` take 27 s, 30 nested parentheses 6 s).
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
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MAX_DIGITS = 1_000_000  # exact integers beyond this many digits are not computed
MAX_FACTORIAL = 100_000  # n! beyond this n is not computed (100000! has ~456k digits)
MAX_NESTING = 10  # real answers nest brackets 2 deep (MATH-500, AIME, AMC); parsing cost explodes past ~12
MAX_E_EXPONENT = 1000  # "1e1000" is rewritten to its 1001 digits; a larger exponent is left alone

_DELIMS = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]
_PERCENT_WORD = re.compile(
    r"(?<=[\d}])\s*(?:\\(?:text|textrm|mbox|mathrm)\s*\{\s*)?(?:percentage|percent|per\s?cent|pct)\.?(?:\s*\})?\s*$",
    re.I,
)
_REPLACEMENTS = [
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree"), ""),
    (re.compile(r"\\%|%"), ""),
    # percent as a word is the same unit as \% (MATH-style answers write "28 percent")
    (_PERCENT_WORD, ""),
    (re.compile(r"\\\$"), ""),  # a dollar sign before or after an amount (\$16.20, 5\$)
    (re.compile(r"(?<=\d)\\,(?=\d{3})"), ""),  # 1\,000 is a thousands separator
    # "10,\!080", "11,\! 111,\! 100", "10{,}080": a comma with a negative space (or braced) between
    # digit groups of three is a thousands separator (three MATH-500 answers are written this way)
    (re.compile(r"(?<=\d)(?:,\s*\\!\s*|\{,\}\s*)(?=\d{3}(?!\d))"), ""),
    (re.compile(r"(?<!\\)\\[!,;: ]|~"), " "),  # spacing commands, not the row break "\\\\ "
    (re.compile(r"\\displaystyle"), ""),
    # definitions and "equal by definition" are equations: "x := 3" is "x = 3", "4 := 3" is false
    (
        re.compile(
            r":=|=:|\\(?:coloneqq|Coloneqq|eqqcolon|coloneq|doteq|doteqdot|triangleq|eqdef|stackrel\s*\{[^{}]*\}\s*\{\s*=\s*\}"
            r"|overset\s*\{[^{}]*\}\s*\{\s*=\s*\})(?![A-Za-z])"
        ),
        "=",
    ),
    (re.compile(r"\\lbrace(?![A-Za-z])"), r"\\{"),  # math-verify reads "\lbrace 1,2\rbrace" as 1.2
    (re.compile(r"\\rbrace(?![A-Za-z])"), r"\\}"),
]
_CHOICE = re.compile(r"^\s*(?:\\(?:text|textbf|mathrm|mathbf)\s*\{\s*)?\(?\s*([A-E])\s*\)?\s*\}?\s*$")
_CHOICE_PRED = re.compile(
    r"^\s*(?:\\(?:text|textbf|mathrm|mathbf)\s*\{\s*)?(?:\(\s*([A-E])\s*\)"  # "(B) 12", "\text{(B) }12"
    r"|([A-E])[.:)](?=\s))"  # "C. x = 42", "C) 42"
)


def normalize_answer(answer: object, *, rewrite: bool = True) -> str:
    """Return a canonical string for ``answer`` (numbers via ``str``); never raises. With
    ``rewrite=False`` the whole-answer rewrites (e-notation, inequalities as intervals ...) are
    skipped, so a relation stays a relation."""
    if answer is None:
        return ""
    if isinstance(answer, bool):
        return str(int(answer))
    if isinstance(answer, float) and answer.is_integer() and abs(answer) < 1e15:
        text = str(int(answer))  # amc23 stores 27.0 for 27: the gold is the integer
    else:
        text = str(answer)
    text = unicode_to_latex(text.strip())
    for left, right in _DELIMS:
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            text = text[len(left) : len(text) - len(right)].strip()
            break
    for pattern, repl in _REPLACEMENTS:
        text = pattern.sub(repl, text)
    text = text.strip().rstrip(".").strip()
    if text.endswith("\\") and not text.endswith("\\\\"):
        text = text[:-1].strip()  # a stray trailing backslash ("185\\") is no part of the value
    text = re.sub(r"\s+", " ", text)
    text = strip_prose(text)
    return _rewrite_whole(text) if rewrite else text


def choice_letter(answer: str, *, allow_trailing: bool = False) -> str | None:
    """``"B"`` for a multiple-choice answer such as ``(B)`` / ``B`` / ``\\text{(B)}``, else None.

    With ``allow_trailing``, ``(B) 12`` / ``\\text{(B) }\\frac{1}{2}`` (the letter, then the option's
    content) is also ``"B"``, but only when what follows is maths: no word of two or more letters
    outside LaTeX commands and no other capital A-E. So ``(B) is wrong; the answer is (C)`` and
    ``(B) \\text{ or } (C)`` are no letter at all (a letter prefix must not carry a second answer)."""
    match = _CHOICE.match(answer)
    if match is None and allow_trailing:
        match = _CHOICE_PRED.match(answer)
        if match is not None:
            rest = re.sub(r"\\[A-Za-z]+", " ", answer[match.end() :])
            if re.search(r"[A-Za-z]{2,}|(?<![A-Za-z])[A-E](?![A-Za-z])", rest):
                return None
    return next((g for g in match.groups() if g), None) if match else None


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


_TEXT_CMD = re.compile(r"\\(?:text|textrm|textbf|textit|mbox|mathrm)\s*\{([^{}]*)\}")
_VERB = re.compile(r"\s(?:is|are|was|equals|be)\s", re.I)


def strip_prose(text: str) -> str:
    """``The largest $n$ is 34`` -> ``34``: a sentence whose subject has no digit, stating one value
    after its last verb (is/are/was/equals/be), is its value. Anything else is returned unchanged (a
    hedge such as ``3 is wrong, it is 4`` has a digit before the verb and is left to the judge)."""
    if not re.search(r"[A-Za-z]{2,}", text) or len(text) > 500:
        return text
    flat = _TEXT_CMD.sub(lambda m: " " + m.group(1) + " ", text).replace("$", " ")
    flat = re.sub(r"\\[()\[\]]", " ", flat)
    verbs = list(_VERB.finditer(" " + flat + " "))
    if not verbs:
        return text
    cut = verbs[-1]
    subject, value = flat[: max(0, cut.start() - 1)], flat[cut.end() - 1 :].strip().rstrip(".").strip()
    if (
        not value
        or re.search(r"\d", subject)
        or not re.search(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", "", subject))
    ):
        return text
    if re.search(r"(?<![\\A-Za-z])[A-Za-z]{2,}", value):  # the value holds a word: not one value
        return text
    return re.sub(r"\s+", " ", value)


# --- equivalent spellings ------------------------------------------------------------------------

_UNICODE = {
    "π": r"\pi ",
    "∞": r"\infty ",
    "−": "-",
    "–": "-",
    "×": r"\times ",
    "·": r"\cdot ",
    "⋅": r"\cdot ",
    "÷": r"\div ",
    "≤": r"\le ",
    "≥": r"\ge ",
    "≠": r"\ne ",
    "∪": r"\cup ",
    "∩": r"\cap ",
    "∈": r"\in ",
    "⩽": r"\le ",
    "⩾": r"\ge ",
    "∅": r"\emptyset ",
    "θ": r"\theta ",
    "⁄": "/",
    "\u00a0": " ",
}
_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUPERSCRIPTS = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+")
_ROOT = re.compile(r"([√∛∜])\s*(\d+(?:\.\d+)?|[A-Za-z]|\\[A-Za-z]+|\{[^{}]*\}|\([^()]*\))")


def unicode_to_latex(text: str) -> str:
    """Unicode maths as LaTeX: ``½`` -> ``\\frac{1}{2}`` (``1½`` -> ``\\frac{3}{2}``), ``√2`` ->
    ``\\sqrt{2}``, ``x²`` -> ``x^{2}``, ``π``, ``∞``, ``−``, ``×``, ``≤`` ...; full-width forms as
    ASCII (NFKC); invisible format characters (zero-width space, bidi marks) removed. ASCII text is
    returned unchanged (fast path)."""
    if text.isascii():
        return text
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    text = re.sub("[\uff01-\uff5e]+", lambda m: unicodedata.normalize("NFKC", m.group(0)), text)

    def vulgar(m: re.Match[str]) -> str:
        value = Fraction(unicodedata.numeric(m.group(2))).limit_denominator(10) + int(m.group(1) or 0)
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"

    text = re.sub(r"(\d{0,400})([\u00bc-\u00be\u2150-\u215e])", vulgar, text)
    text = _SUPERSCRIPTS.sub(lambda m: "^{" + m.group(0).translate(_SUPERSCRIPT) + "}", text)

    def root(m: re.Match[str]) -> str:
        arg = m.group(2)
        if arg[0] in "{(":
            arg = arg[1:-1]
        index = {"√": "", "∛": "[3]", "∜": "[4]"}[m.group(1)]
        return f"\\sqrt{index}{{{arg}}}"

    text = _ROOT.sub(root, text)
    return "".join(_UNICODE.get(ch, ch) for ch in text).strip()


_E_NOTATION = re.compile(r"(-?)(\d{1,400}(?:\.\d{0,400})?|\.\d{1,400})[eE]([+-]?\d{1,6})")
_SPACED_THOUSANDS = re.compile(r"-?\d{1,3}(?: \d{3})+(?:\.\d{1,400})?")
_COMMA_THOUSANDS = re.compile(
    r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d{1,400})?"
)  # "16,386.20" (no space after ",")
_REPEATING = re.compile(
    r"(-?)(\d{0,400})\.(\d{0,400})(?:\\overline|\\bar)\s*(?:\{\s*(\d{1,60})\s*\}|(\d))"  # 0.1\overline{6}
    r"|(-?)(\d{0,400})\.(\d{0,400})\\dot\s*\{?\s*(\d)\s*\}?(?:(\d{0,58})\\dot\s*\{?\s*(\d)\s*\}?)?"  # 0.\dot{1}4\dot{2}
)


def _repeating_value(sign: str, whole: str, fixed: str, period: str) -> str:
    num = int(whole + fixed + period or "0") - int(whole + fixed or "0")
    value = Fraction(num, 10 ** len(fixed) * (10 ** len(period) - 1))
    value = -value if sign else value
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}" if value.denominator != 1 else str(value)


_REL = r"(<=|>=|<|>|\\[lg]t(?![A-Za-z])|\\[lg]eq?(?:slant)?(?![A-Za-z]))"
_UNION = re.compile(r"\s*(?:\\cup|\\text\s*\{\s*or\s*\}|\bor\b|\\lor|\\vee)\s*")


def _bound_ok(bound: str) -> bool:
    """A numeric bound: no variable letters once LaTeX commands are removed, at most 200 chars."""
    bound = bound.strip()
    return (
        bool(bound)
        and len(bound) <= 200
        and not re.search(r"[A-Za-z=<>,;]", re.sub(r"\\[A-Za-z]+", "", bound))
    )


def _is_upper(rel: str) -> bool:
    """``x REL b`` bounds x from above."""
    return rel in ("<", "<=", "\\lt") or rel.startswith("\\le")


def _strict(rel: str) -> bool:
    return rel in ("<", ">", "\\lt", "\\gt")


def _one_interval(part: str) -> tuple[str, str] | None:
    """``(variable, interval)`` for ``x > a``, ``a < x``, ``a < x \\le b`` (either direction)."""
    part = part.strip()
    m = re.fullmatch(rf"(.+?)\s*{_REL}\s*([A-Za-z])\s*{_REL}\s*(.+)", part)
    if m and _bound_ok(m.group(1)) and _bound_ok(m.group(5)):
        a, r1, var, r2, b = (g.strip() for g in m.groups())
        up1, up2 = _is_upper(r1), _is_upper(r2)
        if up1 != up2:
            return None
        if not up1:  # b > x > a: swap to a < x < b
            a, b, r1, r2 = b, a, r2, r1
        return var, ("(" if _strict(r1) else "[") + f"{a}, {b}" + (")" if _strict(r2) else "]")
    m = re.fullmatch(rf"([A-Za-z])\s*{_REL}\s*(.+)", part) or re.fullmatch(
        rf"(.+?)\s*{_REL}\s*([A-Za-z])", part
    )
    if not m:
        return None
    left_var = len(m.group(1)) == 1 and m.group(1).isalpha()
    var, rel, bound = (
        (m.group(1), m.group(2), m.group(3)) if left_var else (m.group(3), m.group(2), m.group(1))
    )
    if not _bound_ok(bound):
        return None
    greater = not _is_upper(rel)
    if not left_var:  # "a < x" is "x > a"
        greater = not greater
    bound = bound.strip()
    if greater:
        return var, ("(" if _strict(rel) else "[") + f"{bound}, \\infty)"
    return var, f"(-\\infty, {bound}" + (")" if _strict(rel) else "]")


def inequality_to_interval(text: str) -> str | None:
    """Interval notation for a one-variable inequality (or a union of them) with numeric bounds."""
    if not re.search(r"[<>]|\\[lg]t|\\[lg]e", text) or "\\ne" in text:
        return None
    parts = _UNION.split(text)
    found = [_one_interval(p) for p in parts]
    if not found or any(f is None for f in found) or len({f[0] for f in found}) != 1:  # type: ignore[index]
        return None
    return " \\cup ".join(f[1] for f in found)  # type: ignore[index]


def _rewrite_whole(text: str) -> str:
    """Rewrites that apply when the whole answer is one number or one inequality (see module doc)."""
    if m := _E_NOTATION.fullmatch(text):
        if abs(int(m.group(3))) <= MAX_E_EXPONENT:
            try:
                value = Decimal(f"{m.group(2)}e{m.group(3)}")
            except InvalidOperation:
                return text
            out = format(value, "f")
            out = out.rstrip("0").rstrip(".") if "." in out else out
            return (m.group(1) + out) if out != "0" else "0"
        return text
    if _SPACED_THOUSANDS.fullmatch(text):
        return text.replace(" ", "")
    if _COMMA_THOUSANDS.fullmatch(text):
        return text.replace(",", "")
    if m := _REPEATING.fullmatch(text):
        g = m.groups()
        if g[0] is not None or g[1] is not None:
            return _repeating_value(g[0], g[1], g[2], g[3] or g[4])
        sign, whole, fixed, first, middle, last = g[5:]
        if last is None:  # one dot: that digit repeats
            return _repeating_value(sign, whole, fixed, first)
        return _repeating_value(sign, whole, fixed, first + middle + last)
    return inequality_to_interval(text) or text


# --- units ----------------------------------------------------------------------------------------

_UNIT_ALIASES = {
    "centimeter": "cm",
    "centimetre": "cm",
    "millimeter": "mm",
    "millimetre": "mm",
    "meter": "m",
    "metre": "m",
    "kilometer": "km",
    "kilometre": "km",
    "inch": "in",
    "inche": "in",
    "foot": "ft",
    "feet": "ft",
    "yard": "yd",
    "mile": "mi",
    "second": "s",
    "sec": "s",
    "minute": "min",
    "hour": "h",
    "hr": "h",
    "gram": "g",
    "kilogram": "kg",
    "liter": "l",
    "litre": "l",
    "degree": "deg",
    "dollar": "$",
    "cent": "cent",
    "unit": "unit",
    "squareunit": "unit^2",
    "sq": "square",
}
# bare words accepted as a unit after a number (a \text{...} unit may be any word)
_BARE_UNITS = {
    "cm",
    "mm",
    "m",
    "km",
    "in",
    "inch",
    "inches",
    "ft",
    "feet",
    "foot",
    "yd",
    "yards",
    "mi",
    "miles",
    "s",
    "sec",
    "seconds",
    "min",
    "minutes",
    "h",
    "hr",
    "hours",
    "g",
    "kg",
    "l",
    "ml",
    "units",
    "meters",
    "centimeters",
    "cents",
    "dollars",
    "degrees",
    "mph",
    "days",
    "weeks",
    "years",
}
_TEXT_UNIT = re.compile(
    r"(?P<value>.*?\S)\s*\\(?:text|textrm|mbox|mathrm|rm|textit|mathit)\s*\{\s*(?P<unit>[A-Za-z][A-Za-z .]{0,40}?)\s*\}"
    r"\s*(?P<pow>\^\s*\{?\s*[23]\s*\}?)?"
)
_BARE_UNIT = re.compile(
    r"(?P<value>.*?[\d}.])\s+(?P<unit>[A-Za-z]{1,12}(?: [A-Za-z]{1,12})?)\s*(?P<pow>\^\s*\{?\s*[23]\s*\}?)?"
)


def _canonical_unit(unit: str, power: str | None) -> str:
    words = [w for w in re.split(r"[\s.]+", unit.lower()) if w]
    out = []
    for w in words:
        if w.endswith("s") and len(w) > 3:
            w = w[:-1]
        out.append(_UNIT_ALIASES.get(w, w))
    name = " ".join(out)
    name = {
        "square cm": "cm^2",
        "square m": "m^2",
        "square in": "in^2",
        "square ft": "ft^2",
        "square unit": "unit^2",
        "cubic cm": "cm^3",
        "cubic m": "m^3",
        "cubic in": "in^3",
        "cubic ft": "ft^3",
        "cubic unit": "unit^3",
    }.get(name, name)
    if power:
        name += "^" + re.sub(r"[^23]", "", power)
    return name


def split_unit(text: str) -> tuple[str, str | None]:
    """``(value, canonical unit)`` for an answer ending in a unit (``5\\text{ cm}``, ``5 m^2``,
    ``3\\mathrm{ square feet}``); ``(text, None)`` when there is none. The value must hold a digit.

    Limits: bare (un-``\\text``-ed) units are recognised from a short list only; plural ``s`` and a
    few spellings (``centimeters`` = ``cm``) are folded, other synonyms are different units."""
    m = _TEXT_UNIT.fullmatch(text) or _BARE_UNIT.fullmatch(text)
    if m is None or not re.search(r"\d", m.group("value")):
        return text, None
    if m.re is _BARE_UNIT and m.group("unit").lower() not in _BARE_UNITS:
        return text, None
    return m.group("value").strip(), _canonical_unit(m.group("unit"), m.group("pow"))


# --- nesting guard --------------------------------------------------------------------------------


def nesting_ok(text: str, max_depth: int = MAX_NESTING) -> bool:
    """Brackets ``{([`` / ``})]`` balanced as one kind (so ``[0, 1)`` is fine) and at most
    ``max_depth`` deep: math-verify's LaTeX parser takes time exponential in the nesting depth.
    Absolute-value bars cannot be paired, so more than ``2 * max_depth`` of them is also refused
    (80 bars take 1.4 s)."""
    if text.count("|") > 2 * max_depth:
        return False
    depth = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "})]":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


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


# --- slow-form guard ------------------------------------------------------------------------------

MAX_ITERATED = 20_000  # binomial sides, product/sum bounds beyond this are not computed
MAX_ARGUMENT_DIGITS = 1_000  # floor/ceil/trig/log of a number with more digits is not evaluated

_BINOM = re.compile(r"\\[dt]?binom(?![A-Za-z])\s*")
_CHOOSE = re.compile(r"(\d+|\{[^{}]*\})\s*\\choose(?![A-Za-z])\s*(\d+|\{[^{}]*\})")
_GAMMA = re.compile(
    r"\\(?:Gamma|operatorname\s*\{\s*Gamma\s*\})(?![A-Za-z])\s*(?:\\left|\\big|\\Big)?\s*([({])"
)
_ITERATED = re.compile(r"\\(?:prod|sum)(?![A-Za-z])\s*(?:\\limits)?\s*_\s*(?:\{[^{}]*\}|\S)\s*\^\s*")
_INTEGRAL = re.compile(r"\\(?:int|iint|iiint|oint|intop)(?![A-Za-z])")
_HUGE_ARGUMENT_FUNCS = re.compile(
    r"\\(?:lfloor|lceil|rfloor|rceil|floor|ceil|sin|cos|tan|cot|sec|csc|sinh|cosh|tanh|arcsin|arccos"
    r"|arctan|log|ln|lg|exp|bmod|pmod|mod|operatorname)(?![A-Za-z])|\bmod\b"
)


def _arg_after(text: str, i: int) -> tuple[str, int]:
    """The argument starting at ``text[i]`` (skipping spaces): a brace/paren group's content, a digit
    run, or one character; and the index after it."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return "", i
    if text[i] in "{(":
        close = "}" if text[i] == "{" else ")"
        depth = 0
        for j in range(i, len(text)):
            if text[j] in "{(":
                depth += 1
            elif text[j] in "})":
                depth -= 1
                if depth == 0:
                    return (text[i + 1 : j] if text[j] == close else text[i + 1 : j]), j + 1
        return text[i + 1 :], len(text)
    m = re.match(r"\d+", text[i:])
    if m:
        return m.group(0), i + m.end()
    return text[i], i + 1


def _log10_value(expr: str) -> float | None:
    """log10 of an integer literal or integer power tower (``10^{6}``), else None."""
    expr = expr.strip().replace("**", "^")
    if not expr or len(expr) > 400:
        return None
    return _tower_log10(expr)


def _max_literal_log10(text: str) -> float:
    """log10 of the largest integer literal or integer power tower written in ``text``."""
    best = 0.0
    for m in re.finditer(r"\d+", text):
        best = max(best, len(m.group(0)) - 1.0)
    flat = text.replace("**", "^")
    for m in re.finditer(r"(\d+)\s*\^", flat):
        operand = _operand_after(flat, m.end())
        value = _tower_log10(f"{m.group(1)}^{{{operand}}}") if operand else None
        if value is not None:
            best = max(best, value)
    return best


def slow_form(text: str) -> str | None:
    """Which form in ``text`` sympy would compute for seconds or for ever, else None: a binomial or a
    product/sum over more than ``MAX_ITERATED`` terms, Gamma of an argument beyond ``MAX_FACTORIAL``,
    floor/ceil/trig/log/exp/mod of a number with more than ``MAX_ARGUMENT_DIGITS`` digits, or an
    integral (sympy's ``integrate`` on a non-elementary integrand does not return). Each of these ran
    to the pool's 5 s timeout; a static scan costs microseconds."""
    if "\\" not in text:
        return None
    lim = math.log10(MAX_ITERATED)
    for m in _BINOM.finditer(text):
        n_arg, end = _arg_after(text, m.end())
        k_arg, _ = _arg_after(text, end)
        if _binomial_too_large(n_arg, k_arg, lim):
            return "binomial"
    for m in _CHOOSE.finditer(text):
        if _binomial_too_large(m.group(1).strip("{}"), m.group(2).strip("{}"), lim):
            return "binomial"
    for m in _GAMMA.finditer(text):
        arg, _ = _arg_after(text, m.end(1) - 1)
        value = _log10_value(arg)
        if value is None and re.search(r"\d", arg) and not re.search(r"[A-Za-z]", arg):
            value = _max_literal_log10(arg)  # "\Gamma(10^{7}+1)": its largest literal bounds it
        if value is not None and value > math.log10(MAX_FACTORIAL):
            return "gamma"
    for m in _ITERATED.finditer(text):
        bound, _ = _arg_after(text, m.end())
        value = _log10_value(bound)
        if value is None and not re.search(r"[A-Za-z]", bound) and re.search(r"\d", bound):
            value = _max_literal_log10(bound)
        if value is not None and value > lim:
            return "iterated"
    if _INTEGRAL.search(text):
        return "integral"
    if _HUGE_ARGUMENT_FUNCS.search(text) and _max_literal_log10(text) > MAX_ARGUMENT_DIGITS:
        return "huge_argument"
    return None


def _binomial_too_large(n_arg: str, k_arg: str, lim: float) -> bool:
    n_log = _log10_value(n_arg)
    if n_log is None or n_log <= lim:
        return False
    k_log = _log10_value(k_arg)
    if k_log is None or k_log > 15:
        return True  # a symbolic or huge lower index of a huge binomial
    if n_log > 15:
        return k_log > lim
    n, k = round(10**n_log), round(10**k_log)
    return min(k, n - k) > MAX_ITERATED
