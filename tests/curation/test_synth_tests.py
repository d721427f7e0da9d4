"""archer data synth-tests: the kept tests are exactly those a reference passes, hostile generated tests
are contained by the sandbox and dropped, problems under --min-tests are dropped, runs resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

from archer.curation.synth_tests import parse_asserts, parse_stdin_tests, synthesize
from archer.data.schema import Problem
from archer.rollout.base import Rollout, SamplingParams

REF = "def f(x):\n    return 2 * x + 1\n"


class CannedEngine:
    """Answers each prompt with a fixed text (chosen by a substring of the prompt)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.calls = answers, 0

    def generate(self, prompts, params):
        self.calls += 1
        out = []
        for i, prompt in enumerate(prompts):
            text = next(t for key, t in self.answers.items() if key in prompt)
            out.append([Rollout(i, [], [], [], text, False, "stop") for _ in range(params.n)])
        return out


def _problem(pid: str, text: str, **meta) -> Problem:
    return Problem(pid, text, "code", tests={}, data_source="toy", meta=meta)


GOOD = ["assert f(0) == 1", "assert f(1) == 3", "assert f(2) == 5", "assert f(5) == 11", "assert f(-1) == -1"]
WRONG = ["assert f(3) == 8", "assert f(4) == 0"]


def test_parsers_take_top_level_asserts_and_paired_io_blocks():
    text = "tests:\n```python\nimport math\nassert f(1) == 3\nx = 2\nassert f(\n  2) == 5\n```\n```\nassert g(1)\n```"
    assert parse_asserts(text) == ["assert f(1) == 3", "assert f(\n  2) == 5", "assert g(1)"]
    assert parse_asserts("```python\nassert f(1) == 3\nassert f(( == 2\n```") == ["assert f(1) == 3"]
    io = (
        "```input\n1 2\n```\n```output\n3\n```\n```output\nstray\n```\n```input\n5 5\n```\n```output\n10\n```"
    )
    assert parse_stdin_tests(io) == [("1 2\n", "3\n"), ("5 5\n", "10\n")]


