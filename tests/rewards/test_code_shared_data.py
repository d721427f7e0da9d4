"""The sandbox on the public benchmark samples in ``shared/data/code``."""

from __future__ import annotations

import json

import pytest

from archer.data.schema import with_prompt_setup
from archer.rewards.code import extract_code, run_tests, run_tests_batch, score_code
from archer.sandbox.pool import SandboxConfig, SandboxPool
from archer.sandbox.zygote.safe_pickle import decode_lcb_tests

# honest solutions written for the three LiveCodeBench sample problems
LCB_SOLUTIONS = {
    "codeforces/1873_A": "for _ in range(int(input())):\n    s = input().strip()\n"
    "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) in (0, 2) else 'NO')\n",
    "leetcode/2727": "class Solution:\n    def countSeniors(self, details: List[str]) -> int:\n"
    "        return sum(int(d[11:13]) > 60 for d in details)\n",
    "atcoder/abc301_a": "n = int(input())\ns = input().strip()\nt, a = s.count('T'), s.count('A')\n"
    "print('T' if t > a else 'A' if a > t else ('A' if s[-1] == 'T' else 'T'))\n",
}


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(SandboxConfig(workers=2)) as p:
        yield p


def rows(shared_data, name):
    with open(shared_data / "code" / name) as f:
        return [json.loads(line) for line in f]


def humaneval_tests(row, setup=True):
    """As the HumanEval loader builds them, plus (as score_code_problems adds it) the prompt as
    trusted setup where the test uses the prompt's helper functions."""
    tests = {"assert": f"{row['test']}\n\ncheck({row['entry_point']})\n", "entry_point": row["entry_point"]}
    return with_prompt_setup(tests, row["prompt"]) if setup else tests


def test_prompt_becomes_setup_only_where_the_test_uses_its_helpers(shared_data, pool):
    data = rows(shared_data, "humaneval.jsonl")
    assert sorted(r["task_id"] for r in data if "setup" in humaneval_tests(r)) == [
        "HumanEval/32",
        "HumanEval/38",
        "HumanEval/50",
    ]
    # the registry path: problems as the HumanEval loader builds them (no setup in their tests)
    from types import SimpleNamespace

    from archer.rewards.code import score_code_problems

    picked = [r for r in data if r["task_id"] in ("HumanEval/38", "HumanEval/0")]
    problems = [SimpleNamespace(prompt=r["prompt"], tests=humaneval_tests(r, setup=False)) for r in picked]
    good = [f"```python\n{r['prompt'] + r['canonical_solution']}\n```" for r in picked]
    assert [res.reward for res in score_code_problems(good, problems, pool=pool)] == [1.0, 1.0]


def test_humaneval_canonical_pass_and_return_none_fails(shared_data, pool):
    data = rows(shared_data, "humaneval.jsonl")
    assert len(data) == 164
    good = run_tests_batch(
        [(r["prompt"] + r["canonical_solution"], humaneval_tests(r)) for r in data], pool=pool
    )
    failed = [r["task_id"] for r, rep in zip(data, good) if not rep.all_passed]
    assert failed == []
    bad = run_tests_batch([(r["prompt"] + "    return None\n", humaneval_tests(r)) for r in data], pool=pool)
    assert [r["task_id"] for r, rep in zip(data, bad) if rep.passed] == []


def test_humaneval_helpers_never_come_from_the_program(shared_data, pool):
    """HumanEval/32, 38 and 50 test through a helper of the prompt (poly, encode_cyclic, encode_shift).
    A program that redefines the helper so that a wrong answer checks out must fail, with the prompt
    as setup (the helper is the prompt's) and without it (the helper is missing: fail closed)."""
    data = {r["task_id"]: r for r in rows(shared_data, "humaneval.jsonl")}
    cheats = {
        "HumanEval/32": "def poly(xs, x):\n    return 0.0\n\ndef find_zero(xs):\n    return 0.0\n",
        "HumanEval/38": "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n",
        "HumanEval/50": "def encode_shift(s):\n    return s\n\ndef decode_shift(s):\n    return s\n",
    }
    for setup in (True, False):
        reps = run_tests_batch([(cheats[t], humaneval_tests(data[t], setup)) for t in cheats], pool=pool)
        assert all(rep.passed == 0 for rep in reps), (setup, reps)
        if setup:  # the real helper runs, so the wrong answer is simply wrong
            assert [rep.verdicts for rep in reps] == [["wrong"]] * 3
    # the official harness (one process) is fooled by all three
    for t, cheat in cheats.items():
        exec(cheat + data[t]["test"] + f"\ncheck({data[t]['entry_point']})\n", {})


