"""The README's printed default run still comes out as printed, within the spread it states.

The README prints seed 0 of `archer train` (tiny_math) and states the spread over seeds measured by
`benchmarks/readme_numbers.py` (artifact: benchmarks/results/readme_numbers.json). This reruns that
command and fails when the held-out avg@8 before or after RL leaves the printed value by more than two
seed standard deviations (CPU kernels can move a run; a changed trainer moves it further), or when RL
stops adding at least 0.08 (a learning regression: about two standard errors below the gains seen).
The printed numbers must also be the artifact's seed-0 run, so README and artifact cannot drift apart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACT = REPO / "benchmarks" / "results" / "readme_numbers.json"


def printed() -> tuple[float, float]:
    m = re.search(r"\navg@8: (\d\.\d{3}) -> (\d\.\d{3}) \(", (REPO / "README.md").read_text())
    assert m, "the README no longer prints the default run's avg@8 line"
    return float(m.group(1)), float(m.group(2))


def test_the_printed_numbers_are_the_artifacts_seed_0_and_its_spread_is_stated():
    before, after = printed()
    art = json.loads(ARTIFACT.read_text())["recipes"]["tiny_math"]
    seed0 = next(r for r in art["runs"] if r["seed"] == 0)
    assert (round(seed0["before"], 3), round(seed0["after"], 3)) == (before, after)
    readme = (REPO / "README.md").read_text()
    assert f"{art['after']['mean']:.3f} ± {art['after']['sd']:.3f}" in readme  # the spread is stated


@pytest.mark.slow
def test_the_default_run_reproduces_within_its_stated_spread(tmp_path):
    from archer.config import load_config
    from archer.rl.loop import train

    before, after = printed()
    art = json.loads(ARTIFACT.read_text())["recipes"]["tiny_math"]
    cfg = load_config("tiny_math", ["logging.progress=false", "logging.sinks=[]", "logging.plots=false"])
    summary = train(cfg, run_dir=tmp_path / "demo")
    got_b, got_a = summary["before"]["avg@8"], summary["after"]["avg@8"]
    assert abs(got_b - before) <= 2 * art["before"]["sd"], f"before RL {got_b:.3f}, README {before:.3f}"
    assert abs(got_a - after) <= 2 * art["after"]["sd"], f"after RL {got_a:.3f}, README {after:.3f}"
    assert got_a - got_b >= 0.08, f"the default run no longer learns: {got_b:.3f} -> {got_a:.3f}"
