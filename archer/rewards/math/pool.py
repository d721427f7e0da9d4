"""A pool of math-judging worker processes that are killed and replaced when they overrun.

Why processes, and why our own pool: math-verify bounds its work with ``signal.alarm``, which only
works on the main thread and cannot interrupt C-level sympy/GMP arithmetic (an integer tower such as
``9^{9^{9^9}}`` keeps a process busy for ever). A reward function runs inside trainer threads, so the
only reliable bound is a separate process that is SIGKILLed on overrun. ``concurrent.futures``
cannot kill one worker without breaking the whole executor, hence this small pool.

Design:
- workers are fresh interpreters (``subprocess`` fork+exec, the ``spawn`` start method without
  multiprocessing's re-import of the caller's ``__main__``): forking a process that runs torch
  threads can deadlock, exec cannot, and a script without an ``if __name__ == "__main__"`` guard
  still works. The parent talks to each worker over two pipes wrapped as
  ``multiprocessing.connection.Connection``. Each worker imports math-verify and sympy, caps its
  address space at ``memory_mb`` (RLIMIT_AS), then says "ready"; start-up time never counts against
  a judgement's timeout.
- a job is a slice of ``(gold, pred)`` pairs sent as one message; the worker streams one result per
  pair, and each pair gets ``timeout`` seconds from the previous result. On overrun the worker is
  killed, the prediction is marked ``timeout``, a replacement is started, and the rest of the job
  goes on with the next ready worker. A worker that dies under an item (killed from outside, or
  by the memory cap outside Python's ``MemoryError``) is replaced and the item retried once; a
  second death marks it ``memory`` or ``worker_died``.
- ``judge_many`` runs jobs on ``n_workers`` threads (they only wait on pipes), so a batch is spread
  over all workers in parallel; pairs sharing a gold are adjacent and each worker caches parsed
  golds, so a gold is parsed about once per worker.
- pools close at interpreter exit (``atexit``) and are safe to use from any thread; a pool inherited
  by a forked child starts its own workers there instead of sharing the parent's pipes.

:func:`default_pool` is created lazily on first use with ``ARCHER_MATH_WORKERS`` workers (default:
the CPU count, at most 8), the one piece of module state besides registries.
"""

from __future__ import annotations

import atexit
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

Verdict = tuple[bool, str]  # (equal, reason)

_START_TIMEOUT_S = 180.0  # import of sympy + math-verify on a loaded machine
_MAX_START_FAILURES = 3
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding ``archer/``


def _worker_entry(read_fd: int, write_fd: int, memory_mb: int, parent_pid: int) -> None:
    """Child-process entry point (``python -c``): wrap the inherited pipe ends and serve."""
    _die_with_parent(parent_pid)
    _worker_main(
        _Duplex(Connection(read_fd, writable=False), Connection(write_fd, readable=False)), memory_mb
    )


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker when the thread that started it ends (PR_SET_PDEATHSIG), so a
    worker stuck in C-level arithmetic does not outlive a trainer that was killed without cleanup.
    Elsewhere, or if prctl is unavailable, workers still exit on EOF from the parent's pipe."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


class _Duplex:
    """Two one-way connections seen as one duplex connection (recv from one, send on the other)."""

    def __init__(self, reader: Connection, writer: Connection) -> None:
        self.reader, self.writer = reader, writer

    def send(self, obj: object) -> None:
        self.writer.send(obj)

    def recv(self) -> object:
        return self.reader.recv()

    def poll(self, timeout: float = 0.0) -> bool:
        return self.reader.poll(timeout)

    def close(self) -> None:
        for conn in (self.reader, self.writer):
            try:
                conn.close()
            except OSError:
                pass


