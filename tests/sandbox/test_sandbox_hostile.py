"""Hostile programs: each must fail (or be harmless) and leave the machine and the test runner as they were.

Tests that need an isolation layer skip, naming it, when that layer is not active on this machine;
``test_isolation_is_reported`` shows which ones are.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from sandbox_attacks import MEMORY_SCAN  # one copy of the memory-scanning attack program

from archer.rewards.code import run_tests
from archer.sandbox.pool import LAYERS, SandboxConfig, SandboxPool, sandbox_isolation

REPO = Path(__file__).resolve().parents[2]
SECRET = "archer-fake-secret-7f3a"


@pytest.fixture(scope="module")
def pool():
    os.environ["ARCHER_FAKE_SECRET"] = SECRET  # set before the zygotes start: they must not inherit it
    try:
        with SandboxPool(SandboxConfig(workers=2, nproc=16)) as p:
            yield p
    finally:
        os.environ.pop("ARCHER_FAKE_SECRET", None)


def needs(pool, *layers):
    missing = [k for k in layers if not pool.isolation[k]]
    if missing:
        pytest.skip(f"isolation layer(s) not active on this machine: {missing}")


def sandbox_processes(pool) -> list[int]:
    """Host pids still running as the sandbox uids."""
    uids = {str(u) for u in (pool.isolation["uids"] or {}).values()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and line.split()[1] in uids:
                found.append(int(entry))
    return found


def stdin_one(pool, program, expected="", **kw):
    return run_tests(program, {"inputs": [""], "outputs": [expected]}, pool=pool, **kw)


def test_isolation_is_reported(pool):
    iso = sandbox_isolation(pool)
    assert set(LAYERS) <= iso.keys() and iso["rlimits"] is True
    assert iso["launcher"] in ("unshare", "unshare-userns", "none")


def test_infinite_loop_times_out_and_runner_survives(pool):
    start = time.monotonic()
    rep = stdin_one(pool, "while True:\n    pass\n", timeout=0.5)
    assert rep.verdicts == ["timeout"]
    assert time.monotonic() - start < 30  # not a timing claim: a hang would never get here
    assert stdin_one(pool, "print('alive')", "alive").all_passed


def test_fork_bomb_is_contained_and_cleaned_up(pool):
    needs(pool, "uid_drop")
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    rep = stdin_one(pool, bomb, timeout=1.0)
    assert rep.verdicts[0] in ("timeout", "error")
    assert sandbox_processes(pool) == []
    assert stdin_one(pool, "import os\npid = os.fork()\nprint('ok' if pid else '', end='')", "ok").all_passed


def test_memory_bomb_hits_the_address_space_limit(pool):
    rep = stdin_one(
        pool, "a = []\nwhile True:\n    a.append(bytearray(10 ** 7))\n", timeout=5.0, memory_mb=256
    )
    assert rep.verdicts == ["memory"]
    rep = stdin_one(pool, "x = bytearray(2 ** 40)", memory_mb=256)
    assert rep.verdicts == ["memory"]


def test_disk_fill_is_refused(pool):
    prog = (
        "try:\n    with open('big', 'wb') as f:\n        for _ in range(200):\n"
        "            f.write(b'x' * (1 << 20))\n    print('wrote')\nexcept OSError:\n    print('refused')\n"
    )
    assert stdin_one(pool, prog, "refused").all_passed


def test_writes_outside_the_work_dir_are_refused(pool):
    needs(pool, "mount_namespace", "uid_drop")
    targets = [
        "/tmp/archer_pwned",
        str(REPO / "archer_pwned.txt"),
        "/root/archer_pwned",
        "/dev/shm/archer_pwned",
        "/var/tmp/archer_pwned",
        "/etc/archer_pwned",
        "/usr/archer_pwned",
    ]
    prog = (
        f"import os\nok = 0\nfor p in {targets!r}:\n    try:\n        open(p, 'w').write('x')\n"
        "    except OSError:\n        ok += 1\nprint(ok)\n"
    )
    assert stdin_one(pool, prog, str(len(targets))).all_passed
    for p in targets:
        assert not os.path.exists(p), p
    # the work dir itself is writable
    assert stdin_one(pool, "open('f', 'w').write('hi')\nprint(open('f').read())", "hi").all_passed


def _python_dirs() -> list[str]:
    """The interpreter's directories, which the jail binds read-only (a venv may live in the clone)."""
    import sys

    return sorted(
        {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable))}
    )


