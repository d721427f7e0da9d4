"""Decontamination speed: hashed 9-gram index vs. naive baselines, 10k -> 100k training prompts.

Claim checked: ``archer.curation.filters.decontaminate`` (64-bit hashed word 9-grams in a sorted numpy
array, see ``archer.data.ngram``) scales linearly with the number of training prompts and is faster
than (a) Python sets of string 9-gram tuples (no hashing into numpy, same linear algorithm) and
(b) pairwise set intersection of each training prompt with each evaluation problem (quadratic; timed
on a subset and extrapolated linearly in the number of training rows).

Evaluation side: every file in the shared benchmark folder (MATH-500, AIME24, AMC23, HumanEval, MBPP,
LiveCodeBench, CodeContests samples). Training side: synthetic prompts of 20-120 words drawn from the
evaluation vocabulary plus filler words; 1% carry a copied 9-to-20-word span of an evaluation problem
(must be caught), 1% an 8-word span (must not be). The script checks that all methods flag the same
rows and that recall on the planted rows is 100%.

Timing: archer and the string sets run interleaved ``--repeats`` times; a cell is the median, the
speed-up the mean of the per-repeat ratios with its 95% t-interval (the pairwise baseline runs once, on
a subset, and is extrapolated). Writes ``benchmarks/results/decontaminate.{md,json}`` (``--out``).

Run: ``python benchmarks/decontaminate.py [--sizes 10000,30000,100000] [--pairwise-subset 1000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _artifact as artifact_  # noqa: E402

from archer.curation.filters import decontaminate, problem_text  # noqa: E402
from archer.data.formats import load_dataset  # noqa: E402
from archer.data.ngram import normalize_text  # noqa: E402
from archer.data.schema import Problem  # noqa: E402

N = 9


def shared_data_dir() -> Path:
    env = os.environ.get("ARCHER_SHARED_DATA")
    for c in ([Path(env)] if env else []) + [
        Path(__file__).resolve().parents[1] / "archer" / "data" / "bundled"
    ]:
        if c.is_dir():
            return c
    raise SystemExit("shared data folder not found; set ARCHER_SHARED_DATA")


def synthetic_prompts(
    evals: list[Problem], size: int, seed: int = 0
) -> tuple[list[Problem], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    eval_words = [normalize_text(problem_text(p)).split() for p in evals]
    vocab = sorted({w for ws in eval_words for w in ws}) + [f"filler{i}" for i in range(20000)]
    vocab_arr = np.array(vocab)
    lengths = rng.integers(20, 121, size=size)
    kind = rng.random(size)  # < 0.01: 9+-word copy; < 0.02: 8-word copy; else clean
    long_evals = [i for i, ws in enumerate(eval_words) if len(ws) >= 30]
    texts = []
    for i in range(size):
        body = list(vocab_arr[rng.integers(0, len(vocab), size=lengths[i])])
        if kind[i] < 0.02:
            src = eval_words[long_evals[rng.integers(len(long_evals))]]
            span = int(rng.integers(9, 21)) if kind[i] < 0.01 else 8
            start = int(rng.integers(0, len(src) - span))
            cut = int(rng.integers(0, len(body)))
            # "filler" words around the span cannot extend it into a longer shared n-gram
            body = body[:cut] + ["fillerx"] + src[start : start + span] + ["fillery"] + body[cut:]
        texts.append(" ".join(body))
    problems = [Problem(f"syn/{i}", t, "math", answer="0") for i, t in enumerate(texts)]
    return problems, kind < 0.01, (kind >= 0.01) & (kind < 0.02)


def string_sets(problems: list[Problem], evals: list[Problem]) -> set[str]:
    """Baseline (a): Python set of 9-gram word tuples, no numpy hashing."""

    def grams(text: str) -> set[tuple[str, ...]]:
        w = normalize_text(text).split()
        if len(w) < N:
            return {tuple(w)} if w else set()
        return {tuple(w[i : i + N]) for i in range(len(w) - N + 1)}

    index: set[tuple[str, ...]] = set()
    for e in evals:
        index |= grams(problem_text(e))
    exact = {normalize_text(problem_text(e)) for e in evals}
    return {
        p.id
        for p in problems
        if normalize_text(problem_text(p)) in exact or not grams(problem_text(p)).isdisjoint(index)
    }


def pairwise(problems: list[Problem], evals: list[Problem]) -> set[str]:
    """Baseline (b): each training prompt's 9-gram set intersected with each eval problem's set."""

    def grams(text: str) -> frozenset[tuple[str, ...]]:
        w = normalize_text(text).split()
        if len(w) < N:
            return frozenset({tuple(w)}) if w else frozenset()
        return frozenset(tuple(w[i : i + N]) for i in range(len(w) - N + 1))

    eval_sets = [grams(problem_text(e)) for e in evals]
    flagged = set()
    for p in problems:
        g = grams(problem_text(p))
        if any(g & e for e in eval_sets):
            flagged.add(p.id)
    return flagged


def timed(fn, *args):
    """Wall time of one run and its result."""
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--pairwise-subset", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved runs of archer and the string sets")
    ap.add_argument("--out", default=str(artifact_.RESULTS / "decontaminate.md"))
    args = ap.parse_args(argv)
    started = artifact_.start()
    data = shared_data_dir()
    evals = [p for f in sorted(data.rglob("*.jsonl")) for p in load_dataset(f)]
    eval_words = sum(len(normalize_text(problem_text(e)).split()) for e in evals)
    print(f"evaluation side: {len(evals)} problems, {eval_words} words, from {data}")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        problems, planted, near_miss = synthetic_prompts(evals, size)
        words = sum(len(p.prompt.split()) for p in problems)
        t_ours, t_sets = [], []
        for _ in range(args.repeats):  # interleaved: a repeat's pair shares the machine's state
            t, (kept, removed) = timed(decontaminate, problems, evals)
            t_ours.append(t)
            t, sets_flagged = timed(string_sets, problems, evals)
            t_sets.append(t)
        ours = {r["id"] for r in removed}
        sub = problems[: args.pairwise_subset]
        t_pair_sub, pair_flagged = timed(pairwise, sub, evals)
        t_pair = t_pair_sub * size / len(sub)
        planted_ids = {problems[i].id for i in np.flatnonzero(planted)}
        near_ids = {problems[i].id for i in np.flatnonzero(near_miss)}
        assert ours == sets_flagged, "hashed index and string sets disagree"
        assert pair_flagged == {i for i in ours if int(i.split("/")[1]) < len(sub)}, "pairwise disagrees"
        rows.append(
            {
                "rows": size,
                "words": words,
                "archer_s": artifact_.timing(t_ours),
                "string_sets_s": artifact_.timing(t_sets),
                "pairwise_s_extrapolated": t_pair,
                "speedup_vs_sets": artifact_.ratio(t_sets, t_ours),
                "speedup_vs_pairwise": t_pair / statistics.median(t_ours),
                "flagged": len(ours),
                "planted": len(planted_ids),
                "recall": len(planted_ids & ours) / max(len(planted_ids), 1),
                "near_misses_flagged": len(near_ids & ours),
            }
        )
        print(
            f"{size}: ours {statistics.median(t_ours):.2f}s, string sets {statistics.median(t_sets):.2f}s, "
            f"pairwise ~{t_pair:.1f}s (extrapolated)"
        )
    lines = [
        "# decontaminate: hashed 9-gram index vs naive baselines\n",
        f"`{' '.join(['python benchmarks/decontaminate.py', *(sys.argv[1:] if argv is None else argv)])}` — "
        f"evaluation side: all {len(evals)} problems of the bundled benchmark files ({eval_words:,} words); "
        f"median of {args.repeats} interleaved runs for archer and the string sets (speed-up: mean of the "
        f"per-run ratios [95% t-interval]); pairwise timed once on the first {args.pairwise_subset} rows "
        "and scaled linearly.\n",
        "| training rows | words | archer (hashed numpy) s | rows/s | Python string 9-gram sets s "
        "| pairwise set intersection s (extrapolated) | speed-up vs sets | vs pairwise | flagged "
        "| planted | recall | 8-word near misses flagged |",
        "|" + " --- |" * 12,
    ]
    for r in rows:
        t_o, t_s = r["archer_s"]["median"], r["string_sets_s"]["median"]
        lines.append(
            f"| {r['rows']} | {r['words']} | {t_o:.2f} | {r['rows'] / t_o:,.0f} | {t_s:.2f} "
            f"| {r['pairwise_s_extrapolated']:.1f} | {artifact_.fmt_ci(r['speedup_vs_sets'], 1, 'x')} "
            f"| {r['speedup_vs_pairwise']:.0f}x | {r['flagged']} | {r['planted']} | {100 * r['recall']:.0f}% "
            f"| {r['near_misses_flagged']} |"
        )
    base, last = rows[0], rows[-1]
    scale = {k: last[k]["median"] / base[k]["median"] for k in ("archer_s", "string_sets_s")}
    lines += [
        "",
        f"Scaling {base['rows']} -> {last['rows']} rows ({last['rows'] / base['rows']:.0f}x): archer time "
        f"x{scale['archer_s']:.1f}, string sets x{scale['string_sets_s']:.1f}.",
        "",
        "The script checks in the same run that the hashed index, the string sets and the pairwise baseline "
        "flag the same rows, that every planted 9-to-20-word copy is caught and no planted 8-word copy is.",
    ]
    settings = {"sizes": args.sizes, "pairwise_subset": args.pairwise_subset, "repeats": args.repeats}
    artifact_.publish(
        "decontaminate",
        lines,
        {"settings": settings, "rows": rows, "scaling": scale},
        out=args.out,
        argv=argv,
        started=started,
        extra=f", numpy {np.__version__}",
    )


if __name__ == "__main__":
    main()
