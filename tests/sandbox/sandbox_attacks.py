"""Hostile programs against the code sandbox, by class of issue 11, and the figures they give.

Used by ``test_sandbox_attacks.py`` (each attack must be contained) and runnable as a script that
prints the figures recorded in BENCHMARKS.md::

    python tests/sandbox/sandbox_attacks.py [--hostile-runs 100] [--out FILE]

An attack is a program plus tests; some are a *plant* (a first run that tries to leave something
behind) followed by a *probe* (a later run that looks for it). ``contained(report, probe_report)``
says whether the sandbox held. Facility probes (:func:`facilities`) tell a machine that lacks a
kernel feature (skip) from a sandbox that does not use it (fail).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archer.rewards.code import run_tests, run_tests_batch

try:
    from archer.rewards.code import with_prompt_setup
except ImportError:  # a tree before issue 11 (figures of the old sandbox): it ignores "setup"

    def with_prompt_setup(tests: dict[str, Any], prompt: str) -> dict[str, Any]:
        return {**tests, "setup": prompt}


from archer.sandbox.pool import SandboxConfig, SandboxPool

REPO = Path(__file__).resolve().parents[2]
ARCH = platform.machine().lower()
X86 = ARCH in ("x86_64", "amd64")


# --------------------------------------------------------------------------- facilities


def facilities() -> dict[str, str | None]:
    """layer -> None if this machine offers it to the trainer's process, else the reason it does not.

    Each is probed for real (an IPC namespace unshared, a cgroup created), so a machine that only
    looks capable (root in an unprivileged container, cgroup v2 with processes in the parent) skips
    instead of failing."""
    import subprocess

    out: dict[str, str | None] = {}
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare:
        out["namespaces"] = "needs root and util-linux unshare"
    else:
        rc = subprocess.run([unshare, "--ipc", "--pid", "--fork", "true"], capture_output=True).returncode
        out["namespaces"] = None if rc == 0 else "unshare --ipc --pid is refused here"
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    seccomp_ok = "Seccomp:" in status and ARCH in ("x86_64", "amd64", "aarch64", "arm64")
    out["seccomp"] = None if seccomp_ok else f"no seccomp filter support for {ARCH} on this kernel"
    try:
        from archer.sandbox.zygote import cgroup as sandbox_cgroup

        if os.geteuid() != 0:
            raise OSError("needs root")
        sandbox_cgroup.remove(sandbox_cgroup.create(0))
        out["cgroup"] = None
    except ImportError:  # an old tree without the module: probe the v1 layout directly
        ok = os.geteuid() == 0 and all(os.access(f"/sys/fs/cgroup/{c}", os.W_OK) for c in ("memory", "pids"))
        out["cgroup"] = None if ok else "no writable cgroup v1 memory+pids"
    except OSError as exc:
        out["cgroup"] = f"no usable memory+pids cgroup: {exc}"
    return out


# ------------------------------------------------------------------------------ attacks


@dataclass
class Attack:
    cls: int  # issue class 1..6
    name: str
    program: str
    tests: dict[str, Any]
    contained: Callable[..., bool]
    opts: dict[str, Any] = field(default_factory=dict)
    probe: str | None = None  # a later run's program (plant-then-probe attacks)
    probe_tests: dict[str, Any] | None = None
    probe_opts: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1  # plant-then-probe rounds (for races); contained only if every round is
    needs: tuple[str, ...] = ()  # facilities without which it cannot be contained


def stdin(expected: str = "") -> dict[str, Any]:
    return {"inputs": [""], "outputs": [expected]}


def not_ok(rep: Any, *_: Any) -> bool:
    return rep.passed == 0


def probe_passes(_: Any, probe: Any) -> bool:
    return probe is not None and probe.all_passed


LIBC = "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"

# ---- class 1: the judge runs the tests against the real builtins; nothing of the program runs there
EVAL_AS_LEN = """from builtins import eval as len
import json, struct
def _frame(i):
    m = json.dumps({"i": i, "status": "ok", "detail": ""}).encode()
    return struct.pack(">I", m.__len__()) + m
PAYLOAD = "(lambda os: (os.write(5, %r), os._exit(0)))(__import__('os'))" % (_frame(0) + _frame(1),)
def f(x):
    return PAYLOAD
