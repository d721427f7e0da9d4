"""Isolated execution of untrusted programs: a pool of pre-warmed zygote processes.

The trainer never imports or executes generated code. It talks to ``SandboxConfig.workers``
zygotes (``worker.py``), each started once inside fresh namespaces
(``unshare --mount --net --pid --ipc --uts``) and holding the common imports. Each run (each test
for stdin problems) is one unprivileged child forked by the zygote's *run template*, a copy forked
before the zygote's first request that never sees request data, so a run costs a ``fork``, not an
interpreter start, and inherits no earlier run's data. Isolation layers and their fallbacks are
described in ``isolation.py``; whatever is missing on this machine is logged once as a
warning when the pool starts and is visible in :func:`sandbox_isolation`.

Launchers, tried in order under ``isolation="auto"``:

- ``unshare`` as root: every layer, including the uid drop and the cgroups;
- ``unshare --map-root-user`` (unprivileged user namespaces): namespaces, the private root, a
  fresh IPC namespace per run and seccomp, but the program keeps the caller's uid and no cgroup
  (unless a delegated v2 subtree is writable);
- ``none``: rlimits, sessions, seccomp and a temporary cwd only (loudly reported).

What is covered (as root with util-linux ``unshare``, seccomp and writable cgroups, as on the CI
image): programs never run in the trainer, and nothing a program defines runs in the assert judge
(tests run against the real builtins; only the entry point comes from the program, as plain data
over a pipe). Each run gets a fresh process whose inherited memory holds no earlier run's data,
a fresh IPC namespace for every role, judge included (no SysV/POSIX IPC object survives it), exactly
its target descriptors and nothing else the template or zygote held (``isolation.keep_only``), a uid
pair no other pool on the machine uses, a seccomp allow list (anything else ENOSYS; keyrings, bpf,
perf, userfaultfd, io_uring, ptrace, mounts, namespaces, kexec and module loading EPERM; sockets
AF_UNIX only: ``seccomp.py``), a cgroup bounding its total memory (memfd, shm and tmpfs included),
task count and CPU bandwidth (``cgroup.py``; a slot is handed to the next run only once the last
run's processes and charged memory are gone), rlimits, a private writable
directory on a small tmpfs with an inode limit and nothing else writable, no network, no view of the
host's processes, files outside the system directories, or environment; the whole process tree is
killed and its files removed (without recursion, whatever the depth) after every run; expected
outputs never enter the program's process, the trainer's comparisons never raise on what a program
prints, and assert verdicts come from a judge process the program cannot signal, trace or write to.

What is not: the zygote and its run template stay root inside their namespaces (they must fork
children under other uids and kill them) and keep CAP_SYS_ADMIN in the permitted set for the per-run
IPC namespace, behind the seccomp filter; a kernel exploit through an allowed syscall
is out of scope. Without a cgroup cpu controller, CPU time is shared with the trainer (RLIMIT_CPU per
process and a wall-clock timeout per test only). See docs/SECURITY.md for the threat model.
Per-uid kernel limits are only isolated between pools that share the uid lock directory
(``sandbox_uids.py``). Without root or cgroups the corresponding layers are missing and reported;
the cgroup v2 path has only been exercised on a fake directory tree (this project's machines run v1).

The pool is a plain object: create one per process and share it, or use :func:`default_pool`. Every
request streams one event per test back to the caller, which compares outputs itself and decides
whether to continue (stop at the first failure for hard rewards). An exception in the caller's
handler fails that job only; the zygote serves on.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from queue import Empty, Queue
from typing import Any

from archer.sandbox import uids as sandbox_uids
from archer.sandbox.zygote import cgroup as sandbox_cgroup
from archer.sandbox.zygote.harness import recv_frame, send_frame, write_all
from archer.sandbox.zygote.isolation import remove_tree_contents

log = logging.getLogger(__name__)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote", "worker.py")
ISOLATION_MODES = ("auto", "namespaces", "userns", "none")
LAYERS = (
    "mount_namespace",
    "chroot",
    "net_namespace",
    "pid_namespace",
    "uid_drop",
    "capabilities_dropped",
    "ipc_per_run",
    "seccomp",
    "cgroup",
)

# on_event(event) -> continue?; event = {"i", "status", "stdout"/"result", "detail", "time"}
EventHandler = Callable[[dict[str, Any]], bool]


class SandboxError(RuntimeError):
    """The sandbox itself failed (a zygote died or could not start)."""


class JobError(SandboxError):
    """One job failed on the trainer's side (its event handler raised); the zygote is fine."""


