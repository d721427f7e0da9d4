"""Per-slot cgroups of the code sandbox: each run's total memory and task count are bounded.

RLIMIT_AS bounds one process's address space, but memory that no address space shows (a ``memfd``
written with ``write()``, SysV shared memory not attached) and the sum over a run's processes are not
bounded by it. A cgroup is: every page a run's processes charge (anonymous memory, shmem, memfd,
tmpfs files, page tables and other kernel memory) counts against ``memory`` and every task against
``pids``, whatever the process or uid.

Standard library only: the trainer side (:func:`create`, :func:`remove`) runs in archer; the zygote
side (:func:`set_limits`, :func:`join`, :func:`oom_kills`) is loaded by path in the zygote.

Layout: the trainer creates one directory per zygote slot below its *own* cgroup (so a limit set on
the trainer still bounds everything), ``archer-sbx-<trainer pid>-<slot>-<random>``, in the v1
``memory`` and ``pids`` hierarchies or in the v2 unified one (controllers ``memory`` and ``pids``
must be enabled in the parent's ``cgroup.subtree_control``; archer tries to enable them and
reports why it could not). The zygote bind-mounts the directories into its jail (root-only, mode
0700), joins them itself (its forks inherit them, so no run child is ever outside) and sets the
limits for each request; one run per slot at a time, so a slot's cgroup is the run's cgroup. Directories of
trainers that died are removed when the next pool starts.

Settings per run: memory = the request's ``memory_mb`` (swap included: v1 ``memsw`` or v2
``swap.max = 0``; it also holds what the zygote and run template allocate after joining, a few
MiB of buffers), tasks = ``nproc`` + 4 (zygote, run template, assert judge, a cleanup helper). On
v2 ``memory.oom.group`` makes an out-of-memory kill take the whole run. An OOM kill is reported as
the ``memory`` verdict.

Limits: needs root (or a delegated v2 subtree writable by the trainer's uid); without it the
sandbox runs without the layer and says so. CPU: where a ``cpu`` controller is offered (v1 ``cpu`` hierarchy or v2 ``cpu``), each slot
gets ``cpus_per_slot`` cores of bandwidth (CFS quota), so spinners forked in new sessions slow only
their own run; without it only RLIMIT_CPU per process and the wall-clock timeout bound a run.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Any

CONTROLLERS = ("memory", "pids")
OPTIONAL = ("cpu",)  # used where offered: a slot's CPU bandwidth (cpus_per_slot)
CFS_PERIOD_US = 100_000
PREFIX = "archer-sbx-"


class CgroupUnavailable(OSError):
    """No writable memory + pids cgroup for the sandbox on this machine; the message says why."""


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) >= 5 and rfields and rfields[0] in ("cgroup", "cgroup2"):
                opts = set(rfields[2].split(",")) if len(rfields) > 2 else set()
                out.append((fields[3], fields[4].replace("\\040", " "), rfields[0], opts))
    return out


def _own_paths() -> dict[str, str]:
    """controller name (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            for name in parts[1].split(",") if parts[1] else [""]:
                out[name] = parts[2]
    return out


def _join(mount_root: str, mount_point: str, path: str) -> str:
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root.rstrip("/") + "/")):
        path = path[len(mount_root) :]
    return os.path.join(mount_point, path.lstrip("/"))


def parents() -> dict[str, tuple[int, str]]:
    """controller -> (cgroup version, the trainer's own cgroup directory) for memory and pids."""
    mounts, own = _mounts(), _own_paths()
    found: dict[str, tuple[int, str]] = {}
    for ctrl in CONTROLLERS + OPTIONAL:
        for root, point, fstype, opts in mounts:
            if fstype == "cgroup" and ctrl in opts and ctrl in own:
                found[ctrl] = (1, _join(root, point, own[ctrl]))
                break
    for root, point, fstype, _ in mounts:
        if fstype != "cgroup2" or "" not in own:
            continue
        base = _join(root, point, own[""])
        try:
            available = open(os.path.join(base, "cgroup.controllers")).read().split()
        except OSError:
            continue
        for ctrl in CONTROLLERS + OPTIONAL:
            if ctrl not in found and ctrl in available:
                found[ctrl] = (2, base)
    missing = [c for c in CONTROLLERS if c not in found]
    if missing:
        raise CgroupUnavailable(f"no cgroup hierarchy offers {'+'.join(missing)} to this process")
    return found


def _enable_v2(parent: str, ctrls: list[str]) -> None:
    path = os.path.join(parent, "cgroup.subtree_control")
    enabled = open(path).read().split()
    todo = [c for c in ctrls if c not in enabled]
    if not todo:
        return
    try:
        with open(path, "w") as f:
            f.write(" ".join("+" + c for c in todo))
    except OSError as exc:
        raise CgroupUnavailable(
            f"cannot enable {'+'.join(todo)} in {path} ({exc.strerror}); cgroup v2 allows it only in a cgroup "
            "without processes: start the trainer in a delegated cgroup (e.g. systemd-run -p Delegate=yes)"
        ) from exc


def sweep(found: dict[str, tuple[int, str]]) -> None:
    """Remove slot directories left by trainers that no longer run (empty ones only)."""
    for _, parent in set(found.values()):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            m = re.fullmatch(PREFIX + r"(\d+)-\d+-[0-9a-f]+", name)
            if not m:
                continue
            try:
                os.kill(int(m.group(1)), 0)
                continue  # its trainer still runs
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass


