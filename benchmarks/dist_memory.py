"""Peak memory per training process, ``trainer.strategy=ddp`` vs ``fsdp``, 2 gloo processes on CPU.

Each of 2 local ranks builds a ~30M-parameter Qwen2 model from a config, wraps it in the trainer's
:class:`~archer.rl.update.TokenScorer`, prepares it with the trainer's
:class:`~archer.distributed.world.ProcessWorld` (``ddp``: a full replica; ``fsdp``: FSDP2 shards),
then runs what an RL step runs: a generation under ``world.full_weights`` (HF engine), and
``--steps`` AdamW updates of ``--rows`` rows through :func:`~archer.rl.update.update_minibatch`.

Measured per rank: the bytes of model state it holds (parameters + gradients + AdamW moments, local
shards), and the peak resident memory of the step phase above the process's baseline (Linux
``VmHWM``, reset through ``/proc/self/clear_refs`` after the model is prepared, minus the RSS after a
warm-up that loads every library, before the model was built). glibc is told to return freed large
blocks at once (``MALLOC_MMAP_THRESHOLD_``, set for the ranks), otherwise freed memory stays resident
and the peak reflects the allocator's history. Both strategies run in the same invocation.

    python benchmarks/dist_memory.py            # prints a table, writes benchmarks/results/dist_memory.json

Limits: CPU/gloo (the GPU run would use NCCL and CUDA allocator statistics); resident memory also
holds allocator caches, so the model-state column is the exact one and the peak column the realistic
one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def _worker(rank: int, port: int, strategy: str, args: argparse.Namespace, out: str) -> None:
    import torch.distributed as dist

    from archer.distributed.world import ProcessWorld
    from archer.rl.update import TokenScorer, UpdateSettings, update_minibatch
    from archer.rollout.base import SamplingParams
    from archer.rollout.hf import HFEngine

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    world = ProcessWorld(torch.device("cpu"), strategy, owns_group=True)
    _warm_up()  # libraries and kernels loaded before the baseline: it then counts only this run's memory
    base = _rss_kib("VmRSS")
    model = _model()
    n_params = sum(p.numel() for p in model.parameters())
    scorer = world.shard(TokenScorer(model))
    opt = torch.optim.AdamW(scorer.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(0, 8192, (args.rows, args.seq), generator=g)  # [B, T]
    mask = torch.zeros(args.rows, args.seq)
    mask[:, args.seq // 2 :] = 1.0
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "response_mask": mask,
        "advantages": torch.randn(args.rows, generator=g),
        "rewards": torch.ones(args.rows),
    }
    with torch.no_grad():
        batch["old_log_prob"] = scorer(ids, batch["attention_mask"], mask, with_entropy=False)[0]
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS counts from here
    engine = HFEngine(model, _Tok(), eos_token_ids=[0])
    with world.full_weights(scorer):
        engine.generate([list(range(1, 33))] * 2, SamplingParams(n=2, max_new_tokens=16, seed=rank))
    peak_generate = _rss_kib("VmHWM") - base
    settings = UpdateSettings(loss="aspo", agg="token-mean", loss_params={"kl_coef": 0.0})
    for _ in range(args.steps):
        update_minibatch(scorer, opt, batch, [[i] for i in range(args.rows)], settings, world)
    state = _local_bytes(
        list(scorer.parameters())
        + [p.grad for p in scorer.parameters() if p.grad is not None]
        + [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim()]
    )
    result = {
        "rank": rank,
        "params": n_params,
        "state_mib": state / 2**20,
        "peak_mib": (_rss_kib("VmHWM") - base) / 1024,
        "generate_peak_mib": peak_generate / 1024,
    }
    Path(out, f"{strategy}_{rank}.json").write_text(json.dumps(result))
    world.close()


def _warm_up() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from archer.rl.update import TokenScorer

    tiny = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    ids = torch.randint(0, 64, (1, 8))
    lp, _ = TokenScorer(tiny)(ids, torch.ones_like(ids), torch.ones(1, 8))
    lp.sum().backward()


class _Tok:
    eos_token_id = 0
    pad_token_id = 0

    def batch_decode(self, rows, skip_special_tokens=True):
        return [""] * len(rows)

    def decode(self, ids, skip_special_tokens=True):
        return ""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the per-rank results as json")
    parser.add_argument(
        "--out", default=None, help="json artifact (default benchmarks/results/dist_memory.json)"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _artifact as artifact_

    started = artifact_.start()
    results = {}
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # inherited by the spawned ranks
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "0")
    with tempfile.TemporaryDirectory() as out:
        for strategy in ("ddp", "fsdp"):
            mp.start_processes(
                _worker, args=(_port(), strategy, args, out), nprocs=2, join=True, start_method="spawn"
            )
            results[strategy] = [json.loads(Path(out, f"{strategy}_{r}.json").read_text()) for r in range(2)]
    ratios = {
        key: max(r[key] for r in results["ddp"]) / max(r[key] for r in results["fsdp"])
        for key in ("state_mib", "peak_mib")
    }
    settings = {"rows": args.rows, "seq": args.seq, "steps": args.steps, "ranks": 2}
    artifact_.write_artifact(
        "dist_memory",
        {"settings": settings, "per_rank": results, "ddp_over_fsdp": ratios},
        argv=argv,
        started=started,
        out=args.out,
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{results['ddp'][0]['params'] / 1e6:.1f}M parameters, 2 ranks, {args.rows} rows x {args.seq} tokens, "
        f"{args.steps} AdamW steps + one generation"
    )
    print(
        f"{'strategy':8} {'rank':>4} {'model state MiB':>16} {'peak RSS MiB':>13} {'of which generation':>20}"
    )
    for strategy, rows in results.items():
        for r in rows:
            print(
                f"{strategy:8} {r['rank']:>4} {r['state_mib']:>16.1f} {r['peak_mib']:>13.1f} "
                f"{r['generate_peak_mib']:>20.1f}"
            )
    for key, ratio in ratios.items():
        print(f"{key}: ddp / fsdp = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
