"""Test-case synthesis (AceCoder, Zeng et al. 2025, arXiv:2502.01718, Sec. 2.1): a model writes tests,
reference solutions filter them.

For each code problem, ``n`` responses of a local model (any archer rollout engine) are asked for
``num_tests`` test cases in one of two forms:

- ``assert``: Python ``assert`` statements calling the entry point, in a fenced block; every
  top-level ``assert`` of every block is a candidate (other statements are ignored), accepted only
  in the *checked form* (:func:`checked_assert`: comparisons of literals with calls of the entry
  point, nothing else) and run against the references only then; the rest are reported as rejected
  and never run, since the assert judge trusts test code (real builtins, the verdict channel).
  The tests become ``{"assert": [...], "entry_point": ...}``.
- ``stdin``: pairs of fenced ```input / ```output blocks; they become ``{"inputs", "outputs"}``.

Every distinct candidate runs against every reference solution (``meta["solution"]`` and/or
``meta["solutions"]``, raw code or a fenced block) in the sandbox (``archer.rewards.code``): the
generated tests are untrusted code and only ever run there, each under the per-test ``timeout``, so a
test that loops, writes files or kills processes fails (or passes harmlessly inside the sandbox)
and the run goes on. A test is kept when at least one reference passes it (AceCoder: a test the
strong model's solution fails is dropped); a problem with fewer than ``min_tests`` kept tests
(AceCoder: 5) is dropped, as is a problem without a reference (its tests cannot be checked).

Resumable: each finished problem is appended to ``OUT.work.jsonl`` (fsynced); a restart skips those
problems, and the final ``OUT``, ``OUT.report.jsonl`` (one line per problem: counts, status and the
first dropped tests with their verdicts) and ``OUT.removed.jsonl`` (the dropped problems) are written
atomically from it at the end.

Limits: tests are validated only against the references, so a wrong reference keeps wrong tests;
the model's expected values are trusted as written (no re-computation from the reference).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from archer.data.schema import Problem

FORMS = ("assert", "stdin")

_ASSERT_PROMPT = (
    "Write {k} test cases for the problem below as Python assert statements that call `{entry}`, "
    "one per line, in a ```python block.\n\nProblem:\n{problem}"
)
_STDIN_PROMPT = (
    "Write {k} test cases for the program described below. For each test give the exact standard "
    "input in an ```input block followed by the exact expected output in an ```output block.\n\n"
    "Problem:\n{problem}"
)
PROMPTS = {"assert": _ASSERT_PROMPT, "stdin": _STDIN_PROMPT}

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)


def problem_text(problem: Problem) -> str:
    if isinstance(problem.prompt, str):
        return problem.prompt
    return "\n\n".join(str(m.get("content", "")) for m in problem.prompt if m.get("role") != "system")


def references(problem: Problem) -> list[str]:
    """The problem's reference programs (fences removed)."""
    from archer.rewards.code import extract_code

    meta = problem.meta or {}
    refs = [meta.get("solution")] + list(meta.get("solutions") or [])
    out = []
    for ref in refs:
        if isinstance(ref, str) and ref.strip():
            code = extract_code(ref) if "```" in ref else ref
            if code and code not in out:
                out.append(code)
    return out


def form_of(problem: Problem, form: str) -> str:
    """``auto``: the form of the problem's own tests (stdin for stdin/stdout tests, else assert)."""
    if form != "auto":
        if form not in FORMS:
            raise ValueError(f"unknown test form {form!r}; known: auto, {', '.join(FORMS)}")
        return form
    tests = problem.tests or {}
    return "stdin" if "inputs" in tests and not tests.get("fn_name") else "assert"


