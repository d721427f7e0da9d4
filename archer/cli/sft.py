"""``archer sft``: supervised fine-tuning from a JSONL file, saving a Hugging Face checkpoint.

    archer sft --data train.jsonl --model path/to/hf_model --out runs/sft
    archer sft --data train.jsonl --model tiny              # tokenizer + Qwen2 built on the spot
    archer sft --data synthetic_math --noise 0.2 --model tiny --max-time 60

Each JSONL row is ``{"messages": [{"role", "content"}, ...]}`` or ``{"prompt", "response"}``; a
malformed row is an error naming the file and the (1-based) line. ``--model tiny`` trains a byte-level
BPE tokenizer on the rendered data and builds a random-init Qwen2 model (``archer.models.tiny``).
A task's name (``synthetic_math``, ``synthetic_code``, ... see :mod:`archer.tasks.registry`) generates
that task's demonstrations (train split), with ``--generator`` as the recipe's ``data.generator``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from archer.data.formats import read_rows
from archer.models.loader import resolve_device
from archer.safe_yaml import load_yaml
from archer.sft.train import normalize_example, train_sft
from archer.tasks.registry import get_task, is_task


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archer sft", description="Supervised fine-tuning on chat-format data.")
    p.add_argument(
        "--data", required=True, help="JSONL file, or a task's name (synthetic_math, synthetic_code, ...)"
    )
    p.add_argument("--model", required=True, help="Hugging Face model directory, or 'tiny'")
    p.add_argument("--out", default="runs/sft", help="output directory for the checkpoint (default runs/sft)")
    p.add_argument(
        "--chat-template",
        default=None,
        help="Jinja file or text for the tokenizer's chat template (e.g. examples/chatml.jinja)",
    )
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--batch-size", type=int, default=8, help="rows per step (packed rows hold several examples)"
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="tokens per (packed) training sequence (default 512, capped at the model's positions)",
    )
    p.add_argument("--no-packing", action="store_true")
    p.add_argument("--warmup", type=float, default=0.05, help="warmup steps, or a fraction of steps if < 1")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-time", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = leave torch's default)")
    g = p.add_argument_group("a task's demonstrations (--data TASK)")
    g.add_argument("--num-examples", type=int, default=4000)
    g.add_argument("--noise", type=float, default=0.0, help="fraction of demonstrations with one slip")
    g.add_argument(
        "--generator",
        default="{}",
        help="the task's options as a YAML mapping, as data.generator in a recipe (e.g. '{level: easy}')",
    )
    g = p.add_argument_group("tiny model (--model tiny)")
    g.add_argument("--vocab-size", type=int, default=512)
    g.add_argument("--hidden-size", type=int, default=128)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--kv-heads", type=int, default=2)
    return p


def load_chat_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a chat dataset (``.jsonl``, ``.json`` or ``.parquet``), validated; errors name the file
    and the 1-based row."""

    rows = []
    for line_no, row in enumerate(read_rows(path), start=1):
        try:
            rows.append({"messages": normalize_example(row)})
        except ValueError as exc:
            raise ValueError(f"{path}: row {line_no}: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _task_rows(name: str, args) -> list[dict[str, Any]]:

    options = load_yaml(args.generator, source="--generator")
    if not isinstance(options, dict):
        raise ValueError(f"--generator: expected a YAML mapping, got {args.generator!r}")
    task = get_task(name, "--data")
    probs = task.problems(args.num_examples, split="train", seed=args.seed, options=options, unique=False)
    return task.sft_rows(probs, noise=args.noise, seed=args.seed, options=options)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        rows = _task_rows(args.data, args) if not Path(args.data).is_file() and is_task(args.data) else None
        rows = rows if rows is not None else load_chat_rows(args.data)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"archer sft: {exc}", file=sys.stderr)
        return 2

    import torch

    if args.model == "tiny":
        from archer.models.tiny import build_tiny_model, build_tokenizer

        texts = [_chatml(r["messages"]) for r in rows]
        tokenizer = build_tokenizer(texts, vocab_size=args.vocab_size)
        model = build_tiny_model(
            tokenizer,
            hidden_size=args.hidden_size,
            num_layers=args.layers,
            num_heads=args.heads,
            num_kv_heads=args.kv_heads,
            seed=args.seed,
        )
    else:
        from archer.errors import ConfigError
        from archer.models.loader import PolicyOptions, load_policy

        try:  # the trainer's one loader: clear one-line errors for a missing folder or broken weights
            model, tokenizer = load_policy(args.model, PolicyOptions(disable_dropout=False))
        except ConfigError as exc:
            print(f"archer sft: {str(exc).replace('model.path', '--model', 1)}", file=sys.stderr)
            return 2
        from archer.data.prompts import apply_chat_template_option

        try:
            apply_chat_template_option(tokenizer, args.chat_template)
        except ValueError as exc:
            print(f"archer sft: --chat-template: {exc}", file=sys.stderr)
            return 2
        if tokenizer.chat_template is None:
            print(
                f"archer sft: {args.model}: the tokenizer has no chat template; pass --chat-template FILE.jinja "
                "(e.g. examples/chatml.jinja)",
                file=sys.stderr,
            )
            return 2

    max_len = _max_len(args.max_len, model)
    if max_len is None:
        return 2
    model.to(resolve_device("auto"))
    torch.manual_seed(args.seed)

    def log(step: int, m: dict[str, float]) -> None:
        if not sys.stderr.isatty():
            print(f"step {step} loss {m['loss']:.4f} lr {m['lr']:.2e}", file=sys.stderr)

    metrics = train_sft(
        model,
        tokenizer,
        rows,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_len=max_len,
        packing=not args.no_packing,
        warmup=int(args.warmup) if args.warmup >= 1 else args.warmup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        seed=args.seed,
        max_steps=args.max_steps,
        max_time_s=args.max_time,
        num_threads=args.threads or None,
        log_fn=log,
        progress=sys.stderr.isatty(),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "sft_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        f"saved {out} (steps {int(metrics['steps'])}, loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f})"
    )
    return 0


def _max_len(asked: int | None, model: Any) -> int | None:
    """``--max-len`` checked against the model's positions: the default is capped with a note, a
    given value beyond them is an error (None: refused, printed)."""
    from archer.models.loader import position_limit

    limit = position_limit(model)
    if limit is None or (asked or 512) <= limit:
        return asked or 512
    if asked is None:
        print(f"archer sft: --max-len 512 capped to {limit}, the model's positions", file=sys.stderr)
        return limit
    print(
        f"archer sft: --max-len {asked} exceeds the model's limit of {limit} positions (its config.json); "
        f"pass --max-len {limit} or less",
        file=sys.stderr,
    )
    return None


def _chatml(messages: list[dict[str, str]]) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
