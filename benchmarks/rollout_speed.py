"""Rollout throughput: archer's HFEngine vs transformers' ``model.generate`` on CPU.

Same model, prompts, batch (prompts x n samples), sampling (temperature 1, no top-k/top-p) and length:
EOS is disabled on both sides so every row generates exactly ``--new-tokens`` tokens. ``generate`` is
called without returning scores (it would be slower with them); HFEngine also returns per-token
log-probs. The two sides run interleaved ``--repeats`` times; a cell is the median tokens/s and the
speed-up is the mean of the per-repeat ratios with its 95% t-interval. Models: the tiny demo model (64
wide, 2 layers) and a ~20M-parameter Qwen2 (512 wide, 6 layers), random init. Writes
``benchmarks/results/rollout_speed.{md,json}`` (``--out``).

    python benchmarks/rollout_speed.py [--prompts 16] [--n 4] [--new-tokens 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _artifact as artifact_  # noqa: E402  (puts the repository on sys.path too)

from archer.models.tiny import build_tiny_model, build_tokenizer, count_parameters
from archer.rollout import HFEngine, SamplingParams
from archer.tasks.synthetic import math_problems, tokenizer_corpus

MODELS = {
    "tiny (64x2)": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2},
    "20M (512x6)": {"hidden_size": 512, "num_layers": 6, "num_heads": 8, "num_kv_heads": 4},
}


def hf_generate(model, tok, prompts: list[str], n: int, new_tokens: int, _engine=None) -> int:
    """Sample ``n`` continuations of exactly ``new_tokens`` per prompt with ``model.generate`` (T = 1, no
    truncation), the baseline every engine is timed against; returns the tokens generated."""
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            num_return_sequences=n,
            pad_token_id=tok.pad_token_id,
        )
    return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]


def _engine(model, tok, prompts: list[str], n: int, new_tokens: int) -> int:
    never = [len(tok) + 7]  # an id the model cannot sample: EOS disabled, as for generate
    engine = HFEngine(model, tok, max_batch_size=len(prompts) * n, eos_token_ids=never, num_threads=None)
    out = engine.generate(prompts, SamplingParams(n=n, temperature=1.0, max_new_tokens=new_tokens, seed=0))
    return sum(len(r.response_ids) for rs in out for r in rs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated names of MODELS")
    ap.add_argument("--out", default=str(artifact_.RESULTS / "rollout_speed.md"))
    args = ap.parse_args(argv)
    started = artifact_.start()
    tok = build_tokenizer(tokenizer_corpus(1000), vocab_size=512)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False
        )
        for p in math_problems(args.prompts, seed=0)
    ]
    rows = []
    for name in args.models.split(","):
        model = build_tiny_model(tok, seed=0, **MODELS[name]).eval()
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            rates: dict[str, list[float]] = {"generate": [], "HFEngine": []}
            for fn in (hf_generate, _engine):  # warm-up, not timed: first-call allocations and kernels
                with torch.inference_mode():
                    fn(model, tok, prompts, args.n, args.new_tokens)
            for _ in range(args.repeats):  # interleaved: a repeat's pair shares the machine's state
                for label, fn in (("generate", hf_generate), ("HFEngine", _engine)):
                    t = time.perf_counter()
                    with torch.inference_mode():
                        ntok = fn(model, tok, prompts, args.n, args.new_tokens)
                    rates[label].append(ntok / (time.perf_counter() - t))
            rows.append(
                {
                    "model": name,
                    "params": count_parameters(model),
                    "threads": threads,
                    "tokens_per_s": {k: artifact_.timing(v) for k, v in rates.items()},
                    "speedup": artifact_.ratio(rates["HFEngine"], rates["generate"]),
                }
            )
    lines = [
        "# Rollout speed: HFEngine vs transformers `model.generate` (CPU)\n",
        f"`{' '.join(['python benchmarks/rollout_speed.py', *(sys.argv[1:] if argv is None else argv)])}` — "
        f"{args.prompts} prompts x n={args.n}, {args.new_tokens} new tokens per row (EOS disabled on both "
        f"sides), T=1.0, random-init Qwen2 models, vocab 512; median of {args.repeats} interleaved repeats, "
        "speed-up = mean of the per-repeat ratios [95% t-interval]. `generate` does not return scores; "
        "HFEngine also returns the per-token log-probs.\n",
        "| model | params | threads | generate tok/s | HFEngine tok/s | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        g, e = (statistics.median(r["tokens_per_s"][k]["samples"]) for k in ("generate", "HFEngine"))
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['threads']} | {g:,.0f} | {e:,.0f} "
            f"| {artifact_.fmt_ci(r['speedup'], 2, 'x')} |"
        )
    settings = {k: getattr(args, k) for k in ("prompts", "n", "new_tokens", "repeats", "threads", "models")}
    artifact_.publish(
        "rollout_speed", lines, {"settings": settings, "rows": rows}, out=args.out, argv=argv, started=started
    )


if __name__ == "__main__":
    main()
