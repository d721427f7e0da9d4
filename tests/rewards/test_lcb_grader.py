"""``grader="lcb"`` (``archer eval --grader lcb``): the official LiveCodeBench grader's verdicts on
honest programs, where they differ from archer's own, and the same rejection of cheats.

Reference: LiveCodeBench/LiveCodeBench, lcb_runner/evaluation/testing_util.py at 15808c7
(``grade_call_based``: a top-level tuple becomes a list, then ``prediction == json.loads(output)``;
``grade_stdio``: the program runs inside the grading process, so one that calls ``os._exit`` takes the
result with it; ``SystemExit`` is swallowed, so an exit status after correct output passes there).
"""

from __future__ import annotations

import pytest

from archer.rewards.code import run_tests
from archer.rewards.compare import lcb_call_result_matches

CALL = {"fn_name": "f", "inputs": ["1"], "outputs": ["[[1, 2], [3, 4]]"]}


def verdicts(program: str, tests: dict, grader: str) -> list[str]:
    return run_tests(program, tests, timeout=5, grader=grader).verdicts


@pytest.mark.parametrize(
    "program, archer, lcb",
    [
        ("def f(x):\n    return [[1, 2], [3, 4]]\n", "ok", "ok"),  # honest
        ("def f(x):\n    return ([1, 2], [3, 4])\n", "ok", "ok"),  # a top-level tuple counts as a list
        ("def f(x):\n    return [(1, 2), (3, 4)]\n", "ok", "wrong"),  # nested tuples do not
        ("class Solution:\n    def f(self, x):\n        return [[1, 2], [3, 4]]\n", "ok", "ok"),
    ],
)
def test_call_based_types_as_the_official_grader_compares_them(program, archer, lcb):
    assert verdicts(program, CALL, "archer") == [archer]
    assert verdicts(program, CALL, "lcb") == [lcb]


def test_dict_keys_keep_their_type_under_lcb():
    tests = {"fn_name": "f", "inputs": ["1"], "outputs": ['{"1": 2}']}
    program = "def f(x):\n    return {1: 2}\n"
    assert verdicts(program, tests, "archer") == ["ok"]  # JSON turns the key into "1"
    assert verdicts(program, tests, "lcb") == ["wrong"]  # {1: 2} != {"1": 2}
    assert verdicts('def f(x):\n    return {"1": 2}\n', tests, "lcb") == ["ok"]


STDIO = {"inputs": ["3\n"], "outputs": ["6\n"]}


def test_a_program_that_ends_its_own_process_fails_under_lcb_only():
    program = "import os, sys\nn = int(input())\nprint(2 * n, flush=True)\nos._exit(0)\n"
    assert verdicts(program, STDIO, "archer") == ["ok"]
    assert verdicts(program, STDIO, "lcb") == ["wrong"]
    honest = "n = int(input())\nprint(2 * n)\n"
    assert verdicts(honest, STDIO, "lcb") == ["ok"] and verdicts(honest, STDIO, "archer") == ["ok"]
    exits = "import sys\nn = int(input())\nprint(2 * n)\nsys.exit(0)\n"  # SystemExit(0): a normal ending
    assert verdicts(exits, STDIO, "lcb") == ["ok"]


@pytest.mark.parametrize("grader", ["archer", "lcb"])
def test_cheats_the_official_grader_passes_are_still_rejected(grader):
    status_one = "n = int(input())\nprint(2 * n)\nraise SystemExit(1)\n"  # correct output, failure status
    assert verdicts(status_one, STDIO, grader) == ["error"]
    always_equal = "class E:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return E()\n"
    assert verdicts(always_equal, CALL, grader) != ["ok"]
    stack = (
        "import inspect\ndef f(x):\n"
        "    for fr in inspect.stack():\n"
        "        for v in fr.frame.f_locals.values():\n"
        "            if isinstance(v, list) and v and isinstance(v[0], list):\n"
        "                return v\n"
        "    return None\n"
    )
    assert verdicts(stack, CALL, grader) != ["ok"]


def test_lcb_comparison_is_total_on_hostile_encodings():
    assert lcb_call_result_matches(None, "[1]") is False
    assert lcb_call_result_matches("{not json", "[1]") is False
    assert lcb_call_result_matches('{"__pairs__": [[[1], 2]]}', "{}") is False  # unhashable key
    deep = "[" * 5000 + "]" * 5000
    assert lcb_call_result_matches(deep, "[]") is False
    assert lcb_call_result_matches('{"__tuple__": [1, 2]}', "[1, 2]") is True


def test_unknown_grader_is_refused():
    with pytest.raises(ValueError, match="unknown grader 'official'"):
        run_tests("print(1)", STDIO, grader="official")
