"""Reward hacking against the math verifier: strings a policy could find that score a wrong answer as
right, equivalent forms that must stay right, and inputs that must be refused fast.

Judged in-process with ``archer.rewards.math.judge.judge`` (the function a pool worker runs), so each
case costs milliseconds; ``test_attacks_through_score_math`` runs a few through the real pool.
"""

from __future__ import annotations

import time

import pytest

from archer.rewards.math.judge import judge
from archer.rewards.math.normalize import (
    choice_letter,
    inequality_to_interval,
    nesting_ok,
    normalize_answer,
    split_unit,
)

# --- wrong answers that must score 0 ---------------------------------------------------------------

MULTIPLE_CHOICE_ATTACKS = [
    ("B", "(B) is wrong; the answer is (C)"),  # was judged equal: the letter prefix counted alone
    ("B", "(B) \\text{ or } (C)"),
    ("(B)", "\\text{(B) or (C)}"),
    ("B", "(B) (C)"),
    ("B", "(B) maybe"),
    ("B", "B+0"),  # an expression in the symbol B is not the letter
    ("B", "2B-B"),
    ("B", "\\{B, C\\}"),
    ("B", "В"),  # Cyrillic Ve, a look-alike of B
    ("(A)", "(B)"),
]

STRUCTURE_ATTACKS = [
    ("\\{1,2\\}", "(1,2)"),  # a set is not an ordered pair (math-verify: equal)
    ("(1,2)", "\\{1,2\\}"),
    ("\\{1,2\\}", "(2,1)"),
    ("\\left\\{ 1, 2 \\right\\}", "(1, 2)"),
    ("\\{1,2\\}", "[1,2]"),
    ("\\{3,4\\}", "3"),
    ("3", "\\{3,4\\}"),
]

UNIT_ATTACKS = [
    ("5\\text{ cm}", "5\\text{ m}"),  # math-verify drops units: equal
    ("5 cm", "5 m"),
    ("5\\,\\mathrm{cm}", "5\\,\\mathrm{m}"),
    ("5 \\mbox{ cm}", "5 \\mbox{ m}"),
    ("5\\text{ m}^2", "5\\text{ m}"),
    ("5\\text{ m}^2", "5\\text{ cm}^2"),
    ("5\\text{ inches}", "5\\text{ feet}"),
]

HEDGE_ATTACKS = [
    ("3", "3 \\approx 4"),  # math-verify reads the left side only: equal
    ("3", "4 \\to 3"),  # ... or the right side only: equal
    ("3", "4 \\Rightarrow 3"),
    ("3", "3 \\sim 4"),
    ("3", "4 = 3"),  # a false equation: math-verify takes the right side
    ("3", "3 \\text{ (or 4)}"),  # math-verify drops \text: equal
    ("4", "3 \\text{ (or 4)}"),
    ("3", "\\text{3 or 4}"),
    ("3", "\\textbf{3} \\text{ or } 4"),
    ("3", "3 \\lor 4"),
    ("3", "\\pm 3"),
    ("-3", "\\pm 3"),
    ("3", "3 \\text{ or } 4"),
    ("3", "3, 4"),
    ("3", "x > 3"),  # an interval is not its end point
    ("3", "x \\le 3"),
    ("x=3", "x=4"),
]

# issue 20: relation symbols are judged, not read on one side (math-verify reads "3 \\propto 2" as 2)
RELATION_ATTACKS = [
    ("2", "3 \\propto 2"),
    ("2", "3 := 2"),  # a definition is an equation: a false one
    ("2", "3 \\coloneqq 2"),
    ("2", "3 \\Leftarrow 2"),
    ("2", "3 \\leftarrow 2"),
    ("2", "3 \\doteq 2"),
    ("2", "3 \\triangleq 2"),
    ("2", "3 \\stackrel{?}{=} 2"),
    ("2", "3 \\overset{?}{=} 2"),
    ("2", "3 \\asymp 2"),
    ("2", "3 \\not= 2"),
    ("2", "3 \\ne 2"),
    ("2", "3 \\neq 2"),
    ("2", "3 != 2"),
    ("2", "3 \\in 2"),
    ("\\{3,4\\}", "3 \\in \\{3,4\\}"),  # a true statement, but not the set
    ("2", "3 \\mid 2"),
    ("2", "3 \\equiv 2"),
    ("2", "3 \\gg 2"),
    ("2", "3 \\ll 2"),
    ("2", "3 \\subset 2"),
    ("2", "3 \\perp 2"),
    ("2", "3 \\parallel 2"),
    ("2", "3 \\vdash 2"),
    ("2", "3 \\models 2"),
    ("2", "3 \\therefore 2"),
    # equation chains: every step is judged (math-verify reads the last side)
    ("2", "1+1=3=2"),
    ("2", "x=3=2"),
    ("3", "3=4=3"),
    ("2", "x = 2 = 1"),
    ("2", "f(1) = 5 = 2"),
    ("x=1, y=2", "x = 1 = 2, y = 2"),  # each statement of a system is judged
    ("x=1, y=2", "x = 1, y = 3 = 2"),
    ("(1,2)", "x = 1 \\text{ and } y = 3 = 2"),
]

