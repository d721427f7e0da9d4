"""Sandbox throughput: programs per second, archer's zygote pool vs one fresh interpreter per run.

Workloads (from the bundled samples, ``archer/data/bundled/code``):

- HumanEval: the 164 canonical solutions and their ``return None`` variants (assert-style, one
  ``check(candidate)`` test each);
- CodeContests sample: for each of the 19 problems a trivially correct program (a lookup table of the
  problem's own cases) and a wrong one (prints a constant), on the first ``--cc-tests`` cases, stopping
  at the first failure as for a hard reward.

Baseline ("naive"): a fresh ``python3`` interpreter per program (per test for stdin problems, since
stdin is per run), program and test code in one process, no isolation, the same number of parallel
runs, the same timeout. Verdicts of both runners must be identical; the script asserts it.

Usage: ``python benchmarks/sandbox_throughput.py [--workers N] [--repeats R] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from archer.rewards.code import run_tests_batch, with_prompt_setup  # noqa: E402
from archer.rewards.compare import stdout_matches  # noqa: E402
from archer.sandbox.pool import LAYERS, SandboxConfig, SandboxPool  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import _artifact as artifact_  # noqa: E402

DATA = Path(os.environ.get("ARCHER_SHARED_DATA", REPO / "archer" / "data" / "bundled")) / "code"


def load_workloads(cc_tests: int) -> dict[str, list[tuple[str, dict]]]:
    rows = [json.loads(line) for line in open(DATA / "humaneval.jsonl")]
    he = []
    for r in rows:
        # the prompt as trusted setup where the test uses its helpers (HumanEval/32, 38, 50), as
        # score_code_problems does
        tests = with_prompt_setup(
            {"assert": f"{r['test']}\n\ncheck({r['entry_point']})\n", "entry_point": r["entry_point"]},
            r["prompt"],
        )
        he.append((r["prompt"] + r["canonical_solution"], tests))
        he.append((r["prompt"] + "    return None\n", tests))
    cc = []
    for line in open(DATA / "code_contests_sample.jsonl"):
        cases = json.loads(json.loads(line)["test"])[:cc_tests]
        tests = {
            "inputs": [c["input"]["stdin"] for c in cases],
            "outputs": [c["output"]["stdout"] for c in cases],
        }
        table = {c["input"]["stdin"]: c["output"]["stdout"] for c in cases}
        cc.append((f"import sys\nsys.stdout.write({table!r}[sys.stdin.read()])\n", tests))
        cc.append(("print(-123456789)\n", tests))
    return {"HumanEval (assert)": he, "CodeContests (stdin)": cc}


# ------------------------------------------------------------------------ naive runner


def _naive_one(program: str, tests: dict, timeout: float, flags: tuple[str, ...] = ()) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "main.py")
        if "assert" in tests:
            with open(path, "w") as f:
                f.write(program + "\n\n" + tests["assert"])
            try:
                proc = subprocess.run(
                    [sys.executable, *flags, path], capture_output=True, timeout=timeout, cwd=tmp
                )
            except subprocess.TimeoutExpired:
                return ["timeout"]
            if proc.returncode == 0:
                return ["ok"]
            return ["wrong" if b"AssertionError" in proc.stderr.splitlines()[-1:][0] else "error"]
        with open(path, "w") as f:
            f.write(program)
        verdicts = []
        for inp, out in zip(tests["inputs"], tests["outputs"]):
            try:
                proc = subprocess.run(
                    [sys.executable, *flags, path],
                    input=inp.encode(),
                    capture_output=True,
                    timeout=timeout,
                    cwd=tmp,
                )
                if proc.returncode != 0:
                    v = "error"
                else:
                    v = "ok" if stdout_matches(proc.stdout.decode(errors="replace"), out) else "wrong"
            except subprocess.TimeoutExpired:
                v = "timeout"
            verdicts.append(v)
            if v != "ok":
                break
        return verdicts + ["skipped"] * (len(tests["inputs"]) - len(verdicts))


def run_naive(items, workers: int, timeout: float, flags: tuple[str, ...] = ()) -> list[list[str]]:
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda it: _naive_one(it[0], it[1], timeout, flags), items))


def run_archer(items, pool: SandboxPool, timeout: float) -> list[list[str]]:
    return [r.verdicts for r in run_tests_batch(items, timeout=timeout, stop_on_failure=True, pool=pool)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per runner (best is reported)")
    ap.add_argument("--cc-tests", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sandbox_throughput.md"))
    args = ap.parse_args(argv)

    started = artifact_.start()
    workloads = load_workloads(args.cc_tests)
    pool = SandboxPool(SandboxConfig(workers=args.workers))
    iso = pool.isolation
    rows = []
    try:
        for name, items in workloads.items():
            run_archer(items[:4], pool, args.timeout)  # warm the zygotes
            runners = {
                "naive": lambda items=items: run_naive(items, args.workers, args.timeout),
                "naive_S": lambda items=items: run_naive(items, args.workers, args.timeout, ("-I", "-S")),
                "archer": lambda items=items: run_archer(items, pool, args.timeout),
            }
            times: dict[str, list[float]] = {k: [] for k in runners}
            verdicts = {}
            for _ in range(args.repeats):  # interleaved, so load from other processes hits all alike
                for runner, fn in runners.items():
                    start = time.perf_counter()
                    verdicts[runner] = fn()
                    times[runner].append(time.perf_counter() - start)
            for base in ("naive", "naive_S"):
                diff = [k for k, (a, b) in enumerate(zip(verdicts[base], verdicts["archer"])) if a != b]
                assert not diff, f"{name}: {base} and archer verdicts differ at programs {diff[:10]}: " + str(
                    [(verdicts[base][k], verdicts["archer"][k]) for k in diff[:5]]
                )
            runs = sum(sum(v != "skipped" for v in vs) for vs in verdicts["archer"])
            n_ok = sum(all(v == "ok" for v in vs) for vs in verdicts["archer"])
            rates = {k: [len(items) / t for t in ts] for k, ts in times.items()}
            rows.append((name, len(items), runs, n_ok, rates, True))
    finally:
        pool.close()

    head = (
        "| workload | programs | test runs | programs passing | naive prog/s | naive `-I -S` prog/s "
        "| archer prog/s | speed-up vs naive | vs naive `-I -S` | identical verdicts |"
    )
    lines = [head, "|" + " --- |" * 10]
    artifact = []
    for name, n, runs, ok, r, same in rows:
        med = {k: statistics.median(v) for k, v in r.items()}
        vs_naive, vs_s = artifact_.ratio(r["archer"], r["naive"]), artifact_.ratio(r["archer"], r["naive_S"])
        lines.append(
            f"| {name} | {n} | {runs} | {ok} | {med['naive']:.1f} | {med['naive_S']:.1f} | {med['archer']:.1f} "
            f"| {artifact_.fmt_ci(vs_naive, 1, 'x')} | {artifact_.fmt_ci(vs_s, 1, 'x')} | {same} |"
        )
        artifact.append(
            {
                "workload": name,
                "programs": n,
                "test_runs": runs,
                "programs_passing": ok,
                "identical_verdicts": same,
                "programs_per_s": {k: artifact_.timing(v) for k, v in r.items()},
                "speedup_vs_naive": vs_naive,
                "speedup_vs_naive_I_S": vs_s,
            }
        )
    layers = ", ".join(k for k in LAYERS if iso[k]) or "none"
    load = os.getloadavg()
    note = (
        f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{args.workers} parallel runs per runner, median of {args.repeats} interleaved passes (speed-ups: "
        f"mean of the per-pass ratios, 95% t-interval); "
        f"archer isolation: launcher {iso['launcher']}, layers: {layers}. Naive = one fresh "
        f"`{Path(sys.executable).name}` per program (per test for stdin), no isolation; `-I -S` skips "
        f"site-packages (the fastest fresh interpreter). "
        f"Load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (the runners' own parallel "
        f"runs count {args.workers} of it).\n"
    )
    table = "\n".join(lines) + "\n" + note
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# sandbox_throughput\n\n`python benchmarks/sandbox_throughput.py`\n\n" + table)
    settings = {"workers": args.workers, "repeats": args.repeats, "cc_tests": args.cc_tests, "isolation": iso}
    out = Path(args.out).with_suffix(".json")
    print(
        artifact_.write_artifact(
            "sandbox_throughput",
            {"settings": settings, "rows": artifact},
            argv=argv,
            started=started,
            out=out,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
