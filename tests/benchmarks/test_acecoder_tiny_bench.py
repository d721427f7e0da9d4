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
    assert "heldout_pairs" in result["rm_validity"]


sys.path.insert(0, str(REPO / "benchmarks"))
import acecoder_tiny as bench  # noqa: E402


def _pairs(problems: int, per: int) -> list[dict]:
    """Pairs whose chosen program holds the word GOOD; lengths carry no signal (equal)."""
    return [
        {"id": f"p{i}", "prompt": f"problem {i}", "chosen": f"GOOD {j:03d}", "rejected": f"BAD! {j:03d}"}
        for i in range(problems)
        for j in range(per)
    ]


class _FakeRM:
    def __init__(self, path, **kw):
        self.path = path

    def score(self, prompts, responses):
        if self.path == "reads":  # ranks by the content: right on every pair
            return [1.0 if "GOOD" in r else 0.0 for r in responses]
        return [float(len(r)) for r in responses]  # ranks by length: a tie on every pair here


def test_rm_validity_against_trivial_rankers(monkeypatch):
    import archer.models.reward_model as rm_mod

    monkeypatch.setattr(rm_mod, "RewardModel", _FakeRM)
    rows = _pairs(80, 4)
    good = bench.rm_validity("reads", rows, 0.25)
    assert good["heldout_problems"] >= 10 and good["heldout_pairs"] == 4 * good["heldout_problems"]
    assert good["rm"]["mean"] == 1.0 and good["length"]["mean"] == 0.5  # equal lengths: every pair a tie
    assert good["valid"] and good["above_chance"] and good["above_length"]
    assert 0.2 < good["random"]["mean"] < 0.8 and good["random"]["low"] < good["random"]["high"]
    blind = bench.rm_validity("length", rows, 0.25)
    assert blind["rm"]["mean"] == 0.5 and not blind["valid"]
    text = "\n".join(bench.validity_lines(blind))
    assert "better than chance on unseen problems: not shown" in text and "not evidence about RM rewards" in text
    assert "not measured" in bench.validity_lines({"heldout_pairs": 0})[0]
