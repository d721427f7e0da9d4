"""Conformance of archer's math verifier with public verifiers' own labelled test cases.

The cases are in ``test_math_conformance_cases.jsonl`` (330 labelled ``(gold, pred, expected)``
triples from huggingface/Math-Verify ``tests/*.py`` at commit 5d148cf and NVIDIA/NeMo-Skills
``tests/test_math_equal.py`` at commit 583b90a; each line names its repository, path, commit, test
function and line). The judges and the table are those of ``benchmarks/math_conformance.py``; run
``pytest -s`` to see the table. Every case where archer's equivalence judgement disagrees with the
label is listed in ``DISAGREEMENTS`` with its reason (and in docs/MATH_VERIFIER.md): a new
disagreement, or a listed one that went away, fails the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import math_conformance as conf  # noqa: E402

from archer.rewards.math.pool import MathVerifierPool  # noqa: E402

# archer refuses these on purpose (docs/MATH_VERIFIER.md, "Stricter than math-verify")
DELIBERATE = {
    "test_all:test_relations_math:98": "false chain: 5+5+1 = 7 is false (issue 20)",
    "test_all:test_relations_math:100": "false chain: 5+5+1 = 7 is false (issue 20)",
    "test_all:test_relations_math:101": "false chain and \\approx hedge",
    "test_all:test_relations_math:103": "\\approx: an approximation is not the answer",
    "test_all:test_relations_math:104": "\\approx: a second, different value (1.3)",
    "test_math_equal:test_correct_examples:314": "\\approx: a decimal approximation appended",
}
# the label, or the option the source test sets, is not what a reward should use
NOT_APPLICABLE = {
    "test_all:test_number_extraction:5": "decimal comma '1000,99': archer reads a 2-digit group as a list",
    "test_all:test_number_extraction:6": "decimal comma '1,22' (as above)",
    "test_all:test_complex_math_expressions:133": "source test sets precision=2; archer keeps 1e-6",
    "test_all:test_complex_math_expressions:139": "source test sets precision=2; archer keeps 1e-6",
    "test_all:test_set_rel_assymetry:186": "source sets allow_set_relation_comp=True (False: label 0)",
    "test_strict:test_strict_variable_comparison:267": "source sets strict=False (f(x) vs f(y))",
    "test_yujianll:test_string_extraction:258": "label says 1 - 1/e equals 1 + 1/e: it does not",
}
DISAGREEMENTS = {**DELIBERATE, **NOT_APPLICABLE}


@pytest.fixture(scope="module")
def results():
    with MathVerifierPool(n_workers=2, timeout=5.0) as pool:
        out = conf.evaluate(pool, with_math_verify=True)
    print("\n" + conf.table(out["rows"]))
    return out


def test_cases_are_labelled_and_sourced():
    cases = conf.load_cases()
    assert len(cases) >= 300
    assert len({c["id"] for c in cases}) == len(cases)
    for c in cases:
        src = c["source"]
        assert src["repo"] in ("huggingface/Math-Verify", "NVIDIA/NeMo-Skills"), c["id"]
        assert src["path"].startswith("tests/") and len(src["commit"]) == 40 and src["line"] > 0
        assert isinstance(c["expected"], bool) and c["gold"] and c["pred"]
    assert len(conf.answer_cases(cases)) >= 190


def test_every_equivalence_disagreement_is_documented(results):
    found = {
        case["id"]: reason
        for case, (verdict, reason) in zip(results["answers"], results["archer_equivalence"])
        if verdict != case["expected"]
    }
    assert set(found) == set(DISAGREEMENTS), "\n".join(conf.disagreements(results))


def test_archer_matches_math_verify_but_for_deliberate_refusals(results):
    rows = {(judge, subset): agree for judge, subset, agree, _ in results["rows"]}
    archer = rows[("archer equivalence", "answer")]
    math_verify = rows[("math-verify (answer strings)", "answer")]
    # each deliberate refusal costs archer one label that math-verify gets by reading one side only
    assert archer + len(DELIBERATE) >= math_verify + 4
    assert archer >= math_verify - len(DELIBERATE)


def test_full_reward_path_agreement(results):
    """Extraction + equivalence on the raw ``pred`` texts (most are unboxed model outputs or bare
    ``$...$`` answers, which the default extraction does not read: these floors record today's
    numbers and guard against regressions)."""
    rows = {judge: (agree, n) for judge, _, agree, n in results["rows"]}
    boxed, n = rows["archer full path, extraction=boxed"]
    default, _ = rows["archer full path, extraction=answer_line"]
    lenient, _ = rows["archer full path, extraction=lenient"]
    assert n >= 290
    assert default >= boxed >= 110
    assert lenient >= 265 and lenient > default