def _worker_main(conn: _Duplex, memory_mb: int) -> None:  # runs in the child process
    import resource

    from archer.rewards.math import judge as math_judge

    math_judge._mv()  # pre-import math_verify / sympy before saying ready
    math_judge._configs()
    try:  # warm the LaTeX parser (its first use builds tables for ~1 s) so no judgement pays for it
        math_judge.judge("\\frac{1}{2}", "\\sqrt{x}+1")
    except Exception:  # noqa: BLE001 - warming up is best effort
        pass
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):
            pass
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        for i, (gold, pred) in enumerate(msg[1]):
            try:
                equal, reason = math_judge.judge(gold, pred)
            except MemoryError:
                equal, reason = False, "memory"
            except RecursionError:
                equal, reason = False, "parse_error"
            except Exception:  # noqa: BLE001 - any sympy/parser failure is a non-match, not a crash
                equal, reason = False, "parse_error"
            conn.send(("item", i, bool(equal), reason))
        conn.send(("done",))


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        code = (
            "from archer.rewards.math.pool import _worker_entry; "
            f"_worker_entry({to_child_r}, {to_parent_w}, {int(memory_mb)}, {os.getpid()})"
        )
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code],
                pass_fds=(to_child_r, to_parent_w),
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the trainer, not the workers
            )
        finally:
            os.close(to_child_r)
            os.close(to_parent_w)
        self.conn = _Duplex(Connection(to_parent_r, writable=False), Connection(to_child_w, readable=False))
        self.ready = False

    def wait_ready(self, timeout: float) -> bool:
        if self.ready:
            return True
        try:
            if self.conn.poll(timeout) and self.conn.recv() == ("ready",):
                self.ready = True
        except (EOFError, OSError):
            pass
        return self.ready

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.conn.close()


@dataclass
class _Job:
    """A slice of a batch sent to one worker in one message: ``(gold, pred)`` pairs, same-gold
    pairs adjacent so the worker's gold cache hits."""

    pairs: list[tuple[str, str]]