"""
JUDGE_ATTACKS = [
    Attack(
        1,
        "builtins rebound by def",
        "def abs(x):\n    return 0\ndef len(x):\n    return 3\n"
        "def sorted(x):\n    return [1, 2]\ndef f(x):\n    return None\n",
        {"assert": ["assert abs(f(1) - 5) < 1e-6", "assert len(f(1)) == 3", "assert sorted(f(2)) == [1, 2]"]},
        not_ok,
    ),
    Attack(
        1,
        "builtins rebound by assignment",
        "str = lambda x: 'right'\ntuple = lambda x: (1,)\ndef f(x):\n    return 0\n",
        {"assert": ["assert str(f(1)) == 'right'", "assert tuple(f(1)) == (1,)"]},
        not_ok,
    ),
    Attack(
        1,
        "imported name rebound (operator.ne as isclose), no entry point",
        "from operator import ne as isclose\ndef f(x):\n    return 0\n",
        {"assert": "assert isclose(f(2), 3.14159)"},
        not_ok,
    ),
    Attack(
        1,
        "imported name rebound (operator.ne as isclose), entry point given",
        "from operator import ne as isclose\ndef f(x):\n    return 0\n",
        {"assert": "assert isclose(f(2), 3.14159)", "entry_point": "f"},
        not_ok,
    ),
    Attack(
        1,
        "builtin replaced by eval: code in the judge forging a verdict",
        EVAL_AS_LEN,
        {"assert": ["assert len(f(1)) == 3", "assert f(2) == 'never'"]},
        not_ok,
    ),
    Attack(
        1,
        "entry point given: builtins of check() rebound",
        "def round(*a, **k):\n    return 0\ndef set(*a):\n    return 0\ndef candidate_sum(x):\n    return None\n",
        {
            "assert": "def check(candidate):\n    assert round(candidate(2), 2) == round(4.0, 2)\n"
            "    assert set(candidate(1)) == set([2])\n\ncheck(candidate_sum)\n",
            "entry_point": "candidate_sum",
        },
        not_ok,
    ),
    Attack(
        1,
        "helper the test uses rebound (entry point given, no setup)",
        "def encode(s):\n    return s\ndef decode(s):\n    return s\n",
        {
            "assert": "def check(candidate):\n    assert candidate(encode('abc')) == 'abc'\n\ncheck(decode)\n",
            "entry_point": "decode",
        },
        not_ok,
    ),
    Attack(
        1,
        "lying __eq__ object",
        "class A:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return A()\n",
        {"assert": "assert f(1) == 7"},
        not_ok,
    ),
]

# ---- class 2: kernel state that outlives a run
SHM_PLANT = LIBC + (
    "libc.shmget.restype = ctypes.c_int\nlibc.shmat.restype = ctypes.c_void_p\n"
    "sid = libc.shmget(0x4152, 64 << 20, 0o1000 | 0o666)\naddr = libc.shmat(sid, None, 0)\n"
    "ctypes.memset(addr, 7, 64 << 20)\nlibc.shmdt(ctypes.c_void_p(addr))\n"
    "print('planted' if sid >= 0 else 'no shm')\n"
)
SHM_PROBE = LIBC + (
    "rows = open('/proc/sysvipc/shm').read().strip().split('\\n')[1:]\n"
    "print(len(rows), libc.shmget(0x4152, 0, 0))\n"
)
MQ_LIB = (
    "import ctypes, ctypes.util\ntry:\n    lib = ctypes.CDLL(None, use_errno=True)\n    lib.mq_open\n"
    "except AttributeError:\n    lib = ctypes.CDLL(ctypes.util.find_library('rt'), use_errno=True)\n"
    "lib.mq_open.restype = ctypes.c_int\n"
)
MQ_PLANT = MQ_LIB + (
    "q = lib.mq_open(b'/archer_left', 0o102, 0o666, None)\n"
    "print('planted' if q >= 0 and lib.mq_send(q, b'left-behind', 11, 0) == 0 else 'no mq')\n"
)
MQ_PROBE = MQ_LIB + (
    "q = lib.mq_open(b'/archer_left', 0)\nbuf = ctypes.create_string_buffer(8192)\n"
    "n = lib.mq_receive(q, buf, 8192, None) if q >= 0 else -1\n"
    "print(buf.raw[:n].decode() if n > 0 else 'nothing')\n"
)
KEY_PLANT = LIBC + (
    f"NR = {248 if X86 else 217}\n"
    "r = libc.syscall(NR, b'user', b'archer_left', b'left-behind', 11, ctypes.c_long(-4))\n"
    "print('planted' if r > 0 else 'refused')\n"
)
KEY_PROBE = LIBC + (
    f"NR = {250 if X86 else 219}\n"  # keyctl(KEYCTL_SEARCH, user keyring, "user", desc, 0)
    "r = libc.syscall(NR, 10, ctypes.c_long(-4), b'user', b'archer_left', 0)\n"
    "print('found' if r > 0 else 'nothing')\n"
)
# name -> (x86-64 nr, aarch64 nr, args); every one must fail with EPERM
SYSCALLS = {
    "add_key": (248, 217, "b'user', b'k', b'v', 1, ctypes.c_long(-2)"),
    "keyctl": (250, 219, "0, ctypes.c_long(-4), 0"),
    "request_key": (249, 218, "b'user', b'k', None, 0"),
    "bpf": (321, 280, "5, ctypes.create_string_buffer(128), 128"),
    "perf_event_open": (
        298,
        241,
        "ctypes.create_string_buffer(b'\\x00' * 4 + b'\\x80' + b'\\x00' * 123), 0, -1, -1, 0",
    ),
    "userfaultfd": (323, 282, "1"),
    "io_uring_setup": (425, 425, "1, ctypes.create_string_buffer(120)"),
    "ptrace": (101, 117, "0, 0, 0, 0"),
    "mount": (165, 40, "b'none', b'/tmp', b'tmpfs', 0, None"),
    "unshare": (272, 97, "0x10000000"),
    "setns": (308, 268, "0, 0"),
    "kexec_load": (246, 104, "0, 0, 0, 0"),
    "init_module": (175, 105, "0, 0, b''"),
    "clone_newuser": (56, 220, "0x10000000 | 17, 0, 0, 0, 0"),
    "personality": (135, 92, "0xffffffff"),
    "fsopen": (430, 430, "b'tmpfs', 0"),
}
SYSCALL_PROBE = (
    LIBC
    + "bad = []\n"
    + "".join(
        f"ctypes.set_errno(0)\nr = libc.syscall({x if X86 else a}, {args})\ne = ctypes.get_errno()\n"
        f"if not (r == -1 and e == errno.EPERM):\n    bad.append('{name}=%d/%s' % (r, errno.errorcode.get(e, e)))\n"
        for name, (x, a, args) in SYSCALLS.items()
    )
    + (
        "status = [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')]\n"
        "print(' '.join(bad) or 'all refused', status)\n"
    )
)
STATE_ATTACKS = [
    Attack(
        2,
        "SysV shared memory left for a later run",
        SHM_PLANT,
        stdin("planted"),
        probe_passes,
        probe=SHM_PROBE,
        probe_tests=stdin("0 -1"),
        needs=("namespaces",),
    ),
    Attack(
        2,
        "POSIX message queue left for a later run",
        MQ_PLANT,
        stdin("planted"),
        probe_passes,
        probe=MQ_PROBE,
        probe_tests=stdin("nothing"),
        needs=("namespaces",),
    ),
    Attack(
        2,
        "per-uid keyring entry left for a later run",
        KEY_PLANT,
        stdin("refused"),
        lambda rep, probe: rep.all_passed and probe_passes(rep, probe),
        probe=KEY_PROBE,
        probe_tests=stdin("nothing"),
        needs=("seccomp",),
    ),
    Attack(
        2,
        "syscalls a test never needs (keyrings, bpf, perf, uffd, io_uring, ptrace, mount, ns, kexec, "
        "modules)",
        SYSCALL_PROBE,
        stdin("all refused ['2']"),
        lambda rep, *_: rep.all_passed,
        needs=("seccomp",),
    ),
]

# ---- class 3: memory RLIMIT_AS does not see, and the sum over a run's processes
# memfds are files: RLIMIT_FSIZE (16 MiB) caps each one, so an attack holds many of 15 MiB
HOLD = (
    "import os\ndef hold(mib):\n    fds = []\n    while mib > 0:\n        fd = os.memfd_create('h')\n"
    "        for _ in range(min(15, mib)):\n            os.write(fd, b'x' * (1 << 20))\n"
    "        fds.append(fd)\n        mib -= 15\n    return fds\n"
)
MEMFD_ONE = HOLD + "held = hold(900)\nprint('HELD')\n"
MEMFD_MANY = HOLD + (
    "import time\nkids = []\nfor k in range(4):\n    r, w = os.pipe()\n    if os.fork() == 0:\n"
    "        held = hold(96)\n        os.write(w, b'1')\n        time.sleep(30)\n        os._exit(0)\n"
    "    os.close(w)\n    kids.append(r)\nok = sum(len(os.read(r, 1)) for r in kids)\n"
    "print('HELD' if ok == 4 else 'partial %d' % ok)\n"
)
SHM_MANY = LIBC + (
    "libc.shmget.restype = ctypes.c_int\nlibc.shmat.restype = ctypes.c_void_p\nn = 0\n"
    "for k in range(8):\n    sid = libc.shmget(0x5000 + k, 64 << 20, 0o1000 | 0o600)\n"
    "    addr = libc.shmat(sid, None, 0)\n    if sid < 0 or addr in (None, 2 ** 64 - 1):\n        break\n"
    "    ctypes.memset(addr, 1, 64 << 20)\n    libc.shmdt(ctypes.c_void_p(addr))\n    n += 1\n"
    "print('HELD' if n == 8 else 'partial %d' % n)\n"
)
MEMORY_ATTACKS = [
    Attack(
        3,
        "memfds holding 900 MiB under a 128 MiB limit",
        MEMFD_ONE,
        stdin("HELD"),
        not_ok,
        opts={"memory_mb": 128, "timeout": 10.0},
        needs=("cgroup",),
    ),
    Attack(
        3,
        "memfd in 4 processes (4 x 96 MiB under 128 MiB)",
        MEMFD_MANY,
        stdin("HELD"),
        not_ok,
        opts={"memory_mb": 128, "timeout": 10.0},
        needs=("cgroup",),
    ),
    Attack(
        3,
        "SysV segments, each attached then detached (8 x 64 MiB)",
        SHM_MANY,
        stdin("HELD"),
        not_ok,
        opts={"memory_mb": 128, "timeout": 10.0},
        needs=("cgroup",),
    ),
    Attack(
        3,
        "fork bomb",
        "import os\nn = 0\nfor _ in range(200):\n    try:\n        if os.fork() == 0:\n"
        "            import time\n            time.sleep(30)\n            os._exit(0)\n        n += 1\n"
        "    except OSError:\n        break\nprint(n)\n",
        stdin("200"),
        not_ok,
        opts={"timeout": 5.0},
    ),
]

# ---- class 5: nothing a program does costs more than its own reward
DEEP_TREE = (
    "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
    "open('f', 'w').write('x')\nos.chmod('.', 0)\nprint('deep')\n"
)
MANY_FILES = (
    "import os\nn = 0\ntry:\n    for i in range(40000):\n        open('f%d' % i, 'w').close()\n"
    "        n += 1\nexcept OSError:\n    pass\nprint('done')\n"
)
FORGED_DEEP = (
    'import os, struct\ndef f(x):\n    m = b\'{"i": 0, "status": "ok", "result": "\' + b\'[\' * 100000 '
    "+ b']' * 100000 + b'\"}'\n    os.write(3, struct.pack('>I', len(m)) + m)\n    os._exit(0)\n"
)
FORGED_NESTED_FRAME = (
    "import os, struct\ndef f(x):\n    m = b'[' * 200000 + b']' * 200000\n"
    "    os.write(3, struct.pack('>I', len(m)) + m)\n    return 0\n"
)
ZYGOTE_ATTACKS = [
    Attack(
        5,
        "deep directory tree (3000 levels, unreadable top)",
        DEEP_TREE,
        stdin("deep"),
        lambda rep, *_: rep.all_passed,
    ),
    Attack(5, "40000 files (tmpfs inode bound)", MANY_FILES, stdin("done"), lambda rep, *_: rep.all_passed),
    Attack(
        5,
        "assert-mode program filling its task limit at import (the judge must still run)",
        "import os, time\nfor _ in range(64):\n    try:\n        if os.fork() == 0:\n            time.sleep(30)\n"
        "            os._exit(0)\n    except OSError:\n        break\ndef f(x):\n    return 1\n",
        {"assert": "assert f(1) == 2"},
        lambda rep, *_: rep.verdicts == ["wrong"],
    ),
    Attack(
        5, "signalling NaN on stdout", "print('sNaN')", stdin("1"), lambda rep, *_: rep.verdicts == ["wrong"]
    ),
    Attack(
        5,
        "sNaN among several tokens",
        "print('1 sNaN -sNaN12')",
        stdin("1 2 3"),
        lambda rep, *_: rep.verdicts == ["wrong"],
    ),
    Attack(
        5,
        "forged call result nested 100000 deep",
        FORGED_DEEP,
        {"inputs": ["1"], "outputs": ["[1]"], "fn_name": "f"},
        lambda rep, *_: rep.verdicts == ["wrong"],
    ),
    Attack(
        5,
        "forged frame nested 200000 deep",
        FORGED_NESTED_FRAME,
        {"inputs": ["1"], "outputs": ["1"], "fn_name": "f"},
        lambda rep, *_: rep.verdicts == ["wrong"],
    ),
]

# ---- class 6: an earlier run's data in the memory a later run inherits
MARK = "ZQX" + str(7 * 1000003) + "MARK"
MEMORY_SCAN = """
import ctypes
marker = ("ZQX" + str(7 * 1000003) + "MARK").encode()
hits = 0
with open("/proc/self/maps") as maps:
    regions = [line.split() for line in maps]