def entry_point(problem: Problem, refs: Sequence[str]) -> str | None:
    """The function the tests call: the problem's own ``entry_point``/``fn_name``, else the single
    top-level function of the first reference that has exactly one."""
    tests = problem.tests or {}
    for key in ("entry_point", "fn_name"):
        if isinstance(tests.get(key), str) and tests[key]:
            return tests[key]
    for ref in refs:
        try:
            defs = [
                n.name for n in ast.parse(ref).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            ]
        except (SyntaxError, ValueError, RecursionError):
            continue
        if len(defs) == 1:
            return defs[0]
    return None


def test_prompt(problem: Problem, form: str, num_tests: int, entry: str | None) -> str:
    return PROMPTS[form].format(
        k=num_tests, entry=entry or "the solution function", problem=problem_text(problem)
    )


def parse_asserts(text: str) -> list[str]:
    """Top-level ``assert`` statements of every fenced block (the whole text when there is none)."""
    blocks = [m.group(2) for m in _FENCE.finditer(text or "")] or [text or ""]
    out: list[str] = []
    for block in blocks:
        try:
            nodes = ast.parse(block).body
            found = [ast.get_source_segment(block, n) for n in nodes if isinstance(n, ast.Assert)]
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            found = []  # a broken block: fall back to its lines that parse alone as an assert
            for line in block.splitlines():
                try:
                    if line.strip().startswith("assert") and isinstance(
                        ast.parse(line.strip()).body[0], ast.Assert
                    ):
                        found.append(line.strip())
                except (SyntaxError, ValueError, RecursionError, MemoryError, IndexError):
                    continue
        out.extend(s for s in found if s and s not in out)
    return out


_CMP_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn)


def checked_assert(test: str, entry: str | None) -> bool:
    """Whether a model-written assert is in the *checked form* this command accepts.

    Synthesized tests are untrusted code, yet the assert judge runs test code with the real builtins
    and holds the verdict channel (dataset tests are trusted; these are not): one generated assert
    wrote "ok" frames for every test, and the filter kept ``add(2, 2) == 5``. So a generated test is
    kept only when its syntax tree is a single ``assert`` whose condition is made of comparisons
    (``==``, ``<``, ``in``, ...), ``and``/``or``/``not`` and unary signs over literals (numbers,
    strings, bytes, ``True``/``False``/``None``, and lists, tuples, sets, dicts of them), constant
    subscripts of those, and calls of the entry point by name with such arguments; the optional
    message is a string literal. No other name, no attribute, no lambda, comprehension, operator or
    call: nothing in it can reach a builtin or the judge's descriptors, whatever the judge holds.
    Tests in another form are rejected (reported as ``rejected_tests``), never run."""
    if not entry:
        return False
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return False
    node = tree.body[0]
    if node.msg is not None and not (isinstance(node.msg, ast.Constant) and isinstance(node.msg.value, str)):
        return False
    calls = [0]

    def ok(e: ast.AST, depth: int = 0) -> bool:
        if depth > 50:
            return False
        if isinstance(e, ast.Constant):
            return isinstance(e.value, (int, float, complex, str, bytes, bool, type(None)))
        if isinstance(e, (ast.List, ast.Tuple, ast.Set)):
            return all(ok(x, depth + 1) for x in e.elts)
        if isinstance(e, ast.Dict):
            return all(k is not None and ok(k, depth + 1) for k in e.keys) and all(
                ok(v, depth + 1) for v in e.values
            )
        if isinstance(e, ast.UnaryOp):
            return isinstance(e.op, (ast.USub, ast.UAdd, ast.Not)) and ok(e.operand, depth + 1)
        if isinstance(e, ast.BoolOp):
            return all(ok(v, depth + 1) for v in e.values)
        if isinstance(e, ast.Compare):
            return all(isinstance(o, _CMP_OPS) for o in e.ops) and all(
                ok(x, depth + 1) for x in [e.left, *e.comparators]
            )
        if isinstance(e, ast.Subscript):
            index = e.slice
            return (
                ok(e.value, depth + 1)
                and isinstance(index, (ast.Constant, ast.UnaryOp))
                and ok(index, depth + 1)
            )
        if isinstance(e, ast.Call):
            calls[0] += 1
            return (
                isinstance(e.func, ast.Name)
                and e.func.id == entry
                and all(not isinstance(a, ast.Starred) and ok(a, depth + 1) for a in e.args)
                and all(k.arg is not None and ok(k.value, depth + 1) for k in e.keywords)
            )
        return False

    return ok(node.test) and calls[0] > 0