# issue 20: the exact layer never calls two different numbers equal, however close
EXACT_ATTACKS = [
    ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{2}+\\sqrt{3}+10^{-60}"),
    ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{5+2\\sqrt{6}}+10^{-60}"),
    ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{5+2\\sqrt{6}}+e^{-1000}"),
    ("\\pi", "\\pi+10^{-100}"),
    ("e^{\\pi}", "e^{\\pi}+e^{-e^{20}}"),  # too small to resolve numerically: not proved zero
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}"),
]

EXPONENT_AND_SIZE_ATTACKS = [
    ("1", "1e999999"),  # not rewritten (exponent beyond MAX_E_EXPONENT), never computed
    ("0", "1e-999999"),
    ("100000", "1e5000"),
    ("10", "10.00001"),
    ("\\frac{1}{3}", "0.\\overline{33}4"),  # not a repeating decimal: left to math-verify
    ("1000", "1 0000"),  # not thousands groups
    ("12", "1\\,2"),
]


@pytest.mark.parametrize(
    "gold, pred",
    MULTIPLE_CHOICE_ATTACKS
    + STRUCTURE_ATTACKS
    + UNIT_ATTACKS
    + HEDGE_ATTACKS
    + RELATION_ATTACKS
    + EXACT_ATTACKS
    + EXPONENT_AND_SIZE_ATTACKS,
)
def test_wrong_answers_score_zero(gold, pred):
    equal, reason = judge(gold, pred)
    assert equal is False, reason


@pytest.mark.parametrize(
    "gold, pred, reason",
    [
        ("5\\text{ cm}", "5\\text{ m}", "unit_mismatch"),
        ("3", "3 \\approx 4", "hedged"),
        ("3", "3 \\text{ (or 4)}", "hedged"),
        ("5", "(" * 30 + "1" + ")" * 30, "too_deep"),  # 61 characters; took 6.4 s to parse
        ("5", "\\frac{1}{" * 22 + "2" + "}" * 22, "too_deep"),  # took 27 s
        ("5", "|" * 40 + "1" + "|" * 40, "too_deep"),
        ("(" * 30 + "1" + ")" * 30, "1", "bad_gold"),
    ],
)
def test_refusal_reasons(gold, pred, reason):
    assert judge(gold, pred) == (False, reason)


SLOW_FORMS = [
    "\\binom{10^{6}}{500000}",  # each of these ran to the pool's 5 s timeout (or far beyond)
    "\\binom{200000}{100000}",
    "{200000 \\choose 100000}",
    "\\Gamma(10^{7})",
    "\\prod_{k=1}^{10^{7}} k",
    "\\sum_{k=1}^{10^{6}} k^{k}",
    "\\lfloor 10^{500000}\\sqrt{2} \\rfloor",
    "\\sin(10^{500000})",
    "\\tan(10^{200000})",
    "\\int_0^{\\infty} \\frac{\\sin x}{x^{1/3}} dx",
    "\\int e^{-x^2} \\sin(x^3) dx",
]


@pytest.mark.parametrize("pred", SLOW_FORMS)
def test_slow_forms_are_refused_statically(pred):
    start = time.monotonic()
    assert judge("3", pred) == (False, "too_slow")
    assert judge(pred, "3") == (False, "too_slow")
    assert judge(pred, pred) == (True, "equal")  # identical strings are still equal, uncomputed
    assert time.monotonic() - start < 1.0  # string scans only


