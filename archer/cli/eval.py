"""archer eval: generate, score, or both; and archer eval watch RUN_DIR.

    archer eval --model DIR --data FILE [FILE ...] [--n 8] [--k 1,8] [--out DIR]   # both phases
    archer eval generate --model DIR --data FILE --out DIR ...                     # GPU machine
    archer eval score --out DIR [--data FILE] [--k 1,8] [--rm RM_DIR]             # any CPU machine
    archer eval watch RUN_DIR --data FILE [--phase all|generate|score] [--once]

--data takes files (jsonl, json, parquet), the names of the bundled benchmark samples (math500,
aime24, amc23, humaneval, mbpp_sample, livecodebench_sample, code_contests_sample) or synthetic_math /
synthetic_code (the CPU demos' held-out problems). A progress line with the ETA (and, for the combined
run, the running accuracy) goes to stderr. Accuracies are fractions in [0, 1], as in summary.json.

--model may be a training run's folder: its latest complete checkpoint is evaluated. --max-new-tokens
defaults to 4096 capped at the model's positions minus the longest prompt (a given value that does not
fit is an error). --verbose shows every message of vLLM and transformers.

--rm RM_DIR (run, score) adds best-of-n selection by a reward model (archer rm train) to the
summary (rm_best_of_n: accuracy of the top-scored response, beside avg@1 and pass@n) and writes the
picks to OUT/rm_best_of_n.jsonl.

score reads the data and n from OUT/config.json when --data is not given, so it needs only the output
directory (and the data file at the same path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from archer.atomic_json import write_json
from archer.config import RolloutConfig, read_yaml_file
from archer.data.prompts import apply_chat_template_option, end_of_turn_stop
from archer.distributed.quiet import quiet_process
from archer.errors import ConfigError
from archer.eval import store
from archer.eval.datasets import eval_set_names, load_eval_set
from archer.eval.engine import DEFAULT_MAX_NEW_TOKENS, fit_max_new_tokens, load_engine
from archer.eval.report import Progress, print_summary
from archer.eval.runner import generate_phase, score_phase, score_records
from archer.eval.watch import PHASES, Watcher
from archer.models.checkpoint import latest_checkpoint
from archer.rewards.code import GRADERS
from archer.rewards.math.score import EXTRACTIONS
from archer.rollout.tools import TOOLS, with_tools

DEFAULT_KS = "1,8"


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k must be comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"--k values must be >= 1, got {text!r}")
    return ks


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--data",
        nargs="+",
        required=required,
        help="dataset file(s) (jsonl, json, parquet), bundled samples (math500, aime24, amc23, "
        "humaneval, mbpp_sample, livecodebench_sample, code_contests_sample) or a task's held-out "
        "problems (synthetic_math, synthetic_code, synthetic_paths, synthetic_interpreter)",
    )
    p.add_argument("--format", default="auto", help="dataset format (default: sniffed per file)")
    p.add_argument("--limit", type=int, default=None, help="keep the first N problems of each file")
    p.add_argument(
        "--prompt-key",
        default=None,
        help="the prompt column of a flat file (e.g. question for GSM8K; as data.prompt_key)",
    )
    p.add_argument(
        "--answer-key",
        default=None,
        help="the reference-answer column of a flat file (default: answer when --prompt-key is given)",
    )


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=8, help="samples per problem")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="response budget (default 4096, capped at the model's positions minus the longest prompt)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--template",
        default=None,
        help="prompt template (archer.data.prompts; default: the --tools-from run's, else auto)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--dtype", default="auto", help="model dtype: auto, float32, bfloat16, float16")
    p.add_argument(
        "--chat-template",
        default=None,
        help="Jinja file or text for the tokenizer's chat template (as the model was trained)",
    )
    add_tool_args(p)


def add_tool_args(p: argparse.ArgumentParser) -> None:
    """Tool rollouts as in training (``rollout.tools``, :mod:`archer.rollout.tools`)."""
    p.add_argument(
        "--tools", nargs="*", default=None, help="tools the model may call: python (default: none)"
    )
    p.add_argument(
        "--tools-from",
        default=None,
        help="a run directory or its config.yaml: that run's tool settings (rollout.tools, max_turns, ...) "
        "and prompt template",
    )
    p.add_argument("--max-turns", type=int, default=None, help="model turns of a tool rollout (default 4)")
    p.add_argument("--tool-timeout", type=float, default=None, help="seconds per tool call (default 5)")


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The saved config of the ``--tools-from`` run ({} without one)."""

    src = getattr(args, "tools_from", None)
    if not src:
        return {}
    path = Path(src) / "config.yaml" if Path(src).is_dir() else Path(src)
    if not path.is_file():
        raise ConfigError(f"--tools-from: {str(path)!r} not found")
    data = read_yaml_file(path, "run config")
    return data if isinstance(data, dict) else {}