def test_keeps_exactly_the_tests_a_reference_passes_and_drops_thin_problems(tmp_path):
    block = "```python\n" + "\n".join(GOOD[:3] + WRONG + GOOD[3:]) + "\n```"
    thin = "```python\n" + "\n".join(GOOD[:2] + WRONG) + "\n```"
    problems = [
        _problem("p-good", "Double x and add one. (good)", solution=REF),
        _problem("p-thin", "Double x and add one. (thin)", solution=f"```python\n{REF}```"),
        _problem("p-noref", "Double x and add one. (noref)"),
    ]
    engine = CannedEngine({"(good)": block, "(thin)": thin, "(noref)": block})
    out = tmp_path / "synth.jsonl"
    kept, reports = synthesize(engine, None, problems, out, params=SamplingParams(n=2), log=lambda _: None)
    assert [p.id for p in kept] == ["p-good"]
    assert kept[0].tests == {"assert": GOOD, "entry_point": "f"}  # duplicates across the 2 samples pooled
    status = {r["id"]: r["status"] for r in reports}
    assert status == {
        "p-good": "kept",
        "p-thin": "dropped: 2 tests kept, fewer than 5",
        "p-noref": "dropped: no reference solution",
    }
    dropped = {d["test"] for d in reports[0]["dropped_tests"]}
    assert dropped == set(WRONG)
    lines = (tmp_path / "synth.jsonl.report.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["p-good", "p-thin", "p-noref"]
    # resume: every problem is in the work file, so nothing is generated again and the result is the same
    again = CannedEngine({"": "never used"})
    kept2, _ = synthesize(again, None, problems, out, params=SamplingParams(n=2), log=lambda _: None)
    assert again.calls == 0 and [p.tests for p in kept2] == [p.tests for p in kept]


def test_stdin_form_keeps_io_pairs_the_reference_reproduces(tmp_path):
    ref = "a, b = map(int, input().split())\nprint(a + b)\n"
    pairs = [("1 2", "3"), ("2 2", "4"), ("0 0", "0"), ("5 6", "12"), ("10 1", "11"), ("7 7", "14")]
    text = "".join(f"```input\n{i}\n```\n```output\n{o}\n```\n" for i, o in pairs)
    p = Problem(
        "s1", "Print a+b.", "code", tests={"inputs": ["1 1\n"], "outputs": ["2\n"]}, meta={"solution": ref}
    )
    kept, reports = synthesize(
        CannedEngine({"a+b": text}), None, [p], tmp_path / "o.jsonl", params=SamplingParams()
    )
    assert reports[0]["status"] == "kept" and reports[0]["kept"] == 5
    assert kept[0].tests == {
        "inputs": [f"{i}\n" for i, o in pairs if o != "12"],
        "outputs": [f"{o}\n" for i, o in pairs if o != "12"],
    }
    assert kept[0].meta["original_tests"] == {"inputs": ["1 1\n"], "outputs": ["2\n"]}


def test_hostile_generated_tests_are_contained_and_dropped_and_the_run_goes_on(tmp_path):
    marker = tmp_path / "pwned"
    hostile = [
        f"assert open({str(marker)!r}, 'w').write('x') and f(0) == 99",  # writes outside its sandbox dir
        "assert __import__('os').kill(__import__('os').getppid(), 9) or f(0) == 99",  # kills its parent
        "assert __import__('os').killpg(0, 9) or f(0) == 99",
        "assert all(True for _ in iter(int, 1))",  # never ends
        "assert [0] * (10 ** 12)",  # memory bomb
    ]
    block = "```python\n" + "\n".join(hostile[:2] + GOOD + hostile[2:]) + "\n```"
    problems = [
        _problem("h1", "Double and add one (hostile).", solution=REF),
        _problem("h2", "Double and add one (plain).", solution=REF),
    ]
    engine = CannedEngine({"(hostile)": block, "(plain)": "```python\n" + "\n".join(GOOD) + "\n```"})
    pid = os.getpid()
    kept, reports = synthesize(
        engine,
        None,
        problems,
        tmp_path / "o.jsonl",
        params=SamplingParams(),
        batch_size=1,
        timeout=2.0,
        log=lambda _: None,
    )
    assert os.getpid() == pid and not marker.exists()
    assert [p.id for p in kept] == ["h1", "h2"]
    assert kept[0].tests["assert"] == GOOD and kept[1].tests["assert"] == GOOD
    # none of them is in the checked form: rejected before the sandbox, never run (issue 20)
    assert {d["test"] for d in reports[0]["rejected_tests"]} == set(hostile)
    assert reports[0]["dropped_tests"] == []
    assert Path(tmp_path / "o.jsonl.report.jsonl").is_file()


def test_checked_form_accepts_literal_comparisons_of_entry_point_calls_only():
    from archer.curation.synth_tests import checked_assert

    for good in GOOD + [
        "assert f(1) in [3, 4] and not f(0) == 2, 'msg'",
        "assert f(x=2) == 5",
        "assert f([1, 2], {'a': (1,)})[0] == -1",
        "assert f(f(1)) != None",
    ]:
        assert checked_assert(good, "f"), good
    for bad in [
        "assert g(1) == 3",  # not the entry point
        "assert len(f(1)) == 3",  # a builtin
        "assert f(1).real == 3",  # an attribute
        "assert f(*[1]) == 3",
        "assert f(1) == 2 + 1",  # an operator
        "assert [f(i) for i in range(3)] == [1, 3, 5]",
        "assert (lambda: f(1))() == 3",
        "assert 1 == 1",  # no call of the entry point
        "assert f(1) == 3, str(f)",
        "x = 1",
        "assert f(1) == 3\nassert f(0) == 1",
    ]:
        assert not checked_assert(bad, "f"), bad
    assert not checked_assert("assert f(1) == 3", None)


def test_a_generated_assert_cannot_forge_verdicts_for_the_others(tmp_path):
    """Issue 20: one generated assert wrote "ok" frames for every test on the judge's verdict
    descriptor, so the filter kept `f(2) == 6` (and `add(2, 2) == 5`). It is rejected, never run."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))
    import sandbox_attacks as sa

    wrong = "assert f(2) == 6"
    forge = sa.forged_verdicts_assert(len(GOOD) + 2)
    block = "```python\n" + "\n".join([forge, wrong, *GOOD]) + "\n```"
    p = _problem("forge", "Double and add one (forge).", solution=REF)
    kept, reports = synthesize(
        CannedEngine({"(forge)": block}),
        None,
        [p],
        tmp_path / "o.jsonl",
        params=SamplingParams(),
        log=lambda _: None,
    )
    assert kept[0].tests["assert"] == GOOD
    assert [d["test"] for d in reports[0]["dropped_tests"]] == [wrong]
    assert [d["test"] for d in reports[0]["rejected_tests"]] == [forge] and reports[0]["rejected"] == 1


def test_cli_writes_output_report_and_resumes(tmp_path, capsys):
    from helpers import tiny_model_dir, tiny_tokenizer

    from archer.cli.main import main as archer_main
    from archer.tasks import synthetic

    tiny_model_dir(tmp_path / "m", tiny_tokenizer(synthetic.tokenizer_corpus(200, seed=0)))
    rows = [dict(p.to_dict(), tests={}, meta={"solution": REF}) for p in synthetic.code_problems(3, seed=0)]
    rows.append(Problem("m1", "1+1?", "math", answer="2").to_dict())
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    argv = ["data", "synth-tests", "--model", str(tmp_path / "m"), "--in", str(data), "--out", str(out)]
    assert archer_main(argv + ["--max-new-tokens", "8", "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    assert "kept 0 of 4 problems" in captured.out and "4/4 problems" in captured.err  # progress lines
    assert out.is_file() and out.read_text() == ""  # a random model writes no test a reference passes
    report = [json.loads(x) for x in Path(f"{out}.report.jsonl").read_text().splitlines()]
    assert [r["id"] for r in report] == [r["id"] for r in rows]
    assert report[-1]["status"] == "dropped: a math problem"
    assert all(r["status"].startswith("dropped: ") for r in report)
    assert Path(f"{out}.removed.jsonl").is_file()
    assert archer_main(argv) == 0  # everything is in the work file: nothing to generate
    assert "4 already done" in capsys.readouterr().err