def test_humaneval_model_answers_are_judged(shared_data, pool):
    data = rows(shared_data, "humaneval.jsonl")
    programs = [extract_code(r["gpt_solution"]) for r in data]
    assert all(p is not None for p in programs)
    reps = run_tests_batch([(p, humaneval_tests(r)) for p, r in zip(programs, data)], pool=pool)
    assert all(rep.total == 1 and rep.verdicts[0] in ("ok", "wrong", "error", "timeout") for rep in reps)
    assert not any("sandbox" in str(rep.info.get("reason", "")) for rep in reps)
    n_ok = sum(rep.all_passed for rep in reps)
    assert 0 < n_ok < len(data)  # the sample holds both right and wrong model answers
    # HumanEval/81's answer ends with a block that only prints (NameError): the last block is judged
    by_id = {r["task_id"]: rep for r, rep in zip(data, reps)}
    assert by_id["HumanEval/81"].verdicts == ["error"]


def test_livecodebench_decodes_and_sys_exit_exploit_scores_zero(shared_data, pool):
    data = rows(shared_data, "livecodebench_sample.jsonl")
    assert len(data) == 3
    for row in data:
        task = json.loads(row["labels"])["task_id"]
        tests = decode_lcb_tests(row["test"])
        assert len(tests["inputs"]) == len(tests["outputs"]) > 0
        assert row["canonical_solution"].strip() == "import sys; sys.exit(0)"
        exploit = score_code(f"```python\n{row['canonical_solution']}\n```", tests, pool=pool)
        assert exploit.reward == 0.0 and not exploit.correct
        honest = run_tests(LCB_SOLUTIONS[task], tests, pool=pool)
        assert honest.all_passed, (task, honest)
        assert (tests.get("fn_name") is not None) == (task == "leetcode/2727")


def test_mbpp_canonical_solutions_pass(shared_data, pool):
    data = rows(shared_data, "mbpp_sample.jsonl")
    items = []
    for r in data:
        setup = (r.get("labels") or {}).get("test_setup_code", "")
        items.append((r["canonical_solution"], {"assert": [setup + "\n" + t for t in r["test_list"]]}))
    reps = run_tests_batch(items, pool=pool)
    assert [r["id"] for r, rep in zip(data, reps) if not rep.all_passed] == []
    assert sum(rep.total for rep in reps) == sum(len(r["test_list"]) for r in data)
    wrong = run_tests_batch([("def unrelated():\n    pass\n", t) for _, t in items], pool=pool)
    assert all(rep.passed == 0 for rep in wrong)


def test_code_contests_oracle_and_wrong_programs(shared_data, pool):
    data = rows(shared_data, "code_contests_sample.jsonl")
    items_good, items_bad = [], []
    for r in data:
        cases = json.loads(r["test"])[:8]
        tests = {
            "inputs": [c["input"]["stdin"] for c in cases],
            "outputs": [c["output"]["stdout"] for c in cases],
        }
        # a trivially correct program: a lookup table of this problem's own cases
        table = {c["input"]["stdin"]: c["output"]["stdout"] for c in cases}
        oracle = f"import sys\nsys.stdout.write({table!r}[sys.stdin.read()])\n"
        items_good.append((oracle, tests))
        items_bad.append(("print(-123456789)", tests))
    good = run_tests_batch(items_good, pool=pool)
    bad = run_tests_batch(items_bad, pool=pool, stop_on_failure=True)
    assert all(rep.all_passed for rep in good)
    assert all(rep.verdicts[0] == "wrong" and rep.passed == 0 for rep in bad)
