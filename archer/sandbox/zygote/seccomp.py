"""A seccomp filter for sandboxed programs, built as classic BPF with ctypes (no dependency).

Loaded by path inside the sandbox zygote (standard library only). :func:`install` puts a filter on
the calling thread (inherited by everything it forks) that makes the syscalls below fail with
``EPERM`` instead of running; everything else is allowed. It is a deny list of syscalls a test
program never needs and that reach kernel state outliving the run or large kernel attack surface:

- kernel keyrings (``add_key``, ``request_key``, ``keyctl``): per-uid keyrings survive the run;
- ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*``, ``memfd_secret``;
- process inspection: ``ptrace``, ``process_vm_readv/writev``, ``kcmp``, ``pidfd_getfd``,
  ``process_madvise``;
- namespaces and mounts: ``unshare``, ``setns``, ``clone``/``clone`` with any ``CLONE_NEW*`` flag,
  ``mount``, ``umount2``, ``pivot_root``, ``chroot``, the new mount API (``fsopen``, ``fsmount``,
  ``move_mount``, ``open_tree``, ...), ``statmount``/``listmount``;
- the kernel itself: module loading, ``kexec``, ``reboot``, ``swapon/off``, ``acct``, ``quotactl``,
  ``syslog``, clock setting, ``iopl``/``ioperm``/``modify_ldt``, file handles (``open_by_handle_at``),
  ``fanotify_init``, ``lookup_dcookie``, ``vhangup``, ``uselib``, ``ustat``, ``sysfs``, ``_sysctl``;
- ``personality`` (it can turn off address-space randomisation for the process and its children);
- ``socket``/``socketpair`` of any family but ``AF_UNIX`` (``EAFNOSUPPORT``): ``AF_VSOCK`` reaches the
  host whatever the network namespace, and netlink, packet, crypto (``AF_ALG``) and the rest are
  kernel attack surface; the network namespace already leaves no interface to reach.

``clone3`` fails with ``ENOSYS`` (its flags live in memory a filter cannot read), so the C library
falls back to ``clone``, whose flags are checked. Syscalls of another ABI than the interpreter's
(i386 ``int 0x80`` or x32 on x86-64) are refused as a whole.

``allow_ipc_unshare=True`` (the sandbox zygote's filter, inherited by everything it forks) lets
exactly ``unshare(CLONE_NEWIPC)`` through, which each run needs to get a fresh IPC namespace; the
kernel refuses it to a run's program anyway, which has no CAP_SYS_ADMIN left by then.

Limits: a deny list, so a syscall added to the kernel later is allowed until listed here; x86-64
and aarch64 only (:func:`supported` is False elsewhere and the sandbox reports ``seccomp: False``).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import platform
import struct
from typing import Any

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
# classic BPF opcodes
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
CLONE_NEWIPC = 0x08000000
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (NEWTIME shares clone()'s
# exit-signal byte, so it only exists for unshare and clone3)
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
X32_BIT = 0x40000000

# syscalls refused everywhere; numbers for x86-64 and for the generic table (aarch64)
DENY = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "pidfd_getfd": (438, 438),
    "process_madvise": (440, 440),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "statmount": (457, 457),
    "listmount": (458, 458),
    "open_tree_attr": (467, 467),
    "setns": (308, 268),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "init_module": (175, 105),
    "delete_module": (176, 106),
    "finit_module": (313, 273),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "acct": (163, 89),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "memfd_secret": (447, 447),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "fanotify_init": (300, 262),
    "lookup_dcookie": (212, 18),
    "syslog": (103, 116),
    "vhangup": (153, 58),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "adjtimex": (159, 171),
    "nfsservctl": (180, 42),
    "personality": (135, 92),
    # x86-64 only
    "iopl": (172, None),
    "ioperm": (173, None),
    "modify_ldt": (154, None),
    "uselib": (134, None),
    "ustat": (136, None),
    "sysfs": (139, None),
    "_sysctl": (156, None),
}
UNSHARE, CLONE, CLONE3 = (272, 97), (56, 220), (435, 435)
# socket(domain, ...) and socketpair(domain, ...): only AF_UNIX; any other family fails with
# EAFNOSUPPORT, as on a kernel built without it (AF_VSOCK ignores network namespaces; AF_NETLINK,
# AF_PACKET, AF_ALG, AF_INET... are kernel attack surface a test program never needs)
SOCKET, SOCKETPAIR = (41, 198), (53, 199)
AF_UNIX = 1
ARCHES = {
    "x86_64": (0xC000003E, 0),
    "amd64": (0xC000003E, 0),
    "aarch64": (0xC00000B7, 1),
    "arm64": (0xC00000B7, 1),
}


def _arch() -> tuple[int, int] | None:
    if struct.calcsize("P") != 8:
        return None
    return ARCHES.get(platform.machine().lower())


def supported() -> bool:
    return _arch() is not None


def build(allow_ipc_unshare: bool = False) -> list[tuple[int, int, int, int]]:
    """The filter as a list of ``(code, jt, jf, k)`` instructions."""
    arch = _arch()
    if arch is None:
        raise OSError(errno.ENOSYS, f"no seccomp syscall table for {platform.machine()}")
    audit_arch, col = arch
    deny = sorted({v[col] for v in DENY.values() if v[col] is not None})
    eperm, enosys = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS
    prog: list[Any] = [
        (LD_W_ABS, 0, 0, 4),
        (JEQ_K, 1, 0, audit_arch),
        (RET_K, 0, 0, eperm),
        (LD_W_ABS, 0, 0, 0),
    ]
    if col == 0:  # x32 syscalls carry bit 30 on x86-64
        prog += [(JGE_K, 0, 1, X32_BIT), (RET_K, 0, 0, eperm)]
    # one jump per denied number to the shared "deny" return: (code, "deny", k) resolved below
    prog += [(JEQ_K, "deny", 0, nr) for nr in deny]
    prog += [
        (JEQ_K, "enosys", 0, CLONE3[col]),
        (JEQ_K, "clone", 0, CLONE[col]),
        (JEQ_K, "unshare", 0, UNSHARE[col]),
        (JEQ_K, "socket", 0, SOCKET[col]),
        (JEQ_K, "socket", 0, SOCKETPAIR[col]),
        (RET_K, 0, 0, RET_ALLOW),
    ]
    labels: dict[str, int] = {}
    labels["deny"] = len(prog)
    prog.append((RET_K, 0, 0, eperm))
    labels["enosys"] = len(prog)
    prog.append((RET_K, 0, 0, enosys))
    labels["clone"] = len(prog)  # args[0], low 32 bits (little-endian), at offset 16
    prog += [
        (LD_W_ABS, 0, 0, 16),
        (JSET_K, 0, 1, CLONE_NS_FLAGS),
        (RET_K, 0, 0, eperm),
        (RET_K, 0, 0, RET_ALLOW),
    ]
    labels["socket"] = len(prog)  # the domain, args[0]: both 32-bit halves
    prog += [
        (LD_W_ABS, 0, 0, 20),
        (JEQ_K, 0, 3, 0),
        (LD_W_ABS, 0, 0, 16),
        (JEQ_K, 0, 1, AF_UNIX),
        (RET_K, 0, 0, RET_ALLOW),
        (RET_K, 0, 0, RET_ERRNO | errno.EAFNOSUPPORT),
    ]
    labels["unshare"] = len(prog)
    if allow_ipc_unshare:  # exactly CLONE_NEWIPC (both 32-bit halves of the flags checked)
        prog += [
            (LD_W_ABS, 0, 0, 20),
            (JEQ_K, 0, 3, 0),
            (LD_W_ABS, 0, 0, 16),
            (JEQ_K, 0, 1, CLONE_NEWIPC),
            (RET_K, 0, 0, RET_ALLOW),
        ]
    prog.append((RET_K, 0, 0, eperm))
    out = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        if isinstance(jt, str):
            jt = labels[jt] - pc - 1
            if not 0 <= jt < 256:
                raise ValueError("seccomp jump out of range")
        out.append((code, jt, jf, k))
    return out


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def prepare(allow_ipc_unshare: bool = False) -> Any:
    """The filter as a ready ``sock_fprog`` (build once, apply in every child without rebuilding)."""
    insns = build(allow_ipc_unshare)
    arr = (_SockFilter * len(insns))(*[_SockFilter(*i) for i in insns])
    fprog = _SockFprog(len(insns), arr)
    fprog.keep = arr  # the array must outlive the struct that points to it
    return fprog


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def apply(fprog: Any) -> None:
    """Set ``no_new_privs`` and add a prepared filter to this thread; OSError if the kernel refuses."""
    libc = _libc()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(NO_NEW_PRIVS): {errno.errorcode.get(err, err)}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {errno.errorcode.get(err, err)}")


def install(allow_ipc_unshare: bool = False) -> None:
    """:func:`prepare` + :func:`apply`."""
    apply(prepare(allow_ipc_unshare))
