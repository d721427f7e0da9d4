"""Start N local training processes: ``resources.train_procs=N`` without torchrun.

:func:`launch_local` runs a training entry point (the caller's, e.g. :func:`archer.rl.loop.train`) in ``N`` processes (``torch.multiprocessing``,
``fork`` when CUDA is not initialised, else ``spawn``) with the environment torchrun would set
(``MASTER_ADDR=127.0.0.1``, a free port, ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``); each process then
joins the group in :func:`archer.distributed.world.join_world`. Rank 0's summary is returned.
When ``trainer.threads`` is unset the ranks share the machine's cores evenly.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def should_launch(cfg: Any) -> bool:
    """True in the parent of a ``train_procs > 1`` run (not yet inside a process group)."""
    return cfg.resources.train_procs > 1 and "WORLD_SIZE" not in os.environ


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


def _worker(
    local_rank: int,
    nprocs: int,
    port: int,
    entry: Callable[..., dict[str, Any]],
    cfg: Any,
    run_dir: str,
    resume: bool,
    result_path: str,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local_rank),
        WORLD_SIZE=str(nprocs),
        LOCAL_RANK=str(local_rank),
    )
    if cfg.trainer.threads is None:  # the ranks share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nprocs))
    summary = entry(cfg, run_dir=run_dir, resume=resume)
    if local_rank == 0:
        Path(result_path).write_bytes(pickle.dumps(summary))


def launch_local(
    entry: Callable[..., dict[str, Any]],
    cfg: Any,
    run_dir: str | Path,
    resume: bool = False,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Run ``entry(cfg, run_dir=..., resume=...)`` in ``resources.train_procs`` local processes and return
    rank 0's result. ``entry`` is a module-level function (``spawn`` pickles it by name)."""
    import torch.multiprocessing as mp

    nprocs = cfg.resources.train_procs
    tmp = Path(tempfile.mkdtemp(prefix="archer-dist-"))
    try:
        mp.start_processes(
            _worker,
            args=(nprocs, _free_port(), entry, cfg, str(run_dir), resume, str(tmp / "summary.pkl")),
            nprocs=nprocs,
            join=True,
            start_method=start_method or default_start_method(),
        )
        return pickle.loads((tmp / "summary.pkl").read_bytes())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