def resolve_template(args: argparse.Namespace) -> str:
    """``--template``, else the ``--tools-from`` run's ``data.prompt_template``, else ``auto``: a
    checkpoint is asked the way it was trained."""
    if getattr(args, "template", None):
        return args.template
    return str((_run_config(args).get("data") or {}).get("prompt_template") or "auto")


def with_tool_args(engine: Any, args: argparse.Namespace) -> Any:
    """``engine`` wrapped for tool rollouts when ``--tools`` / ``--tools-from`` ask for them."""

    r = RolloutConfig()
    saved = _run_config(args).get("rollout") or {}
    if saved:
        for key in (
            "tools",
            "max_turns",
            "tool_timeout_s",
            "tool_output_chars",
            "tool_memory_mb",
            "tool_format",
            "tool_workers",
        ):
            if key in saved:
                setattr(r, key, saved[key])
    if getattr(args, "tools", None) is not None:
        r.tools = list(args.tools)
    if getattr(args, "max_turns", None) is not None:
        r.max_turns = args.max_turns
    if getattr(args, "tool_timeout", None) is not None:
        r.tool_timeout_s = args.tool_timeout
    bad = [t for t in r.tools if t not in TOOLS]
    if bad:
        raise ConfigError(f"--tools: unknown tool {bad[0]!r}; known: {list(TOOLS)}")
    if r.max_turns < 1 or not r.tool_timeout_s > 0:
        raise ConfigError("--max-turns must be >= 1 and --tool-timeout > 0")
    return with_tools(engine, r)


def add_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--k", type=_parse_ks, default=None, help=f"comma-separated k values (default {DEFAULT_KS})"
    )
    p.add_argument("--timeout", type=float, default=None, help="per-test time limit for code (seconds)")
    p.add_argument(
        "--extraction",
        choices=EXTRACTIONS,
        default=None,
        help="math: where the answer is read (answer_line: the last \\boxed{}, else an 'Answer:' line, "
        "the default; boxed; lenient: also a one-value final sentence, for base and instruct models)",
    )
    p.add_argument(
        "--grader",
        choices=GRADERS,
        default="archer",
        help="code: archer (default) or lcb, the official LiveCodeBench grader's semantics for honest "
        "programs (exact return types; a program that ends its own process fails), for numbers compared "
        "with published LiveCodeBench tables; both reject the same cheats",
    )


def load_problems(args: argparse.Namespace) -> list:
    """Problems of every ``--data`` file; a file that holds none is an error naming it (an empty
    file would otherwise be reported as a 0.0 score)."""

    problems = []
    for path in args.data:
        keys = {k: getattr(args, k, None) for k in ("prompt_key", "answer_key")}
        loaded = load_eval_set(path, args.format, limit=args.limit, **{k: v for k, v in keys.items() if v})
        if not loaded:
            why = "--limit 0 keeps none" if args.limit is not None and args.limit <= 0 else "it is empty"
            raise ValueError(f"--data {path}: no problems to evaluate ({why})")
        problems.extend(loaded)
    return problems


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        "seed": args.seed,
        "stop": (args.stop,) if getattr(args, "stop", None) else (),
    }