def create(slot: int) -> dict[str, tuple[int, str]]:
    """Make this slot's directories; controller -> (version, host path). Raises CgroupUnavailable."""
    found = parents()
    v2 = sorted({p for v, p in found.values() if v == 2})
    for parent in v2:
        _enable_v2(parent, [c for c, (v, p) in found.items() if v == 2 and p == parent and c in CONTROLLERS])
        try:
            _enable_v2(parent, [c for c, (v, p) in found.items() if v == 2 and p == parent and c in OPTIONAL])
        except CgroupUnavailable:
            for c in OPTIONAL:
                found.pop(c, None)
    sweep(found)
    name = f"{PREFIX}{os.getpid()}-{slot}-{secrets.token_hex(3)}"
    made: dict[str, str] = {}
    out: dict[str, tuple[int, str]] = {}
    try:
        for ctrl, (version, parent) in found.items():
            path = os.path.join(parent, name)
            if parent not in made:
                os.mkdir(path, 0o700)
                made[parent] = path
            out[ctrl] = (version, path)
        for ctrl, (version, path) in list(out.items()):  # the files must be writable, not only the mkdir
            try:
                set_limits({ctrl: (version, path)}, 1 << 30, 64, cpus=1.0)
            except OSError:
                if ctrl not in OPTIONAL:
                    raise
                del out[ctrl]  # no CPU bandwidth control here: reported by the zygote, not fatal
                if path not in {p for _, p in out.values()}:
                    remove({ctrl: (version, path)})
    except OSError as exc:
        remove(out or {c: (0, p) for c, p in made.items()})
        if isinstance(exc, CgroupUnavailable):
            raise
        raise CgroupUnavailable(
            f"cannot create a cgroup below {', '.join(made) or str(found)}: {exc}"
        ) from exc
    return out


def remove(dirs: dict[str, tuple[int, str]]) -> None:
    for _, path in {p: (v, p) for v, p in dirs.values()}.values():
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # still has tasks (a zygote that would not die); the next pool's sweep retries


# ----------------------------------------------------------------------------- zygote side


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)


def set_limits(
    dirs: dict[str, tuple[int, str]], memory_bytes: int, tasks: int, cpus: float | None = None
) -> None:
    """Memory (swap included), task and (with ``cpus`` and a cpu controller) CPU bandwidth limits of a
    slot, in either cgroup version. ``cpus`` = how many cores' worth of time per period the slot's
    processes may use together, whatever their number or sessions."""
    for ctrl, (version, path) in dirs.items():
        if ctrl == "cpu":
            if cpus:
                quota = max(1000, int(CFS_PERIOD_US * float(cpus)))
                if version == 1:
                    _write(os.path.join(path, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                    _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota))
                else:
                    _write(os.path.join(path, "cpu.max"), f"{quota} {CFS_PERIOD_US}")
        elif ctrl == "pids":
            _write(os.path.join(path, "pids.max"), str(int(tasks)))
        elif version == 1:
            limit, memsw = (
                os.path.join(path, "memory.limit_in_bytes"),
                os.path.join(path, "memory.memsw.limit_in_bytes"),
            )
            has_memsw = os.path.exists(memsw)
            raising = has_memsw and int(_read(limit)) < memory_bytes
            order = [memsw, limit] if raising else [limit] + ([memsw] if has_memsw else [])
            for f in order:  # memsw must stay >= limit at every step
                _write(f, str(int(memory_bytes)))
            if not has_memsw:
                _write(os.path.join(path, "memory.swappiness"), "0")
        else:
            _write(os.path.join(path, "memory.max"), str(int(memory_bytes)))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if os.path.exists(os.path.join(path, name)):
                    _write(os.path.join(path, name), value)


def join(dirs: dict[str, tuple[int, str]]) -> None:
    """Move the calling process into the slot's cgroups (before it runs anything untrusted)."""
    for path in {p for _, p in dirs.values()}:
        _write(os.path.join(path, "cgroup.procs"), "0")


def oom_kills(dirs: dict[str, tuple[int, str]]) -> int:
    """How many processes the kernel has killed for lack of memory in this slot so far."""
    if "memory" not in dirs:
        return 0
    version, path = dirs["memory"]
    name = "memory.oom_control" if version == 1 else "memory.events"
    try:
        text = _read(os.path.join(path, name))
    except OSError:
        return 0
    m = re.search(r"^oom_kill (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def usage(dirs: dict[str, tuple[int, str]]) -> tuple[int | None, int | None]:
    """(bytes of memory charged to the slot, tasks in it) now; None where the controller is absent."""
    mem = tasks = None
    if "memory" in dirs:
        version, path = dirs["memory"]
        try:
            mem = int(
                _read(os.path.join(path, "memory.usage_in_bytes" if version == 1 else "memory.current"))
            )
        except (OSError, ValueError):
            pass
    if "pids" in dirs:
        try:
            tasks = int(_read(os.path.join(dirs["pids"][1], "pids.current")))
        except (OSError, ValueError):
            pass
    return mem, tasks


def describe(dirs: dict[str, Any]) -> str:
    return ", ".join(f"{c} v{v}" for c, (v, _) in sorted(dirs.items()))
