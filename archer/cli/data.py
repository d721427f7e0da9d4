"""archer data: dedup, decontaminate, filter and convert problem datasets.

    archer data dedup --in A.jsonl [B.parquet ...] --out OUT.jsonl [--n 9] [--min-shared 1] [--threshold 0.5] [--exact-only]
    archer data decontaminate --in TRAIN... --against EVAL... --out OUT [--max-doc-freq K]
    archer data filter --in TRAIN... --out OUT [--min-tests K] [--check-reference]
                       [--model DIR --n 8 --low 0.01 --high 0.99]   # pass-rate band under a model
    archer data convert --in FILE... --out OUT.parquet [--layout archer|verl]
    archer data synth-tests --model DIR --in PROBLEMS... --out OUT.jsonl [--form auto|assert|stdin]
                            [--num-tests 20] [--min-tests 5] [--n 1]   # AceCoder test synthesis

Inputs are read with archer.data.formats.load_dataset (format sniffed unless --format); an input
may also be a bundled benchmark sample by name (math500, aime24, amc23, humaneval, mbpp_sample,
livecodebench_sample, code_contests_sample). Outputs are JSONL or parquet by suffix, in archer's
layout unless --layout verl. Every command prints how many problems it kept and writes what it
dropped, and why, to --report (default OUT.removed.jsonl). Both files are written atomically. A
bad input (binary garbage, invalid or too deeply nested JSON, a lone surrogate, a LiveCodeBench row
whose tests inflate past 256 MiB) is one error line naming the file and the row, and nothing is
written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archer.curation import filters
from archer.curation.filters import DEFAULT_DEDUP_THRESHOLD, decontaminate, dedup
from archer.curation.synth_tests import synthesize
from archer.data.formats import save_problems, save_rows
from archer.data.ngram import DEFAULT_N
from archer.data.schema import Problem
from archer.eval.datasets import load_eval_sets
from archer.eval.engine import load_engine
from archer.rollout.base import SamplingParams


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in", dest="inputs", nargs="+", required=True, help="input dataset file(s)")
    p.add_argument("--out", required=True, help="output file (.jsonl or .parquet)")
    p.add_argument("--format", default="auto", help="input format (default: sniffed per file)")
    p.add_argument("--layout", default="archer", choices=["archer", "verl"], help="output layout")
    p.add_argument("--report", default=None, help="JSONL of dropped problems (default OUT.removed.jsonl)")


def _ngram_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=DEFAULT_N, help="words per n-gram")
    p.add_argument("--min-shared", type=int, default=1, help="shared n-grams that make a match")


def _dedup(args: argparse.Namespace, problems: list[Problem]) -> tuple[list[Problem], list[dict[str, Any]]]:

    return dedup(
        problems, n=args.n, min_shared=args.min_shared, near=not args.exact_only, threshold=args.threshold
    )


def _decontaminate(args: argparse.Namespace, problems: list[Problem]):

    evals = load_eval_sets(args.against)
    print(f"indexing {len(evals)} evaluation problems from {len(args.against)} file(s)")
    return decontaminate(
        problems, evals, n=args.n, min_shared=args.min_shared, max_doc_freq=args.max_doc_freq
    )


def _filter(args: argparse.Namespace, problems: list[Problem]):

    removed: list[dict[str, Any]] = []
    if args.min_tests:
        problems, r = filters.filter_min_tests(problems, args.min_tests)
        removed += r
    if args.check_reference:
        opts = {} if args.timeout is None else {"timeout": args.timeout}
        problems, r = filters.filter_reference_passes(
            problems, require_solution=args.require_solution, **opts
        )
        removed += r
    if args.model:
        from archer.eval.engine import load_engine
        from archer.eval.runner import measure_pass_rates

        engine, tokenizer = load_engine(args.model, args.device)
        rates = measure_pass_rates(
            engine,
            tokenizer,
            problems,
            n=args.samples,
            ks=[1],
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            reward_opts={} if args.timeout is None else {"timeout": args.timeout},
        )
        problems, r = filters.filter_pass_rate(problems, rates, args.low, args.high)
        removed += r
    return problems, removed


def _convert(args: argparse.Namespace, problems: list[Problem]):
    return problems, []


def _synth_tests(args: argparse.Namespace, problems: list[Problem]):
    """AceCoder test synthesis (``archer.curation.synth_tests``): a model writes tests, references filter them."""

    engine, tokenizer = load_engine(args.model, args.device)
    params = SamplingParams(
        n=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    opts = {} if args.timeout is None else {"timeout": args.timeout}
    kept, reports = synthesize(
        engine,
        tokenizer,
        problems,
        args.out,
        params=params,
        form=args.form,
        num_tests=args.num_tests,
        min_tests=args.min_tests,
        max_tests=args.max_tests,
        batch_size=args.batch_size,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        **opts,
    )
    return kept, [r for r in reports if r["status"] != "kept"]


COMMANDS: dict[str, tuple[Callable[..., Any], str]] = {
    "dedup": (_dedup, "drop exact and near-duplicate (shared word n-gram) problems"),
    "decontaminate": (_decontaminate, "drop problems overlapping evaluation sets"),
    "filter": (_filter, "min tests, reference solution passes, pass-rate band under a model"),
    "convert": (_convert, "convert between JSONL, parquet and the verl layout"),
    "synth-tests": (
        _synth_tests,
        "a model writes test cases, reference solutions keep the right ones (AceCoder)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archer data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    parsers = {name: sub.add_parser(name, help=help_) for name, (_, help_) in COMMANDS.items()}
    for p in parsers.values():
        _common(p)
    _ngram_args(parsers["dedup"])
    parsers["dedup"].add_argument("--exact-only", action="store_true", help="only exact duplicates")

    parsers["dedup"].add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_DEDUP_THRESHOLD,
        help="drop a near duplicate when at least this fraction of its distinct word n-grams occur in earlier "
        f"problems (default {DEFAULT_DEDUP_THRESHOLD}; exact duplicates are always dropped)",
    )
    dc = parsers["decontaminate"]
    _ngram_args(dc)
    dc.add_argument("--against", nargs="+", required=True, help="evaluation dataset file(s)")
    dc.add_argument(
        "--max-doc-freq",
        type=int,
        default=None,
        help="ignore eval n-grams shared by more than this many eval problems (boilerplate)",
    )
    f = parsers["filter"]
    f.add_argument("--min-tests", type=int, default=0, help="drop code problems with fewer tests")
    f.add_argument("--check-reference", action="store_true", help="reference solution must pass its tests")
    f.add_argument(
        "--require-solution", action="store_true", help="with --check-reference: drop rows without one"
    )
    f.add_argument("--timeout", type=float, default=None, help="per-test time limit (seconds)")
    f.add_argument("--model", default=None, help="HF model directory to measure pass rates with")
    f.add_argument("--samples", type=int, default=8, help="samples per problem for the pass rate")
    f.add_argument("--low", type=float, default=0.0, help="keep pass rate >= low")
    f.add_argument("--high", type=float, default=1.0, help="keep pass rate <= high")
    f.add_argument("--temperature", type=float, default=1.0)
    f.add_argument("--top-p", type=float, default=1.0)
    f.add_argument("--max-new-tokens", type=int, default=1024)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default=None)
    st = parsers["synth-tests"]
    st.add_argument("--model", required=True, help="HF model directory that writes the tests")
    st.add_argument(
        "--form", default="auto", choices=["auto", "assert", "stdin"], help="test form to ask for"
    )
    st.add_argument("--num-tests", type=int, default=20, help="tests asked for per response (AceCoder: ~20)")
    st.add_argument(
        "--min-tests", type=int, default=5, help="drop problems with fewer kept tests (AceCoder: 5)"
    )
    st.add_argument(
        "--max-tests", type=int, default=None, help="keep at most this many candidates per problem"
    )
    st.add_argument(
        "--n", dest="samples", type=int, default=1, help="responses per problem (tests are pooled)"
    )
    st.add_argument("--temperature", type=float, default=0.7)
    st.add_argument("--top-p", type=float, default=1.0)
    st.add_argument("--max-new-tokens", type=int, default=1024)
    st.add_argument("--batch-size", type=int, default=8, help="problems per generate call")
    st.add_argument("--timeout", type=float, default=None, help="per-test time limit (seconds)")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--device", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    problems = load_eval_sets(args.inputs, args.format)
    before = len(problems)
    kept, removed = COMMANDS[args.cmd][0](args, problems)
    # both files are written atomically (archer.data.formats.save_rows): a failure leaves no partial file
    save_problems(kept, args.out, layout=args.layout)
    report = Path(args.report or f"{args.out}.removed.jsonl")
    if removed:
        save_rows(removed, report)
    else:
        report.unlink(missing_ok=True)
    print(
        f"archer data {args.cmd}: kept {len(kept)} of {before} problems -> {args.out}"
        + (f"; dropped {len(removed)} (see {report})" if removed else "")
    )
    return 0
