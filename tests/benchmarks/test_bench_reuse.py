"""What the benchmark scripts reuse from earlier runs, and what they must not (issue 23: a cache that
cannot serve stale results): readme_numbers' stamped runs and merged entries, acecoder_tiny's stage keys,
and tune_recipe's selection rule. The runs themselves are faked; these tests check the bookkeeping."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import acecoder_tiny  # noqa: E402
import readme_numbers  # noqa: E402
import tune_recipe  # noqa: E402


def _fake_train(calls: list, after: float = 0.5):
    """A stand-in for ``subprocess.run(["python", "-m", "archer", "train", ...])``: writes summary.json."""

    def run(cmd, check, cwd):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        calls.append(cmd)
        (out / "summary.json").write_text(json.dumps({"before": {"avg@8": 0.25}, "after": {"avg@8": after}}))

    return run


def test_readme_numbers_reuses_a_run_only_with_its_stamp(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(readme_numbers.subprocess, "run", _fake_train(calls))
    first = readme_numbers.run("tiny_math", 0, tmp_path)
    assert len(calls) == 1 and first["gain"] == pytest.approx(0.25)
    readme_numbers.run("tiny_math", 0, tmp_path)
    assert len(calls) == 1  # same recipe, seed and source: reused
    (tmp_path / "tiny_math_s0" / "readme_numbers_stamp.json").write_text("{}")  # made by other code
    readme_numbers.run("tiny_math", 0, tmp_path)
    assert len(calls) == 2
    (tmp_path / "tiny_math_s1").mkdir()  # a run folder without a stamp (another script's) is not trusted
    (tmp_path / "tiny_math_s1" / "summary.json").write_text(
        json.dumps({"before": {"avg@8": 0}, "after": {"avg@8": 1}})
    )
    assert readme_numbers.run("tiny_math", 1, tmp_path)["gain"] == pytest.approx(0.25) and len(calls) == 3


def test_readme_numbers_merge_keeps_the_other_recipes(tmp_path, monkeypatch):
    monkeypatch.setattr(
        readme_numbers, "machine", lambda: {"cpu": "x", "python": "3", "torch": "t", "transformers": "t"}
    )
    res = tmp_path / "res"
    res.mkdir()
    entry = {"metric": "avg@8", "runs": [{"seed": 0, "before": 0.2, "after": 0.5, "gain": 0.3}]}
    entry.update({f: {"mean": 0.3, "sd": 0.0, "min": 0.3, "max": 0.3} for f in ("before", "after", "gain")})
    (res / "readme_numbers.json").write_text(json.dumps({"recipes": {"tiny_math": entry}}))
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps({"machine": {"cpu": "y"}, "recipes": {"tiny_code": dict(entry, metric="avg@4")}})
    )
    assert readme_numbers.main(["--results", str(res), "--merge-from", str(other)]) == 0
    merged = json.loads((res / "readme_numbers.json").read_text())["recipes"]
    assert set(merged) == {"tiny_math", "tiny_code"} and merged["tiny_code"]["machine"] == {"cpu": "y"}
    md = (res / "readme_numbers.md").read_text()
    assert "--recipes tiny_math --seeds 0" in md and "--recipes tiny_code --seeds 0" in md


def _ace_args(**kw) -> argparse.Namespace:
    base = {"out": "x", "fresh": False, "quick": False, "problems": 700, "sft_examples": 1500, "sft_epochs": 6,
            "num_tests": 6}  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_acecoder_stages_are_rebuilt_when_settings_change_and_the_policy_kept_when_its_own_match(tmp_path):
    out = tmp_path / "ace"
    acecoder_tiny._clear_stale(out, _ace_args(), print)
    for name in ("policy", "pairs.jsonl", "rm"):
        (out / name).mkdir() if "." not in name else (out / name).write_text("old")
    acecoder_tiny._clear_stale(out, _ace_args(), print)  # same settings: everything stays
    assert all((out / n).exists() for n in ("policy", "pairs.jsonl", "rm"))
    acecoder_tiny._clear_stale(out, _ace_args(problems=400), print)  # a later stage's setting changed
    assert (out / "policy").exists() and not (out / "pairs.jsonl").exists() and not (out / "rm").exists()
    acecoder_tiny._clear_stale(out, _ace_args(problems=400, sft_epochs=4), print)  # the policy's own changed
    assert not (out / "policy").exists()
    (out / "policy").mkdir()
    acecoder_tiny._clear_stale(out, _ace_args(problems=400, sft_epochs=4, fresh=True), print)
    assert not (out / "policy").exists()


def test_tune_recipe_picks_the_best_validation_value_first_on_ties(tmp_path, monkeypatch):
    scores = {"1e-4": 0.7, "2e-4": 0.9, "4e-4": 0.9, "8e-4": 0.6}
    seen = []

    def fake_run(recipe, overrides, out):
        seen.append(overrides)
        value = overrides[0].split("=", 1)[1]
        return {"seconds": 1.0, "before": {"avg@4": 0.5}, "after": {"avg@4": scores[value]},
                "improvement": {"avg_se": 0.02}}  # fmt: skip

    monkeypatch.setattr(tune_recipe, "run", fake_run)
    args = ["tiny_code", "--key", "optim.lr", "--values", ",".join(scores), "--out", str(tmp_path / "r"),
            "--results", str(tmp_path)]  # fmt: skip
    assert tune_recipe.main(args) == 0
    blob = json.loads((tmp_path / "tune_tiny_code.json").read_text())
    assert blob["chosen"] == "2e-4"  # 2e-4 and 4e-4 tie: the first listed wins
    # every value after the first starts RL from the first run's SFT model, without a second warm-up
    assert all("model.sft_epochs=0" in o and any(x.startswith("model.path=") for x in o) for o in seen[1:])
    assert "model.sft_epochs=0" not in seen[0]
    assert "**optim.lr=2e-4**" in (tmp_path / "tune_tiny_code.md").read_text()


def test_tune_recipe_builds_an_sft_model_per_value_for_model_settings(tmp_path, monkeypatch):
    seen = []

    def fake_run(recipe, overrides, out):
        seen.append(overrides)
        return {"seconds": 1.0, "before": {"avg@4": 0.5}, "after": {"avg@4": 0.6}, "improvement": {}}

    monkeypatch.setattr(tune_recipe, "run", fake_run)
    args = ["tiny_code", "--key", "model.sft_examples", "--values", "4000,2000", "--out", str(tmp_path / "r"),
            "--results", str(tmp_path), "--name", "tune_sft"]  # fmt: skip
    assert tune_recipe.main(args) == 0
    # the SFT size shapes the SFT model: no value may start from another value's model
    assert seen == [["model.sft_examples=4000"], ["model.sft_examples=2000"]]
    assert json.loads((tmp_path / "tune_sft.json").read_text())["chosen"] == "4000"
