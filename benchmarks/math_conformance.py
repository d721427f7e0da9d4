"""Agreement of archer's math verifier with public verifiers' own labelled test cases, next to math-verify.

Cases (``tests/rewards/test_math_conformance_cases.jsonl``, one JSON object a line) are the labelled
``(gold, pred, expected)`` triples of public verifier test suites, each with its source repository,
path, commit, test function and line:

- huggingface/Math-Verify ``tests/test_all.py``, ``test_numina_cases.py``, ``test_open_thoughts.py``,
  ``test_yujianll.py``, ``test_boxed.py``, ``test_string_extraction.py``, ``test_strict.py``
  (commit 5d148cf): ``pred`` is often a whole model output, so each case also records
  ``gold_answer`` / ``pred_answer``: the answer string when the text is one delimited or boxed
  expression (else null), which is what archer's equivalence judgement takes;
- NVIDIA/NeMo-Skills ``tests/test_math_equal.py``: answer pairs that must be equal (resp. unequal) in
  both directions, each direction one case.

Judges, each scored as agreement with ``expected``:

- ``math-verify (its test inputs)``: ``verify(parse(gold), parse(pred))`` with the extraction
  configs, precision and options of the source test (what its own suite asserts);
- ``math-verify (answer strings)`` and ``archer equivalence``: the two answer strings, on the cases
  that have both (math-verify parses each wrapped in ``\\boxed{}``, as archer's workers do; archer:
  :func:`archer.rewards.math.judge.judge` through the worker pool);
- ``archer full path, extraction=X``: :func:`archer.rewards.math.score.score_math_batch` on the raw
  ``pred`` text as the response and ``gold_answer`` as the gold, for each extraction policy.

Run: ``python benchmarks/math_conformance.py [--list]`` (``--list`` prints every disagreement of
archer's equivalence judgement). The case file is rebuilt from a checkout of Math-Verify and a copy
of NeMo-Skills' test file with ``--regenerate MATH_VERIFY_DIR NEMO_TEST_FILE`` (the labelled
``pytest.mark.parametrize`` lists are read with ``ast``; nothing is executed).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CASES = REPO / "tests" / "rewards" / "test_math_conformance_cases.jsonl"
EXTRACTIONS = ("boxed", "answer_line", "lenient")


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def answer_cases(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cases whose gold and pred are both one answer string (equivalence is defined on them)."""
    return [c for c in cases if c["gold_answer"] is not None and c["pred_answer"] is not None]


def _mv_configs(match_types: list[str]) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    out = []
    for kind in match_types:
        out.append(
            LatexExtractionConfig(boxed_match_priority=0) if kind == "latex" else ExprExtractionConfig()
        )
    return out


def math_verify_verdict(case: dict[str, Any]) -> bool:
    """math-verify on the source test's own inputs and options (main thread: its SIGALRM timeouts on)."""
    from math_verify import parse, verify

    mv = case["mv"]
    gold, pred = case["gold"], case["pred"]
    if mv.get("wrap"):
        gold, pred = f"${gold}$", f"${pred}$"
    try:
        if mv.get("parse_default"):
            return bool(verify(parse(gold), parse(pred)))
        configs = _mv_configs(mv["match_types"])
        return bool(
            verify(
                parse(gold, configs),
                parse(pred, configs),
                float_rounding=mv["precision"],
                strict=mv.get("strict", True),
                allow_set_relation_comp=mv["allow_set_relation_comp"],
            )
        )
    except Exception:  # noqa: BLE001 - an error is a "not equal", as in peers' reward functions
        return False


def math_verify_answers(case: dict[str, Any]) -> bool:
    """math-verify on the two answer strings, each wrapped in ``\\boxed{}`` (archer's inputs)."""
    from math_verify import parse, verify

    configs = _mv_configs(["latex", "expr"])
    try:
        gold = parse("\\boxed{" + case["gold_answer"] + "}", configs)
        pred = parse("\\boxed{" + case["pred_answer"] + "}", configs)
        return bool(verify(gold, pred))
    except Exception:  # noqa: BLE001
        return False


def archer_equivalence(cases: list[dict[str, Any]], pool: Any) -> list[tuple[bool, str]]:
    jobs = [(c["gold_answer"], [c["pred_answer"]]) for c in cases]
    return [v[0] for v in pool.judge_many(jobs, timeout=5.0)]


def archer_full_path(cases: list[dict[str, Any]], pool: Any, extraction: str) -> list[tuple[bool, str]]:
    from archer.rewards.math.score import score_math_batch

    results = score_math_batch(
        [c["pred"] for c in cases], [c["gold_answer"] for c in cases], pool=pool, extraction=extraction
    )
    return [(r.correct, r.info["reason"]) for r in results]