def parse_stdin_tests(text: str) -> list[tuple[str, str]]:
    """(input, output) from ```input blocks each followed by an ```output block."""
    out: list[tuple[str, str]] = []
    pending: str | None = None
    for m in _FENCE.finditer(text or ""):
        tag, body = m.group(1).lower(), m.group(2)
        if tag == "input":
            pending = body
        elif tag == "output" and pending is not None:
            if (pending, body) not in out:
                out.append((pending, body))
            pending = None
    return out


def _tests_dict(form: str, cands: Sequence[Any], entry: str | None) -> dict[str, Any]:
    if form == "assert":
        return {"assert": list(cands), **({"entry_point": entry} if entry else {})}
    return {"inputs": [i for i, _ in cands], "outputs": [o for _, o in cands]}


def filter_tests(
    cands: Sequence[Any],
    form: str,
    refs: Sequence[str],
    entry: str | None,
    run_tests_batch: Callable[..., list[Any]] | None = None,
    **run_opts: Any,
) -> tuple[list[int], list[list[str]]]:
    """(indices of the candidates some reference passes, verdicts ``[ref][test]``); every test runs."""
    if run_tests_batch is None:
        from archer.rewards.code import run_tests_batch
    if not cands or not refs:
        return [], []
    tests = _tests_dict(form, cands, entry)
    reports = run_tests_batch([(ref, tests) for ref in refs], stop_on_failure=False, **run_opts)
    verdicts = [
        list(r.verdicts) if len(r.verdicts) == len(cands) else ["error"] * len(cands) for r in reports
    ]
    keep = [i for i in range(len(cands)) if any(v[i] == "ok" for v in verdicts)]
    return keep, verdicts


def _candidates(
    responses: Sequence[str], form: str, max_tests: int | None, entry: str | None = None
) -> tuple[list[Any], int, list[str]]:
    """(candidates to run, how many were parsed, asserts rejected as not in the checked form)."""
    cands: list[Any] = []
    for text in responses:
        parsed = parse_asserts(text) if form == "assert" else parse_stdin_tests(text)
        cands.extend(c for c in parsed if c not in cands)
    total = len(cands)
    rejected: list[str] = []
    if form == "assert":
        rejected = [c for c in cands if not checked_assert(c, entry)]
        cands = [c for c in cands if c not in set(rejected)]
    return (cands[:max_tests] if max_tests else cands), total, rejected


def synthesize_problem(
    problem: Problem,
    responses: Sequence[str],
    form: str,
    *,
    min_tests: int = 5,
    max_tests: int | None = None,
    **run_opts: Any,
) -> tuple[Problem | None, dict[str, Any]]:
    """Filter the tests in ``responses`` for one problem -> (the problem with them or None, report row)."""
    refs = references(problem)
    entry = entry_point(problem, refs)
    cands, parsed, rejected = _candidates(responses, form, max_tests, entry)
    report: dict[str, Any] = {"id": problem.id, "form": form, "parsed": parsed, "candidates": len(cands)}
    if form == "assert":
        report["rejected"] = len(rejected)
        report["rejected_tests"] = [
            {"test": t, "reason": "not a checked assert (comparisons of literals and entry-point calls)"}
            for t in rejected[:5]
        ]
    if not refs:
        return None, {**report, "kept": 0, "status": "dropped: no reference solution"}
    keep, verdicts = filter_tests(cands, form, refs, entry, **run_opts)
    report["kept"] = len(keep)
    dropped = [i for i in range(len(cands)) if i not in set(keep)]
    report["dropped_tests"] = [
        {
            "test": cands[i] if form == "assert" else {"input": cands[i][0], "output": cands[i][1]},
            "verdicts": [v[i] for v in verdicts],
        }
        for i in dropped[:5]
    ]
    if len(keep) < min_tests:
        return None, {**report, "status": f"dropped: {len(keep)} tests kept, fewer than {min_tests}"}
    tests = _tests_dict(form, [cands[i] for i in keep], entry)
    meta = dict(problem.meta, synth_tests={"form": form, "parsed": parsed, "kept": len(keep)})
    if problem.tests:
        meta["original_tests"] = problem.tests
    new = Problem(problem.id, problem.prompt, "code", None, tests, problem.data_source, meta)
    return new, {**report, "status": "kept"}