@dataclass
class SandboxConfig:
    """Pool settings. ``workers=0`` means one zygote per CPU core."""

    workers: int = 0
    isolation: str = "auto"  # auto | namespaces (unshare as root) | userns | none
    uid_base: int = 64000  # uid pairs (program, judge = +1) are allocated from here upward
    nproc: int = 32  # RLIMIT_NPROC per run (threads count)
    file_size_mb: int = 16  # RLIMIT_FSIZE
    open_files: int = 64  # RLIMIT_NOFILE
    tmpfs_mb: int = 64  # size of the private /tmp holding the run directories
    cpus_per_slot: float = 1.0  # CPU bandwidth of one slot's processes together (cgroup cpu); 0 = none
    start_timeout: float = 60.0
    debug: bool = False  # let zygote stderr through

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATION_MODES:
            raise ValueError(
                f"SandboxConfig.isolation must be one of {ISOLATION_MODES}, got {self.isolation!r}"
            )
        for name in (
            "workers",
            "uid_base",
            "nproc",
            "file_size_mb",
            "open_files",
            "tmpfs_mb",
            "cpus_per_slot",
        ):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"SandboxConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.nproc < 2:
            raise ValueError(f"SandboxConfig.nproc must be >= 2 (the run itself), got {self.nproc}")


def _launch_commands(mode: str) -> list[tuple[str, list[str]]]:
    unshare = shutil.which("unshare")
    ns = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
    out: list[tuple[str, list[str]]] = []
    if unshare and mode in ("auto", "namespaces") and os.geteuid() == 0:
        out.append(("unshare", [unshare, *ns]))
    if unshare and mode in ("auto", "userns"):
        out.append(("unshare-userns", [unshare, "--user", "--map-root-user", *ns]))
    if mode in ("auto", "none"):
        out.append(("none", []))
    return out


