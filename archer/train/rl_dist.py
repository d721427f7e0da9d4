"""Data-parallel RL training across processes (torch.distributed): launch, rank helpers, collectives.

``resources.train_procs=N`` makes :func:`archer.train.rl.train` start N local processes
(:func:`launch_local`: ``torch.multiprocessing`` with ``MASTER_ADDR=127.0.0.1``, a free port and
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set per child); a process started by ``torchrun`` (``WORLD_SIZE``
already in the environment) joins that group instead (:func:`join`). The backend is
``resources.dist_backend`` (``auto``: nccl on CUDA devices, gloo otherwise).

Design (data parallel with replicated weights and summed gradients, the scheme of PyTorch DDP, Li et
al. 2020, "PyTorch Distributed", VLDB): every rank holds a full replica, because generation runs
on the policy itself and FSDP2-sharded parameters cannot generate with rank-dependent lengths without
matching collectives on every rank. So the replicas stay identical by construction:

- every rank draws the same global prompt batch (same data order), generates and scores its slice
  ``idx[rank::world]`` with a rank-offset seed, then :meth:`Ranks.gather` hands every rank all groups
  in the global order, so dynamic sampling, online prompt removal, advantages (whole groups, never split
  across ranks) and step metrics are computed identically everywhere (global means, not means of means);
- group ``g`` of the kept batch is trained by rank ``g % world``; the mini-batch split is the global one,
  each rank takes its rows of each mini-batch (possibly none: it still takes part in every collective);
- per mini-batch (:func:`archer.train.rl_update.update_minibatch` with ``dist=True``): the loss normaliser
  is all-reduced before any loss, the NaN/inf skip is decided by all ranks together (:func:`any_rank`),
  gradients are summed (:func:`allreduce_grads`; each rank's loss is already its share of the global
  loss) and then clipped, so every rank takes the same optimizer step;
- rank 0 alone writes the run directory and runs the evaluations; the others wait in
  :func:`on_main` (a broadcast of rank 0's result).

Limits: the FSDP2 path of :mod:`archer.distributed.fsdp` is not wired into the RL loop (generation would
need a full-weight gather per step, and FSDP's forward/backward collectives forbid a rank leaving a
mini-batch early; its gradients arrive reduce-scattered as a mean, so the loss would be scaled by the
world size instead of :func:`allreduce_grads`). nccl/GPU multi-process runs are untested here (CPU gloo
is tested). Rollout objects travel between ranks pickled (``all_gather_object``), fine for moderate
batches. ``time/*`` step metrics are rank 0's own; the reward, length and actor metrics are global.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@dataclass
class Ranks:
    """This process's place in the data-parallel group (only built when world size > 1)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this module created the process group and destroys it in :func:`leave`

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, local: list[Any]) -> list[Any]:
        """Every rank's ``local`` (its slice ``[rank::world]`` of a list) put back in the global order."""
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, local)
        total = sum(len(p) for p in parts)
        return [parts[j % self.world][j // self.world] for j in range(total)]

    def owned(self, n_items: int) -> list[int]:
        return list(range(self.rank, n_items, self.world))


def should_launch(cfg: Any) -> bool:
    """True in the parent of a ``train_procs > 1`` run (not yet inside a process group)."""
    return cfg.resources.train_procs > 1 and "WORLD_SIZE" not in os.environ


def join(cfg: Any) -> Ranks | None:
    """Join the process group of the environment (torchrun or :func:`launch_local`); None when single."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized():
        return None
    from archer.distributed.fsdp import init_distributed

    r = cfg.resources
    created = not dist.is_initialized()
    backend = None if r.dist_backend == "auto" else r.dist_backend
    if backend is None and not str(cfg.trainer.device).startswith("cuda"):
        backend = "gloo"  # CUDA visible but training on CPU
    info = init_distributed(backend, timeout_s=r.dist_timeout_s)
    device = info.device if str(cfg.trainer.device).startswith("cuda") else torch.device(cfg.trainer.device)
    return Ranks(info.rank, info.world_size, device, created)


def leave(ranks: Ranks | None) -> None:
    if ranks is not None and ranks.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def on_main(ranks: Ranks | None, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only; the others wait and receive its (picklable) result."""
    if ranks is None:
        return fn()
    result = fn() if ranks.main else None
    return ranks.broadcast(result)


def broadcast_params(model: torch.nn.Module) -> None:
    """Make every replica equal to rank 0's (parameters and buffers)."""
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def replica_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal digests mean bitwise-equal replicas."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_hf(path: str | Path, cfg: Any) -> tuple[Any, Any]:
    """(model, tokenizer) of a Hugging Face folder (a checkpoint or rank 0's ``sft_model``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, cfg.model.dtype))
    return model, AutoTokenizer.from_pretrained(str(path))


def build_policy_once(cfg: Any, ranks: Ranks | None, out: Path, train_problems: list[Any],
                      log: Callable[[str], None]) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, sft_info): rank 0 builds and SFT-warms the policy and saves it to
    ``<run>/sft_model`` (a from-scratch model always, any model when data parallel); the other ranks
    wait and load that copy (BPE training and SFT are not repeated, and cannot drift between ranks)."""
    import time

    from archer.train.rl_setup import build_policy

    model = tokenizer = None
    info: dict[str, Any] = {}
    if ranks is None or ranks.main:
        t0 = time.time()
        model, tokenizer, info = build_policy(cfg, train_problems, log)
        info["seconds"] = round(time.time() - t0, 1)
        if cfg.model.path is None or ranks is not None:
            model.save_pretrained(str(out / "sft_model"))
            tokenizer.save_pretrained(str(out / "sft_model"))
    if ranks is not None:
        ranks.barrier()
        if not ranks.main:
            model, tokenizer = load_hf(out / "sft_model", cfg)
            if cfg.model.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
                model.gradient_checkpointing_enable()
    return model, tokenizer, info


class SilentLogger:
    """The metrics sink of ranks > 0: rank 0 alone writes the run directory."""

    notes: tuple[str, ...] = ()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def stop_progress(self) -> None:
        pass

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------ update-level collectives


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank when ``flag`` is true on some rank (a one-element MAX all-reduce)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def allreduce_grads(model: torch.nn.Module) -> None:
    """Sum gradients over ranks, one flat buffer per dtype.

    A parameter with a gradient on some rank gets one on every rank (zeros where it had none, e.g. a
    rank with no rows); one without a gradient anywhere stays ``None``, as in a single process, so
    AdamW skips it the same way.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=device)  # [P]
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in live:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])  # [sum numel]
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def merge_update_metrics(sums: dict[str, float], plain: dict[str, float],
                         ratio_max: float) -> tuple[dict[str, float], dict[str, float], float]:
    """Token-weighted sums and loss shares summed over ranks, ``ratio_max`` maxed (key sets may differ)."""
    parts: list[Any] = [None] * _world()
    dist.all_gather_object(parts, (sums, plain, ratio_max))
    out_s: dict[str, float] = {}
    out_p: dict[str, float] = {}
    for s, p, _ in parts:
        for k, v in s.items():
            out_s[k] = out_s.get(k, 0.0) + v
        for k, v in p.items():
            out_p[k] = out_p.get(k, 0.0) + v
    return out_s, out_p, max(r for _, _, r in parts)


def global_entropy_measure(old: torch.Tensor, mask: torch.Tensor, rows: list[int]) -> float:
    """``-mean(old_log_prob)`` over the trained tokens of every rank's own rows (the controller's input)."""
    m = mask[rows] != 0  # [R, T]
    t = torch.tensor([float(-(old[rows][m]).double().sum()) if rows else 0.0, float(m.sum())],
                     dtype=torch.float64, device=old.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t[0] / t[1]) if t[1] > 0 else 0.0


# ------------------------------------------------------------------------ local launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_start_method() -> str:
    """``fork`` (fast; children inherit imported modules) unless CUDA was initialised here or no fork."""
    import multiprocessing

    if "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


def _worker(local_rank: int, nprocs: int, port: int, cfg: Any, run_dir: str, resume: bool,
            result_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(nprocs), LOCAL_RANK=str(local_rank))
    if cfg.trainer.threads is None:  # the ranks share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nprocs))
    from archer.train.rl import train

    summary = train(cfg, run_dir=run_dir, resume=resume)
    if local_rank == 0:
        Path(result_path).write_bytes(pickle.dumps(summary))


def launch_local(cfg: Any, run_dir: str | Path, resume: bool = False,
                 start_method: str | None = None) -> dict[str, Any]:
    """Run :func:`archer.train.rl.train` in ``resources.train_procs`` local processes; rank 0's summary."""
    import torch.multiprocessing as mp

    nprocs = cfg.resources.train_procs
    tmp = Path(tempfile.mkdtemp(prefix="archer-dist-"))
    try:
        mp.start_processes(_worker, args=(nprocs, _free_port(), cfg, str(run_dir), resume, str(tmp / "summary.pkl")),
                           nprocs=nprocs, join=True, start_method=start_method or default_start_method())
        return pickle.loads((tmp / "summary.pkl").read_bytes())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