@pytest.mark.parametrize(
    "pred",
    ["\\binom{10}{3}", "\\binom{10^{9}}{3}", "\\Gamma(\\frac{1}{3})", "\\prod_{k=1}^{n} k", "\\sin(30)"],
)
def test_ordinary_forms_pass_the_slow_guard(pred):
    assert judge("3", pred)[1] != "too_slow"


def test_deep_nesting_is_refused_without_parsing():
    start = time.monotonic()
    for depth in range(11, 200, 7):
        for opener, closer in (("(", ")"), ("[", "]"), ("\\frac{1}{", "}"), ("\\sqrt{", "}"), ("x_{", "}")):
            assert judge("5", opener * depth + "1" + closer * depth) == (False, "too_deep")
    assert time.monotonic() - start < 5.0  # ~130 refusals: string scans only (parsing one took seconds)


# --- right answers that must score 1 ---------------------------------------------------------------

EQUIVALENT = [
    # the asked-for forms
    ("100000", "1e5"),
    ("0.0015", "1.5e-3"),
    ("-2000", "-2E3"),
    ("1.5\\times 10^{-3}", "1.5e-3"),
    ("1000000", "1 000 000"),
    ("1000000", "1\\ 000\\ 000"),
    ("1234.5", "1 234.5"),
    ("\\frac{1}{3}", "0.\\overline{3}"),
    ("\\frac{1}{6}", "0.1\\overline{6}"),
    ("\\frac{1}{7}", "0.\\overline{142857}"),
    ("\\frac{4}{3}", "1.\\bar{3}"),
    ("\\frac{1}{3}", "0.\\dot{3}"),
    ("\\frac{1}{7}", "0.\\dot{1}4285\\dot{7}"),
    ("-\\frac{1}{3}", "-0.\\overline{3}"),
    ("\\frac{1}{2}", "½"),
    ("\\frac{3}{2}", "1½"),
    ("\\frac{3}{4}", "¾"),
    ("\\sqrt{2}", "√2"),
    ("2\\sqrt{3}", "2√3"),
    ("\\sqrt{x+1}", "√(x+1)"),
    ("\\pi", "π"),
    ("-5", "−5"),  # U+2212 minus
    ("x^2", "x²"),
    ("3", "３"),  # full-width digit
    ("(B)", "（Ｂ）"),
    ("34", "3\u200b4"),  # zero-width space
    ("(3, \\infty)", "x > 3"),
    ("(3,\\infty)", "3 < x"),
    ("[-1, 2)", "-1 \\le x < 2"),
    ("[-1,2)", "2 > x \\geq -1"),
    ("(-\\infty, 5]", "x \\leq 5"),
    ("(-\\infty,-1)\\cup(2,\\infty)", "x<-1 \\text{ or } x>2"),
    ("(-\\infty,-1)\\cup(2,\\infty)", "x < -1 \\cup x > 2"),
    ("[\\frac{1}{2}, \\infty)", "x \\ge \\frac12"),
    ("x \\ge 0", "[0, \\infty)"),
    # the usual ones
    ("0.5", "\\frac12"),
    ("\\frac{1}{2}", "\\dfrac{1}{2}"),
    ("1000", "1,000"),
    ("3", "x=3"),
    ("x=3", "3"),
    ("3", "\\{3\\}"),
    ("5\\text{ cm}", "5"),
    ("5", "5\\text{ cm}"),
    ("5\\text{ cm}", "5 \\text{ centimeters}"),
    ("5\\text{ m}^2", "5\\text{ m}^{2}"),
    ("5\\text{ square feet}", "5\\text{ ft}^2"),
    # letters with their option's content, and sets, tuples, lists
    ("B", "(B)"),
    ("B", "\\text{(B)}"),
    ("B", "(B) 12"),
    ("(C)", "\\text{(C) }\\frac{1}{2}"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("\\{1,2\\}", "1, 2"),
    ("1,2", "\\{2, 1\\}"),
    ("(1,2)", "(1, 2)"),
    ("\\{1,2\\}", "x \\in \\{1,2\\}"),
    ("3, -3", "\\pm 3"),
    ("1 \\pm \\sqrt{2}", "1\\pm\\sqrt2"),
    ("3", "\\frac{6}{2} = 3"),  # a true numeric equation is its value
    ("\\text{(B)}", "\\text{(B)}"),
    ("\\text{Devon}", "\\text{Devon}"),
    # issue 22: thousands separators in LaTeX (three bundled MATH-500 answers use ",\\!")
    ("10080", "10,\\!080"),
    ("10,\\!080", "10080"),
    ("11111100", "11,\\! 111,\\! 100"),
    ("\\$16,\\!386.20", "16386.20"),
    ("16386.20", "\\$16,\\!386.20"),
    ("16386.2", "16,386.20"),
    ("10080", "10{,}080"),
    # percent words
    ("28\\%", "28 percent"),
    ("28\\%", "28 pct"),
    ("28\\%", "28 percentage"),
    ("28\\%", "28\\text{ percent}"),
    # equivalent relations
    ("x < 1", "-x > -1"),
    ("x \\le 1", "-x \\ge -1"),
    ("(-\\infty, 1)", "-x > -1"),
    ("x + y < 1", "-x - y > -1"),
    ("\\frac{x^2}{4} + \\frac{y^2}{3} = 1", "x^2/16 + y^2/12 = 1/4"),
    ("y = 2x + 1", "2y = 4x + 2"),
    # prose around one value
    ("34", "The largest $n$ is 34"),
    ("34", "\\text{The largest } n \\text{ is } 34"),
    ("\\frac{1}{2}", "The probability is \\frac{1}{2}."),
    # definitions and true chains
    ("2", "x := 2"),
    ("2", "x = 1+1 = 2"),
    ("2", "1+1 = 2"),
    ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{5+2\\sqrt{6}}"),  # exact and equal: proved, not rounded
    ("\\ln 6", "\\ln 2 + \\ln 3"),
    # found by the conformance suite (test_math_conformance.py)
    ("x <= 1", "-x >= -1"),
    ("185", "185\\"),  # a stray trailing backslash
    ("C", "C. x = 42"),  # an option letter with its content
    ("C. x = 42", "C"),
    ("0,111", "0.111"),  # a leading 0 group is no thousands separator (math-verify: decimal comma)
    ("(1,2)", "x=1, y=2"),  # a system of labelled values is not a chain
    ("x=1, y=2", "x = 1 = 2-1, y = 2"),
    ("a_3 = 2, a_{37} = 19", "a_3=2, a_{37}=19"),
    ("z = 1 + 1 = 2", "z = 3+3 = 2"),  # a gold chain is compared by math-verify (its last value)
    ("x != 3", "x \\neq 3"),  # spellings of one relation are one relation
    ("x \\ne 5", "x != 5"),
]

# relations stay directional and scaled equations keep their constant
NOT_EQUIVALENT_RELATIONS = [
    ("x < 1", "x > 1"),
    ("x < 1", "-x < -1"),
    ("x < 1", "x \\le 1"),
    ("x + y < 1", "-x - y < -1"),  # scaling by a negative number must flip the relation
    ("\\frac{x^2}{4} + \\frac{y^2}{3} = 1", "x^2/16 + y^2/12 = 1"),
    ("y = 2x + 1", "y = 2x + 2"),
    ("34", "The largest $n$ is 35"),
    ("34", "34 is wrong, it is 35"),
    ("28\\%", "0.28 percent"),
    ("10080", "10,\\!08"),
    ("111", "0,111"),
    ("B", "C. x = 42"),
    ("C. x = 42", "B"),
    ("x \\ne 5", "x \\ne 6"),
    ("x \\neq 5", "x \\approx 5"),
]


def test_exact_equalities_are_proved_quickly():
    # the exact layer proves these instead of comparing digits (an exhaustive evalf took 9 s on ln)
    start = time.monotonic()
    for gold, pred in [
        ("\\ln 6", "\\ln 2 + \\ln 3"),
        ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{5+2\\sqrt{6}}"),
        ("1", "\\sin^2(1)+\\cos^2(1)"),
    ]:
        assert judge(gold, pred) == (True, "equal")
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize("gold, pred", NOT_EQUIVALENT_RELATIONS)
def test_not_equivalent_relations_score_zero(gold, pred):
    assert judge(gold, pred)[0] is False


@pytest.mark.parametrize("gold, pred", EQUIVALENT)
def test_equivalent_forms_score_one(gold, pred):
    assert judge(gold, pred) == (True, "equal")


# --- the string helpers, against hand-computed outputs ---------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1e5", "100000"),
        ("1.5e-3", "0.0015"),
        ("2.50E2", "250"),
        ("1e999999", "1e999999"),  # exponent too large: left alone
        ("1 000 000", "1000000"),
        ("12 345", "12345"),
        ("1 0000", "1 0000"),
        ("0.\\overline{3}", "\\frac{1}{3}"),
        ("0.1\\overline{6}", "\\frac{1}{6}"),
        ("2.\\overline{09}", "\\frac{23}{11}"),
        ("0.\\dot{1}4285\\dot{7}", "\\frac{1}{7}"),
        ("1½", "\\frac{3}{2}"),
        ("√2", "\\sqrt{2}"),
        ("∛8", "\\sqrt[3]{8}"),
        ("x²", "x^{2}"),
        ("10⁻³", "10^{-3}"),
        ("x≤2", "(-\\infty, 2]"),
        ("2 > x \\ge -1", "[-1, 2)"),
        ("x<-1 \\text{ or } x>2", "(-\\infty, -1) \\cup (2, \\infty)"),
        ("\\lbrace 1,2\\rbrace", "\\{ 1,2\\}"),
    ],
)
def test_normalize_answer_rewrites(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "text", ["a > b", "x > y", "x \\ne 3", "x < 1 \\text{ or } y > 2", "1 < x > 2", "x > 3, 4"]
)
def test_inequalities_that_are_not_intervals(text):
    assert inequality_to_interval(text) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(B)", "B"),
        ("(B) 12", "B"),
        ("(B) \\frac{x}{2}", "B"),
        ("(B) is wrong; the answer is (C)", None),
        ("(B) \\text{ or } (C)", None),
        ("(B) C", None),
        ("(B) 12 cm", None),  # strict: trailing words are refused, even a unit
    ],
)
def test_choice_letter_with_trailing_content(text, expected):
    assert choice_letter(text, allow_trailing=True) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5\\text{ cm}", ("5", "cm")),
        ("5 \\text{ centimeters}", ("5", "cm")),
        ("5\\mathrm{m}^2", ("5", "m^2")),
        ("5\\text{ square feet}", ("5", "ft^2")),
        ("12 inches", ("12", "in")),
        ("5 x", ("5 x", None)),  # a variable, not a unit
        ("\\text{Devon}", ("\\text{Devon}", None)),  # no number: not a quantity
        ("3 \\text{ or } 4", ("3 \\text{ or } 4", None)),
    ],
)
def test_split_unit(text, expected):
    assert split_unit(text) == expected


