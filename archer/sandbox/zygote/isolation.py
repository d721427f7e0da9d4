"""Isolation layers of the sandbox zygote: namespaces, a read-only minimal root, uid drop, rlimits,
a fresh IPC namespace and a seccomp filter per run, cgroups.

Loaded by path inside the zygote (standard library only). :func:`setup` runs once in the zygote,
which the launcher has already put in fresh mount, network, pid, IPC and UTS namespaces
(``unshare``); it returns a report of what is actually in force, which the trainer logs and exposes
through ``archer.sandbox.pool.sandbox_isolation()``. :func:`enter_child` runs in every forked child
before any untrusted code.

Layers (each reported separately, each may be missing on a given machine):

- ``mount_namespace`` + ``chroot``: a new root on tmpfs holding read-only bind mounts of ``/usr``,
  ``/bin``, ``/lib*``, ``/etc`` and the Python installation, a fresh ``/proc``, a few device nodes and
  a small tmpfs ``/tmp`` (size and inode limits) whose per-run directories are the only writable
  places. ``/root``, ``/home``, the repository and the datasets are not visible at all.
- ``net_namespace``: no interfaces but a downed loopback, so every connect fails.
- ``pid_namespace``: the zygote is pid 1; killing "all processes" kills exactly the run's tree.
- ``uid_drop``: children run as the slot's program uid and the judge as program uid + 1, a pair
  allocated machine-wide for this pool (``sandbox_uids.py``), so per-uid limits count only the
  run's own processes and nothing outside is writable, readable-if-private, or killable;
  ``no_new_privs`` blocks setuid binaries.
- ``ipc_per_run``: each run child (program and judge alike) unshares a fresh IPC namespace, so SysV
  shared memory, semaphores and message queues and POSIX message queues die with the run (with
  their memory).
- descriptors: a run child keeps exactly its targets (:func:`keep_only`), never the run template's
  control socket or another child's pipes.
- ``seccomp``: the zygote, and so everything it forks, runs under the allow-list filter of
  ``seccomp.py`` (keyrings, bpf, perf, userfaultfd, io_uring, ptrace, mounts, namespaces,
  kexec, modules, ... refused; sockets AF_UNIX only); the one exception, ``unshare(CLONE_NEWIPC)``,
  needs CAP_SYS_ADMIN, which a run child has given up before the program starts.
- ``cgroup``: the zygote joins its slot's memory + pids (+ cpu where offered) cgroup (``cgroup.py``) once, so its
  run template and run children are in it from their first instruction; run children have
  ``oom_score_adj`` +1000 (the zygote -1000 where CAP_SYS_RESOURCE allows), so an out-of-memory
  kill takes the run, not the zygote.
- rlimits: address space, CPU seconds, processes (only without a pids cgroup), file size, open
  files, core dumps, locked memory.
- ``capabilities_dropped``: once the jail is built the zygote (root inside its namespaces) keeps only
  the capabilities it needs to manage children (``KEEP_CAPS``), plus CAP_SYS_ADMIN in the permitted
  (not effective) set, raised only in a forked run child for ``unshare(CLONE_NEWIPC)``.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import math
import os
import random
import resource
import signal
import sys
from typing import Any

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER = 1, 38, 24, 36
# capabilities the zygote keeps once its jail is built: chown/remove run dirs (0-4), kill the run's
# processes (5), switch children to the sandbox uids (6, 7). Everything else (sys_admin, sys_chroot,
# ptrace, module loading, raw I/O, net admin, ...) is dropped from its effective, permitted and
# bounding sets, so even a compromised zygote could not remount, leave the chroot or load modules.
KEEP_CAPS = (0, 1, 2, 3, 4, 5, 6, 7)
# CAP_SYS_ADMIN stays in the permitted set only, raised in a freshly forked run child just for
# unshare(CLONE_NEWIPC); the zygote's seccomp filter refuses every other use it could have
# (mount, pivot_root, setns, other namespaces, ...), and the child's setuid drops it with the rest.
CAP_SYS_ADMIN = 21
CLONE_NEWIPC = 0x08000000
FD_SCAN_FROM = 256  # targets are first copied this high, so moving them never clobbers another
TMP_INODES = 16384  # files + directories all runs of a zygote may hold at once; bounds cleanup work
EXTRA_TASKS = 4  # tasks of a slot's cgroup besides the run's nproc: zygote, run template, judge, a helper
_CAP_VERSION_3 = 0x20080522
NEW_ROOT = "/tmp/archer_root"  # on a private tmpfs mounted over /tmp inside the mount namespace
CGROUP_DIR = "/.cgroup"  # in the jail, mode 0700: the zygote reaches it, programs do not
RO_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    if _libc().mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount({src!r}, {target!r}, {fstype!r}): {os.strerror(err)}")


def _bind_ro(src: str, target: str) -> None:
    _mount(src, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _python_dirs() -> list[str]:
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable))}
    keep = []
    for d in sorted(dirs, key=len):
        if any(d == r or d.startswith(r.rstrip("/") + "/") for r in (*RO_DIRS, *keep)):
            continue
        keep.append(d)
    return keep


def _build_root(tmpfs_mb: int, cgroups: dict[str, list[Any]]) -> dict[str, list[Any]]:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Hold the Python directories open before /tmp is covered: a virtual environment under /tmp
    # would otherwise vanish under the private tmpfs; binding from /proc/self/fd/N reaches the
    # original directory whatever is mounted over its path since.
    python_fds = {d: os.open(d, os.O_PATH | os.O_DIRECTORY) for d in _python_dirs()}
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    root = NEW_ROOT
    os.makedirs(root)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    for d in RO_DIRS:
        if os.path.islink(d):
            os.symlink(os.readlink(d), root + d)
        elif os.path.isdir(d):
            os.makedirs(root + d, exist_ok=True)
            _bind_ro(d, root + d)
    # the jail's /tmp first: a Python directory under /tmp is then bound inside it, not hidden by it
    os.makedirs(root + "/tmp")
    _mount(
        "tmpfs",
        root + "/tmp",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={int(tmpfs_mb)}m,nr_inodes={TMP_INODES},mode=0755",
    )
    for d, fd in python_fds.items():
        os.makedirs(root + d, exist_ok=True)
        os.chmod(root + os.path.dirname(d), 0o755)
        _bind_ro(f"/proc/self/fd/{fd}", root + d)
        os.close(fd)
    os.makedirs(root + "/dev")
    for dev in DEVICES:
        if os.path.exists("/dev/" + dev):
            open(root + "/dev/" + dev, "w").close()
            _mount("/dev/" + dev, root + "/dev/" + dev, None, MS_BIND)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", root + "/dev/" + name)
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    jailed: dict[str, list[Any]] = {}
    if cgroups:
        os.mkdir(root + CGROUP_DIR, 0o700)
        for k, host in enumerate(sorted({p for _, p in cgroups.values()})):
            target = f"{CGROUP_DIR}/{k}"
            os.mkdir(root + target, 0o700)
            _mount(host, root + target, None, MS_BIND)
            jailed.update({c: [v, target] for c, (v, p) in cgroups.items() if p == host})
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chroot(root)
    os.chdir("/")
    return jailed


def _private_scratch_dirs(report: dict[str, Any]) -> None:
    """Without a private root, still hide the host's world-writable scratch dirs behind tmpfs mounts
    of this namespace, so a program cannot leave files there."""
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            if os.path.isdir(d):
                _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777")
        except OSError as exc:
            report["errors"].append(f"private {d}: {exc}")


def _capset(effective: int, permitted: int) -> None:
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(effective, permitted, 0, 0, 0, 0)  # {eff, perm, inh} x 2 words
    if _libc().capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _drop_capabilities(keep_sys_admin: bool) -> None:
    libc = _libc()
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        if cap not in KEEP_CAPS and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap} from the bounding set")
    keep = sum(1 << c for c in KEEP_CAPS)
    _capset(keep, keep | ((1 << CAP_SYS_ADMIN) if keep_sys_admin else 0))


def _set_oom_score_adj(value: int) -> None:
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    try:
        os.write(fd, str(int(value)).encode())
    finally:
        os.close(fd)


def _new_ipc_namespace(report: dict[str, Any]) -> None:
    """In a run child: a fresh, empty IPC namespace (SysV IPC and POSIX message queues)."""
    if report["capabilities_dropped"]:
        keep = sum(1 << c for c in KEEP_CAPS) | (1 << CAP_SYS_ADMIN)
        _capset(keep, keep)
    if _libc().unshare(CLONE_NEWIPC) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWIPC) failed")


def _probe(fn: Any) -> bool:
    """Whether ``fn`` succeeds in a forked child (so a failure cannot change this process)."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        except BaseException:
            os._exit(1)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _only_loopback() -> bool:
    try:
        with open("/proc/net/dev") as f:
            names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    except OSError:
        return False
    return names == ["lo"] or names == []


