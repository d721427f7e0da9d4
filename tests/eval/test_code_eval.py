"""Evaluating code end to end: the bundled LiveCodeBench / HumanEval / MBPP samples through the runner,
the sandbox and LiveCodeBench's output comparison, with a verdict and a reason for every sample."""

from __future__ import annotations

import json

import pytest

from archer.data.formats import load_dataset
from archer.eval import store
from archer.eval.runner import evaluate

# honest programs for the three LiveCodeBench sample problems (stdin: codeforces, atcoder; functional:
# leetcode) and for one HumanEval and one MBPP problem
HONEST = {
    "codeforces/1873_A": "for _ in range(int(input())):\n    s = input().strip()\n"
    "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) in (0, 2) else 'NO')\n",
    "leetcode/2727": "class Solution:\n    def countSeniors(self, details: List[str]) -> int:\n"
    "        return sum(int(d[11:13]) > 60 for d in details)\n",
    "atcoder/abc301_a": "n = int(input())\ns = input().strip()\nt, a = s.count('T'), s.count('A')\n"
    "print('T' if t > a else 'A' if a > t else ('A' if s[-1] == 'T' else 'T'))\n",
}


def fenced(code: str) -> str:
    return f"Here is my program.\n```python\n{code}```"


class FixedEngine:
    """Answers each prompt with the scripted responses of the problem whose text it contains."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = script

    def generate(self, prompts, params):
        from archer.rollout.base import Rollout

        out = []
        for i, prompt in enumerate(prompts):
            texts = next(v for k, v in self.script.items() if k in prompt)
            out.append([Rollout(i, [1], [2], [-0.1], texts[j], False, "eos") for j in range(params.n)])
        return out


@pytest.fixture(scope="module")
def problems():
    lcb = load_dataset("livecodebench_sample")
    return lcb, load_dataset("humaneval", limit=1), load_dataset("mbpp_sample", limit=1)


def test_code_benchmarks_get_per_sample_verdicts_and_a_verdict_mix(problems, tmp_path):
    lcb, he, mbpp = problems
    script = {}
    for p in lcb:
        honest = HONEST[p.id.removeprefix("livecodebench/")]
        # honest, the sys.exit(0) exploit, an endless loop, a crash, no code at all
        script[p.meta["question"][:200]] = [
            fenced(honest),
            fenced("import sys; sys.exit(0)\n"),
            fenced("while True:\n    pass\n"),
            fenced("raise RuntimeError('boom')\n"),
            "I cannot solve this.",
        ]
    for p in he + mbpp:
        script[p.prompt[-200:]] = [fenced(p.meta["solution"])] + [fenced("x = 1\n")] * 4
    out = evaluate(
        FixedEngine(script),
        None,
        lcb + he + mbpp,
        n=5,
        ks=(1, 5),
        template="raw",
        out_dir=tmp_path,
        reward_opts={"timeout": 1.0},
    )
    results = {r["id"]: r for r in store.read_jsonl(tmp_path / store.RESULTS)}
    for p in lcb:
        verdicts = [s["verdict"] for s in results[p.id]["samples"]]
        assert verdicts[0] == "pass", results[p.id]["samples"][0]
        assert verdicts[1] in ("wrong", "error")  # exiting early prints nothing: never a pass
        assert verdicts[2:] == ["timeout", "error", "no_code"], results[p.id]["samples"]
        assert all(s["reason"] for s in results[p.id]["samples"])
        assert [s["correct"] for s in results[p.id]["samples"]] == [True, False, False, False, False]
    for p in he + mbpp:
        assert [s["verdict"] for s in results[p.id]["samples"]][0] == "pass"
    summary = json.loads((tmp_path / store.SUMMARY).read_text())
    assert summary["avg@1"] == pytest.approx(out["avg@1"]) == pytest.approx(0.2)
    assert summary["pass@5"] == 1.0
    mix = summary["verdicts"]
    assert mix["pass"] == pytest.approx(5 / 25) and mix["no_code"] == pytest.approx(3 / 25)
    assert mix["timeout"] == pytest.approx(3 / 25)
    assert sum(mix.values()) == pytest.approx(1.0)
    assert set(summary["by_source"]) == {p.data_source for p in lcb + he + mbpp}
    assert all("verdicts" in s for s in summary["by_source"].values())


def test_math_samples_have_no_verdict_mix(tmp_path):
    from archer.data.schema import Problem

    probs = [Problem("a", "What is 2+3?", "math", answer="5")]
    out = evaluate(FixedEngine({"2+3": ["\\boxed{5}"]}), None, probs, n=1, template="raw")
    assert "verdicts" not in out and out["records"][0]["samples"][0]["verdict"] is None


def test_printed_table_has_the_error_and_verdict_rows():
    from rich.console import Console

    from archer.eval.report import summary_table

    summary = {
        "ks": [1],
        "num_problems": 2,
        "avg@1": 0.5,
        "pass@1": 0.5,
        "avg_se": 0.5,
        "verdicts": {"pass": 0.5, "timeout": 0.5},
        "by_source": {
            "a": {"avg@1": 1.0, "pass@1": 1.0, "avg_se": 0.0, "verdicts": {"pass": 1.0}},
            "b": {"avg@1": 0.0, "pass@1": 0.0, "avg_se": 0.0, "verdicts": {"timeout": 1.0}},
        },
    }
    console = Console(record=True, width=120)
    console.print(summary_table(summary))
    rows = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if "│" in line}
    assert [c.strip() for c in rows["code: timeout"].split("│")[2:5]] == ["0.500", "0.000", "1.000"]
    assert [c.strip() for c in rows["avg s.e."].split("│")[2:5]] == ["0.500", "0.000", "0.000"]
    assert "code: wrong" not in rows  # only verdicts that occur get a row
