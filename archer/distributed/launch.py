"""Start N local training processes: ``resources.train_procs=N`` without torchrun; restart them on failure.

:func:`launch_local` runs a training entry point (the caller's, e.g. :func:`archer.rl.loop.train`) in ``N`` processes (``torch.multiprocessing``,
``fork`` when CUDA is not initialised, else ``spawn``) with the environment torchrun would set
(``MASTER_ADDR=127.0.0.1``, a free port, ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``); each process then
joins the group in :func:`archer.distributed.world.join_world`. Rank 0's summary is returned.
When ``trainer.threads`` is unset the ranks share the machine's cores evenly.

Failures: the parent polls its children; when one dies (a signal such as SIGKILL, a non-zero exit, the
watchdog of :mod:`archer.distributed.health` ending a hung rank) or raises, the others get
:data:`GRACE_S` seconds to end on their own, then SIGTERM, then SIGKILL, and the attempt fails with one
line (:class:`archer.errors.RankFailure`) naming the rank, how it ended and its stage. With
``trainer.max_restarts=N`` the run is started again (``resume=True``: from the last complete
checkpoint, or from the start when there is none; ``metrics.jsonl`` rows after that checkpoint's step
are dropped by the resumed run's logger) up to ``N`` times, one line on stderr and one entry in
``status.json`` per restart. A ``ValueError`` (a config or data error, ``archer.errors.ConfigError``
among them) or Ctrl-C is never restarted: the error is raised in the parent as it was raised.

Launchers: :func:`launch` runs the one :func:`launcher_name` picks from the config (:data:`LAUNCHERS`:
``local`` here, ``ray`` in :mod:`archer.distributed.ray_launch` when ``resources.nodes > 0``); both
share the restart policy of :func:`with_restarts` and the blame rule of :func:`blame`.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archer.distributed.health import RESTART_ENV, WATCHDOG_EXIT, read_json, record_error, write_status
from archer.errors import RankFailure

GRACE_S = 5.0


def should_launch(cfg: Any) -> bool:
    """True in the parent of a ``train_procs > 1`` run, of a run on Ray nodes (``resources.nodes > 0``),
    or of any run with ``trainer.max_restarts > 0`` (one process then runs as a child the parent can
    restart), when not yet inside a process group."""
    r = cfg.resources
    wanted = r.train_procs > 1 or cfg.trainer.max_restarts > 0 or getattr(r, "nodes", 0) > 0
    return wanted and "WORLD_SIZE" not in os.environ


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` ("" for every interface: a rank on another node must reach it)."""
    with socket.socket() as s:
        s.bind((host, 0))
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
    tmp: str,
    attempt: int,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local_rank),
        WORLD_SIZE=str(nprocs),
        LOCAL_RANK=str(local_rank),
        **{RESTART_ENV: str(attempt)},
    )
    if cfg.trainer.threads is None:  # the ranks share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nprocs))
    try:
        summary = entry(cfg, run_dir=run_dir, resume=resume)
    except Exception as exc:
        text = str(exc).strip()
        line = f"raised {type(exc).__name__}" + (f": {text.splitlines()[0]}" if text else "")
        record_error(run_dir, local_rank, line[:500])
        if isinstance(exc, ValueError):  # a user error: the parent raises it, no restart
            try:
                Path(tmp, f"user_error_{local_rank}.pkl").write_bytes(pickle.dumps(exc))
            except Exception:
                pass
        raise
    if local_rank == 0:
        Path(tmp, "summary.pkl").write_bytes(pickle.dumps(summary))


# launcher name -> "module:function"; which one a run uses is decided in one place, launcher_name()
LAUNCHERS = {
    "local": "archer.distributed.launch:launch_local",
    "ray": "archer.distributed.ray_launch:launch_ray",
}


def launcher_name(cfg: Any) -> str:
    """``ray`` when the config spreads the ranks over Ray nodes (``resources.nodes > 0``), else ``local``."""
    return "ray" if getattr(cfg.resources, "nodes", 0) > 0 else "local"


def launch(
    entry: Callable[..., dict[str, Any]],
    cfg: Any,
    run_dir: str | Path,
    resume: bool = False,
    latest: Callable[[Path], Path | None] | None = None,
) -> dict[str, Any]:
    """Run ``entry`` in the ranks the config asks for, with the launcher of :func:`launcher_name`
    (:data:`LAUNCHERS`), restarting after failures; returns rank 0's result."""
    import importlib

    module, name = LAUNCHERS[launcher_name(cfg)].split(":")
    return getattr(importlib.import_module(module), name)(entry, cfg, run_dir, resume=resume, latest=latest)


def launch_local(
    entry: Callable[..., dict[str, Any]],
    cfg: Any,
    run_dir: str | Path,
    resume: bool = False,
    start_method: str | None = None,
    latest: Callable[[Path], Path | None] | None = None,
) -> dict[str, Any]:
    """Run ``entry(cfg, run_dir=..., resume=...)`` in ``resources.train_procs`` local processes and return
    rank 0's result, restarting up to ``trainer.max_restarts`` times after a failure (see the module
    docstring). ``entry`` is a module-level function (``spawn`` pickles it by name); ``latest(run_dir)``
    names the checkpoint a restart resumes from (for the log line). Raises :class:`RankFailure`."""
    return with_restarts(
        lambda resume, attempt: _run_once(entry, cfg, Path(run_dir), resume, start_method, attempt),
        cfg,
        run_dir,
        resume,
        latest,
    )


