"""Throughput of archer's math verifier against calling math-verify directly, with hostile inputs mixed in.

Claim: ``score_math_batch`` on a 2-worker pool judges MATH-500 faster than the way peers call
math-verify (sequential ``parse`` + ``verify`` in the trainer process, e.g. open-r1's accuracy
reward), and never stalls on inputs that hang math-verify.

Workloads (MATH-500 from the bundled samples, ``archer/data/bundled``; a response is the reference ``solution``):
  * ``matched``: solution i vs answer i (what the task asks; most pairs are string-equal after
    normalisation, so archer answers them without sympy);
  * ``shifted``: solution i vs answer i+1 (almost all unequal: every pair goes through the full
    parse/verify path on both sides, so this measures the pool itself);
each with 1% hostile responses mixed in (integer towers / huge factorials such as
``\\boxed{9^{9^{9^{9}}}}``); ``shifted-clean`` is ``shifted`` without them (raw parallel speed); ``grpo-clean``: 64 prompts x 8
responses (solutions of problems i..i+7 against answer i), a GRPO-shaped batch where each gold is
shared by 8 responses (archer parses it once per job, peers once per response).

Methods:
  * ``mv-main``: math-verify in-process on the main thread with its own SIGALRM timeouts (5 s);
  * ``mv-thread``: the same from a worker thread, as a trainer's reward thread would call it:
    math-verify refuses to run there with timeouts on, so they are off (``None``); run in a
    subprocess under a wall-clock cap, and reported as stalled when it hits the cap;
  * ``archer``: ``score_math_batch`` on a fresh ``MathVerifierPool(n_workers=2, timeout=5)`` per
    workload (workers up, caches cold; the start-up time is printed separately).

Run: ``python benchmarks/math_verify_throughput.py [--repeats 3] [--cap 600] [--thread-cap 60] [--out F.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOSTILE = ["9^{9^{9^{9}}}", "10^{10^{9}}", "2^{2^{40}}", "9^{9^{9}}", "(10^{8})!"]


def _shared_math() -> Path:
    env = os.environ.get("ARCHER_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO / "archer" / "data" / "bundled"]:
        if (cand / "math" / "math500.jsonl").is_file():
            return cand / "math"
    raise SystemExit("math/math500.jsonl not found in archer/data/bundled (or set ARCHER_SHARED_DATA)")


def workload(name: str) -> tuple[list[str], list[str]]:
    """(responses, golds): 500 MATH-500 pairs with a hostile response every 100 items (1%)."""
    rows = [json.loads(line) for line in (_shared_math() / "math500.jsonl").read_text().splitlines() if line]
    if name == "grpo-clean":  # 64 prompts x 8 sampled responses (solutions of problems i..i+7)
        pairs = [
            (rows[(i + k) % len(rows)]["solution"], rows[i]["answer"]) for i in range(64) for k in range(8)
        ]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    shift = {"matched": 0, "shifted": 1, "shifted-clean": 1}[name]
    responses, golds = [], []
    for i, row in enumerate(rows):
        if i % 100 == 50 and not name.endswith("clean"):
            responses.append(
                f"Multiplying out, the answer is $\\boxed{{{HOSTILE[(i // 100) % len(HOSTILE)]}}}$."
            )
            golds.append(rows[i]["answer"])
        responses.append(row["solution"])
        golds.append(rows[(i + shift) % len(rows)]["answer"])
    return responses, golds


def run_math_verify(name: str, threaded: bool) -> None:
    """Child process: judge the workload with math-verify directly; prints progress lines and a result."""
    import logging
    import threading

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    responses, golds = workload(name)
    # on the main thread peers keep math-verify's 5 s SIGALRM timeouts; off it they must disable them
    kw_parse = {"parsing_timeout": None} if threaded else {}
    kw_verify = {"timeout_seconds": None} if threaded else {}

    # warm the LaTeX parser as archer's workers do before they report ready (not timed on either side)
    verify(parse("$\\frac{1}{2}$"), parse("$\\sqrt{x}+1$"))

    def work() -> None:
        start, correct = time.perf_counter(), 0
        for i, (resp, gold) in enumerate(zip(responses, golds)):
            try:
                ok = verify(parse(f"${gold}$", **kw_parse), parse(resp, **kw_parse), **kw_verify)
            except Exception:  # noqa: BLE001 - peers count an exception as wrong
                ok = False
            correct += bool(ok)
            print(json.dumps({"done": i + 1, "elapsed": time.perf_counter() - start}), flush=True)
        print(
            json.dumps(
                {
                    "result": True,
                    "n": len(responses),
                    "correct": correct,
                    "elapsed": time.perf_counter() - start,
                }
            ),
            flush=True,
        )

    if threaded:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    else:
        work()


def baseline(name: str, threaded: bool, cap: float) -> dict:
    cmd = [sys.executable, __file__, "--child", name] + (["--threaded"] if threaded else [])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out, _ = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    final = next((x for x in lines if x.get("result")), None)
    if final is not None:
        return {"n": final["n"], "correct": final["correct"], "elapsed": final["elapsed"], "stalled": False}
    done = max((x["done"] for x in lines), default=0)
    return {"n": done, "correct": None, "elapsed": time.perf_counter() - start, "stalled": True}


def run_archer(name: str, pool) -> dict:
    from archer.rewards.math.score import score_math_batch

    responses, golds = workload(name)
    start = time.perf_counter()
    results = score_math_batch(responses, golds, pool=pool, timeout=5.0)
    elapsed = time.perf_counter() - start
    return {
        "n": len(results),
        "correct": sum(r.correct for r in results),
        "elapsed": elapsed,
        "stalled": False,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=float, default=600.0, help="wall-clock cap of a mv-main run (s)")
    ap.add_argument("--thread-cap", type=float, default=60.0, help="wall-clock cap of a mv-thread run (s)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "math_verify_throughput.md"))
    ap.add_argument("--repeats", type=int, default=3, help="runs of archer and mv-main; the median is shown")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--threaded", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_math_verify(args.child, args.threaded)
        return 0

    from archer.rewards.math.score import MathVerifierPool

    sys.path.insert(0, str(REPO / "benchmarks"))
    import _artifact as artifact_  # the parent only: the timed children stay free of it

    started = artifact_.start()
    rows, startups, artifact = [], [], []
    for name in ("matched", "shifted", "shifted-clean", "grpo-clean"):
        ours_runs, main_runs = [], []
        for _ in range(args.repeats):  # the cores are shared: the median of a few runs, interleaved
            t0 = time.perf_counter()
            with MathVerifierPool(n_workers=2, timeout=5.0) as pool:  # fresh pool: cold caches
                pool.judge("1", "1")  # wait for the workers to be up
                startups.append(time.perf_counter() - t0)
                ours_runs.append(run_archer(name, pool))
            main_runs.append(baseline(name, threaded=False, cap=args.cap))
        ours, main_thread = _median_run(ours_runs), _median_run(main_runs)
        total = len(workload(name)[0])
        runs = [("mv-main (5 s SIGALRM)", main_thread), ("archer pool x2", ours)]
        if not name.endswith("clean"):
            runs.insert(1, ("mv-thread (no timeout)", baseline(name, threaded=True, cap=args.thread_cap)))
        base_rate = main_thread["n"] / max(main_thread["elapsed"], 1e-9)
        rates = {
            label: [r["n"] / max(r["elapsed"], 1e-9) for r in rs]
            for label, rs in (("archer", ours_runs), ("mv_main", main_runs))
        }
        artifact.append(
            {
                "workload": name,
                "items": total,
                "correct": {"archer": ours["correct"], "mv_main": main_thread["correct"]},
                "stalled": {"archer": ours["stalled"], "mv_main": main_thread["stalled"]},
                "judgements_per_s": {k: artifact_.timing(v) for k, v in rates.items()},
                "speedup_vs_mv_main": artifact_.ratio(rates["archer"], rates["mv_main"]),
            }
        )
        for method, r in runs:
            rate = r["n"] / r["elapsed"] if r["elapsed"] > 0 else float("nan")
            rows.append((name, method, r, total, rate, rate / base_rate))
            if method.startswith("mv-thread"):
                artifact[-1]["mv_thread"] = r
    startup = sum(startups) / len(startups)

    header = "| workload | method | judged | correct | wall s | judgements/s | vs mv-main |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name, method, r, total, rate, speedup in rows:
        judged = f"{r['n']}/{total}" + (" STALLED (cap)" if r["stalled"] else "")
        correct = "-" if r["correct"] is None else str(r["correct"])
        if method.startswith("archer"):  # the interval of the per-repeat speed-ups
            ci = next(a for a in artifact if a["workload"] == name)["speedup_vs_mv_main"]
            shown = artifact_.fmt_ci(ci, 2, "x")
        else:
            shown = f"{speedup:.2f}x"
        lines.append(
            f"| {name} | {method} | {judged} | {correct} | {r['elapsed']:.1f} | {rate:.1f} | {shown} |"
        )
    table = "\n".join(lines)
    cpu = os.cpu_count()
    note = (
        f"Machine: {cpu} CPU cores, Python {sys.version.split()[0]}, math-verify "
        f"{_version('math-verify')}, sympy {_version('sympy')}; load average {started['load_start']} at the "
        f"start, {artifact_.environment()['load_end']} at the end. "
        f"archer: a fresh pool per workload (cold caches); its start-up (2 workers, imports, mean "
        f"{startup:.1f} s) is not counted above. Each baseline run is a fresh process. Wall times are "
        f"the median of {args.repeats} interleaved runs (mv-thread: one run); archer's speed-up is the mean "
        f"of the per-run ratios with its 95% t-interval. "
        f"Baseline caps: mv-main {args.cap:.0f} s, mv-thread {args.thread_cap:.0f} s per run."
    )
    note += (
        "\n\nReading it: in `matched` every reference boxed answer equals its `answer` string after"
        " normalisation, so archer never calls sympy there (math-verify parses all of them); in"
        " `shifted`/`matched` mv-main pays its 5 s alarm on each of the 5 hostile items (~25 s),"
        " archer refuses them statically (`too_large`; the pool's kill-on-timeout is the backstop);"
        " mv-thread (timeouts off, as math-verify requires off the main thread) never returns from the"
        " first hostile item (item 51) and is killed at the cap. `*-clean` rows measure the pool and the"
        " sympy-free number paths alone. `correct` agrees between methods on every workload."
    )
    print(table)
    print(note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# math_verify_throughput\n\n`python benchmarks/math_verify_throughput.py`\n\n"
        + table
        + "\n\n"
        + note
        + "\n"
    )
    settings = {"repeats": args.repeats, "cap": args.cap, "thread_cap": args.thread_cap, "startup_s": startup}
    artifact_.write_artifact(
        "math_verify_throughput",
        {"settings": settings, "rows": artifact},
        started=started,
        out=out.with_suffix(".json"),
    )
    return 0


def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["elapsed"])[len(runs) // 2]


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