def test_repository_and_data_are_not_readable(pool):
    """Nothing of the repository, its data or the home directory is visible in the jail. A directory
    on the way to the Python installation (the clone holding .venv/, /home holding the user's
    clone) exists there, but holds only that path."""
    needs(pool, "chroot")
    real = Path(os.path.realpath(REPO))
    secret_files = [str(real / name) for name in ("README.md", "pyproject.toml", "archer", "tests", ".git")]
    secret_files += [str(real.parent / "shared"), os.path.expanduser("~/.bashrc")]
    allowed: dict[str, list[str]] = {}
    for d in (real, real.parent, Path("/home"), Path(os.path.expanduser("~"))):
        if str(d) == "/":
            continue
        allowed[str(d)] = sorted(
            {
                Path(py).relative_to(d).parts[0]
                for py in _python_dirs()
                if Path(py).is_relative_to(d) and Path(py) != d
            }
        )
    prog = (
        f"import os\nbad = [p for p in {secret_files!r} if os.path.exists(p)]\n"
        f"for d, ok in {allowed!r}.items():\n"
        "    if os.path.isdir(d):\n"
        "        bad += [os.path.join(d, n) for n in os.listdir(d) if n not in ok]\n"
        "print(bad)\n"
    )
    assert stdin_one(pool, prog, "[]").all_passed


def test_environment_secrets_are_not_visible(pool):
    prog = (
        "import os\nseen = [os.environ.get('ARCHER_FAKE_SECRET')]\n"
        "for p in ('/proc/self/environ', '/proc/1/environ'):\n    try:\n"
        "        seen.append(open(p, 'rb').read())\n    except OSError:\n        pass\n"
        f"print({SECRET!r} in repr(seen), len(os.environ))\n"
    )
    assert stdin_one(pool, prog, "False 0").all_passed


