"""Code rewards: extract the program from a response, run it against its tests in the sandbox, score.

Test formats (``Problem.tests``):

- stdin/stdout ``{"inputs": [str], "outputs": [str]}``: each input is fed on stdin; stdout is
  compared with LiveCodeBench's rule (``archer.rewards.compare``).
- call-based ``{"inputs", "outputs", "fn_name"}`` (LiveCodeBench functional): each input holds the
  JSON arguments one per line, each output the JSON return value; the function is
  ``Solution().<fn_name>`` or a top-level ``<fn_name>``.
- assert-style ``{"assert": str | [str], "entry_point": optional, "setup": optional}`` (HumanEval
  ``check(candidate)``, MBPP assert lists); a list is one test per element. The tests run against
  the real builtins; only the entry point (without one: the single function the tests use and do
  not define) comes from the program. ``setup`` is trusted code run before the tests, for helpers the
  tests use besides the entry point (HumanEval's ``poly``, ``encode_cyclic``: the prompt). Through
  :func:`score_code_problems`, a HumanEval-style problem whose prompt is Python code defining the
  entry point and a helper the tests use gets its prompt as ``setup`` (:func:`archer.data.schema.with_prompt_setup`)
  when the tests name none.

Expected outputs stay in this (the trainer's) process: the sandbox sends back stdout or serialised
return values and this module compares; assert tests are judged in a process the program can't
touch (``sandbox_harness``). Rewards (``reward_mode``): ``hard`` = 1 if every test passes
(DeepCoder, Archer), ``soft`` = fraction passed, ``soft_pm1`` = mean of +1/-1 per test (Klear).
During training the number of tests per problem can be capped by a seeded random sample
(``max_tests``, as the Archer recipes do) and a whole problem gets a time ``budget``.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from archer.data.schema import with_prompt_setup
from archer.rewards.compare import call_result_matches, lcb_call_result_matches, stdout_matches
from archer.rewards.types import RewardResult, TestReport
from archer.sandbox.pool import SandboxPool, default_pool
from archer.sandbox.zygote.harness import FINISHED_MARK

VERDICTS = ("ok", "wrong", "timeout", "error", "memory", "output_limit", "skipped", "sandbox_error")
# a response's outcome: the worst verdict among its tests; a response with no code block: no_code
_OUTCOME_ORDER = ("sandbox_error", "memory", "timeout", "error", "output_limit", "wrong")
CODE_OUTCOMES = ("pass", *_OUTCOME_ORDER, "no_code")
_NO_CODE_REASON = "no fenced python code block after </think>"
_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


def extract_code(response: str) -> str | None:
    """The last fenced python block (```python, ```py or bare ```) after ``</think>``.

    None when the response has ``<think>`` without its close (the model never finished thinking) or
    no fenced block. A block tagged with another language is ignored.
    """
    if not isinstance(response, str):
        return None
    if "</think>" in response:
        response = response.rsplit("</think>", 1)[1]
    elif "<think>" in response:
        return None
    blocks = [m.group(2) for m in _FENCE.finditer(response)]
    return blocks[-1] if blocks else None


# --------------------------------------------------------------------------- tests


def _test_plan(tests: dict[str, Any]) -> dict[str, Any]:
    """Validate a tests dict -> {"mode", "n", ...}; raises ValueError naming the problem."""
    if not isinstance(tests, dict):
        raise ValueError(f"tests must be a dict, got {type(tests).__name__}")
    if "assert" in tests:
        code = tests["assert"]
        asserts = [code] if isinstance(code, str) else list(code)
        if not all(isinstance(a, str) for a in asserts):
            raise ValueError("tests['assert'] must be a string or a list of strings")
        setup = tests.get("setup") or ""
        if not isinstance(setup, str):
            raise ValueError("tests['setup'] must be a string")
        return {
            "mode": "assert",
            "n": len(asserts),
            "asserts": asserts,
            "entry_point": tests.get("entry_point"),
            "setup": setup,
        }
    if "inputs" in tests and "outputs" in tests:
        inputs, outputs = list(tests["inputs"]), list(tests["outputs"])
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} test inputs but {len(outputs)} outputs")
        # non-string inputs (APPS/TACO call-based) are argument lists: one JSON argument per line
        inputs = [
            x if isinstance(x, str) else "\n".join(json.dumps(a) for a in (x if isinstance(x, list) else [x]))
            for x in inputs
        ]
        fn = tests.get("fn_name")
        return {
            "mode": "call" if fn else "stdin",
            "n": len(inputs),
            "inputs": inputs,
            "outputs": outputs,
            "fn_name": fn,
        }
    raise ValueError(
        f"unrecognised tests dict with keys {sorted(tests)}; expected 'assert' or 'inputs'+'outputs'"
    )


def _subsample(plan: dict[str, Any], max_tests: int | None, rng: random.Random) -> list[int]:
    idx = list(range(plan["n"]))
    if max_tests is not None and plan["n"] > max_tests:
        idx = sorted(rng.sample(idx, max_tests))
    return idx


# ``grader``: how an honest program's output is judged. "archer" (default): LiveCodeBench's comparison
# rules, on what the program printed or returned, whatever way it ended with status 0. "lcb": also
# the official grader's quirks, so that numbers compare with published LiveCodeBench tables: a call's
# return value is compared with its exact types (a nested tuple is not a list, int dict keys are not
# strings), and a stdin program that ends its own process (os._exit) fails, since the official grader
# runs it in-process and loses the result. Cheat resistance is the same in both (exit status, plain
# data only, nothing of the expected output reaches the program).
GRADERS = ("archer", "lcb")


class _Collector:
    """Turns sandbox events of one program into verdicts; decides whether to go on."""

    def __init__(
        self, plan: dict[str, Any], idx: list[int], stop_on_failure: bool, grader: str = "archer"
    ) -> None:
        self.plan, self.idx, self.stop, self.grader = plan, idx, stop_on_failure, grader
        self.verdicts: list[str] = ["skipped"] * len(idx)
        self.details: list[str] = []

    def __call__(self, event: dict[str, Any]) -> bool:
        i = event.get("i")
        if not isinstance(i, int) or not 0 <= i < len(self.idx):
            return False
        status = event.get("status")
        status = status if status in VERDICTS and status != "skipped" else "error"
        mode = self.plan["mode"]
        try:  # the comparisons are total; this guards the trainer against any other surprise
            want = self.plan["outputs"][self.idx[i]] if mode != "assert" else None
            if status == "ok" and mode == "stdin":
                got = event.get("stdout", "")
                ok = isinstance(got, str) and stdout_matches(got, str(want))
                if self.grader == "lcb" and not str(event.get("stderr", "")).endswith(FINISHED_MARK):
                    ok = False  # the program ended its own process: the official grader loses its output
                status = "ok" if ok else "wrong"
            elif status == "ok" and mode == "call":
                if self.grader == "lcb":
                    ok = lcb_call_result_matches(event.get("exact"), want)
                else:
                    ok = call_result_matches(event.get("result"), want)
                status = "ok" if ok else "wrong"
        except Exception:
            status = "wrong"
        self.verdicts[i] = status
        if status != "ok" and len(self.details) < 3:
            detail = event.get("detail") or str(event.get("stderr") or "").replace(FINISHED_MARK, "")
            self.details.append(f"test {self.idx[i]}: {status}: {str(detail)[-300:]}")
        return not (self.stop and status != "ok")

    def report(self, info: dict[str, Any]) -> TestReport:
        passed = sum(v == "ok" for v in self.verdicts)
        if self.details:
            info["failures"] = self.details
        return TestReport(passed=passed, total=len(self.verdicts), verdicts=list(self.verdicts), info=info)


def run_tests_batch(
    items: Sequence[tuple[str, dict[str, Any]]],
    timeout: float = 6.0,
    memory_mb: int = 1024,
    stop_on_failure: bool = False,
    *,
    max_tests: int | None = None,
    seed: int = 0,
    budget: float | None = None,
    max_output_bytes: int = 1 << 22,
    pool: SandboxPool | None = None,
    grader: str = "archer",
) -> list[TestReport]:
    """Run ``program`` against ``tests`` for every ``(program, tests)`` item, in parallel.

    ``timeout`` is per test (seconds of wall clock), ``memory_mb`` the address-space limit,
    ``max_tests`` a cap on tests per program (a seeded random subset), ``budget`` the most seconds
    one program may use in all, ``grader`` one of :data:`GRADERS`. Bad tests or a failed sandbox give
    a report with ``info["reason"]``.
    """
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout and memory_mb must be > 0, got {timeout}, {memory_mb}")
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; known: {list(GRADERS)}")
    rng = random.Random(seed)
    reports: list[TestReport | None] = [None] * len(items)
    jobs, owners, collectors = [], [], []
    for k, (program, tests) in enumerate(items):
        try:
            plan = _test_plan(tests)
        except (ValueError, TypeError) as exc:
            reports[k] = TestReport(0, 0, [], {"reason": f"bad tests: {exc}"})
            continue
        idx = _subsample(plan, max_tests, rng)
        if not idx:
            reports[k] = TestReport(0, 0, [], {"reason": "no tests"})
            continue
        if not isinstance(program, str):
            reports[k] = TestReport(0, len(idx), ["error"] * len(idx), {"reason": "no program"})
            continue
        collector = _Collector(plan, idx, stop_on_failure, grader)
        req: dict[str, Any] = {
            "mode": plan["mode"],
            "program": program,
            "timeout": float(timeout),
            "memory_mb": int(memory_mb),
            "max_output": int(max_output_bytes),
            "budget": float(budget) if budget else None,
        }
        part_b = None
        if plan["mode"] == "assert":
            req.update(n_tests=len(idx), entry_point=plan["entry_point"], setup=plan["setup"])
            part_b = json.dumps([plan["asserts"][i] for i in idx]).encode()
        else:
            req["inputs"] = [plan["inputs"][i] for i in idx]
            if plan["mode"] == "call":
                req["fn_name"] = plan["fn_name"]
        jobs.append((req, part_b, collector))
        owners.append(k)
        collectors.append(collector)
    if jobs:
        start = time.monotonic()
        errors = (pool or default_pool()).run(jobs)
        elapsed = time.monotonic() - start
        for k, collector, error in zip(owners, collectors, errors):
            info: dict[str, Any] = {
                "mode": collector.plan["mode"],
                "tests": collector.idx,
                "batch_seconds": round(elapsed, 3),
            }
            if error is not None:
                info["reason"] = f"sandbox error: {error}"
                collector.verdicts = [v if v != "skipped" else "sandbox_error" for v in collector.verdicts]
            reports[k] = collector.report(info)
    return reports  # type: ignore[return-value]


def run_tests(
    program: str,
    tests: dict[str, Any],
    timeout: float = 6.0,
    memory_mb: int = 1024,
    stop_on_failure: bool = False,
    **opts: Any,
) -> TestReport:
    """One program against its tests; see :func:`run_tests_batch` for the options."""
    return run_tests_batch([(program, tests)], timeout, memory_mb, stop_on_failure, **opts)[0]


# ------------------------------------------------------------------------- rewards


def _hard(report: TestReport) -> float:
    return 1.0 if report.all_passed else 0.0


def _soft(report: TestReport) -> float:
    return report.fraction


def _soft_pm1(report: TestReport) -> float:
    if not report.total:
        return -1.0
    return (2 * report.passed - report.total) / report.total


REWARD_MODES: dict[str, Callable[[TestReport], float]] = {"hard": _hard, "soft": _soft, "soft_pm1": _soft_pm1}


def _reward_fn(reward_mode: str) -> Callable[[TestReport], float]:
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"unknown reward_mode {reward_mode!r}; known: {sorted(REWARD_MODES)}")
    return REWARD_MODES[reward_mode]


def score_code_batch(
    responses: Sequence[str],
    tests: Sequence[dict[str, Any] | None],
    *,
    reward_mode: str = "hard",
    stop_on_failure: bool | None = None,
    **opts: Any,
) -> list[RewardResult]:
    """Score ``responses[i]`` against ``tests[i]`` in one sandbox batch.

    ``stop_on_failure`` defaults to True for ``hard`` rewards (the first failure decides) and False
    for the soft ones. Other options go to :func:`run_tests_batch`.
    """
    reward = _reward_fn(reward_mode)
    stop = reward_mode == "hard" if stop_on_failure is None else stop_on_failure
    programs = [extract_code(r) for r in responses]
    todo = [k for k, p in enumerate(programs) if p is not None and tests[k] is not None]
    reports = (
        run_tests_batch([(programs[k], tests[k]) for k in todo], stop_on_failure=stop, **opts) if todo else []
    )
    by_k = dict(zip(todo, reports))
    fail = _reward_fn(reward_mode)(TestReport(0, 1, ["error"]))
    out = []
    for k, program in enumerate(programs):
        if program is None:
            out.append(RewardResult(fail, False, {"reason": _NO_CODE_REASON}))
            continue
        if tests[k] is None:
            out.append(RewardResult(fail, False, {"reason": "problem has no tests"}))
            continue
        rep = by_k[k]
        info = {"passed": rep.passed, "total": rep.total, "verdicts": rep.verdicts, **rep.info}
        if not rep.all_passed and "reason" not in info:
            info["reason"] = "tests failed" if rep.total else "no tests"
        out.append(RewardResult(reward(rep) if rep.total else fail, rep.all_passed, info))
    return out


def score_code(
    response: str, tests: dict[str, Any], *, reward_mode: str = "hard", **opts: Any
) -> RewardResult:
    """Reward of one response: extract the code, run the tests, apply ``reward_mode``."""
    return score_code_batch([response], [tests], reward_mode=reward_mode, **opts)[0]


def score_code_problems(
    responses: Sequence[str],
    problems: Sequence[Any],
    *,
    reward_mode: str = "hard",
    timeout: float = 6.0,
    memory_mb: int = 1024,
    stop_on_failure: bool | None = None,
    max_tests: int | None = None,
    seed: int = 0,
    budget: float | None = None,
    max_output_bytes: int = 1 << 22,
    pool: SandboxPool | None = None,
    grader: str = "archer",
) -> list[RewardResult]:
    """Registry entry point (kind ``"code"``): problems are :class:`archer.data.schema.Problem`;
    ``grader`` is one of :data:`GRADERS` (``lcb``: the official LiveCodeBench grader's semantics)."""
    tests = [with_prompt_setup(getattr(p, "tests", None), getattr(p, "prompt", None)) for p in problems]
    return score_code_batch(
        responses,
        tests,
        reward_mode=reward_mode,
        timeout=timeout,
        memory_mb=memory_mb,
        stop_on_failure=stop_on_failure,
        max_tests=max_tests,
        seed=seed,
        budget=budget,
        max_output_bytes=max_output_bytes,
        pool=pool,
        grader=grader,
    )


def is_code_info(info: dict[str, Any]) -> bool:
    """True for the ``RewardResult.info`` of a code response (it ran tests, or had no code block)."""
    return "total" in info or str(info.get("reason", "")).startswith("no fenced")


def code_outcome(info: dict[str, Any]) -> str:
    """One of :data:`CODE_OUTCOMES` for a code response's reward info: ``no_code``, the worst verdict
    among its tests (``sandbox_error`` > ``memory`` > ``timeout`` > ``error`` > ``output_limit`` >
    ``wrong``), or ``pass`` when every test passed."""
    if str(info.get("reason", "")).startswith("no fenced"):
        return "no_code"
    verdicts = set(info.get("verdicts") or [])
    for name in _OUTCOME_ORDER:
        if name in verdicts:
            return name
    return "pass" if info.get("total") and info.get("passed") == info.get("total") else "wrong"


def code_step_metrics(infos: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``code/*`` metrics over a step's reward infos (empty for math): mean fraction of tests passed and
    the outcome mix (pass, wrong, timeout, error, memory, no_code, ...) as fractions of code responses."""
    infos = [i for i in infos if is_code_info(i)]
    if not infos:
        return {}
    fracs = [i["passed"] / i["total"] if i.get("total") else 0.0 for i in infos]
    mix = Counter(code_outcome(i) for i in infos)
    out = {"code/tests_passed_frac": sum(fracs) / len(fracs)}
    out.update({f"code/outcome_{k}": mix[k] / len(infos) for k in CODE_OUTCOMES})
    return out