def evaluate(pool: Any, with_math_verify: bool = True) -> dict[str, Any]:
    """Every judge's verdicts and agreement counts (see the module doc)."""
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    cases = load_cases()
    answers = answer_cases(cases)
    with_gold = [c for c in cases if c["gold_answer"] is not None]
    rows: list[tuple[str, str, int, int]] = []  # (judge, case set, agree, n)
    out: dict[str, Any] = {"cases": cases, "answers": answers, "with_gold": with_gold, "rows": rows}

    def agree(verdicts: list[bool], subset: list[dict[str, Any]]) -> int:
        return sum(v == c["expected"] for v, c in zip(verdicts, subset))

    if with_math_verify:
        mv_all = [math_verify_verdict(c) for c in cases]
        out["mv_all"] = mv_all
        rows.append(("math-verify (its test inputs)", "all", agree(mv_all, cases), len(cases)))
        mv_with_gold = [v for v, c in zip(mv_all, cases) if c["gold_answer"] is not None]
        rows.append(
            ("math-verify (its test inputs)", "with gold", agree(mv_with_gold, with_gold), len(with_gold))
        )
        mv_inputs_ans = [v for v, c in zip(mv_all, cases) if c in answers]
        rows.append(("math-verify (its test inputs)", "answer", agree(mv_inputs_ans, answers), len(answers)))
        mv_ans = [math_verify_answers(c) for c in answers]
        out["mv_answers"] = mv_ans
        rows.append(("math-verify (answer strings)", "answer", agree(mv_ans, answers), len(answers)))
    eq = archer_equivalence(answers, pool)
    out["archer_equivalence"] = eq
    rows.append(("archer equivalence", "answer", agree([v[0] for v in eq], answers), len(answers)))
    for extraction in EXTRACTIONS:
        full = archer_full_path(with_gold, pool, extraction)
        out[f"archer_full_{extraction}"] = full
        label = f"archer full path, extraction={extraction}"
        rows.append((label, "with gold", agree([v[0] for v in full], with_gold), len(with_gold)))
    return out


def table(rows: list[tuple[str, str, int, int]]) -> str:
    lines = ["| judge | cases | agree | agreement |", "|---|---|---|---|"]
    for judge, subset, agree, n in rows:
        lines.append(f"| {judge} | {subset} ({n}) | {agree} | {100.0 * agree / max(n, 1):.1f}% |")
    return "\n".join(lines)


def disagreements(out: dict[str, Any]) -> list[str]:
    lines = []
    for case, (verdict, reason) in zip(out["answers"], out["archer_equivalence"]):
        if verdict != case["expected"]:
            mv = ""
            if "mv_answers" in out:
                mv = f" math-verify={out['mv_answers'][out['answers'].index(case)]}"
            lines.append(
                f"{case['id']}: gold={case['gold_answer']!r} pred={case['pred_answer']!r} "
                f"expected={case['expected']} archer={verdict} ({reason}){mv}"
            )
    return lines


# --- building the case file from the public test suites --------------------------------------------

MATH_VERIFY_FILES = [
    "tests/test_all.py",
    "tests/test_numina_cases.py",
    "tests/test_open_thoughts.py",
    "tests/test_yujianll.py",
    "tests/test_boxed.py",
    "tests/test_strict.py",
]
NEMO = {
    "repo": "NVIDIA/NeMo-Skills",
    "path": "tests/test_math_equal.py",
    "commit": "583b90a2d5df14caf9f96271b0ef357f782b9938",
}


def _strip_delims(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)")):
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            return text[len(left) : len(text) - len(right)].strip()
    return text


def as_answer(text: str) -> str | None:
    """The answer string when ``text`` is one maths expression (delimited and/or boxed, at most two
    words outside commands), else None (a model output with prose around the answer)."""
    text = text.strip()
    if text.count("$") == 1 and text.startswith("$"):
        text = text[1:]
    text = _strip_delims(text)
    boxed = re.fullmatch(r"\\boxed\s*\{(.*)\}", text, re.S)
    if boxed and "\\boxed" not in boxed.group(1):
        text = boxed.group(1).strip()
    if not text or len(text) > 200 or "\n" in text or "\\boxed" in text:
        return None
    if "$" in text.replace("\\$", "") or "\\(" in text or "\\[" in text:
        return None
    bare = re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}", "", text)
    bare = re.sub(r"\\(?:begin|end)\s*\{[^{}]*\}", "", bare)
    bare = re.sub(r"\\[A-Za-z]+", "", bare)
    words = re.findall(r"[A-Za-z]{2,}", bare)
    if len(words) > 2 or (len(words) == 2 and not re.fullmatch(r"[\d\s.,]*[A-Za-z]+[\d\s.,²]*", bare)):
        return None
    return text


