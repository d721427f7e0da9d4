"""Machine-wide allocation of the sandbox's unprivileged uids: no two pools ever share one.

Per-uid kernel limits and state (RLIMIT_NPROC, pending signals, pipe buffers, inotify instances,
POSIX message-queue bytes, keyrings) are shared by every process of a uid across all namespaces of
one user namespace. If two pools (two trainers, several Ray reward actors on one node) ran programs
under the same uid, a program in one could exhaust a limit that an honest program in the other then
hits. So each zygote slot gets its own pair of uids (program, judge), taken from ``uid_base`` upward:
pair ``j`` is ``uid_base + 2j`` and ``+1``, held by an exclusive ``flock`` on
``<lock dir>/<uid>.lock`` for as long as the pool lives. The kernel drops the lock when the holding
process dies, so a killed trainer never leaks its uids. A pair is also skipped while any process
this machine shows runs as one of its uids.

Lock directory: ``$ARCHER_SANDBOX_UID_DIR`` or ``/run/archer-sandbox-uids`` (``/tmp/...`` when
``/run`` is not writable). Limits: pools in containers that do not share that directory but do
share the kernel's user namespace cannot see each other's locks; give them distinct ``uid_base``
ranges (the pids cgroup still bounds each run's processes whatever its uid).
"""

from __future__ import annotations

import fcntl
import os

MAX_PAIRS = 4096


def lock_dir() -> str:
    env = os.environ.get("ARCHER_SANDBOX_UID_DIR")
    if env:
        return env
    for base in ("/run", "/tmp"):
        path = os.path.join(base, "archer-sandbox-uids")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise OSError("no writable directory for sandbox uid locks")


def _uids_in_use() -> set[int]:
    used = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        used.update(int(x) for x in line.split()[1:])
                        break
        except (OSError, ValueError):
            continue
    return used


class UidPair:
    """One (program, judge) uid pair, held until :meth:`release` or process exit."""

    def __init__(self, prog: int, fd: int) -> None:
        self.prog, self.judge, self._fd = prog, prog + 1, fd

    def as_dict(self) -> dict[str, int]:
        return {"prog": self.prog, "judge": self.judge}

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = -1


def allocate(uid_base: int, count: int) -> list[UidPair]:
    """``count`` uid pairs no other live pool on this machine holds; raises OSError if none are left."""
    directory, used = lock_dir(), _uids_in_use()
    pairs: list[UidPair] = []
    try:
        for j in range(MAX_PAIRS):
            if len(pairs) == count:
                return pairs
            uid = uid_base + 2 * j
            if uid in used or uid + 1 in used:
                continue
            fd = os.open(os.path.join(directory, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            pairs.append(UidPair(uid, fd))
        if len(pairs) == count:
            return pairs
    except BaseException:
        for p in pairs:
            p.release()
        raise
    for p in pairs:
        p.release()
    raise OSError(f"no free sandbox uid pair in [{uid_base}, {uid_base + 2 * MAX_PAIRS})")