def _full_uid_map() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:3] == ["0", "0", "4294967295"]


def _load_sibling(name: str) -> Any:
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("archer_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


cgroup = _load_sibling("cgroup")
seccomp = _load_sibling("seccomp")


def setup(cfg: dict[str, Any]) -> dict[str, Any]:
    """Put the zygote in its jail; return what is in force (public keys) plus private settings."""

    def ns_ino(kind: str) -> int:
        return os.stat(f"/proc/self/ns/{kind}").st_ino

    report: dict[str, Any] = {
        "launcher": cfg.get("launcher", "none"),
        "mount_namespace": bool(cfg.get("host_mnt_ns")) and ns_ino("mnt") != cfg.get("host_mnt_ns"),
        "net_namespace": bool(cfg.get("host_net_ns"))
        and ns_ino("net") != cfg.get("host_net_ns")
        and _only_loopback(),
        "pid_namespace": os.getpid() == 1,
        "chroot": False,
        "uid_drop": False,
        "rlimits": True,
        "cgroup": False,
        "ipc_per_run": False,
        "seccomp": False,
        "errors": [],
    }
    root = os.geteuid() == 0
    host_cgroups = {c: list(v) for c, v in (cfg.get("cgroup") or {}).items()}
    cgroups: dict[str, list[Any]] = {}
    if root and report["mount_namespace"]:
        try:
            cgroups = _build_root(int(cfg.get("tmpfs_mb", 64)), host_cgroups)
            report["chroot"] = True
        except OSError as exc:
            report["errors"].append(f"private root: {exc}")
            _private_scratch_dirs(report)
    if host_cgroups and not report["chroot"]:
        cgroups = host_cgroups  # no jail: the zygote reaches the host paths directly
    tasks = int(cfg["nproc"]) + EXTRA_TASKS
    if cgroups:
        try:
            cgroup.set_limits(cgroups, 1 << 30, tasks, float(cfg.get("cpus_per_slot") or 0) or None)
            # the zygote joins once and its forks inherit the cgroup: moving every run child (a v1
            # migration costs milliseconds) is not needed. It and its run template are the
            # last the OOM killer may pick; run children ask to be the first (enter_child).
            try:
                _set_oom_score_adj(-1000)
            except OSError:  # needs CAP_SYS_RESOURCE; the children's +1000 still makes them first
                pass
            cgroup.join(cgroups)
            report["cgroup"] = True
        except OSError as exc:
            report["errors"].append(f"cgroup: {exc}")
            cgroups = {}
    report["cgroup_dirs"] = cgroups
    report["capabilities_dropped"] = False
    if root and report["chroot"]:
        try:
            _drop_capabilities(keep_sys_admin=True)
            report["capabilities_dropped"] = True
        except OSError as exc:
            report["errors"].append(f"dropping capabilities: {exc}")
    if root and _full_uid_map():
        report["uid_drop"] = bool(cfg.get("uids"))
        report["uids"] = cfg.get("uids")
        if not report["uid_drop"]:
            report["errors"].append("no sandbox uids were allocated")
    ipc_possible = _probe(lambda: _new_ipc_namespace(report))
    if seccomp.supported():
        try:
            # one filter for the zygote and everything it forks (filters are inherited and cannot be
            # removed); the unshare(CLONE_NEWIPC) it lets through needs CAP_SYS_ADMIN, which a run
            # child no longer has when the program starts
            seccomp.install(allow_ipc_unshare=ipc_possible)
            report["seccomp"] = True
        except OSError as exc:
            report["errors"].append(f"seccomp: {exc}")
    else:
        report["errors"].append(f"seccomp: no syscall table for {sys.platform}/{os.uname().machine}")
    # checked again under the zygote's filter: a fresh IPC namespace per run still works
    report["ipc_per_run"] = ipc_possible and _probe(lambda: _new_ipc_namespace(report))
    if report["chroot"]:
        report["work_root"] = "/tmp/runs"  # its own directory: a venv under /tmp is bound beside it
        os.mkdir(report["work_root"], 0o755)
    else:
        import tempfile

        report["work_root"] = tempfile.mkdtemp(prefix="archer_sandbox_")
    report["tree_kill"] = (
        "pid_namespace"
        if report["pid_namespace"]
        else ("uid_kill" if report["uid_drop"] else "process_group")
    )
    if not report["pid_namespace"]:
        # orphans of a run are reparented to the zygote, so it can reap them
        _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    report["limits"] = {k: int(cfg[k]) for k in ("nproc", "file_size_mb", "open_files")}
    report["limits"]["tasks"] = tasks
    report["limits"]["cpus"] = float(cfg.get("cpus_per_slot") or 0) or None
    report["cgroup_cpu"] = bool(report["cgroup"] and "cpu" in cgroups and report["limits"]["cpus"])
    return report


def public(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what only the zygote uses (it is sent to the trainer as JSON)."""
    return {k: v for k, v in report.items() if k != "cgroup_dirs"}


def make_workdir(report: dict[str, Any], n: int, role: str) -> str:
    path = os.path.join(report["work_root"], f"run{n}_{role}")
    os.mkdir(path, 0o700)
    if report["uid_drop"]:
        uid = report["uids"][role]
        os.chown(path, uid, uid)
    return path


def remove_tree_contents(top: str) -> None:
    """Delete everything below ``top`` without recursion and whatever the depth or the names.

    Each directory met is first moved up to ``top`` itself (``renameat``), so the walk is a flat
    queue with one open descriptor at a time: no recursion limit, no path-length limit, and the
    work is one pass over the entries (bounded by the tmpfs inode limit). The run's processes must
    be dead already. Errors on single entries are skipped; the caller checks that ``top`` is empty.
    """
    top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    counter = 0
    try:
        queue = os.listdir(top_fd)
        while queue:
            name = queue.pop()
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top_fd)
            except NotADirectoryError:
                _unlink(name, top_fd)
                continue
            except OSError:
                _unlink(name, top_fd)  # a symlink (ELOOP) or gone
                continue
            try:
                progress = True
                while progress:
                    progress = False
                    for entry in os.listdir(fd):
                        try:
                            os.unlink(entry, dir_fd=fd)
                            progress = True
                            continue
                        except IsADirectoryError:
                            pass
                        except OSError:
                            continue
                        counter += 1
                        flat = f".rm{os.getpid()}-{counter}"
                        try:
                            os.rename(entry, flat, src_dir_fd=fd, dst_dir_fd=top_fd)
                            queue.append(flat)
                            progress = True
                        except OSError:
                            pass
            finally:
                os.close(fd)
            try:
                os.rmdir(name, dir_fd=top_fd)
            except OSError:
                pass
    finally:
        os.close(top_fd)


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def remove_workdirs(report: dict[str, Any]) -> None:
    remove_tree_contents(report["work_root"])


def keep_only(wanted: dict[int, int]) -> None:
    """Make the open descriptors exactly ``wanted`` (target number -> current descriptor).

    Every other descriptor is closed, whatever its number: those below the highest target as well
    (the run template's control socket, descriptors received for other targets, ``/dev/null``).
    The ranges between targets go with ``close_range`` (``os.closerange``); ``/proc/self/fd`` is then
    listed and anything left is closed too, so a descriptor above the scan's bound or opened by
    the C library cannot slip through. Raises if one remains (the child must not run then)."""
    base = max(FD_SCAN_FROM, max(wanted) + 1)
    high = {target: fcntl.fcntl(src, fcntl.F_DUPFD, base) for target, src in wanted.items()}
    for target, src in high.items():
        os.dup2(src, target)  # dup2 clears O_CLOEXEC on the target
    targets = sorted(wanted)
    low = 0
    for t in targets:
        if low < t:  # an empty range is not a no-op: closerange(0, 0) becomes close_range(0, ~0)
            os.closerange(low, t)
        low = t + 1
    os.closerange(low, 1 << 20)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: close_range up to 2**20 stands alone
        return
    for name in names:  # the listing's own descriptor is closed by now (EBADF below)
        if int(name) not in wanted:
            try:
                os.close(int(name))
            except OSError:
                pass
    listing = min(n for n in range(len(wanted) + 1) if n not in wanted)  # the lowest free number
    extra = [int(n) for n in os.listdir("/proc/self/fd") if int(n) not in wanted and int(n) != listing]
    if extra:
        raise OSError(f"descriptors beyond the targets remain open: {extra}")


def enter_child(
    report: dict[str, Any], role: str, fds: dict[int, int], workdir: str, memory_mb: int, cpu_s: float
) -> None:
    """In a freshly forked child: cgroup, session, fds, rlimits, fresh IPC namespace, empty env,
    private cwd, unprivileged uid, seccomp filter: in that order, before any untrusted code."""
    if report["cgroup"]:
        _set_oom_score_adj(1000)  # already in the slot's cgroup (inherited from the zygote)
    os.setsid()
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    devnull = os.open(os.devnull, os.O_RDWR)
    wanted = {0: devnull, 1: devnull, 2: devnull, **fds}
    keep_only(wanted)
    limits = report["limits"]
    mem = int(memory_mb) << 20
    cpu = int(math.ceil(cpu_s)) + 1
    # with a pids cgroup the run's tasks are bounded there; a per-uid limit would only add coupling
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1] if report["cgroup"] else limits["nproc"]
    for res, value in (
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, limits["file_size_mb"] << 20),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, nproc),
        (resource.RLIMIT_MEMLOCK, 0),
    ):
        resource.setrlimit(res, (value, value))
    if report["ipc_per_run"]:  # every role: the judge runs test code, which may be model-written
        _new_ipc_namespace(report)
    os.environ.clear()
    os.chdir(workdir)
    if report["uid_drop"]:
        uid = report["uids"][role]
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # clears every capability
    elif report["capabilities_dropped"]:
        _capset(0, 0)  # root of a user namespace without the uid drop: still no capability at all
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # (the zygote's seccomp filter is inherited)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_IGN)  # as a fresh interpreter: errors, not deaths
    random.seed()  # a fresh interpreter would not share the zygote's random state
    sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.argv = ["main.py"]


def kill_tree(report: dict[str, Any], pids: list[int]) -> None:
    """SIGKILL everything the run started, then reap it.

    In a pid namespace ``kill(-1)`` from the run template reaches every process of the namespace but
    pid 1 (the zygote) and the caller: exactly the run's processes. Without one, a
    helper that takes each sandbox uid calls ``kill(-1)``, which signals every process of that uid
    in one kernel pass, so a fork bomb cannot outrun it (the uids are this pool's alone). Without
    either, only the children's process groups are killed.
    """
    if report["pid_namespace"]:
        try:
            os.kill(-1, signal.SIGKILL)  # every process of the namespace but pid 1 and the caller
        except ProcessLookupError:
            pass
    elif report["uid_drop"]:
        for uid in sorted(set(report["uids"].values())):
            helper = os.fork()
            if helper == 0:
                try:
                    os.setgid(uid)
                    os.setuid(uid)
                    os.kill(-1, signal.SIGKILL)
                except BaseException:
                    pass
                os._exit(0)
            os.waitpid(helper, 0)
    else:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in pids:  # session leaders: always in their own group, so dead by now
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    # everything left is dead or dying (and orphans were reparented to us): reap it all
    blocking = report["pid_namespace"] or report["uid_drop"]
    while True:
        try:
            got, _ = os.waitpid(-1, 0 if blocking else os.WNOHANG)
        except ChildProcessError:
            return
        if got == 0:
            return