def _parametrized(tree: ast.Module) -> list[tuple[ast.FunctionDef, list[str], list[ast.expr]]]:
    out = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize":
                names = [n.strip() for n in ast.literal_eval(deco.args[0]).split(",")]
                out.append((fn, names, list(deco.args[1].elts)))
    return out


def build_cases(math_verify_dir: Path, nemo_file: Path) -> list[dict[str, Any]]:
    """Every labelled ``(gold, pred, expected)`` of the public test files, with its source."""
    rows: list[dict[str, Any]] = []

    def add(source: dict[str, Any], gold: Any, pred: Any, expected: Any, mv: dict[str, Any]) -> None:
        gold, pred = str(gold), str(pred)
        name = source["path"].split("/")[-1].removesuffix(".py")
        rows.append(
            {
                "id": f"{name}:{source['test']}:{len(rows)}",
                "source": source,
                "gold": gold,
                "pred": pred,
                "expected": bool(expected),
                "gold_answer": as_answer(gold),
                "pred_answer": as_answer(pred),
                "mv": mv,
            }
        )

    git = ["git", "-C", str(math_verify_dir)]
    commit = subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip()
    for path in MATH_VERIFY_FILES:
        text = subprocess.check_output([*git, "show", f"HEAD:{path}"], text=True)
        for fn, names, elts in _parametrized(ast.parse(text)):
            if names[:2] != ["gold", "pred"]:
                continue
            call = next(
                (
                    c
                    for c in ast.walk(fn)
                    if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "compare_strings"
                ),
                None,
            )
            options = {
                "match_types": ["latex", "expr"],
                "precision": 6,
                "allow_set_relation_comp": False,
                "strict": True,
                "parse_default": call is None,  # verify(parse(gold), parse(pred)) with defaults
            }
            for kw in call.keywords if call is not None else []:
                if kw.arg in options and isinstance(kw.value, (ast.List, ast.Constant)):
                    options[kw.arg] = ast.literal_eval(kw.value)
            for elt in elts:
                try:
                    values = dict(zip(names, ast.literal_eval(elt)))
                except ValueError:
                    continue  # an f-string computed at test time
                case_options = {
                    **options,
                    **{
                        k: values[k]
                        for k in ("precision", "allow_set_relation_comp", "strict")
                        if k in values
                    },
                }
                source = {
                    "repo": "huggingface/Math-Verify",
                    "path": path,
                    "commit": commit,
                    "test": fn.name,
                    "line": elt.lineno,
                }
                add(
                    source,
                    values["gold"],
                    values["pred"],
                    values.get("expected", values.get("result")),
                    case_options,
                )
    for fn, _, elts in _parametrized(ast.parse(nemo_file.read_text())):
        for elt in elts:  # each pair must be equal (unequal) in both directions: one case each
            try:
                a, b = ast.literal_eval(elt)
            except ValueError:
                a, b = 5 / 2, "\\frac{5}{2}"  # the one computed pair, (5 / 2, '\\frac{5}{2}')
            if a is None or b is None:
                continue
            for gold, pred in ((a, b), (b, a)):
                options = {
                    "match_types": ["latex", "expr"],
                    "precision": 6,
                    "allow_set_relation_comp": False,
                    "strict": True,
                    "parse_default": False,
                    "wrap": True,  # bare answers: math-verify reads them as $...$
                }
                add(
                    {**NEMO, "test": fn.name, "line": elt.lineno},
                    gold,
                    pred,
                    fn.name == "test_correct_examples",
                    options,
                )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print each disagreement of archer's equivalence")
    ap.add_argument("--regenerate", nargs=2, metavar=("MATH_VERIFY_DIR", "NEMO_TEST_FILE"))
    args = ap.parse_args()
    if args.regenerate:
        rows = build_cases(Path(args.regenerate[0]), Path(args.regenerate[1]))
        CASES.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{len(rows)} cases written to {CASES}")
        return 0
    from archer.rewards.math.pool import MathVerifierPool

    with MathVerifierPool(n_workers=2, timeout=5.0) as pool:
        out = evaluate(pool)
    sources = sorted({(c["source"]["repo"], c["source"]["path"]) for c in out["cases"]})
    print(
        f"{len(out['cases'])} cases from {len(sources)} files; {len(out['answers'])} answer-vs-answer cases"
    )
    print(table(out["rows"]))
    if args.list:
        print("\n".join(disagreements(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