for r in regions:
    if "r" in r[1] and not (len(r) > 5 and r[5].startswith("[v")):
        a, b = (int(x, 16) for x in r[0].split("-"))
        hits += ctypes.string_at(a, b - a).count(marker)
print(hits)
"""
PRINT_MARK = "import sys\nsys.stdout.write(('ZQX' + str(7 * 1000003) + 'MARK\\n') * 2000)\n"
RETURN_MARK = "def f(x):\n    return ('ZQX' + str(7 * 1000003) + 'MARK') * 50\n"
MEMORY_ATTACKS_6 = [
    # contained: a later program's scan of its own memory finds the marker no more often than before
    Attack(
        6,
        "earlier stdout (an honest answer) found by scanning memory",
        PRINT_MARK,
        stdin((MARK + "\n") * 2000),
        lambda rep, *_: rep.all_passed,
    ),
    Attack(
        6,
        "earlier call result found by scanning memory",
        RETURN_MARK,
        {"inputs": ["1"], "outputs": [json.dumps(MARK * 50)], "fn_name": "f"},
        lambda rep, *_: rep.all_passed,
    ),
    Attack(
        6,
        "earlier assert test code found by scanning memory",
        "def g():\n    return 1\n",
        {"assert": f"assert g() == 1  # {MARK}"},
        lambda rep, *_: rep.all_passed,
    ),
]

# ---- class 7 (issue 20): what a process running untrusted code can reach, per role
# Each role lists what it can reach and reports anything outside its allowed set: descriptors beyond
# its targets (the run template's control socket was one), socket families other than AF_UNIX,
# SysV IPC objects, processes it can signal, directories it can write besides its own. A new leak in
# any role fails the suite with the list of what leaked.
INVENTORY = r"""
import errno as _errno, os as _os, socket as _socket
def leaks(allowed_fds):
    out = []
    for fd in sorted(int(n) for n in _os.listdir("/proc/self/fd")):
        if fd not in allowed_fds:
            try:
                out.append("fd %d -> %s" % (fd, _os.readlink("/proc/self/fd/%d" % fd)))
            except FileNotFoundError:  # the listing's own descriptor, closed since
                pass
    for name in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_VSOCK", "AF_ALG", "AF_BLUETOOTH",
                 "AF_CAN", "AF_TIPC", "AF_RDS", "AF_XDP", "AF_KEY", "AF_LLC", "AF_PPPOX", "AF_QIPCRTR"):
        fam = {"AF_VSOCK": 40, "AF_XDP": 44, "AF_ALG": 38, "AF_QIPCRTR": 42}.get(name) or getattr(_socket, name, None)
        if fam is None:
            continue
        for kind in (_socket.SOCK_STREAM, _socket.SOCK_DGRAM, _socket.SOCK_RAW, _socket.SOCK_SEQPACKET):
            try:
                _socket.socket(fam, kind).close()
                out.append("socket %s/%d" % (name, kind))
                break
            except OSError:
                pass
    for kind in ("shm", "msg", "sem"):
        try:
            rows = open("/proc/sysvipc/" + kind).read().strip().split("\n")[1:]
        except OSError:
            rows = []
        if rows:
            out.append("sysv %s: %d" % (kind, len(rows)))
    me = _os.getpid()
    for name in _os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                _os.kill(int(name), 0)
                out.append("can signal pid %s (%s)" % (name, open("/proc/%s/comm" % name).read().strip()))
            except (ProcessLookupError, PermissionError, OSError):
                pass
            for what in ("fd", "mem", "environ", "cwd"):  # another process's descriptors or memory
                try:
                    if what == "fd":
                        _os.listdir("/proc/%s/fd" % name)
                    elif what == "cwd":
                        _os.listdir("/proc/%s/cwd" % name)
                    elif what == "mem":  # opening needs ptrace access (reading offset 0 fails anyway)
                        open("/proc/%s/mem" % name, "rb").close()
                    else:
                        open("/proc/%s/%s" % (name, what), "rb").read(1)
                    out.append("can read /proc/%s/%s" % (name, what))
                except OSError:
                    pass
    cwd = _os.getcwd()
    for d in ("/", "/tmp", "/tmp/runs", "/dev", "/dev/shm", "/var/tmp", "/usr", "/etc", "/proc/self", "/root"):
        if _os.path.isdir(d) and _os.path.realpath(d) != cwd and _os.access(d, _os.W_OK):
            out.append("writable " + d)
    return "clean" if not out else "; ".join(out)
