"""A seccomp filter for sandboxed programs, built as classic BPF with ctypes (no dependency).

Loaded by path inside the sandbox zygote (standard library only). :func:`install` puts a filter on
the calling thread (inherited by everything it forks). It is an *allow list* (``ALLOW``): the
syscalls CPython, the standard library, numpy and the sandbox itself were measured to use on the
bundled benchmarks (strace over the whole pool) and their ordinary neighbours; any other syscall
fails with ``ENOSYS``, as on a kernel without it. The calls below additionally fail with ``EPERM``
(checked first, named so a probe can tell the sandbox refused them), syscalls a test program never
needs that reach kernel state outliving the run or large kernel attack surface:

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

Limits: arguments are checked only for ``clone``, ``unshare``, ``socket`` and ``socketpair``
(``ioctl``, ``prctl`` and ``fcntl`` are allowed whole); an allowed syscall with a kernel bug is still
reachable. A program needing a syscall outside ``ALLOW`` gets ENOSYS: add it here with a test. x86-64
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
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K, JA = 0x20, 0x15, 0x35, 0x45, 0x06, 0x05
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
# syscalls allowed (numbers for x86-64 and the generic table of aarch64; None where the ABI has no
# such call): what CPython, its standard library, numpy/OpenBLAS and the sandbox's own zygote, run
# template and children were seen to use on the bundled HumanEval, MBPP, CodeContests and
# LiveCodeBench samples (strace over the whole pool), plus ordinary neighbours of those (the *at,
# v and 2 variants, timers, epoll, eventfd, SysV/POSIX IPC inside the run's own IPC namespace). Any
# other syscall fails with ENOSYS, as on a kernel that lacks it, so a library falls back; the DENY
# list above keeps EPERM for the calls it names.
ALLOW = {
    "read": (0, 63),
    "write": (1, 64),
    "readv": (19, 65),
    "writev": (20, 66),
    "pread64": (17, 67),
    "pwrite64": (18, 68),
    "preadv": (295, 69),
    "pwritev": (296, 70),
    "preadv2": (327, 286),
    "pwritev2": (328, 287),
    "lseek": (8, 62),
    "open": (2, None),
    "openat": (257, 56),
    "openat2": (437, 437),
    "close": (3, 57),
    "close_range": (436, 436),
    "creat": (85, None),
    "dup": (32, 23),
    "dup2": (33, None),
    "dup3": (292, 24),
    "fcntl": (72, 25),
    "flock": (73, 32),
    "fsync": (74, 82),
    "fdatasync": (75, 83),
    "sync_file_range": (277, 84),
    "ftruncate": (77, 46),
    "truncate": (76, 45),
    "fallocate": (285, 47),
    "fadvise64": (221, 223),
    "stat": (4, None),
    "fstat": (5, 80),
    "lstat": (6, None),
    "newfstatat": (262, 79),
    "statx": (332, 291),
    "statfs": (137, 43),
    "fstatfs": (138, 44),
    "access": (21, None),
    "faccessat": (269, 48),
    "faccessat2": (439, 439),
    "readlink": (89, None),
    "readlinkat": (267, 78),
    "getdents": (78, None),
    "getdents64": (217, 61),
    "getcwd": (79, 17),
    "chdir": (80, 49),
    "fchdir": (81, 50),
    "mkdir": (83, None),
    "mkdirat": (258, 34),
    "rmdir": (84, None),
    "rename": (82, None),
    "renameat": (264, 38),
    "renameat2": (316, 276),
    "link": (86, None),
    "linkat": (265, 37),
    "unlink": (87, None),
    "unlinkat": (263, 35),
    "symlink": (88, None),
    "symlinkat": (266, 36),
    "chmod": (90, None),
    "fchmod": (91, 52),
    "fchmodat": (268, 53),
    "fchmodat2": (452, 452),
    "chown": (92, None),
    "fchown": (93, 55),
    "lchown": (94, None),
    "fchownat": (260, 54),
    "umask": (95, 166),
    "utime": (132, None),
    "utimes": (235, None),
    "utimensat": (280, 88),
    "futimesat": (261, None),
    "sendfile": (40, 71),
    "copy_file_range": (326, 285),
    "getxattr": (191, 8),
    "lgetxattr": (192, 9),
    "fgetxattr": (193, 10),
    "listxattr": (194, 11),
    "llistxattr": (195, 12),
    "flistxattr": (196, 13),
    "brk": (12, 214),
    "mmap": (9, 222),
    "munmap": (11, 215),
    "mremap": (25, 216),
    "mprotect": (10, 226),
    "madvise": (28, 233),
    "mincore": (27, 232),
    "msync": (26, 227),
    "membarrier": (324, 283),
    "mbind": (237, 235),
    "get_mempolicy": (239, 236),
    "memfd_create": (319, 279),
    "clone": (56, 220),
    "fork": (57, None),
    "vfork": (58, None),
    "execve": (59, 221),
    "execveat": (322, 281),
    "exit": (60, 93),
    "exit_group": (231, 94),
    "wait4": (61, 260),
    "waitid": (247, 95),
    "kill": (62, 129),
    "tkill": (200, 130),
    "tgkill": (234, 131),
    "getpid": (39, 172),
    "getppid": (110, 173),
    "gettid": (186, 178),
    "getpgrp": (111, None),
    "getpgid": (121, 155),
    "setpgid": (109, 154),
    "getsid": (124, 156),
    "setsid": (112, 157),
    "getuid": (102, 174),
    "geteuid": (107, 175),
    "getgid": (104, 176),
    "getegid": (108, 177),
    "getresuid": (118, 148),
    "getresgid": (120, 150),
    "getgroups": (115, 158),
    "setuid": (105, 146),
    "setgid": (106, 144),
    "setgroups": (116, 159),
    "setresuid": (117, 147),
    "setresgid": (119, 149),
    "setreuid": (113, 145),
    "setregid": (114, 143),
    "capget": (125, 90),
    "capset": (126, 91),
    "prctl": (157, 167),
    "arch_prctl": (158, None),
    "set_tid_address": (218, 96),
    "set_robust_list": (273, 99),
    "rseq": (334, 293),
    "futex": (202, 98),
    "futex_waitv": (449, 449),
    "sched_yield": (24, 124),
    "sched_getaffinity": (204, 123),
    "sched_setaffinity": (203, 122),
    "sched_getparam": (143, 121),
    "sched_getscheduler": (145, 120),
    "sched_get_priority_max": (146, 125),
    "sched_get_priority_min": (147, 126),
    "sched_rr_get_interval": (148, 127),
    "getpriority": (140, 141),
    "setpriority": (141, 140),
    "prlimit64": (302, 261),
    "getrlimit": (97, 163),
    "setrlimit": (160, 164),
    "getrusage": (98, 165),
    "times": (100, 153),
    "sysinfo": (99, 179),
    "uname": (63, 160),
    "getcpu": (309, 168),
    "pidfd_open": (434, 434),
    "pidfd_send_signal": (424, 424),
    "rt_sigaction": (13, 134),
    "rt_sigprocmask": (14, 135),
    "rt_sigreturn": (15, 139),
    "rt_sigsuspend": (130, 133),
    "rt_sigpending": (127, 136),
    "rt_sigtimedwait": (128, 137),
    "sigaltstack": (131, 132),
    "pause": (34, None),
    "alarm": (37, None),
    "setitimer": (38, 103),
    "getitimer": (36, 102),
    "signalfd": (282, None),
    "signalfd4": (289, 74),
    "restart_syscall": (219, 128),
    "clock_gettime": (228, 113),
    "clock_getres": (229, 114),
    "clock_nanosleep": (230, 115),
    "nanosleep": (35, 101),
    "gettimeofday": (96, 169),
    "time": (201, None),
    "timer_create": (222, 107),
    "timer_settime": (223, 110),
    "timer_gettime": (224, 108),
    "timer_getoverrun": (225, 109),
    "timer_delete": (226, 111),
    "timerfd_create": (283, 85),
    "timerfd_settime": (286, 86),
    "timerfd_gettime": (287, 87),
    "poll": (7, None),
    "ppoll": (271, 73),
    "select": (23, None),
    "pselect6": (270, 72),
    "epoll_create": (213, None),
    "epoll_create1": (291, 20),
    "epoll_ctl": (233, 21),
    "epoll_wait": (232, None),
    "epoll_pwait": (281, 22),
    "epoll_pwait2": (441, 441),
    "eventfd": (284, None),
    "eventfd2": (290, 19),
    "pipe": (22, None),
    "pipe2": (293, 59),
    "bind": (49, 200),
    "listen": (50, 201),
    "accept": (43, 202),
    "accept4": (288, 242),
    "connect": (42, 203),
    "getsockname": (51, 204),
    "getpeername": (52, 205),
    "sendto": (44, 206),
    "recvfrom": (45, 207),
    "sendmsg": (46, 211),
    "recvmsg": (47, 212),
    "sendmmsg": (307, 269),
    "recvmmsg": (299, 243),
    "shutdown": (48, 210),
    "setsockopt": (54, 208),
    "getsockopt": (55, 209),
    "shmget": (29, 194),
    "shmat": (30, 196),
    "shmdt": (67, 197),
    "shmctl": (31, 195),
    "semget": (64, 190),
    "semop": (65, 193),
    "semtimedop": (220, 192),
    "semctl": (66, 191),
    "msgget": (68, 186),
    "msgsnd": (69, 189),
    "msgrcv": (70, 188),
    "msgctl": (71, 187),
    "mq_open": (240, 180),
    "mq_unlink": (241, 181),
    "mq_timedsend": (242, 182),
    "mq_timedreceive": (243, 183),
    "mq_notify": (244, 184),
    "mq_getsetattr": (245, 185),
    "ioctl": (16, 29),
    "getrandom": (318, 278),
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


def build(allow_ipc_unshare: bool = False, allow_list: bool = True) -> list[tuple[int, int, int, int]]:
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
        (JA, 0, 0, "allow_list"),  # over the labelled returns below, within reach of the jumps above
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
    labels["allow_list"] = len(prog)
    if allow_list:  # the syscall number is reloaded (the argument checks above overwrote A)
        prog.append((LD_W_ABS, 0, 0, 0))
        allowed = sorted({v[col] for v in ALLOW.values() if v[col] is not None} - set(deny))
        for nr in allowed:  # each test next to its own return: no jump longer than one instruction
            prog += [(JEQ_K, 0, 1, nr), (RET_K, 0, 0, RET_ALLOW)]
        prog.append((RET_K, 0, 0, enosys))
    else:
        prog.append((RET_K, 0, 0, RET_ALLOW))
    out = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        if isinstance(k, str):  # JA: a 32-bit forward offset
            k = labels[k] - pc - 1
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
