"""GPU smoke check of the trainer core: a ~0.5B-parameter model built from a config trains a few steps.

What it runs (the trainer's own pieces, no hub download): a Qwen2.5-0.5B-shaped ``Qwen2ForCausalLM``
built from a config with random weights (float32 master weights), wrapped in the trainer's
:class:`~archer.rl.update.TokenScorer`, bf16 autocast (or FSDP2 mixed precision under several
ranks), gradient checkpointing, AdamW, and :func:`~archer.rl.update.update_minibatch` with the
ASPO loss on random token rows; then the HF rollout engine generates from the same weights. Prints
update tokens/s, model FLOPs utilisation (MFU, 6·N·tokens / peak) and generation tokens/s. Then
(one process only) ``--async-steps`` steps of the real RL loop in ``trainer.mode=async`` with partial
rollouts on the same device (the tiny_math recipe's model: a check of the async machinery on that
device, not a throughput number): staleness, interrupted samples and idle times.

    python benchmarks/gpu_smoke.py                       # one GPU
    torchrun --nproc_per_node=N benchmarks/gpu_smoke.py  # FSDP2 over N GPUs (trainer.strategy=fsdp)

Without CUDA it prints a skip line and exits 0 (CI has no GPU). ``--peak-tflops`` is the dense bf16
peak of one GPU (989 for an H100/H200 SXM). ``--device cpu --tiny`` runs the same code on a tiny model
on the CPU (the test suite does, so the script stays runnable between GPU sessions). Limits: random tokens, not a real RL batch; the number is
the update's throughput, which is what the trainer core controls.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

VOCAB = 151936
TINY_VOCAB = 1024


def _model(tiny: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if tiny:
        config = Qwen2Config(
            vocab_size=TINY_VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    else:
        config = Qwen2Config(
            vocab_size=VOCAB,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=8, help="rows per rank per step")
    parser.add_argument("--seq", type=int, default=1024, help="tokens per row (half prompt, half response)")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="a tiny model (a CPU check of the script itself)")
    parser.add_argument("--async-steps", type=int, default=3, help="steps of trainer.mode=async (0: skip)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: skipped (no CUDA device)")
        return 0
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    from archer.distributed.world import join_world
    from archer.models.loader import autocast, disable_dropout, enable_gradient_checkpointing
    from archer.rl.update import TokenScorer, UpdateSettings, update_minibatch

    world = join_world(torch.device(args.device), "fsdp")
    model = _model(args.tiny)
    disable_dropout(model)
    enable_gradient_checkpointing(model)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    scorer = world.shard(TokenScorer(model.to(world.device)), torch.bfloat16)
    precision = (
        (lambda: torch.autocast(args.device, enabled=False))
        if world.sharded
        else (lambda: autocast(world.device, "bfloat16"))
    )
    opt = torch.optim.AdamW([p for p in scorer.parameters() if p.requires_grad], lr=1e-6)
    g = torch.Generator().manual_seed(world.rank)
    ids = torch.randint(0, TINY_VOCAB if args.tiny else VOCAB, (args.rows, args.seq), generator=g).to(
        world.device
    )  # [B, T]
    mask = torch.zeros_like(ids, dtype=torch.float32)
    mask[:, args.seq // 2 :] = 1.0  # the second half is the response
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "response_mask": mask,
        "advantages": torch.randn(args.rows, generator=g).to(world.device),
        "rewards": torch.ones(args.rows, device=world.device),
    }
    with torch.no_grad(), precision():
        batch["old_log_prob"] = scorer(ids, batch["attention_mask"], mask, with_entropy=False)[0]
    settings = UpdateSettings(loss="aspo", agg="token-mean", loss_params={"kl_coef": 0.0})
    micro = [[i] for i in range(args.rows)]
    times = []
    for step in range(args.steps):
        sync()
        t0 = time.perf_counter()
        with precision():
            metrics = update_minibatch(scorer, opt, batch, micro, settings, world)
        sync()
        times.append(time.perf_counter() - t0)
        if world.main:
            print(
                f"step {step}: {times[-1]:.2f} s, loss {metrics.get('loss', float('nan')):.4f}, "
                f"skipped {metrics['skipped_nonfinite']:.0f}"
            )
    steady = sum(times[1:]) / max(len(times) - 1, 1)
    tokens = args.rows * args.seq * world.size
    tps = tokens / steady
    mfu = 6 * n_params * tps / (args.peak_tflops * 1e12 * world.size)
    from archer.rollout.base import SamplingParams
    from archer.rollout.hf import HFEngine

    with world.full_weights(scorer), precision():
        engine = HFEngine(model, _Tok(), device=world.device, eos_token_ids=[_Tok.eos_token_id])
        sync()
        t0 = time.perf_counter()
        outs = engine.generate([list(range(1, 65))] * 8, SamplingParams(n=4, max_new_tokens=128, seed=0))
        sync()
        gen = sum(len(r.response_ids) for o in outs for r in o) / (time.perf_counter() - t0)
    if args.async_steps and world.size == 1:
        print(_async_check(args.device, args.async_steps))
    elif args.async_steps and world.main:
        print("async: skipped (trainer.mode=async runs in one process)")
    if world.main:
        name = torch.cuda.get_device_name() if cuda else "cpu"
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else "n/a"
        print(
            f"gpu_smoke: {name} x{world.size} ({world.strategy}), {n_params / 1e6:.1f}M params, "
            f"update {tps:,.0f} tokens/s, MFU {mfu:.1%}, generation {gen:,.0f} tokens/s, peak memory {peak}"
        )
    world.close()
    return 0


def _async_check(device: str, steps: int) -> str:
    """A few steps of the RL loop with ``trainer.mode=async`` and partial rollouts on ``device``."""
    import tempfile

    from archer.config import load_config
    from archer.rl.loop import train

    cfg = load_config(
        "tiny_math",
        [
            f"trainer.device={device}",
            "trainer.mode=async",
            "trainer.max_staleness=1",
            "rollout.partial=true",
            "rollout.partial_chunk_tokens=8",
            f"trainer.steps={steps}",
            "trainer.save_every=0",
            "trainer.save_final=false",
            "model.sft_warmup=false",
            "rollout.batch_size=4",
            "rollout.n=4",
            "algo.filter_zero_variance=false",
            "eval.enabled=false",
            "logging.progress=false",
            "logging.plots=false",
            "logging.sinks=[]",
        ],
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        hist = train(cfg, run_dir=run_dir)["history"]
    seconds = time.perf_counter() - t0

    def total(key: str) -> float:
        return sum(h.get(key, 0.0) for h in hist)

    return (
        f"async: {len(hist)} steps on {device} in {seconds:.1f} s, staleness max "
        f"{max(h['async/staleness_max'] for h in hist)}, interrupted samples {total('async/interrupted'):.0f}, "
        f"trainer idle {total('async/trainer_idle_s'):.2f} s, worker idle {total('async/worker_idle_s'):.2f} s, "
        f"produced {hist[-1]['async/total_produced']} consumed {hist[-1]['async/total_consumed']}"
    )


class _Tok:
    """Just enough tokenizer for the engine on random ids (no hub tokenizer offline)."""

    eos_token_id = 0
    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(r) for r in rows]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