"""
# a program that finds an inherited socket (the run template's end of the zygote/template control
# channel, before issue 20) and leaves a daemon answering the zygote in the template's place: it
# acknowledges kills (so it survives them), takes every later fork request with its descriptors and
# reports "42" on stdout and exit 0 for any program
TAKEOVER = r"""
import array, json, os, socket, stat
def is_sock(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
socks = [fd for fd in range(3, 256) if is_sock(fd)]
for k in range(3 if socks else 0):
    if os.fork() == 0:
        os.setsid()
        s = socket.socket(fileno=socks[0])
        while True:
            msg, anc, _, _ = s.recvmsg(1 << 16, socket.CMSG_SPACE(64))
            if not msg:
                os._exit(0)
            fds = []
            for _, _, data in anc:
                fds += array.array("i", data[: len(data) - len(data) % 4]).tolist()
            head, body = b"", msg
            try:
                op = json.loads(body)
            except ValueError:
                head, body = msg[:16], msg[16:]
                op = json.loads(body)
            if op.get("op") == "kill":
                s.send(head + b'{"killed": true}')
            elif op.get("op") == "fork":
                t = dict(zip(op["targets"], fds))
                if 1 in t:
                    os.write(t[1], b"42\n")
                if op.get("report"):
                    s.send(head + json.dumps({"exit": op["id"], "status": 0}).encode())
            for fd in fds:
                os.close(fd)
print("planted" if socks else "no socket")
"""
JUDGE_SHM_PLANT = (
    "import ctypes\n_libc = ctypes.CDLL(None, use_errno=True)\n_libc.shmget.restype = ctypes.c_int\n"
    "_sid = _libc.shmget(0x4153, 1 << 20, 0o1000 | 0o666)\nassert g() == 1 and _sid >= 0, _sid\n"
)
MALFORMED_CONTROL = r"""
import os, socket, stat
for fd in range(3, 256):
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            socket.socket(fileno=fd).send(b"\xff{not json")
    except OSError:
        pass
print("sent")
"""
INVENTORY_PROG_SERVER = INVENTORY + "def f(x):\n    return leaks({0, 1, 2, 3, 4})\n"
SHM_464 = LIBC + (
    "libc.shmget.restype = ctypes.c_int\nlibc.shmat.restype = ctypes.c_void_p\nn = 0\n"
    "for k in range(29):\n    sid = libc.shmget(0, 16 << 20, 0o1000 | 0o600)\n"
    "    addr = libc.shmat(sid, None, 0)\n    if sid < 0 or addr in (None, 2 ** 64 - 1):\n        break\n"
    "    ctypes.memset(addr, 1, 16 << 20)\n    libc.shmdt(ctypes.c_void_p(addr))\n    n += 1\n"
    "print(n * 16)\n"
)
FORGED_SANDBOX_ERROR = (
    "import json, os, struct\ndef f(x):\n"
    "    m = json.dumps({'i': 0, 'status': 'sandbox_error', 'result': None, 'detail': 'not my fault'})\n"
    "    os.write(3, struct.pack('>I', len(m)) + m.encode())\n    os._exit(0)\n"
)


def forged_verdicts_assert(n: int, verdict_fd: int = 5) -> str:
    """A model-written assert (archer data synth-tests) that, run in the judge, writes an "ok" verdict
    frame for each of ``n`` tests on the judge's verdict descriptor and exits: before issue 20 the
    filter then kept every test, ``add(2, 2) == 5`` included. Contained when it is never run."""
    frames = b"".join(
        len(m).to_bytes(4, "big") + m
        for m in (json.dumps({"i": i, "status": "ok", "detail": ""}).encode() for i in range(n))
    )
    return f"assert __import__('os').write({verdict_fd}, {frames!r}) and __import__('os')._exit(0)"


EXCEPTION_ATTACKS = [
    Attack(
        7,
        "StopIteration from the candidate ends all(map(...)) early",
        "def f(x):\n    raise StopIteration\n",
        {"assert": "assert all(map(lambda x: f(x) == x + 1, [1, 2, 3]))", "entry_point": "f"},
        not_ok,
    ),
    Attack(
        7,
        "StopIteration from the candidate ends a for-loop over zip(map(...)) early",
        "def f(x):\n    raise StopIteration('done')\n",
        {
            "assert": "for got, want in zip(map(f, [1, 2]), [2, 3]):\n    assert got == want\nassert True\n",
            "entry_point": "f",
        },
        not_ok,
    ),
    Attack(
        7,
        "call-mode program labelling its own failure sandbox_error",
        FORGED_SANDBOX_ERROR,
        {"inputs": ["1"], "outputs": ["2"], "fn_name": "f"},
        lambda rep, *_: rep.verdicts in (["error"], ["wrong"]),
    ),
]
# syscalls on neither list (issue 20: seccomp became an allow list): each must fail with ENOSYS
UNLISTED_SYSCALLS = {
    "io_setup": (206, 0, "1, ctypes.byref(ctypes.c_ulong(0))"),
    "landlock_create_ruleset": (444, 444, "None, 0, 1"),
    "move_pages": (279, 239, "0, 0, None, None, None, 0"),
    "set_mempolicy": (238, 237, "0, None, 0"),
    "vmsplice": (278, 75, "0, None, 0, 0"),
    "tee": (276, 77, "0, 1, 1, 0"),
    "pkey_alloc": (330, 289, "0, 0"),
    "inotify_init1": (294, 26, "0"),
    "setxattr": (188, 5, "b'.', b'user.x', b'1', 1, 0"),
}
UNLISTED_PROBE = (
    LIBC
    + "bad = []\n"
    + "".join(
        f"ctypes.set_errno(0)\nr = libc.syscall({x if X86 else a}, {args})\ne = ctypes.get_errno()\n"
        f"if not (r == -1 and e == errno.ENOSYS):\n    bad.append('{name}=%d/%s' % (r, errno.errorcode.get(e, e)))\n"
        for name, (x, a, args) in UNLISTED_SYSCALLS.items()
    )
    + "print(' '.join(bad) or 'all ENOSYS')\n"
)
INVENTORY_ATTACKS = [
    Attack(
        7,
        "syscalls outside the allow list (io_setup, landlock, move_pages, vmsplice, pkeys, inotify, ...)",
        UNLISTED_PROBE,
        stdin("all ENOSYS"),
        lambda rep, *_: rep.all_passed,
        needs=("seccomp",),
    ),
    Attack(
        7,
        "464 MiB of SysV shm still charged to the slot when the next run starts",
        SHM_464,
        stdin("464"),
        probe_passes,
        opts={"memory_mb": 512},
        probe="x = bytearray(400 << 20)\nprint('fits')\n",
        probe_tests=stdin("fits"),
        probe_opts={"memory_mb": 512},
        repeat=3,
        needs=("cgroup", "namespaces"),
    ),
    Attack(
        7,
        "daemon answering the zygote's control messages in the template's place",
        TAKEOVER,
        stdin("no socket"),
        lambda rep, probe: probe is not None and probe.verdicts == ["wrong", "wrong", "wrong"],
        probe="print(0)\n",
        probe_tests={"inputs": ["", "", ""], "outputs": ["42", "42", "42"]},
    ),
    Attack(
        7,
        "malformed message on the control socket (the zygote must not crash)",
        MALFORMED_CONTROL,
        stdin("sent"),
        lambda rep, *_: rep.all_passed,
    ),
    Attack(
        7,
        "SysV shared memory left by test code in the judge for a later judge",
        "def g():\n    return 1\n",
        {"assert": JUDGE_SHM_PLANT},
        probe_passes,
        probe="def g():\n    return 1\n",
        probe_tests={
            "assert": "_rows = open('/proc/sysvipc/shm').read().strip().split('\\n')[1:]\n"
            "assert g() == 1 and not _rows, _rows\n"
        },
        needs=("namespaces",),
    ),
    Attack(
        7,
        "inventory of a stdin program (fds 0-2 only)",
        INVENTORY + "import sys\nprint(leaks({0, 1, 2}))\nprint(leaks({0, 1, 2}), file=sys.stderr)\n",
        stdin("clean"),
        lambda rep, *_: rep.all_passed,
        needs=("namespaces", "seccomp"),
    ),
    Attack(
        7,
        "inventory of a call-mode program (fds 0-3 only)",
        INVENTORY + "def f(x):\n    found = leaks({0, 1, 2, 3})\n    if found != 'clean':\n"
        "        raise RuntimeError(found)\n    return found\n",
        {"inputs": ["0"], "outputs": ['"clean"'], "fn_name": "f"},
        lambda rep, *_: rep.all_passed,
        needs=("namespaces", "seccomp"),
    ),
    Attack(
        7,
        "inventory of an assert-mode program server (fds 0-4 only)",
        INVENTORY_PROG_SERVER,
        {"assert": "assert f(0) == 'clean', f(0)", "entry_point": "f"},
        lambda rep, *_: rep.all_passed,
        needs=("namespaces", "seccomp"),
    ),
    Attack(
        7,
        "inventory of the judge running (model-written) test code (fds 0-5 only)",
        "def g():\n    return 1\n",
        {"assert": INVENTORY + "_found = leaks({0, 1, 2, 3, 4, 5})\nassert _found == 'clean', _found\n"},
        lambda rep, *_: rep.all_passed,
        needs=("namespaces", "seccomp"),
    ),
]

ALL = (
    JUDGE_ATTACKS
    + STATE_ATTACKS
    + MEMORY_ATTACKS
    + ZYGOTE_ATTACKS
    + MEMORY_ATTACKS_6
    + INVENTORY_ATTACKS
    + EXCEPTION_ATTACKS
)


def scan_hits(pool: SandboxPool) -> int | None:
    """How often the class-6 marker occurs in a fresh program's memory (index of the passing test)."""
    rep = run_tests(MEMORY_SCAN, {"inputs": [""] * 12, "outputs": [str(k) for k in range(12)]}, pool=pool)
    return rep.verdicts.index("ok") if "ok" in rep.verdicts else None


def zygote_pids(pool: SandboxPool) -> list[int]:
    return [z.proc.pid for z in pool._zygotes]


def run_attack(attack: Attack, pool: SandboxPool, baseline_hits: int | None = None) -> tuple[bool, str]:
    """Run one attack (and its probe); (contained, one-line account)."""
    before = zygote_pids(pool)
    ok = True
    for _ in range(attack.repeat):
        rep = run_tests(attack.program, attack.tests, pool=pool, **attack.opts)
        probe = None
        if attack.probe is not None:
            probe = run_tests(attack.probe, attack.probe_tests, pool=pool, **attack.probe_opts)
        ok = ok and bool(attack.contained(rep, probe))
    if attack.cls == 6:
        hits = scan_hits(pool)
        ok = ok and hits is not None and baseline_hits is not None and hits <= baseline_hits
    sandbox_err = "sandbox" in str(rep.info.get("reason", ""))
    restarted = zygote_pids(pool) != before
    if attack.cls == 5:  # must cost that run's reward, not the zygote or a sandbox error
        ok = ok and not sandbox_err and not restarted
    honest = run_tests("print(int(input()) + 1)", {"inputs": ["41"], "outputs": ["42"]}, pool=pool)
    ok = ok and honest.all_passed
    detail = f"verdicts={rep.verdicts} failures={rep.info.get('failures')}" + (
        f" probe={probe.verdicts}" if probe is not None and attack.probe else ""
    )
    detail += " zygote restarted" if restarted else ""
    detail += f" reason={rep.info.get('reason')}" if sandbox_err else ""
    return ok, detail


# ---- class 4: pools sharing uids (and so per-uid limits)
HOG = (
    "import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n        time.sleep(2.5)\n        os._exit(0)\n"
    "time.sleep(2.5)\nprint('hog')\n"
)
FORKER = (
    "import os\npids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n"
    "    pids.append(pid)\nfor p in pids:\n    os.waitpid(p, 0)\nprint('forked')\n"
)
OTHER_PROCESS_POOL = (
    "import json\nfrom archer.sandbox.pool import SandboxPool, SandboxConfig\n"
    "with SandboxPool(SandboxConfig(workers=2)) as p:\n"
    "    print(json.dumps([sorted(set(u.values())) for u in p.isolation.get('all_uids') or "
    "[p.isolation.get('uids') or {}]]))\n"
)


def uid_set(pool: SandboxPool) -> set[int]:
    pairs = pool.isolation.get("all_uids") or [pool.isolation.get("uids")]
    return {u for pair in pairs for u in (pair or {}).values()}


def two_pools_in_one_process() -> tuple[bool, str]:
    """A program holding one short of ``nproc`` processes in pool A; an honest forking program in
    pool B must still pass, and the pools' uids must not overlap."""
    import threading

    with (
        SandboxPool(SandboxConfig(workers=1, nproc=8)) as a,
        SandboxPool(SandboxConfig(workers=1, nproc=8)) as b,
    ):
        shared = uid_set(a) & uid_set(b)
        hog = threading.Thread(target=run_tests, args=(HOG, stdin("hog")), kwargs={"pool": a, "timeout": 4.0})
        hog.start()
        time.sleep(1.0)
        try:
            honest = run_tests(FORKER, stdin("forked"), pool=b)
        finally:
            hog.join()
    ok = bool(uid_set(a)) and not shared and honest.all_passed
    return ok, f"shared uids={sorted(shared)} honest verdicts={honest.verdicts}"


def pool_in_another_process() -> tuple[bool, str]:
    import subprocess
    import sys

    with SandboxPool(SandboxConfig(workers=2)) as mine:
        out = subprocess.run(
            [sys.executable, "-c", OTHER_PROCESS_POOL],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=str(REPO),
        )
        if out.returncode != 0:
            return False, out.stderr[-500:]
        theirs = {u for pair in json.loads(out.stdout.strip().splitlines()[-1]) for u in pair}
        shared = theirs & uid_set(mine)
    return bool(theirs) and not shared, f"shared uids={sorted(shared)}"


SPINNERS = (
    "import os, time\nfor _ in range(14):\n    if os.fork() == 0:\n        os.setsid()\n"
    "        end = time.time() + 6\n        while time.time() < end:\n            pass\n        os._exit(0)\n"
    "time.sleep(6)\nprint('spun')\n"
)
HONEST_LOOP = "n = 0\nfor i in range(10_000_000):\n    n += i\n"
# reads the time the same loop took in the trainer just before (the machine's current speed) and
# says whether it ran at most 3x slower beside the spinners
HONEST_CPU = (
    "import time\nbase = float(input())\ntime.sleep(1.0)\nt = time.time()\n"
    + HONEST_LOOP
    + "dt = time.time() - t\n"
    "print('in time' if dt < 3 * base + 0.3 else 'slow %.2f s for %.2f s alone' % (dt, base))\n"
)


def spinners_beside_an_honest_run() -> tuple[bool, str]:
    """Issue 20: a program forking spinners in new sessions on one slot; an honest CPU-bound run on
    the other slot at the same time must still get its core (each slot has its own CPU bandwidth).
    Among 14 uncapped spinners (one scheduling group per session) the honest loop gets about 2/15
    of the machine and runs ~7x slower than alone; with the cap, at most 3x (a loaded machine)."""
    with SandboxPool(SandboxConfig(workers=2, nproc=16)) as p:
        if not p.isolation.get("cgroup_cpu"):
            return True, "no cpu controller here (skipped)"
        t = time.time()
        exec(HONEST_LOOP, {})
        alone = f"{time.time() - t:.3f}"
        honest = {"inputs": [alone], "outputs": ["in time"]}
        reps = run_tests_batch(
            [(SPINNERS, stdin("spun")), (HONEST_CPU, honest), (HONEST_CPU, honest)], pool=p, timeout=12.0
        )
    return all(
        r.all_passed for r in reps[1:]
    ), f"alone {alone} s; verdicts={[(r.verdicts, r.info.get('failures')) for r in reps]}"


SLOT_ATTACKS = {
    "spinners in new sessions on one slot vs an honest run on another": spinners_beside_an_honest_run,
}

POOL_ATTACKS = {
    "two pools in one process: per-uid process limit shared": two_pools_in_one_process,
    "a pool in another process gets the same uids": pool_in_another_process,
}


# ------------------------------------------------------------------------------ figures


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0]) // 1024  # MiB
    return out


