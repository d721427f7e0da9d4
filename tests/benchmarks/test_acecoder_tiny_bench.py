"""benchmarks/acecoder_tiny.py --quick runs every stage (policy, synth-tests, pairs, RM, two RL runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_acecoder_benchmark_quick_runs_every_stage(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "acecoder_tiny.py"),
        "--quick",
        "--out",
        str(tmp_path / "q"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "q" / "acecoder_tiny.json").read_text())
    assert result["synth_tests"]["problems"] == 16 and result["pairs"]["pairs"] > 0
    for run in ("rl_rm", "rl_rule"):
        assert result[run]["steps"] == 2 and "avg@1" in result[run]["after"]
    assert any(c.get("rm/score_mean") is not None for c in result["rl_rm"]["rm_curve"])
    assert (tmp_path / "q" / "rm" / "config.json").is_file()
    assert "| reward model |" in (tmp_path / "q" / "acecoder_tiny.md").read_text()
