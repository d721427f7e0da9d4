"""archer rm: reward models for code (AceCoder).

    archer rm pairs --model POLICY --data PROBLEMS [--n 16] --out pairs.jsonl    # sample, rate, pair
    archer rm pairs --samples samples.jsonl --data PROBLEMS --out pairs.jsonl    # rate given samples
    archer rm train --data pairs.jsonl --model PATH --out RM_DIR [--eval-fraction 0.1] [--lora-rank 8]
    archer rm score --model RM_DIR --in rows.jsonl --out scored.jsonl            # adds rm_score

pairs: samples --n programs per problem from POLICY (any local model, archer's rollout engine),
runs every test of each in the sandbox (pass rate = fraction passed), and keeps AceCoder's pairs
(--min-gap 0.4, --min-chosen 0.8, --min-rejected 0, all strict). The samples with their
pass rates go to --samples-out (default OUT.samples.jsonl) one problem at a time, so a restart
skips the problems already sampled. With --samples FILE (rows id + responses, from there
or from an earlier run) nothing is generated.

score: rows with prompt + response (or responses: a list) get rm_score (or
rm_scores); rows with chosen + rejected (a pairs file) get both scores and the command
prints the pairwise accuracy. Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from archer.data.formats import read_rows, save_rows
from archer.eval import store
from archer.eval.datasets import load_eval_sets
from archer.eval.engine import load_engine
from archer.eval.runner import generate_records
from archer.models.reward_model import RewardModel
from archer.rm.pairs import PairRule, build_pairs, pair_rows, pass_rates
from archer.rm.train import RMTrainConfig, train_reward_model
from archer.rollout.base import SamplingParams


def _rows(path: str) -> list[dict[str, Any]]:

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return read_rows(path)


def _pair_rule(args: argparse.Namespace):

    return PairRule(min_gap=args.min_gap, min_chosen=args.min_chosen, min_rejected=args.min_rejected)


def _pairs(args: argparse.Namespace) -> int:

    rule = _pair_rule(args)
    problems = [p for p in load_eval_sets(args.data, args.format) if p.kind == "code"]
    if not problems:
        raise ValueError(f"--data {' '.join(args.data)}: no code problems")
    by_id = {p.id: p for p in problems}
    run_opts = {} if args.timeout is None else {"timeout": args.timeout}
    samples_path = Path(args.samples or args.samples_out or f"{args.out}.samples.jsonl")
    if args.samples:
        rows = _rows(args.samples)
        for i, r in enumerate(rows):
            if not isinstance(r.get("responses"), list) or "id" not in r:
                raise ValueError(f"{args.samples}: row {i} needs 'id' and a 'responses' list")
            if r.get("pass_rates") is not None and len(r["pass_rates"]) != len(r["responses"]):
                raise ValueError(
                    f"{args.samples}: row {i} has {len(r['pass_rates'])} pass_rates for "
                    f"{len(r['responses'])} responses"
                )
        missing = [r.get("pass_rates") is None for r in rows]
        todo = [r for r, m in zip(rows, missing) if m and r.get("id") in by_id]
        if todo:  # rate what has no pass rates yet
            flat = [(r, resp) for r in todo for resp in r["responses"]]
            rates = pass_rates([x for _, x in flat], [by_id[r["id"]].tests for r, _ in flat], **run_opts)
            pos = 0
            for r in todo:
                r["pass_rates"] = rates[pos : pos + len(r["responses"])]
                pos += len(r["responses"])
        samples = [r for r in rows if r.get("id") in by_id and r.get("pass_rates") is not None]
    else:
        if not args.model:
            raise ValueError("rm pairs: give --model POLICY (to sample programs) or --samples FILE")
        samples = _sample(args, problems, samples_path, run_opts)
    out_rows = []
    for k, s in enumerate(samples):
        pairs = build_pairs(
            s["responses"], s["pass_rates"], rule, max_pairs=args.max_pairs, seed=args.seed + k
        )
        out_rows += pair_rows(s["id"], by_id[s["id"]].prompt, s["responses"], s["pass_rates"], pairs)
    save_rows(out_rows, args.out)
    with_pairs = len({r["id"] for r in out_rows})
    print(
        f"archer rm pairs: {len(out_rows)} pairs from {with_pairs} of {len(samples)} problems -> {args.out} "
        f"(rule: gap > {rule.min_gap}, chosen > {rule.min_chosen}, rejected > {rule.min_rejected})"
    )
    return 0


def _sample(args: argparse.Namespace, problems: list, samples_path: Path, run_opts: dict) -> list[dict]:
    """Sample and rate ``--n`` programs per problem; one appended line per problem (resumable)."""

    done = {r["id"]: r for r in store.read_jsonl(samples_path) if r.get("pass_rates") is not None}
    todo = [p for p in problems if p.id not in done]
    print(
        f"archer rm pairs: {len(problems)} problems x {args.n} samples from {args.model} "
        f"({len(problems) - len(todo)} already in {samples_path})",
        file=sys.stderr,
        flush=True,
    )
    if todo:
        engine, tokenizer = load_engine(args.model, args.device)
        params = SamplingParams(
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
        count = [len(problems) - len(todo)]
        by_id = {p.id: p for p in todo}

        def on_batch(batch: list[dict[str, Any]]) -> None:
            flat = [(g["id"], resp) for g in batch for resp in g["responses"]]
            rates = pass_rates([x for _, x in flat], [by_id[i].tests for i, _ in flat], **run_opts)
            rows, pos = [], 0
            for g in batch:
                k = len(g["responses"])
                rows.append({"id": g["id"], "responses": g["responses"], "pass_rates": rates[pos : pos + k]})
                pos += k
            store.append_jsonl(samples_path, rows)
            for r in rows:
                done[r["id"]] = r
            count[0] += len(batch)
            mean = sum(sum(r["pass_rates"]) / max(len(r["pass_rates"]), 1) for r in rows) / len(rows)
            print(
                f"  {count[0]}/{len(problems)} problems sampled (batch mean pass rate {mean:.2f})",
                file=sys.stderr,
            )

        generate_records(
            engine,
            tokenizer,
            todo,
            params,
            template=args.template,
            batch_size=args.batch_size,
            on_batch=on_batch,
        )
    return [done[p.id] for p in problems if p.id in done]


def _train(args: argparse.Namespace) -> int:

    cfg = RMTrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        log_every=args.log_every,
        device=args.device,
    )
    rows = _rows(args.data)
    eval_rows = _rows(args.eval_data) if args.eval_data else None
    metrics = train_reward_model(rows, args.model, args.out, cfg, eval_rows=eval_rows)
    if "heldout_accuracy" in metrics:
        print(
            f"held-out pairwise accuracy {metrics['heldout_accuracy']:.3f} ({metrics['heldout_pairs']} pairs)"
        )
    return 0


def _score(args: argparse.Namespace) -> int:

    rows = _rows(args.inputs)
    rm = RewardModel(args.model, args.device, batch_size=args.batch_size, max_length=args.max_length)
    prompts, responses, where = [], [], []
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise ValueError(f"{args.inputs}: row {i} has no 'prompt'")
        for key in ("response", "chosen", "rejected"):
            if isinstance(row.get(key), str):
                prompts.append(row["prompt"])
                responses.append(row[key])
                where.append((i, key, None))
        if isinstance(row.get("responses"), list):
            for j, resp in enumerate(row["responses"]):
                prompts.append(row["prompt"])
                responses.append(str(resp))
                where.append((i, "responses", j))
    if not responses:
        raise ValueError(f"{args.inputs}: no 'response', 'responses' or 'chosen'/'rejected' to score")
    scores = rm.score(prompts, responses)
    out = [dict(r) for r in rows]
    for (i, key, j), s in zip(where, scores):
        if key == "responses":
            out[i].setdefault("rm_scores", [None] * len(out[i]["responses"]))[j] = s
        else:
            out[i]["rm_score" if key == "response" else f"rm_score_{key}"] = s
    save_rows(out, args.out)
    pairs = [r for r in out if "rm_score_chosen" in r and "rm_score_rejected" in r]
    msg = f"archer rm score: {len(scores)} responses scored -> {args.out}"
    if pairs:
        acc = sum(r["rm_score_chosen"] > r["rm_score_rejected"] for r in pairs) / len(pairs)
        msg += f"; pairwise accuracy {acc:.3f} on {len(pairs)} pairs"
        print(json.dumps({"pairwise_accuracy": acc, "pairs": len(pairs)}))
    print(msg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archer rm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pairs", help="sample programs, rate them by tests passed, keep AceCoder's pairs")
    p.add_argument("--data", nargs="+", required=True, help="code problems (files or bundled names)")
    p.add_argument("--format", default="auto")
    p.add_argument("--out", required=True, help="pairs JSONL")
    p.add_argument("--model", default=None, help="policy to sample programs from (HF folder)")
    p.add_argument("--samples", default=None, help="JSONL of id + responses (+ pass_rates): no sampling")
    p.add_argument(
        "--samples-out", default=None, help="where samples + pass rates go (default OUT.samples.jsonl)"
    )
    p.add_argument("--n", type=int, default=16, help="programs sampled per problem (AceCoder: 16)")
    p.add_argument("--min-gap", type=float, default=0.4, help="pass-rate gap must exceed this (AceCoder 0.4)")
    p.add_argument("--min-chosen", type=float, default=0.8, help="chosen pass rate must exceed this (0.8)")
    p.add_argument("--min-rejected", type=float, default=0.0, help="rejected pass rate must exceed this (0)")
    p.add_argument("--max-pairs", type=int, default=None, help="at most this many pairs per problem")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--template", default="auto", help="prompt template (archer.data.prompts)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    p.add_argument("--timeout", type=float, default=None, help="per-test time limit (seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    t = sub.add_parser("train", help="Bradley-Terry training of a scalar-head model on pairs")
    t.add_argument("--data", required=True, help="pairs JSONL (prompt, chosen, rejected)")
    t.add_argument("--model", required=True, help="causal LM (or reward model) folder to start from")
    t.add_argument("--out", required=True, help="reward-model folder to write")
    t.add_argument("--eval-data", default=None, help="held-out pairs JSONL")
    t.add_argument("--eval-fraction", type=float, default=0.0, help="hold out this fraction of problems")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--lr", type=float, default=1e-5)
    t.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    t.add_argument("--max-length", type=int, default=1024, help="tokens per text (the end is kept)")
    t.add_argument("--lora-rank", type=int, default=0, help="> 0: train LoRA adapters + the head only")
    t.add_argument("--lora-alpha", type=float, default=16.0)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    s = sub.add_parser("score", help="score responses (or pairs) with a reward model")
    s.add_argument("--model", required=True, help="reward-model folder")
    s.add_argument("--in", dest="inputs", required=True, help="JSONL rows: prompt + response(s) or pairs")
    s.add_argument("--out", required=True)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--max-length", type=int, default=2048)
    s.add_argument("--device", default="cpu")
    return parser


COMMANDS = {"pairs": _pairs, "train": _train, "score": _score}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return COMMANDS[args.cmd](args)