def cgroup_usage_mib(pool: SandboxPool) -> float | None:
    total = 0
    dirs = getattr(pool, "_cgroups", None)
    if not dirs:
        return None
    for d in dirs:
        version, path = d["memory"]
        name = "memory.usage_in_bytes" if version == 1 else "memory.current"
        total += int(Path(path, name).read_text())
    return total / (1 << 20)


LEAVE_BEHIND = LIBC + (
    "import os\nlibc.shmget.restype = ctypes.c_int\nlibc.shmat.restype = ctypes.c_void_p\n"
    "sid = libc.shmget(0, 16 << 20, 0o1000 | 0o600)\naddr = libc.shmat(sid, None, 0)\n"
    "ctypes.memset(addr, 1, 16 << 20)\nlibc.shmdt(ctypes.c_void_p(addr))\n"
    "fd = os.memfd_create('x')\nos.write(fd, b'y' * (8 << 20))\n"
    "if os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(600)\n"
    "open('junk', 'wb').write(b'z' * (4 << 20))\nprint('left')\n"
)


def held_after_hostile_runs(pool: SandboxPool, n: int) -> dict[str, Any]:
    """Memory held after ``n`` runs that each try to leave 16 MiB of SysV shm, a daemon holding an
    8 MiB memfd and a 4 MiB file behind."""
    time.sleep(1.0)
    before = meminfo()
    reps = run_tests_batch([(LEAVE_BEHIND, stdin("left"))] * n, pool=pool, timeout=5.0)
    time.sleep(2.0)  # IPC namespaces are freed asynchronously
    after = meminfo()
    return {
        "runs": n,
        "passed": sum(r.all_passed for r in reps),
        "shmem_mib": after["Shmem"] - before["Shmem"],
        "available_drop_mib": before["MemAvailable"] - after["MemAvailable"],
        "cgroup_usage_mib": cgroup_usage_mib(pool),
    }