class _Zygote:
    """One zygote process and its pipes; used by one thread at a time."""

    def __init__(
        self,
        cfg: SandboxConfig,
        slot: int,
        launcher: str,
        prefix: list[str],
        resources: dict[str, Any] | None = None,
    ) -> None:
        wcfg = {
            **asdict(cfg),
            **(resources or {}),
            "slot": slot,
            "launcher": launcher,
            "host_mnt_ns": os.stat("/proc/self/ns/mnt").st_ino,
            "host_net_ns": os.stat("/proc/self/ns/net").st_ino,
        }
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-I", "-S", WORKER, json.dumps(wcfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if cfg.debug else subprocess.DEVNULL,
            env={},
            close_fds=True,
            cwd="/",
        )
        self.fd_in, self.fd_out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        ready, _, _ = select.select([self.fd_out], [], [], cfg.start_timeout)
        hello = self._recv() if ready else None
        if not hello or hello.get("event") != "hello":
            self.close()
            raise SandboxError(f"sandbox zygote ({launcher}) did not start")
        self.isolation: dict[str, Any] = hello["isolation"]

    def _recv(self) -> dict[str, Any] | None:
        try:
            raw = recv_frame(self.fd_out, 1 << 30)
        except (OSError, ValueError):
            return None
        return None if raw is None else json.loads(raw)

    def _send(self, msg: dict[str, Any] | bytes) -> None:
        try:
            if isinstance(msg, bytes):
                write_all(self.fd_in, msg)  # part B: raw bytes of the announced length
            else:
                send_frame(self.fd_in, json.dumps(msg).encode())
        except OSError as exc:
            raise SandboxError(f"sandbox zygote died: {exc}") from exc

    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, req: dict[str, Any], part_b: bytes | None, on_event: EventHandler) -> None:
        msg = dict(req)
        if part_b is not None:
            msg["part_b_len"] = len(part_b)
        self._send(msg)
        if part_b is not None:
            self._send(part_b)
        failure: Exception | None = None
        # watchdog: the zygote enforces every limit itself; this only catches a zygote that hangs
        n = max(len(req.get("inputs") or ()), int(req.get("n_tests") or 1))
        limit = float(req.get("timeout", 10.0)) * (n + 1) + 60.0
        if req.get("budget"):
            limit = min(limit, float(req["budget"]) + 60.0)
        deadline = time.monotonic() + limit
        while True:
            ready, _, _ = select.select([self.fd_out], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.proc.kill()
                raise SandboxError(f"sandbox zygote hung for {limit:.0f}s; killed")
            event = self._recv()
            if event is None:
                raise SandboxError("sandbox zygote died during a run")
            if event.get("event") == "done":
                if event.get("error"):
                    raise SandboxError(event["error"])
                if failure is not None:
                    raise JobError(f"event handler failed: {type(failure).__name__}: {failure}") from failure
                return
            go = False
            if failure is None:
                try:
                    go = bool(on_event(event))
                except Exception as exc:  # stop the run, but keep the protocol in step
                    failure = exc
            self._send({"continue": go})

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        iso = getattr(self, "isolation", {})
        if not iso.get("chroot") and "archer_sandbox_" in str(iso.get("work_root", "")):
            try:  # an unjailed zygote that died early; the tree may be as deep as a program made it
                remove_tree_contents(iso["work_root"])
                os.rmdir(iso["work_root"])
            except OSError:
                pass


class SandboxPool:
    """``workers`` zygotes; :meth:`run` spreads requests over them, one thread per zygote."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        # ARCHER_SANDBOX_WORKERS lets a Ray reward actor size its pool to the CPUs it holds
        n = self.config.workers or int(os.environ.get("ARCHER_SANDBOX_WORKERS", "0")) or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._launcher: tuple[str, list[str]] | None = None
        self._uids: list[Any] = []
        self._cgroups: list[dict[str, Any]] = []
        self._zygotes: list[_Zygote] = []
        failures: list[str] = []
        try:
            self._allocate(n, failures)
            for name, prefix in _launch_commands(self.config.isolation):
                try:
                    first = _Zygote(self.config, 0, name, prefix, self._resources(0))
                except (SandboxError, OSError) as exc:
                    failures.append(f"{name}: {exc}")
                    continue
                self._launcher = (name, prefix)
                break
            if self._launcher is None:
                raise SandboxError(
                    f"no sandbox launcher worked for isolation={self.config.isolation!r}: {failures}"
                )
            self._zygotes = [first]
            self._zygotes += [
                _Zygote(self.config, i, *self._launcher, self._resources(i)) for i in range(1, n)
            ]
        except BaseException:
            self.close()
            raise
        self.isolation = self._summary(failures)
        missing = [k for k in LAYERS if not self.isolation[k]]
        if missing or failures:
            log.warning(
                "code sandbox running WITHOUT %s (launcher %s%s); untrusted code is less isolated",
                ", ".join(missing) or "nothing",
                self.isolation["launcher"],
                f"; failed: {failures + self.isolation['errors']}" if failures or missing else "",
            )

    def _allocate(self, n: int, failures: list[str]) -> None:
        """Machine-wide unique uid pairs and a cgroup per slot (root only; otherwise reported)."""
        if self.config.isolation == "none" or os.geteuid() != 0:
            return
        try:
            self._uids = sandbox_uids.allocate(int(self.config.uid_base), n)
        except OSError as exc:
            failures.append(f"uid allocation: {exc}")
        try:
            self._cgroups = [sandbox_cgroup.create(slot) for slot in range(n)]
        except OSError as exc:
            failures.append(f"cgroup: {exc}")
            for dirs in self._cgroups:
                sandbox_cgroup.remove(dirs)
            self._cgroups = []

    def _resources(self, slot: int) -> dict[str, Any]:
        return {
            "uids": self._uids[slot].as_dict() if self._uids else None,
            "cgroup": self._cgroups[slot] if self._cgroups else None,
        }

    def _summary(self, failures: list[str]) -> dict[str, Any]:
        iso = self._zygotes[0].isolation
        out = {k: bool(iso.get(k)) for k in LAYERS}
        out.update(
            launcher=iso["launcher"],
            tree_kill=iso["tree_kill"],
            rlimits=True,
            workers=len(self._zygotes),
            cgroup_cpu=bool(iso.get("cgroup_cpu")),
            uids=iso.get("uids"),
            all_uids=[z.isolation.get("uids") for z in self._zygotes],
            errors=iso.get("errors", []) + failures,
        )
        return out

    def _revive(self, slot: int) -> None:
        self._zygotes[slot].close()
        self._zygotes[slot] = _Zygote(self.config, slot, *self._launcher, self._resources(slot))  # type: ignore[misc]

    def run(self, jobs: list[tuple[dict[str, Any], bytes | None, EventHandler]]) -> list[str | None]:
        """Run every job; returns per job None (completed) or the sandbox error message."""
        errors: list[str | None] = [None] * len(jobs)
        queue: Queue[int] = Queue()
        for k in range(len(jobs)):
            queue.put(k)

        def drain(slot: int) -> None:
            while True:
                try:
                    k = queue.get_nowait()
                except Empty:
                    return
                if not self._zygotes[slot].alive():
                    self._revive(slot)
                try:
                    self._zygotes[slot].request(*jobs[k])
                except JobError as exc:  # the protocol stayed in step: the zygote serves on
                    errors[k] = str(exc)
                except SandboxError as exc:
                    errors[k] = str(exc)
                    self._revive(slot)

        with self._lock:
            n = min(len(self._zygotes), len(jobs))
            if n <= 1:
                drain(0) if jobs else None
                return errors
            threads = [threading.Thread(target=drain, args=(s,), daemon=True) for s in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return errors

    def close(self) -> None:
        for z in self._zygotes:
            z.close()
        self._zygotes = []
        for dirs in self._cgroups:
            sandbox_cgroup.remove(dirs)
        self._cgroups = []
        for pair in self._uids:
            pair.release()
        self._uids = []

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=1)
def default_pool() -> SandboxPool:
    """The process-wide pool with the default config, started on first use, closed at exit."""
    import atexit

    pool = SandboxPool()
    atexit.register(pool.close)
    return pool


def sandbox_isolation(pool: SandboxPool | None = None) -> dict[str, Any]:
    """Which isolation layers are active (starts the default pool if needed)."""
    return dict((pool or default_pool()).isolation)