def _reward_opts(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {} if args.timeout is None else {"timeout": args.timeout}
    if getattr(args, "grader", "archer") != "archer":
        opts["grader"] = args.grader
    if getattr(args, "extraction", None):
        opts["extraction"] = args.extraction
    return opts


def _data_ref(path: str) -> str:
    """How config.json records a --data item: an existing file by absolute path, a bundled or
    synthetic name as the name (it resolves on any machine)."""

    p = Path(path)
    return str(path) if not p.is_file() and str(path) in eval_set_names() else str(p.resolve())


def resolve_model(model: str) -> str:
    """``--model``: a training run's folder (its config.yaml, checkpoints/) means its latest complete
    checkpoint, with a note; anything else is returned as given."""
    run = Path(model)
    if not (run / "config.yaml").is_file() or (run / "config.json").is_file():
        return model
    last = latest_checkpoint(run)
    if last is None:
        raise FileNotFoundError(
            f"--model {model}: a training run with no complete checkpoint yet "
            "(checkpoints/step_N/COMPLETE); wait for one, or pass a model folder"
        )
    print(
        f"archer eval: --model {model} is a training run; evaluating its latest checkpoint {last}",
        file=sys.stderr,
    )
    return str(last)


def _generate(args: argparse.Namespace, score_live: bool = False) -> None:

    problems = load_problems(args)
    args.model = resolve_model(args.model)

    engine, tokenizer = load_engine(args.model, args.device, args.dtype, getattr(args, "chat_template", None))
    template = resolve_template(args)
    args.max_new_tokens, note = fit_max_new_tokens(
        engine.model, tokenizer, problems, template, args.max_new_tokens
    )
    if note:
        print(f"archer eval: {note}", file=sys.stderr)
    args.stop, note = end_of_turn_stop(tokenizer)
    if note:
        print(f"archer eval: note: {note}", file=sys.stderr)
    engine = with_tool_args(engine, args)
    out = Path(args.out)
    done = {g.get("id") for g in store.read_jsonl(out / store.GENERATIONS)} & {p.id for p in problems}
    print(
        f"archer eval: {len(problems)} problems x {args.n} samples from {args.model} "
        f"(batches of {args.batch_size}{f', {len(done)} already generated' if done else ''}) -> {out}",
        file=sys.stderr,
        flush=True,
    )
    progress = Progress(len(problems), label="generate" + (" + score" if score_live else ""), done=len(done))
    by_id = {p.id: p for p in problems}

    def on_batch(batch: list[dict[str, Any]], count: int, total: int) -> None:
        if score_live:  # scored as it arrives: results.jsonl fills now, score_phase then only summarises
            rows = score_records(batch, by_id, **_reward_opts(args))
            store.append_jsonl(out / store.RESULTS, rows)
            progress.add_scores(sum(r["num_correct"] for r in rows), sum(r["n"] for r in rows))
        progress.update(count)

    generate_phase(
        engine,
        tokenizer,
        problems,
        args.out,
        n=args.n,
        sampling=_sampling(args),
        template=template,
        batch_size=args.batch_size,
        on_batch=on_batch,
        config={
            "model": str(args.model),
            "data": [_data_ref(d) for d in args.data],
            "format": args.format,
            "limit": args.limit,
            "prompt_key": args.prompt_key,
            "answer_key": args.answer_key,
        },
    )
    print(f"generations in {out / 'generations.jsonl'}")


def _score(args: argparse.Namespace) -> dict[str, Any]:

    cfg = store.read_json(Path(args.out) / store.CONFIG, {})
    if not args.data:
        if not cfg.get("data"):
            raise SystemExit(f"archer eval score: --data not given and {args.out}/config.json names no data")
        args.data, args.format, args.limit = cfg["data"], cfg.get("format", "auto"), cfg.get("limit")
        args.prompt_key, args.answer_key = cfg.get("prompt_key"), cfg.get("answer_key")
    ks = args.k or cfg.get("ks") or _parse_ks(DEFAULT_KS)
    problems = load_problems(args)
    ids = {p.id for p in problems}
    gens = Path(args.out) / store.GENERATIONS
    if not any(g.get("id") in ids for g in store.read_jsonl(gens)):  # else every problem scores 0.0
        raise ValueError(
            f"{gens}: no generations for the {len(problems)} problems of --data; "
            "run `archer eval generate` first"
        )
    summary = score_phase(problems, args.out, ks=ks, reward_opts=_reward_opts(args))
    summary["grader"] = getattr(args, "grader", "archer")  # which code grader's semantics the numbers follow
    write_json(Path(args.out) / store.SUMMARY, summary)
    if getattr(args, "rm", None):  # best-of-N by a reward model, judged by the rule verifier's verdicts
        from archer.rm.select import best_of_n_dir

        summary["rm_best_of_n"] = best_of_n_dir(args.out, problems, args.rm, args.rm_device)
        write_json(Path(args.out) / store.SUMMARY, summary)
        b = summary["rm_best_of_n"]
        print(
            f"best-of-{cfg.get('n', '?')} by reward model {args.rm}: {b['accuracy']:.3f} "
            f"(random pick {b['mean_accuracy']:.3f}, oracle {b['oracle']:.3f}) over {b['problems']} problems"
        )
    print_summary(summary, title=str(args.out))
    print(f"summary in {Path(args.out) / 'summary.json'}")
    return summary


def _run(args: argparse.Namespace) -> None:

    given, args.model = args.model, resolve_model(args.model)
    if args.out is None:
        name = Path(given).name + ("" if given == args.model else f"-{Path(args.model).name}")
        args.out = str(Path("eval_out") / name)
    ks = args.k or _parse_ks(DEFAULT_KS)
    load_problems(args)  # a bad or empty --data file fails here, before OUT is created
    cfg = store.read_json(Path(args.out) / store.CONFIG, {})
    write_json(Path(args.out) / store.CONFIG, {**cfg, "ks": ks})
    _generate(args, score_live=True)
    args.k = ks
    _score(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archer eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="generate then score (the default)")
    gen = sub.add_parser("generate", help="phase 1: sample responses into OUT/generations.jsonl")
    for p in (run, gen):
        p.add_argument("--model", required=True, help="Hugging Face model directory")
        add_data_args(p)
        add_sampling_args(p)
        p.add_argument("--out", required=p is gen, default=None, help="output directory")
    add_score_args(run)
    score = sub.add_parser("score", help="phase 2: score OUT/generations.jsonl, write the summary")
    score.add_argument("--out", required=True)
    add_data_args(score, required=False)
    add_score_args(score)
    for p in (run, score):
        p.add_argument(
            "--rm", default=None, help="reward-model folder: also report best-of-n selection by it"
        )
        p.add_argument("--rm-device", default="cpu", help="device of the reward model")
    watch = sub.add_parser("watch", help="evaluate each new complete checkpoint of a run directory")
    add_watch_args(watch)
    add_data_args(watch)
    add_sampling_args(watch)
    add_score_args(watch)
    for p in (run, gen, score, watch):
        p.add_argument(
            "--verbose",
            action="store_true",
            help="show every message of vLLM, Ray and transformers (default: known noise filtered)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "generate", "score", "watch", "-h", "--help"):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    try:  # our own progress line replaces transformers' per-file loading bars
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    quiet_process(getattr(args, "verbose", False))
    if args.cmd == "run":
        _run(args)
    elif args.cmd == "generate":
        _generate(args)
    elif args.cmd == "score":
        _score(args)
    elif args.cmd == "watch":
        return watch_main(args)
    return 0


def add_watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="training run directory (checkpoints/step_*/COMPLETE)")

    p.add_argument("--phase", choices=PHASES, default="all")
    p.add_argument("--once", action="store_true", help="one pass over the current checkpoints, then exit")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between passes")
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--backoff", type=float, default=60.0, help="first retry delay in seconds (doubles)")


def watch_main(args: argparse.Namespace) -> int:

    if not Path(args.run_dir).is_dir():  # before loading data: fail at once, not after a minute
        raise FileNotFoundError(f"run directory not found: {args.run_dir}")
    problems = load_problems(args)
    _fit_watch_budget(args, problems)
    watcher = Watcher(
        args.run_dir,
        problems,
        n=args.n,
        ks=args.k or _parse_ks(DEFAULT_KS),
        sampling=_sampling(args),
        phase=args.phase,
        engine_factory=lambda ckpt: _with_tools(
            load_engine(str(ckpt), args.device, args.dtype, getattr(args, "chat_template", None)), args
        ),
        template=resolve_template(args),
        batch_size=args.batch_size,
        reward_opts=_reward_opts(args),
        max_attempts=args.max_attempts,
        backoff_s=args.backoff,
    )
    watcher.run(once=args.once, poll_s=args.poll)
    return 0


def _fit_watch_budget(args: argparse.Namespace, problems: list) -> None:
    """``--max-new-tokens`` against the run's model (its latest checkpoint, else its sft_model): the
    default is capped with a note, a given value that does not fit is an error; a LoRA checkpoint (no
    config.json) is not read."""
    run = Path(args.run_dir)
    folder = latest_checkpoint(run) or run / "sft_model"
    if not (folder / "config.json").is_file():
        return
    from transformers import AutoTokenizer

    tokenizer = apply_chat_template_option(AutoTokenizer.from_pretrained(str(folder)), args.chat_template)
    args.max_new_tokens, note = fit_max_new_tokens(
        folder, tokenizer, problems, resolve_template(args), args.max_new_tokens
    )
    if note:
        print(f"archer eval: {note}", file=sys.stderr)


def _with_tools(loaded: tuple[Any, Any], args: Any) -> tuple[Any, Any]:
    """(engine, tokenizer) with the tool settings of ``--tools`` / ``--tools-from`` applied."""
    engine, tokenizer = loaded
    return with_tool_args(engine, args), tokenizer
