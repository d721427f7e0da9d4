"""Rollout throughput: archer's HFEngine vs transformers' ``model.generate`` on CPU.

Same model, prompts, batch (prompts x n samples), sampling (temperature 1, no top-k/top-p) and length:
EOS is disabled on both sides so every row generates exactly ``--new-tokens`` tokens. ``generate`` is
called without returning scores (it would be slower with them); HFEngine also returns per-token
log-probs. Each cell is the best of ``--repeats`` runs (the machine may be shared). Models: the tiny
demo model (64 wide, 2 layers) and a ~20M-parameter Qwen2 (512 wide, 6 layers), random init.

    python benchmarks/rollout_speed.py [--prompts 16] [--n 4] [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    tok = build_tokenizer(tokenizer_corpus(1000), vocab_size=512)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False
        )
        for p in math_problems(args.prompts, seed=0)
    ]
    rows = []
    for name, kw in MODELS.items():
        model = build_tiny_model(tok, seed=0, **kw).eval()
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            cell = {}
            for label, fn in (("generate", hf_generate), ("HFEngine", _engine)):
                best = float("inf")
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    with torch.inference_mode():
                        ntok = fn(model, tok, prompts, args.n, args.new_tokens)
                    best = min(best, time.perf_counter() - t)
                cell[label] = ntok / best
            rows.append((name, count_parameters(model), threads, cell["generate"], cell["HFEngine"]))
    print(
        f"batch {args.prompts} prompts x n={args.n}, {args.new_tokens} new tokens, T=1.0, best of {args.repeats}"
    )
    print("| model | params | threads | generate tok/s | HFEngine tok/s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, params, threads, g, e in rows:
        print(f"| {name} | {params / 1e6:.2f}M | {threads} | {g:,.0f} | {e:,.0f} | {e / g:.2f}x |")


if __name__ == "__main__":
    main()
