"""Health of a training run seen from the outside: heartbeats, a watchdog, ``status.json``.

Each rank keeps a :class:`Health`: the stage it is in (the step's stages of :mod:`archer.rl.step`,
evaluation, saving; a cheap marker the loop sets through ``World.mark``), the collective it is waiting
in, if any, and when it last made progress. It writes them to ``<run>/health/rank_<r>.json``
(atomically: a temporary file, then a rename) on every stage change and, under a process group, every
few seconds from a watchdog thread. The watchdog ends the process (exit code :data:`WATCHDOG_EXIT`)
with one line naming the rank, the stage, the step and the collective when a rank made no progress
for longer than its timeout (``resources.watchdog_s``, by default ``resources.dist_timeout_s``): a hung collective, a rank stuck in its own
code, a weight sync that never returns. It watches from the first training step on (its stages, the
evaluations and saves between them, the final ones); the set-up before (model build, SFT warm-up, the
first evaluation, which rank 0 runs alone while the others wait) is bounded by the collective timeout
only. The launcher (:mod:`archer.distributed.launch`) then stops
the other ranks and, with ``trainer.max_restarts``, restarts the run from its last complete checkpoint.

``<run>/status.json`` holds the job-level part (recipe, state, restarts and their reasons), written by
:func:`write_status` (merged into what is there, atomically). ``archer status RUN_DIR`` reads both.

Test hook (the only one): ``ARCHER_FAULT_INJECT=RANK:STEP[:kill|hang|exit]`` makes that rank, on the
first attempt of a run (``ARCHER_RESTART`` unset or 0), kill itself with SIGKILL (default), sleep
forever, or exit with status 1 when it starts step ``STEP``'s first stage. Read in one place,
:func:`fault_hook`; unset, it costs one dictionary look-up per step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from archer.atomic_json import write_json

HEALTH_DIR = "health"
STATUS_FILE = "status.json"
WATCHDOG_EXIT = 75
FAULT_ENV = "ARCHER_FAULT_INJECT"
RESTART_ENV = "ARCHER_RESTART"
NODE_ENV = "ARCHER_NODE"  # "IP/node-id" of a rank placed by the Ray launcher (in its heartbeat)
FIRST_STAGE = "generate"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``; None when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(run_dir: str | Path, **fields: Any) -> None:
    """Merge ``fields`` into ``<run>/status.json`` (``restart``: appended to the list ``restarts``); nothing
    when the run directory does not exist yet (a run that failed before creating it leaves none)."""
    if not Path(run_dir).is_dir():
        return
    path = Path(run_dir) / STATUS_FILE
    status = read_json(path) or {}
    restart = fields.pop("restart", None)
    if restart is not None:
        status.setdefault("restarts", []).append(restart)
    status.update(fields, updated=time.time())
    write_json(path, status)


def heartbeat_path(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / HEALTH_DIR / f"rank_{rank}.json"


def record_error(run_dir: str | Path, rank: int, error: str) -> None:
    """Add ``error`` (one line) to a rank's heartbeat file (the launcher's worker, on an exception)."""
    if not Path(run_dir).is_dir():
        return
    path = heartbeat_path(run_dir, rank)
    beat = read_json(path) or {"rank": rank}
    beat.update(error=error, time=time.time(), attempt=restart_index())
    write_json(path, beat)


def restart_index() -> int:
    """Which attempt of the run this process belongs to (0: the first; set by the launcher)."""
    return int(os.environ.get(RESTART_ENV, "0") or 0)


def fault_hook(rank: int, step: int, stage: str) -> None:
    """The test hook of the module docstring (``ARCHER_FAULT_INJECT``); a no-op when unset."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or stage != FIRST_STAGE or restart_index() != 0:
        return
    parts = spec.split(":")
    if int(parts[0]) != rank or int(parts[1]) != step:
        return
    action = parts[2] if len(parts) > 2 else "kill"
    print(f"[fault injection] rank {rank} step {step}: {action}", file=sys.stderr, flush=True)
    if action == "hang":
        while True:
            time.sleep(3600)
    if action == "exit":
        os._exit(1)
    os.kill(os.getpid(), signal.SIGKILL)


class Health:
    """One rank's heartbeat and, with ``timeout_s``, its watchdog thread (see the module docstring)."""

    def __init__(self, run_dir: str | Path, rank: int, timeout_s: float | None = None) -> None:
        self.path = heartbeat_path(run_dir, rank)
        self.rank, self.timeout_s = rank, timeout_s
        self.stage, self.step, self.op = "start", 0, None
        self.progress = time.time()  # the last stage change or collective entry
        self.armed = False  # the watchdog watches from the first training step on
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write()
        if timeout_s:
            self.tick_s = max(0.2, min(5.0, timeout_s / 10))
            self._thread = threading.Thread(target=self._watch, name="archer-watchdog", daemon=True)
            self._thread.start()

    def mark(self, stage: str, step: int | None = None) -> None:
        """This rank entered ``stage`` (of ``step``, when given)."""
        self.stage = stage
        if step is not None:
            self.step, self.armed = step, True
        self.progress = time.time()
        self._write()
        fault_hook(self.rank, self.step, stage)

    @contextlib.contextmanager
    def collective(self, op: str) -> Iterator[None]:
        """Inside: this rank waits in collective ``op`` (named in a watchdog's report)."""
        outer, self.op, self.progress = self.op, op, time.time()
        try:
            yield
        finally:
            self.op, self.progress = outer, time.time()

    def where(self) -> str:
        where = f"stage '{self.stage}' at step {self.step}"
        return where + (f", in collective {self.op}" if self.op else ", not in a collective")

    def _write(self, **extra: Any) -> None:
        beat = {
            "rank": self.rank,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "attempt": restart_index(),
            "time": time.time(),
            "stage": self.stage,
            "step": self.step,
            "op": self.op,
            "stage_since": self.progress,
            **({"node": os.environ[NODE_ENV]} if os.environ.get(NODE_ENV) else {}),
            **extra,
        }
        with self._lock:
            with contextlib.suppress(OSError):
                write_json(self.path, beat)

    def _watch(self) -> None:
        while not self._stop.wait(self.tick_s):
            idle = time.time() - self.progress
            if self.armed and self.timeout_s and idle > self.timeout_s:
                line = f"made no progress for {idle:.0f} s in {self.where()} (watchdog)"
                self._write(error=line)
                print(f"archer: rank {self.rank} {line}", file=sys.stderr, flush=True)
                os._exit(WATCHDOG_EXIT)
            self._write()

    def close(self, stage: str = "done") -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.tick_s + 1)
        self.stage, self.op = stage, None
        self._write()