def test_network_is_unreachable(pool):
    needs(pool, "net_namespace")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    prog = (
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    print('connected')\nexcept OSError:\n    print('refused')\n"
    )
    try:
        assert stdin_one(pool, prog, "refused").all_passed
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_early_exit_cannot_pass_assert_tests(pool):
    tests = {
        "assert": "def check(candidate):\n    assert candidate(2) == 4\n\ncheck(sq)\n",
        "entry_point": "sq",
    }
    for prog in (
        "import sys\nsys.exit(0)\ndef sq(x):\n    return x\n",
        "import os\nos._exit(0)\n",
        "def sq(x):\n    import sys\n    sys.exit(0)\n",
        "def sq(x):\n    import os\n    os._exit(0)\n",
        "def sq(x):\n    raise SystemExit(0)\n",
        "import os, signal\ndef sq(x):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    ):
        rep = run_tests(prog, tests, pool=pool)
        assert rep.verdicts != ["ok"], prog


def test_early_exit_in_stdin_tests_is_wrong(pool):
    assert stdin_one(pool, "import sys\nsys.exit(0)", "42").verdicts == ["wrong"]
    rep = run_tests("import sys; sys.exit(0)", {"inputs": ["1"], "outputs": ["1"], "fn_name": "f"}, pool=pool)
    assert rep.verdicts == ["error"]


def test_always_equal_objects_are_rejected(pool):
    tests = {"assert": ["assert f(1) == 12345", "assert f(1) != 1", "assert f(2) == [7]"]}
    lies = (
        "class Liar:\n    def __eq__(self, o):\n        return True\n    def __ne__(self, o):\n"
        "        return False\n    __hash__ = object.__hash__\n"
    )
    for ret in ("Liar()", "[Liar()]", "type('I', (int,), {'__eq__': lambda s, o: True})(1)"):
        rep = run_tests(lies + f"def f(x):\n    return {ret}\n", tests, pool=pool)
        assert rep.passed == 0, ret
    rep = run_tests(
        lies + "def f(x):\n    return Liar()\n",
        {"inputs": ["1"], "outputs": ["5"], "fn_name": "f"},
        pool=pool,
    )
    assert rep.verdicts == ["error"]  # not JSON-serialisable, so never compared


def test_frame_peeking_finds_no_expected_values(pool):
    # an in-process harness would leak 987654321 through the caller's frame or code constants
    prog = (
        "import sys, inspect, gc\ndef f(x):\n    found = []\n    fr = sys._getframe(1)\n    while fr:\n"
        "        found += [v for v in list(fr.f_locals.values()) + list(fr.f_code.co_consts)\n"
        "                  if isinstance(v, int) and not isinstance(v, bool) and v > 10 ** 8]\n"
        "        fr = fr.f_back\n"
        "    for info in inspect.stack()[1:]:\n        found += [v for v in info.frame.f_code.co_consts\n"
        "                  if isinstance(v, int) and not isinstance(v, bool) and v > 10 ** 8]\n"
        "    if found:\n        return found[0]\n"
        "    marker = ''.join(['SECRET_', 'MARKER_91827'])\n"
        "    for o in gc.get_objects():\n        if marker in repr(o)[:10000]:\n"
        "            found.append(int('987654321'))\n"
        "    return found[0] if found else -1\n"
    )
    test = "assert f(0) == 987654321  # SECRET_MARKER_91827"
    exec(prog + test, {})  # the attack works when program and test share a process (this is our own code)
    rep = run_tests(prog, {"assert": test}, pool=pool)
    assert rep.verdicts == ["wrong"]
    # call-based: the expected output is never in the program's process either
    scan = (
        "import gc\ndef f(x):\n    for o in gc.get_objects():\n"
        "        if isinstance(o, (list, dict)):\n            for v in (o if isinstance(o, list) else o.values()):\n"
        "                if isinstance(v, str) and v.startswith('\"EXPECTED_'):\n"
        "                    return v.strip('\"')\n    return 'none'\n"
    )
    rep = run_tests(scan, {"inputs": ["1"], "outputs": ['"EXPECTED_4242"'], "fn_name": "f"}, pool=pool)
    assert rep.verdicts == ["wrong"]


def test_printing_a_completion_token_does_not_pass(pool):
    prog = 'print(\'ok\')\nprint(\'{"i": 0, "status": "ok"}\')\nimport sys\nsys.exit(0)\n'
    rep = run_tests(prog, {"assert": "assert f() == 1"}, pool=pool)
    assert rep.verdicts == ["error"]
    forge = (
        "import os, json, struct\ndef f(x):\n    for fd in range(3, 64):\n        try:\n"
        "            m = json.dumps({'i': 0, 'status': 'ok', 'result': '5'}).encode()\n"
        "            os.write(fd, struct.pack('>I', len(m)) + m)\n        except OSError:\n            pass\n"
        "    return 0\n"
    )
    rep = run_tests(forge, {"assert": "assert f(1) == 5"}, pool=pool)
    assert rep.passed == 0  # the forged frames only corrupt the program's own reply pipe


def test_output_flood_is_capped(pool):
    rep = stdin_one(pool, "while True:\n    print('x' * 1000)\n", max_output_bytes=1 << 20, timeout=5.0)
    assert rep.verdicts == ["output_limit"]


def test_signals_cannot_reach_the_runner(pool):
    needs(pool, "pid_namespace")
    me = os.getpid()
    for prog in (
        "import os\nos.kill(os.getppid(), 9)",
        "import os\nos.kill(-1, 9)",
        "import os\nos.kill(1, 9)",
        f"import os\ntry:\n    os.kill({me}, 9)\nexcept OSError:\n    pass\n",
        "import os, signal\nos.killpg(0, signal.SIGKILL)",
    ):
        stdin_one(pool, prog)
    assert stdin_one(pool, "print('alive')", "alive").all_passed
    assert all(z.alive() for z in pool._zygotes)


def test_processes_are_gone_after_timeout(pool):
    needs(pool, "uid_drop")
    prog = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        while True:\n            time.sleep(0.01)\n    os._exit(0)\nwhile True:\n    pass\n"
    )
    rep = stdin_one(pool, prog, timeout=0.5)
    assert rep.verdicts == ["timeout"]
    assert sandbox_processes(pool) == []
    # a daemon left behind by a program that exits normally is killed too
    prog = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('bye')\n"
    assert stdin_one(pool, prog, "bye").all_passed
    assert sandbox_processes(pool) == []


