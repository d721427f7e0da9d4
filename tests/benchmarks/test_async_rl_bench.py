"""benchmarks/async_rl.py: the time-to-target rule on a hand-made run, and its quick mode end to end
(sync and async runs, the staleness-0 identity check, the .md/.json it writes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import async_rl as bench  # noqa: E402


def test_time_to_target_is_the_training_time_at_the_first_snapshot_reaching_it():
    run = {
        "step_seconds": [2.0, 3.0, 5.0, 7.0],
        "curve": {"4": {"avg@8": 0.6}, "0": {"avg@8": 0.3}, "2": {"avg@8": 0.5}},
    }
    assert bench.time_to(run, 0.5, "avg@8") == 5.0  # steps 1-2 took 2 + 3 s
    assert bench.time_to(run, 0.55, "avg@8") == 17.0
    assert bench.time_to(run, 0.3, "avg@8") == 0.0  # the SFT snapshot already reaches it
    assert bench.time_to(run, 0.9, "avg@8") is None


@pytest.mark.slow
def test_quick_mode_writes_results_and_staleness_zero_is_identical(tmp_path):
    assert bench.main(["--quick", "--modes", "sync,async", "--out-dir", str(tmp_path)]) == 0
    art = json.loads((tmp_path / "async_rl.json").read_text())
    assert art["command"].startswith("python benchmarks/async_rl.py --quick") and "load_end" in art["environment"]
    out = art["results"]
    assert out["quick"] and out["seeds"] == [0] and out["k0_identical"] is True
    assert set(out["runs"]) == {"sync", "async"} and all(
        len(r[0]["step_seconds"]) == 3 for r in out["runs"].values()
    )
    # the step-time breakdown and the overlap ceiling derived from it
    comp = out["components_s"]
    assert all(comp[m]["update"] > 0 and comp[m]["logprobs"] > 0 for m in ("sync", "async"))
    want = (comp["sync"]["generate"] + comp["sync"]["logprobs"] + comp["sync"]["update"]) / max(
        comp["async"]["generate"], comp["async"]["logprobs"] + comp["async"]["update"]
    )
    assert out["ceiling_steps_per_min_vs_sync"] == pytest.approx(want)
    assert out["steps_per_min_vs_sync"]["async"]["n"] == 1
    assert out["decision"]["verdict"] in ("effect", "no effect larger than the margin", "inconclusive")
    assert "Async vs sync RL" in (tmp_path / "async_rl.md").read_text()