def synthesize(
    engine: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    out: str | Path,
    *,
    params: Any,
    form: str = "auto",
    num_tests: int = 20,
    min_tests: int = 5,
    max_tests: int | None = None,
    batch_size: int = 8,
    log: Callable[[str], None] = print,
    **run_opts: Any,
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """Generate and filter tests for ``problems`` -> (kept problems, one report row per problem);
    writes ``OUT.work.jsonl`` as it goes and ``OUT.report.jsonl`` at the end (the caller writes OUT)."""
    from archer.data.formats import save_rows
    from archer.eval import store
    from archer.eval.runner import generate_records

    if min_tests < 1 or num_tests < 1:
        raise ValueError(f"--min-tests and --num-tests must be >= 1, got {min_tests}, {num_tests}")
    out = Path(out)
    work = out.with_name(out.name + ".work.jsonl")
    done = {r["report"]["id"]: r for r in store.read_jsonl(work) if isinstance(r.get("report"), dict)}
    for p in problems:
        if p.kind != "code" and p.id not in done:
            done[p.id] = {
                "report": {"id": p.id, "kept": 0, "status": f"dropped: a {p.kind} problem"},
                "problem": None,
            }
    todo = [p for p in problems if p.id not in done]
    log(
        f"archer data synth-tests: {len(problems)} problems, {len(problems) - len(todo)} already done ({work})"
    )
    by_id = {p.id: p for p in todo}
    forms = {p.id: form_of(p, form) for p in todo}
    asks = [
        Problem(
            p.id,
            test_prompt(p, forms[p.id], num_tests, entry_point(p, references(p))),
            "code",
            None,
            {},
            p.data_source,
        )
        for p in todo
    ]
    count = [len(problems) - len(todo)]

    def on_batch(batch: list[dict[str, Any]]) -> None:
        rows = []
        for rec in batch:
            p = by_id[rec["id"]]
            new, report = synthesize_problem(
                p, rec["responses"], forms[p.id], min_tests=min_tests, max_tests=max_tests, **run_opts
            )
            rows.append({"report": report, "problem": new.to_dict() if new is not None else None})
            done[p.id] = rows[-1]
        store.append_jsonl(work, rows)
        count[0] += len(batch)
        kept = sum(r["problem"] is not None for r in done.values())
        log(
            f"  {count[0]}/{len(problems)} problems: {kept} kept so far (last: {rows[-1]['report']['status']})"
        )

    if todo:
        generate_records(
            engine, tokenizer, asks, params, template="raw", batch_size=batch_size, on_batch=on_batch
        )
    order = [p.id for p in problems if p.id in done]
    kept = [Problem.from_dict(done[i]["problem"]) for i in order if done[i]["problem"] is not None]
    reports = [done[i]["report"] for i in order]
    save_rows(reports, out.with_name(out.name + ".report.jsonl"))
    tests_kept = sum(r.get("kept", 0) for r in reports if r["status"] == "kept")
    log(
        f"archer data synth-tests: {tests_kept} tests kept of {sum(r.get('parsed', 0) for r in reports)} parsed; "
        f"per-problem report in {out.name}.report.jsonl"
    )
    return kept, reports