def with_restarts(
    run_once: Callable[[bool, int], dict[str, Any]],
    cfg: Any,
    run_dir: str | Path,
    resume: bool = False,
    latest: Callable[[Path], Path | None] | None = None,
) -> dict[str, Any]:
    """``run_once(resume, attempt)`` until it returns, again after each :class:`RankFailure` up to
    ``trainer.max_restarts`` times (resuming), one line on stderr and a ``status.json`` entry per restart;
    every launcher's restart policy. A :class:`NoRestart` failure is final at once."""
    run_dir, limit = Path(run_dir), cfg.trainer.max_restarts
    attempt = 0
    while True:
        try:
            return run_once(resume, attempt)
        except RankFailure as exc:
            reason = str(exc)
            if isinstance(exc, NoRestart) or attempt >= limit:
                if isinstance(exc, NoRestart):
                    tail = "cannot restart"
                elif limit:
                    tail = f"gave up after {limit} restart(s)"
                else:
                    tail = "no restarts (trainer.max_restarts=0)"
                write_status(run_dir, state="failed", error=reason)
                raise RankFailure(f"{reason}; {tail}") from None
        attempt += 1
        last = latest(run_dir) if latest is not None else None
        origin = f"checkpoint {last}" if last is not None else "the start (no complete checkpoint yet)"
        print(f"archer: restart {attempt}/{limit} from {origin}: {reason}", file=sys.stderr, flush=True)
        write_status(
            run_dir,
            state="restarting",
            restart={"attempt": attempt, "time": time.time(), "reason": reason, "from": str(last or "start")},
        )
        resume = True


class NoRestart(RankFailure):
    """A failure a restart cannot mend (e.g. too few nodes left to place the ranks): reported at once."""


def _run_once(
    entry: Callable[..., dict[str, Any]],
    cfg: Any,
    run_dir: Path,
    resume: bool,
    start_method: str | None,
    attempt: int,
) -> dict[str, Any]:
    """One attempt: start the ranks, wait for them all, or turn the first failure into a RankFailure."""
    import torch.multiprocessing as mp

    nprocs = cfg.resources.train_procs
    tmp = Path(tempfile.mkdtemp(prefix="archer-dist-"))
    try:
        ctx = mp.start_processes(
            _worker,
            args=(nprocs, free_port(), entry, cfg, str(run_dir), resume, str(tmp), attempt),
            nprocs=nprocs,
            join=False,
            start_method=start_method or default_start_method(),
        )
        try:
            while not ctx.join(timeout=1.0, grace_period=GRACE_S):
                pass
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as exc:
            for path in sorted(tmp.glob("user_error_*.pkl")):
                raise pickle.loads(path.read_bytes()) from None
            codes = [p.exitcode for p in ctx.processes]
            raise RankFailure(failure_line(run_dir, codes, exc.error_index, attempt)) from None
        except BaseException:  # Ctrl-C in the parent: the children go too
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            for p in ctx.processes:
                p.join(GRACE_S)
            raise
        return pickle.loads((tmp / "summary.pkl").read_bytes())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def failure_line(run_dir: Path, exit_codes: list[int | None], first: int, attempt: int) -> str:
    """One line on a failed attempt: the rank to blame (a watchdog outside a collective, else the first
    to fail), how it ended and the stage its heartbeat reported."""
    rank, beat = blame(run_dir, len(exit_codes), first, attempt)
    code = exit_codes[rank]
    if beat.get("error"):
        how = str(beat["error"])
    elif code is not None and code < 0:
        how = f"died of signal {_signal_name(-code)}"
    elif code == WATCHDOG_EXIT:
        how = "ended by its watchdog"
    else:
        how = f"exited with status {code}"
    return f"rank {rank} {how}{stage_note(beat, how)}"


def blame(run_dir: Path, world_size: int, first: int, attempt: int) -> tuple[int, dict[str, Any]]:
    """The rank to blame for a failed attempt and its heartbeat of that attempt: a rank its watchdog
    ended outside a collective (the others wait on it), else ``first`` (the first seen to fail)."""
    beats = {}
    for rank in range(world_size):
        beat = read_json(Path(run_dir) / "health" / f"rank_{rank}.json")
        if beat is not None and int(beat.get("attempt", -1)) == attempt:
            beats[rank] = beat
    hung = [r for r, b in beats.items() if "not in a collective" in str(b.get("error", ""))]
    rank = hung[0] if hung else first
    return rank, beats.get(rank, {})


def stage_note(beat: dict[str, Any], how: str) -> str:
    """`` (stage 'update' at step 3)`` from a heartbeat, unless ``how`` names the stage already."""
    staged = beat.get("stage") is not None and "stage '" not in how
    return f" (stage '{beat['stage']}' at step {beat.get('step')})" if staged else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
