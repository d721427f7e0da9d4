"""Units of the sandbox hardening that need no running sandbox: seccomp filter, cgroup files (v1 and
v2, on a fake tree), uid allocation, flat tree removal, the judge's choice of program names, total
comparisons."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from archer.rewards.compare import call_result_matches, stdout_matches
from archer.sandbox import uids as sandbox_uids
from archer.sandbox.zygote import cgroup as sandbox_cgroup
from archer.sandbox.zygote import seccomp as sandbox_seccomp
from archer.sandbox.zygote.harness import program_names
from archer.sandbox.zygote.isolation import remove_tree_contents

# ---------------------------------------------------------------------------- seccomp


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_filter_builds_for_both_tables(monkeypatch, machine):
    monkeypatch.setattr(sandbox_seccomp.platform, "machine", lambda: machine)
    for ipc in (False, True):
        prog = sandbox_seccomp.build(allow_ipc_unshare=ipc)
        assert all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in prog)
        col = 0 if machine == "x86_64" else 1
        denied = {k for code, _, _, k in prog if code == sandbox_seccomp.JEQ_K}
        assert {sandbox_seccomp.DENY[n][col] for n in ("keyctl", "bpf", "ptrace", "mount", "setns")} <= denied


def _in_child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(fn())
        except BaseException:
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(not sandbox_seccomp.supported(), reason="no seccomp syscall table for this machine")
def test_filter_refuses_with_eperm_and_allows_ordinary_work():
    def child():
        sandbox_seccomp.install()
        libc = ctypes.CDLL(None, use_errno=True)
        nr = sandbox_seccomp.DENY["add_key"][0 if sandbox_seccomp._arch()[1] == 0 else 1]
        if (
            libc.syscall(nr, b"user", b"k", b"v", 1, ctypes.c_long(-2)) != -1
            or ctypes.get_errno() != errno.EPERM
        ):
            return 1
        pid = os.fork()  # clone without namespace flags still works
        if pid == 0:
            os._exit(7)
        return 0 if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7 else 2

    assert _in_child(child) == 0


# ----------------------------------------------------------------------------- cgroups


def _fake(tmp_path, version):
    d = tmp_path / f"v{version}"
    d.mkdir()
    files = {"pids.max": "max", "cgroup.procs": ""}
    if version == 1:
        files.update(
            {
                "memory.limit_in_bytes": str(1 << 62),
                "memory.memsw.limit_in_bytes": str(1 << 62),
                "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            }
        )
    else:
        files.update(
            {
                "memory.max": "max",
                "memory.swap.max": "max",
                "memory.oom.group": "0",
                "memory.events": "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n",
            }
        )
    for name, text in files.items():
        (d / name).write_text(text)
    return {"memory": (version, str(d)), "pids": (version, str(d))}


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_limits_and_oom_counter(tmp_path, version):
    dirs = _fake(tmp_path, version)
    sandbox_cgroup.set_limits(dirs, 256 << 20, 17)
    d = dirs["memory"][1]
    read = lambda name: open(os.path.join(d, name)).read()  # noqa: E731
    assert read("pids.max") == "17"
    if version == 1:
        assert read("memory.limit_in_bytes") == read("memory.memsw.limit_in_bytes") == str(256 << 20)
        assert sandbox_cgroup.oom_kills(dirs) == 3
    else:
        assert (read("memory.max"), read("memory.swap.max"), read("memory.oom.group")) == (
            str(256 << 20),
            "0",
            "1",
        )
        assert sandbox_cgroup.oom_kills(dirs) == 2


def test_cgroup_v1_raises_memsw_before_the_limit(tmp_path, monkeypatch):
    dirs = _fake(tmp_path, 1)
    d = dirs["memory"][1]
    for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
        open(os.path.join(d, name), "w").write(str(128 << 20))
    order = []
    real = sandbox_cgroup._write
    monkeypatch.setattr(
        sandbox_cgroup, "_write", lambda p, v: (order.append(os.path.basename(p)), real(p, v))
    )
    sandbox_cgroup.set_limits({"memory": dirs["memory"]}, 512 << 20, 1)
    assert order == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    order.clear()
    sandbox_cgroup.set_limits({"memory": dirs["memory"]}, 64 << 20, 1)
    assert order == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_cgroup_v2_with_processes_in_the_parent_is_reported(tmp_path, monkeypatch):
    parent = tmp_path / "p"
    parent.mkdir()
    (parent / "cgroup.subtree_control").write_text("")
    monkeypatch.setattr(
        sandbox_cgroup, "parents", lambda: {"memory": (2, str(parent)), "pids": (2, str(parent))}
    )

    def refuse(path, mode="r", *a, **k):
        if "w" in mode and path.endswith("subtree_control"):
            raise OSError(errno.EBUSY, "Device or resource busy")
        return open_(path, mode, *a, **k)

    open_ = open
    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(sandbox_cgroup.CgroupUnavailable, match="delegated"):
        sandbox_cgroup.create(0)


def test_stale_slot_dirs_of_dead_trainers_are_swept(tmp_path):
    dead = tmp_path / f"{sandbox_cgroup.PREFIX}999999999-0-abc123"
    alive = tmp_path / f"{sandbox_cgroup.PREFIX}{os.getpid()}-0-abc123"
    dead.mkdir()
    alive.mkdir()
    sandbox_cgroup.sweep({"memory": (1, str(tmp_path))})
    assert not dead.exists() and alive.exists()


# -------------------------------------------------------------------------------- uids


def test_uid_pairs_are_exclusive_until_released(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHER_SANDBOX_UID_DIR", str(tmp_path))
    a = sandbox_uids.allocate(70000, 2)
    b = sandbox_uids.allocate(70000, 2)
    assert {p.prog for p in a}.isdisjoint({p.prog for p in b})
    assert all(p.judge == p.prog + 1 for p in a + b)
    for p in a:
        p.release()
    c = sandbox_uids.allocate(70000, 1)
    assert c[0].prog == a[0].prog  # free again
    for p in b + c:
        p.release()


# ------------------------------------------------------------------------ tree removal


def test_tree_removal_survives_depth_and_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    top = tmp_path / "runs"
    top.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(top)
        for _ in range(2500):  # deeper than Python's recursion limit
            os.mkdir("d")
            os.chdir("d")
        os.symlink(outside, "link")
        os.symlink(outside / "keep", "flink")
        os.mkfifo("fifo")
        os.chmod(".", 0o500)  # read-only dir (root ignores it; others may keep it)
    finally:
        os.chdir(cwd)
    remove_tree_contents(str(top))
    assert (outside / "keep").exists()
    assert os.listdir(top) == [] or os.geteuid() != 0


# ---------------------------------------------------------------------- judge's names


def test_only_one_name_comes_from_the_program():
    assert program_names(["assert abs(f(1)) == 1"], "", "f") == (["f"], [])
    assert program_names(["assert abs(f(1)) == 1", "assert f(2) == 2"], "", None) == (["f"], [])
    # two free names: the judge cannot tell the function under test from a helper; neither is taken
    assert program_names(["assert isclose(f(2), 3.1)"], "", None) == ([], [])
    # helpers from trusted setup are not the program's; unimported standard modules are real
    assert program_names(
        ["assert math.fabs(poly(xs, g(xs))) < 1e-4"], "def poly(xs, x):\n    pass\n", None
    ) == (["g"], ["math"])
    assert program_names(["def check(candidate):\n    assert candidate(1)\ncheck(f)\n"], "", None) == (
        ["f"],
        [],
    )


# ------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize(
    "out", ["sNaN", "-sNaN5", "NaN", "1 sNaN", "1e999999999", "\x00", "Infinity", "9" * 5000, "[" * 10000]
)
def test_comparisons_are_total(out):
    for want in ("1", "sNaN", "nan", "1 2"):
        assert stdout_matches(out, want) in (True, False)
        assert call_result_matches(out, want) in (True, False)
    assert call_result_matches("[" * 100000 + "]" * 100000, [1]) is False
    assert stdout_matches("sNaN", "sNaN") is True  # equal text still matches


# ------------------------------------------------------------- template control channel (issue 20)


def _zygote_with_fake_template():
    import importlib.util
    import socket

    path = os.path.join(os.path.dirname(sandbox_seccomp.__file__), "worker.py")
    spec = importlib.util.spec_from_file_location("archer_sandbox_worker_test", path)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    z = object.__new__(worker.Zygote)
    z.ctl, fake = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    z.exits, z.pending, z.awaiting = {}, {}, {}
    return worker, z, fake


@pytest.mark.parametrize(
    "packet",
    [
        b"\xff{not json",
        b"0" * 16 + b"[1, 2]",
        b"0" * 16 + b'{"exit": 1, "status": 0}',  # a run nobody awaits
        b"0" * 16 + b'{"killed": true}',  # no kill was asked for
        b"0" * 16 + b'{"exit": 1, "status": 0, "extra": 1}',
        b"0" * 16 + b"[" * 100000 + b"]" * 100000,
    ],
)
def test_an_unexpected_template_message_means_a_dead_template(packet):
    worker, z, fake = _zygote_with_fake_template()
    fake.send(packet)
    with pytest.raises(worker.TemplateBroken):
        z.control_event(1.0)


def test_template_answers_need_the_nonce_of_the_message_they_answer():
    worker, z, fake = _zygote_with_fake_template()
    z.pending[7] = b"n" * 16
    fake.send(b"x" * 16 + b'{"exit": 7, "status": 0}')  # wrong nonce
    with pytest.raises(worker.TemplateBroken):
        z.control_event(1.0)
    z.pending[7] = b"n" * 16
    fake.send(b"n" * 16 + b'{"exit": 7, "status": 3}')
    assert z.control_event(1.0) == {"exit": 7, "status": 3} and z.exits == {7: 3} and not z.pending


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_cpu_bandwidth_per_slot(tmp_path, version):
    d = tmp_path / "cpu"
    d.mkdir()
    for name in ("cpu.cfs_period_us", "cpu.cfs_quota_us") if version == 1 else ("cpu.max",):
        (d / name).write_text("")
    sandbox_cgroup.set_limits({"cpu": (version, str(d))}, 1 << 30, 8, cpus=1.5)
    if version == 1:
        assert (d / "cpu.cfs_period_us").read_text() == "100000"
        assert (d / "cpu.cfs_quota_us").read_text() == "150000"
    else:
        assert (d / "cpu.max").read_text() == "150000 100000"