def humaneval_always_wrong(pool: SandboxPool, data: Path) -> dict[str, Any]:
    """Always-wrong programs (a constant, None or the first argument as the answer) with builtin and
    helper rebinding attacks on every HumanEval problem; a problem counts when any variant passes."""
    import ast
    import builtins

    rows = [json.loads(line) for line in open(data / "code" / "humaneval.jsonl")]
    items, owners = [], []
    for r in rows:
        tests = with_prompt_setup(
            {"assert": f"{r['test']}\n\ncheck({r['entry_point']})\n", "entry_point": r["entry_point"]},
            r["prompt"],
        )
        used = {n.id for n in ast.walk(ast.parse(r["test"])) if isinstance(n, ast.Name)}
        rebind = sorted(
            n for n in used if n in dir(builtins) and n not in ("range", "print", "AssertionError")
        )
        helpers = [
            n.name
            for n in ast.parse(r["prompt"]).body
            if isinstance(n, ast.FunctionDef) and n.name != r["entry_point"]
        ]
        stub = f"def {r['entry_point']}(*a, **k):\n    return {{}}\n"
        variants = []
        for ret in ("None", "0", "True", "''", "[]", "a[0] if a else None"):
            body = stub.format(ret)
            variants.append(body)
            for fake in ("0", "True"):
                variants.append(body + "".join(f"def {b}(*a, **k):\n    return {fake}\n" for b in rebind))
            for fake in ("0", "a[0] if a else 0"):
                variants.append(body + "".join(f"def {h}(*a, **k):\n    return {fake}\n" for h in helpers))
            for b in rebind:
                variants.append(f"from builtins import eval as {b}\n" + body)
        for v in variants:
            items.append((v, tests))
            owners.append(r["task_id"])
    reps = run_tests_batch(items, pool=pool, stop_on_failure=True, timeout=5.0)
    broken = sorted({t for t, rep in zip(owners, reps) if rep.all_passed})
    return {"problems": len(rows), "programs": len(items), "passing_problems": broken}