class MathVerifierPool:
    """Worker processes that judge ``(gold, pred)`` answer pairs with a hard per-item timeout.

    Args:
        n_workers: number of worker processes (>= 1); default the CPU count, at most 8.
        timeout: seconds one judgement may take before its worker is killed (> 0).
        memory_mb: address-space cap of each worker in MiB (>= 256; 0 disables).

    Use as a context manager, or call :meth:`close`; pools still open close at interpreter exit.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        timeout: float = 5.0,
        memory_mb: int = 2048,
    ) -> None:
        if n_workers is None:
            n_workers = max(1, min(os.cpu_count() or 1, 8))
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"MathVerifierPool.n_workers must be an int >= 1, got {n_workers!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"MathVerifierPool.timeout must be > 0 seconds, got {timeout!r}")
        if not isinstance(memory_mb, int) or (memory_mb != 0 and memory_mb < 256):
            raise ValueError(f"MathVerifierPool.memory_mb must be 0 or >= 256, got {memory_mb!r}")
        self.n_workers, self.timeout, self.memory_mb = n_workers, float(timeout), memory_mb
        self._closed = False
        self._setup()
        atexit.register(_close_ref, weakref.ref(self))

    def _setup(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._executor: ThreadPoolExecutor | None = None
        # every worker is started from this one long-lived thread: PR_SET_PDEATHSIG fires when the
        # *thread* that started a worker ends, and caller threads come and go
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="math-pool-spawn")
        for _ in range(self.n_workers):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        worker = self._spawner.submit(_Worker, self.memory_mb).result()
        with self._lock:
            self._workers.append(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        if not self._closed:
            self._idle.put(self._spawn())  # starts now; becomes ready while others work

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:  # forked child: the parent's workers are not ours to use
            self._setup()
        if self._closed:
            raise RuntimeError("MathVerifierPool is closed")

    def _acquire(self) -> _Worker:
        failures = 0
        while failures < _MAX_START_FAILURES:
            try:
                worker = self._idle.get(timeout=1.0)
            except queue.Empty:
                if self._closed:
                    raise RuntimeError("MathVerifierPool is closed") from None
                continue
            if worker.proc.poll() is None and worker.wait_ready(_START_TIMEOUT_S):
                return worker
            failures += worker.ready is False  # a worker that died after starting is not a start failure
            self._retire(worker)  # replace it and try the next one
        raise RuntimeError(f"math verifier workers failed to start {_MAX_START_FAILURES} times in a row")

    # --- public ----------------------------------------------------------------------------------

    def judge(self, gold: str, pred: str, timeout: float | None = None) -> Verdict:
        """``(equal, reason)`` for one pair; reasons as in :func:`archer.rewards.math.judge.judge`
        plus ``timeout``, ``worker_died``, ``memory``."""
        return self.judge_many([(gold, [pred])], timeout)[0][0]

    def judge_many(
        self, jobs: Sequence[tuple[str, Sequence[str]]], timeout: float | None = None, chunk: int = 64
    ) -> list[list[Verdict]]:
        """Judge every ``(gold, [pred, ...])`` job in parallel; one verdict list per job, in order.

        All pairs are cut into consecutive slices of at most ``chunk`` (about four per worker, so
        the load balances), and each slice travels to a worker as one message: per-message latency,
        not judging, dominates on a loaded machine when every pair is its own round trip.
        """
        self._check_pid()
        timeout = self.timeout if timeout is None else float(timeout)
        pairs = [(str(gold), str(pred)) for gold, preds in jobs for pred in preds]
        size = max(1, min(chunk, -(-len(pairs) // (4 * self.n_workers))))
        pieces = [_Job(pairs[i : i + size]) for i in range(0, len(pairs), size)]
        if len(pieces) <= 1:  # a single slice runs on the calling thread
            done = [self._run_job(piece, timeout) for piece in pieces]
        else:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.n_workers, thread_name_prefix="math-pool")
                executor = self._executor
            done = list(executor.map(lambda piece: self._run_job(piece, timeout), pieces))
        flat = [verdict for verdicts in done for verdict in verdicts]
        out, start = [], 0
        for _, preds in jobs:
            out.append(flat[start : start + len(preds)])
            start += len(preds)
        return out

    def _run_job(self, job: _Job, timeout: float) -> list[Verdict]:
        results: list[Verdict] = []
        died_at = -1  # index of the item whose worker died once already: a second death is its verdict
        failures = 0
        while len(results) < len(job.pairs):
            worker = self._acquire()
            try:
                worker.conn.send(("judge", job.pairs[len(results) :]))
            except (OSError, ValueError):
                self._retire(worker)
                failures += 1
                if failures > 3:  # the job itself kills workers on arrival: give up on it
                    results += [(False, "worker_died")] * (len(job.pairs) - len(results))
                continue
            status = self._collect(worker, job, results, timeout)
            if status == "ok":
                self._idle.put(worker)
                continue
            if status == "died":
                # a worker killed from outside (or dead while idle) should not cost this item its
                # verdict: retry it once on a fresh worker; dying twice on it is the item's doing
                if died_at == len(results):
                    results.append((False, "memory" if _killed_by_memory(worker) else "worker_died"))
                died_at = len(results)
            self._retire(worker)
        return results

    def _collect(self, worker: _Worker, job: _Job, results: list[Verdict], timeout: float) -> str:
        """Read streamed results into ``results``; ``"ok"``, or ``"timeout"`` (the overrunning item
        is marked), or ``"died"`` (the worker vanished; the current item is not marked)."""
        while True:
            deadline = time.monotonic() + timeout
            try:
                while not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                    if time.monotonic() >= deadline:
                        results.append((False, "timeout"))
                        return "timeout"
                msg = worker.conn.recv()
            except (EOFError, OSError):
                return "died"
            if msg[0] == "done":
                return "ok"
            results.append((msg[2], msg[3]))
            if len(results) == len(job.pairs):
                try:
                    if worker.conn.poll(timeout) and worker.conn.recv() == ("done",):  # the trailing "done"
                        return "ok"
                except (EOFError, OSError):
                    pass
                return "died"

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and tests)."""
        with self._lock:
            return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            return  # inherited pool: the workers belong to the parent
        with self._lock:
            workers, self._workers = list(self._workers), []
            executor, self._executor = self._executor, None
        for worker in workers:
            worker.kill()
        if executor is not None:
            executor.shutdown(wait=False)
        self._spawner.shutdown(wait=False)

    def __enter__(self) -> MathVerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


def _killed_by_memory(worker: _Worker) -> bool:
    try:
        code = worker.proc.wait(timeout=1)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return code not in (0, -9)  # died on its own (an allocation failed outside Python's MemoryError)


def _close_ref(ref: weakref.ref) -> None:
    pool = ref()
    if pool is not None:
        pool.close()


_DEFAULT: dict[str, MathVerifierPool] = {}
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> MathVerifierPool:
    """The shared pool used by ``math_equal`` / ``score_math*`` when no pool is given (lazy)."""
    with _DEFAULT_LOCK:
        pool = _DEFAULT.get("pool")
        if pool is None or pool._closed or pool._pid != os.getpid():
            workers = int(os.environ.get("ARCHER_MATH_WORKERS", "0")) or None
            pool = _DEFAULT["pool"] = MathVerifierPool(n_workers=workers)
        return pool
