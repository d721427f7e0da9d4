"""``archer cluster``: hostfile parsing, the commands printed or sent per host, NCCL env, a real head."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from archer.cli import cluster
from archer.distributed.nccl import NCCLConfig, load_nccl_config, ray_runtime_env

HOSTFILE = """\
# head first, MPI style slots are ignored
node-a slots=8
node-b slots=8

node-c   # a comment after the host
"""


def test_hostfile_head_first_comments_and_slots_ignored(tmp_path):
    path = tmp_path / "hostfile"
    path.write_text(HOSTFILE)
    assert cluster.parse_hostfile(path) == ["node-a", "node-b", "node-c"]
    path.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="listed twice"):
        cluster.parse_hostfile(path)
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no hosts"):
        cluster.parse_hostfile(path)


def test_hostfile_print_only_gives_head_then_joins_with_nccl_env(tmp_path, capsys):
    (tmp_path / "hostfile").write_text(HOSTFILE)
    (tmp_path / "recipe.yaml").write_text("nccl:\n  socket_ifname: eth0\n  ib_disable: true\n")
    rc = cluster.main(
        [
            "start",
            "--hostfile",
            str(tmp_path / "hostfile"),
            "--port",
            "6390",
            "--num-gpus",
            "8",
            "--config",
            str(tmp_path / "recipe.yaml"),
            "--nccl",
            "NCCL_DEBUG=info",
            "--print-only",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    env = "NCCL_DEBUG=INFO NCCL_IB_DISABLE=1 NCCL_SOCKET_IFNAME=eth0"
    assert lines == [
        f"[node-a] {env} ray start --head --port 6390 --num-gpus 8 --include-dashboard=false",
        f"[node-b] {env} ray start --address node-a:6390 --num-gpus 8",
        f"[node-c] {env} ray start --address node-a:6390 --num-gpus 8",
    ]


def test_hostfile_without_ssh_prints_the_commands(tmp_path, capsys, monkeypatch):
    (tmp_path / "hostfile").write_text("h1\nh2\n")
    real_which = shutil.which
    monkeypatch.setattr(cluster.shutil, "which", lambda name: None if name == "ssh" else real_which(name))
    monkeypatch.setattr(cluster.subprocess, "call", lambda *a, **k: pytest.fail("nothing may run"))
    assert cluster.main(["start", "--hostfile", str(tmp_path / "hostfile")]) == 0
    captured = capsys.readouterr()
    assert "ssh not found" in captured.err
    assert captured.out.splitlines() == [
        "[h1] ray start --head --port 6379 --include-dashboard=false",
        "[h2] ray start --address h1:6379",
    ]


def test_hostfile_with_ssh_runs_head_first_and_locally_for_this_host(tmp_path, monkeypatch):
    (tmp_path / "hostfile").write_text("localhost\nremote-1\n")
    monkeypatch.setattr(cluster.shutil, "which", lambda name: f"/usr/bin/{name}")
    calls = []
    monkeypatch.setattr(cluster.subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    assert (
        cluster.main(["start", "--hostfile", str(tmp_path / "hostfile"), "--nccl", "socket_ifname=ib0"]) == 0
    )
    assert calls == [
        "NCCL_SOCKET_IFNAME=ib0 ray start --head --port 6379 --include-dashboard=false",  # local shell
        [
            "/usr/bin/ssh",
            "-o",
            "BatchMode=yes",
            "remote-1",
            "NCCL_SOCKET_IFNAME=ib0 ray start --address localhost:6379",
        ],
    ]


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert cluster.main(["start"]) == 2
    assert "exactly one of --head or --hostfile" in capsys.readouterr().err
    assert cluster.main(["start", "--head", "--port", "70000"]) == 2
    assert cluster.main(["start", "--head", "--nccl", "bogus=1", "--print-only"]) == 2
    assert "neither a field" in capsys.readouterr().err
    assert cluster.main(["start", "--hostfile", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        cluster.main(["launch"])
    capsys.readouterr()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cluster.main(["status", "--address", f"127.0.0.1:{port}"]) == 1
    assert "nothing listens" in capsys.readouterr().err
    assert cluster.main(["status", "--address", "no-port"]) == 2


def test_join_and_head_print_only(capsys):
    assert cluster.main(["join", "10.0.0.1:6379", "--num-cpus", "4", "--print-only"]) == 0
    assert cluster.main(["start", "--head", "--num-cpus", "2", "--num-gpus", "0", "--print-only"]) == 0
    assert cluster.main(["join", "10.0.0.1:6379", "--resources", '{"gen": 1}', "--print-only"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ray start --address 10.0.0.1:6379 --num-cpus 4",
        "ray start --head --port 6379 --num-cpus 2 --num-gpus 0 --include-dashboard=false",
        """ray start --address 10.0.0.1:6379 --resources '{"gen":1}'""",
    ]
    assert cluster.main(["join", "10.0.0.1:6379", "--resources", "gen=1", "--print-only"]) == 2
    assert "--resources 'gen=1': expected a JSON object" in capsys.readouterr().err


def test_nccl_config_validation_and_runtime_env(tmp_path):
    with pytest.raises(ValueError, match=r"unknown nccl field\(s\) \['ifname'\]; valid"):
        NCCLConfig.from_dict({"ifname": "eth0"})
    with pytest.raises(ValueError, match="nccl.debug must be one of"):
        NCCLConfig(debug="loud")
    with pytest.raises(ValueError, match="not an NCCL_"):
        NCCLConfig(env={"CUDA_VISIBLE_DEVICES": "0"})
    cfg = NCCLConfig(ib_disable=False, env={"NCCL_P2P_DISABLE": True, "NCCL_DEBUG": "WARN"}, debug="trace")
    assert cfg.to_env() == {"NCCL_P2P_DISABLE": "1", "NCCL_DEBUG": "TRACE", "NCCL_IB_DISABLE": "0"}
    assert ray_runtime_env(cfg, {"env_vars": {"A": "1"}, "pip": []}) == {
        "env_vars": {"A": "1", **cfg.to_env()},
        "pip": [],
    }
    (tmp_path / "r.yaml").write_text("nccl:\n  debug: warn\n")
    assert load_nccl_config(tmp_path / "r.yaml").to_env() == {"NCCL_DEBUG": "WARN"}
    assert load_nccl_config(None).to_env() == {}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_real_head_node_starts_reports_status_and_stops():
    pytest.importorskip("ray", reason="ray is not installed (pip install 'archer[ray]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="arc")  # short: Ray's unix socket paths must stay < 108 chars
    # --block: the cluster lives exactly as long as this process, so the test ends only what it started
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archer",
            "cluster",
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--num-gpus",
            "0",
            "--temp-dir",
            temp_dir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while not _port_open(port) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _port_open(port), "head node did not open its port"
        # in a child process: connecting sets Ray's token-auth mode in-process (ray caches it), which
        # would leak into later tests that start their own clusters (their actors then die at start)
        status = subprocess.run(
            [sys.executable, "-m", "archer", "cluster", "status", "--address", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr[-2000:]
        assert "1 node(s) alive" in status.stdout and "CPU: 1 free of 1" in status.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
    deadline = time.time() + 30
    while _port_open(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not _port_open(port)


def test_join_world_single_process_exports_nccl_settings(monkeypatch):
    from archer.distributed.world import join_world

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NCCL_DEBUG", "TRACE")  # inherited value: the config section overrides it
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "x")
    monkeypatch.delenv("NCCL_SOCKET_IFNAME")  # (restored to unset after the test)
    world = join_world(torch.device("cpu"), "ddp", nccl=NCCLConfig(socket_ifname="lo", debug="warn"))
    assert (world.rank, world.size, world.sharded) == (0, 1, False)
    assert os.environ["NCCL_DEBUG"] == "WARN" and os.environ["NCCL_SOCKET_IFNAME"] == "lo"