def memory_hits(pool, first_input: str = "") -> int | None:
    """How often the marker occurs in a program's own memory (each stdin test is a fresh fork with
    the same answer, so the index of the passing test is the count; None beyond 11)."""
    inputs = [first_input] + [""] * 11
    rep = run_tests(MEMORY_SCAN, {"inputs": inputs, "outputs": [str(k) for k in range(12)]}, pool=pool)
    assert set(rep.verdicts) <= {"ok", "wrong"}, rep  # the scan itself ran
    return rep.verdicts.index("ok") if "ok" in rep.verdicts else None


def test_earlier_test_code_is_wiped_from_zygote_memory():
    """A program that reads its whole address space (ctypes) finds no trace of earlier test code."""
    with SandboxPool(SandboxConfig(workers=1)) as pool:
        baseline = memory_hits(pool)  # the scanner's own copy of the marker
        assert baseline is not None
        assert run_tests(
            "def g():\n    return 1\n", {"assert": "assert g() == 1  # ZQX7000021MARK"}, pool=pool
        ).all_passed
        assert memory_hits(pool) == baseline
        # nor the inputs of the other tests of its own request (each child gets only its own data);
        # the baseline (>= 1, the scanner's own marker) shows the scan does see what it holds
        assert memory_hits(pool, first_input="ZQX7000021MARK") == baseline >= 1


def test_programs_have_no_capabilities_and_the_zygote_few(pool):
    needs(pool, "capabilities_dropped", "pid_namespace")
    prog = (
        "def cap(path):\n    return [l.split()[1] for l in open(path) if l.startswith('CapEff')][0]\n"
        "print(cap('/proc/1/status'), cap('/proc/self/status'))\n"
    )
    assert stdin_one(pool, prog, "00000000000000ff 0000000000000000").all_passed


def test_monkeypatching_builtins_and_modules_does_not_help(pool):
    patches = (
        "import builtins, json, pickle, os, sys\n"
        "builtins.AssertionError = SystemExit\nbuiltins.isinstance = lambda *a: True\n"
        "builtins.type = lambda *a: int\njson.dumps = lambda *a, **k: '5'\n"
        "pickle.dumps = lambda *a, **k: pickle._dumps(('ok', 5))\n"
        "sys.modules['builtins'].len = lambda x: 5\n"
        "def f(x):\n    return 1\n"
    )
    # (its own patched len() hangs its own reply loop: a timeout, which is a failure like any other)
    tests = {"assert": ["assert f(1) == 2", "assert len([1]) == 5"]}
    assert run_tests(patches, tests, timeout=1.0, pool=pool).passed == 0
    rep = run_tests(patches, {"inputs": ["1"], "outputs": ["7"], "fn_name": "f"}, timeout=1.0, pool=pool)
    assert rep.passed == 0  # whatever it forges is compared in the trainer, against a value it never saw