@pytest.mark.parametrize(
    "text, ok",
    [
        ("[0, 1)", True),
        ("\\{(1,2), (3,4)\\}", True),
        ("(" * 10 + ")" * 10, True),
        ("(" * 11 + ")" * 11, False),
        ("(1", False),
        ("1)", False),
        ("|x|", True),
        ("|" * 21, False),
    ],
)
def test_nesting_ok(text, ok):
    assert nesting_ok(text) is ok


# --- through the pool, as the trainer scores ---------------------------------------------------------


def test_attacks_through_score_math():
    from archer.rewards.math.score import MathVerifierPool, score_math_batch

    responses = [
        "</think> \\boxed{(B) \\text{ is wrong; the answer is } (C)}",
        "</think> \\boxed{\\{1,2\\}}",
        "</think> \\boxed{5\\text{ m}}",
        "</think> \\boxed{" + "(" * 30 + "1" + ")" * 30 + "}",
        "</think> \\boxed{x > 3}",
        "</think> \\boxed{0.\\overline{3}}",
    ]
    golds = ["B", "(1,2)", "5\\text{ cm}", "5", "(3,\\infty)", "\\frac13"]
    with MathVerifierPool(n_workers=1, timeout=5.0) as pool:
        results = score_math_batch(responses, golds, pool=pool)
    assert [r.correct for r in results] == [False, False, False, False, True, True]
    assert [r.info["reason"] for r in results] == [
        "not_equal",
        "not_equal",
        "unit_mismatch",
        "too_deep",
        "equal",
        "equal",
    ]