def honest_pass(pool: SandboxPool, data: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in open(data / "code" / "humaneval.jsonl")]
    items = [
        (
            r["prompt"] + r["canonical_solution"],
            with_prompt_setup(
                {"assert": f"{r['test']}\n\ncheck({r['entry_point']})\n", "entry_point": r["entry_point"]},
                r["prompt"],
            ),
        )
        for r in rows
    ]
    mbpp = [json.loads(line) for line in open(data / "code" / "mbpp_sample.jsonl")]
    items += [(r["canonical_solution"], {"assert": list(r["test_list"])}) for r in mbpp]
    reps = run_tests_batch(items, pool=pool)
    return {
        "humaneval": sum(r.all_passed for r in reps[: len(rows)]),
        "humaneval_total": len(rows),
        "mbpp": sum(r.all_passed for r in reps[len(rows) :]),
        "mbpp_total": len(mbpp),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hostile-runs", type=int, default=100)
    ap.add_argument(
        "--data", default=os.environ.get("ARCHER_SHARED_DATA", str(REPO / "archer" / "data" / "bundled"))
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"facilities": facilities()}
    with SandboxPool(SandboxConfig(workers=2, nproc=16)) as pool:
        result["isolation"] = {k: v for k, v in pool.isolation.items() if k not in ("errors",)}
        baseline = scan_hits(pool)
        by_class: dict[int, list[int]] = {}
        lines = []
        for attack in ALL:
            ok, detail = run_attack(attack, pool, baseline)
            by_class.setdefault(attack.cls, [0, 0])
            by_class[attack.cls][0] += ok
            by_class[attack.cls][1] += 1
            lines.append(
                f"class {attack.cls} {'contained' if ok else 'NOT CONTAINED'}: {attack.name} ({detail})"
            )
        for name, fn in POOL_ATTACKS.items():
            ok, detail = fn()
            by_class.setdefault(4, [0, 0])
            by_class[4][0] += ok
            by_class[4][1] += 1
            lines.append(f"class 4 {'contained' if ok else 'NOT CONTAINED'}: {name} ({detail})")
        result["attacks"] = lines
        result["contained_by_class"] = {c: f"{a}/{b}" for c, (a, b) in sorted(by_class.items())}
        result["honest"] = honest_pass(pool, Path(args.data))
        result["humaneval_always_wrong"] = humaneval_always_wrong(pool, Path(args.data))
        result["held_after_hostile_runs"] = held_after_hostile_runs(pool, args.hostile_runs)
    time.sleep(2.0)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
