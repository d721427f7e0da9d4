"""The timing benchmarks' json artifact (issue 23: every headline has an artifact beside its table):
the summaries against hand-computed values, and the file's contents. One script, decontaminate at a
tiny size, is run end to end to check that its md and json agree."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _artifact  # noqa: E402


def test_timing_by_hand():
    t = _artifact.timing([1.0, 2.0, 3.0])
    # mean 2, sd 1, n 3: half-width t95(2) * 1 / sqrt(3) = 4.303 / 1.732 = 2.484
    assert t["median"] == 2.0 and t["mean"] == 2.0 and t["n"] == 3
    assert t["ci95"][0] == pytest.approx(2.0 - 4.303 / math.sqrt(3), abs=1e-3)
    assert t["ci95"][1] == pytest.approx(2.0 + 4.303 / math.sqrt(3), abs=1e-3)
    assert t["samples"] == [1.0, 2.0, 3.0]


def test_ratio_is_per_repeat_not_of_means():
    # rates 10, 30 against 5, 5: per-repeat ratios 2 and 6 (mean 4); the ratio of means would also be 4,
    # so use unequal denominators to tell them apart: 10/5 = 2, 30/10 = 3 -> mean 2.5 (ratio of means 2.667)
    r = _artifact.ratio([10.0, 30.0], [5.0, 10.0])
    assert r["per_repeat"] == [2.0, 3.0]
    assert r["mean"] == pytest.approx(2.5)
    half = 12.706 * (math.sqrt(0.5) / math.sqrt(2))  # t95(1) * sd / sqrt(n)
    assert r["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-3)
    with pytest.raises(ValueError, match="as many repeats"):
        _artifact.ratio([1.0], [1.0, 2.0])


def test_single_repeat_has_no_interval():
    r = _artifact.ratio([2.0], [1.0])
    assert r["mean"] == 2.0 and all(x != x for x in r["ci95"])
    assert _artifact.fmt_ci(r, 1, "x") == "2.0x"
    assert _artifact.fmt_ci(_artifact.ratio([4.0, 6.0], [2.0, 2.0]), 1, "x").startswith("2.5x [")


def test_write_artifact_records_command_and_machine(tmp_path):
    started = _artifact.start()
    path = _artifact.write_artifact(
        "demo", {"x": 1}, argv=["--repeats", "3"], started=started, out=tmp_path / "d.json"
    )
    data = json.loads(path.read_text())
    assert data["command"] == "python benchmarks/demo.py --repeats 3"
    assert data["results"] == {"x": 1}
    env = data["environment"]
    for key in ("cpus", "torch", "archer_source", "load_start", "load_end", "started", "finished"):
        assert key in env, key
    assert env["archer_source_start"] == env["archer_source"] and "warning" not in env


def test_a_source_change_during_the_run_is_flagged(tmp_path):
    started = {**_artifact.start(), "archer_source_start": "0000000000000000"}
    path = _artifact.write_artifact("demo", {}, argv=[], started=started, out=tmp_path / "d.json")
    assert "source changed" in json.loads(path.read_text())["environment"]["warning"]


def test_decontaminate_writes_md_and_json(tmp_path, capsys):
    import decontaminate

    out = tmp_path / "dc.md"
    decontaminate.main(["--sizes", "300,600", "--pairwise-subset", "50", "--repeats", "2", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    rows = data["results"]["rows"]
    assert [r["rows"] for r in rows] == [300, 600]
    assert all(r["recall"] == 1.0 and r["near_misses_flagged"] == 0 for r in rows)
    assert all(len(r["archer_s"]["samples"]) == 2 for r in rows)
    md = out.read_text()
    for r in rows:  # the table shows the json's medians
        assert f"| {r['rows']} | {r['words']} | {r['archer_s']['median']:.2f} |" in md
