"""The sandbox under a virtual environment that lives in /tmp (a common CI layout): the jail mounts a
private tmpfs over /tmp, which must not hide the interpreter's own files from the jailed programs."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json
from archer.rewards.code import run_tests
from archer.sandbox.pool import SandboxPool, SandboxConfig
with SandboxPool(SandboxConfig(workers=1)) as pool:
    prog = "import socket, collections, fractions\nprint(sum(map(int, input().split())))\n"
    report = run_tests(prog, {"inputs": ["2 3\n"], "outputs": ["5\n"]}, pool=pool)
    print(json.dumps({"passed": report.passed, "verdicts": report.verdicts, "iso": pool.isolation}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the full jail (and this layout's failure) needs root")
def test_jail_works_from_a_virtualenv_under_tmp():
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [str(venv / "bin" / "python"), "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if not result["iso"].get("mount_namespace"):
            pytest.skip("no mount namespace on this machine")
        assert result["iso"]["chroot"], result["iso"].get("errors")
        assert result["passed"] == 1, result
