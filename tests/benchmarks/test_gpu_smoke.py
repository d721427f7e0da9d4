"""benchmarks/gpu_smoke.py stays runnable between GPU sessions: its code path runs here on a tiny model
on the CPU, and without CUDA its default invocation is a clean skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_smoke.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_tiny_cpu_run_trains_and_reports_throughput():
    proc = _run(
        "--device", "cpu", "--tiny", "--steps", "2", "--rows", "2", "--seq", "32", "--async-steps", "2"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("step 1:") and "skipped 0" in line for line in lines)
    (async_line,) = [line for line in lines if line.startswith("async:")]  # the async loop ran its steps
    assert "async: 2 steps on cpu" in async_line and "produced 32 consumed 32" in async_line
    assert "update" in lines[-1] and "tokens/s" in lines[-1] and "generation" in lines[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run")
def test_without_cuda_the_default_run_is_a_skip():
    proc = _run()
    assert proc.returncode == 0 and "skipped (no CUDA device)" in proc.stdout