# --- extraction policy: false positives of the lenient reader on hostile responses ----------------

_WRONG_ANSWERS = (
    MULTIPLE_CHOICE_ATTACKS
    + STRUCTURE_ATTACKS
    + UNIT_ATTACKS
    + HEDGE_ATTACKS
    + RELATION_ATTACKS
    + EXACT_ATTACKS
    + EXPONENT_AND_SIZE_ATTACKS
)
_HEDGE_TEMPLATES = [  # each names the gold next to a wrong value, or without committing to it
    "It is either {w} or {g}.",
    "${w}$ or ${g}$",
    "The answer could be {g}.",
    "Maybe {g}.",
    "The answer is probably {g}, but I am not sure.",
    "Candidates are {w} and {g}.",
    "Somewhere between {w} and {g}.",
    "We tried {g} first.\n\nIt is not {g}; it is {w}.",
    "Approximately {g}.",
    "It is about $ {g} $.",
    "I computed {w}, {g}, and {w}.",
    "Answer: {w}\n\nActually {g} might also work.",
    "$x \\approx {g}$",
    "If $n = {g}$ then it fails, so the result is {w}.",
    "{w} or {g}",
    "{g} or {w}",
]
_HEDGE_PAIRS = [("3", "4"), ("34", "35"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("10080", "10081"), ("-2", "2")]


def hostile_corpus():
    """``(response, gold)`` pairs that must score 0: every wrong answer above written unboxed in
    four ways, and hedges that name the gold among other values or without committing to it."""
    corpus = []
    for gold, pred in _WRONG_ANSWERS:
        for template in ("Thus the answer is ${p}$.", "So we get ${p}$.", "{p}", "The answer is {p}."):
            corpus.append((template.replace("{p}", pred), gold))
    for gold, wrong in _HEDGE_PAIRS:
        for template in _HEDGE_TEMPLATES:
            corpus.append((template.replace("{g}", gold).replace("{w}", wrong), gold))
    return corpus


def lenient_false_positives(pool):
    """``{extraction: (false positives, corpus size)}`` on :func:`hostile_corpus`."""
    from archer.rewards.math.score import EXTRACTIONS, score_math_batch

    corpus = hostile_corpus()
    out = {}
    for extraction in EXTRACTIONS:
        results = score_math_batch(
            [r for r, _ in corpus], [g for _, g in corpus], pool=pool, extraction=extraction
        )
        out[extraction] = ([c for c, r in zip(corpus, results) if r.correct], len(corpus))
    return out


def lenient_true_positives(pool):
    """The control: every equivalent form above, unboxed in the same ways, scored with ``lenient``;
    ``(missed, corpus size)``."""
    from archer.rewards.math.score import score_math_batch

    corpus = [
        (template.replace("{p}", pred), gold)
        for gold, pred in EQUIVALENT
        for template in ("Thus the answer is ${p}$.", "So we get ${p}$.", "${p}$")
    ]
    results = score_math_batch(
        [r for r, _ in corpus], [g for _, g in corpus], pool=pool, extraction="lenient"
    )
    return [c for c, r in zip(corpus, results) if not r.correct], len(corpus)


def test_lenient_extraction_false_positive_rate():
    from archer.rewards.math.score import MathVerifierPool, extract_answer

    with MathVerifierPool(n_workers=2, timeout=5.0) as pool:
        measured = lenient_false_positives(pool)
        missed, n_equivalent = lenient_true_positives(pool)
    for extraction, (false_positives, n) in measured.items():
        print(f"\n{extraction}: {len(false_positives)}/{n} hostile responses scored 1")
    print(f"lenient: {n_equivalent - len(missed)}/{n_equivalent} unboxed equivalent answers scored 1")
    corpus = hostile_corpus()
    assert len(corpus) >= 400
    # the lenient reader does read most hostile responses (the judge, not extraction, refuses them)
    assert sum(extract_answer(r, "lenient") is not None for r, _ in corpus) >= 0.6 * len(corpus)
    assert measured["boxed"][0] == [] and measured["answer_line"][0] == []
    assert measured["lenient"][0] == []
    assert len(missed) <= 0.1 * n_equivalent, missed
