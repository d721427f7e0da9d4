"""The toy studies' run cache (benchmarks/_toy_common.rl_run) cannot serve a stale result: hit on the
same config, checkpoint and code; miss when any setting, the recipe's contents, the checkpoint or the
code version changes; a fresh run never reads an earlier run's files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _toy_common as common  # noqa: E402

from archer.config import load_config  # noqa: E402


@pytest.fixture
def fake_training(monkeypatch):
    """rl_run without a model: load_policy and train are stand-ins that count the runs."""
    import archer.rl.loop as loop

    calls = []

    def fake_train(cfg, **kw):
        calls.append(cfg.optim.lr)
        return {"history": [{"step": 1, "lr": cfg.optim.lr}], "before": {}, "after": {}}

    monkeypatch.setattr(common, "load_policy", lambda path: (None, None))
    monkeypatch.setattr(loop, "train", fake_train)
    return calls


def _summary(out, model, tok):
    return {"lr": out["history"][0]["lr"]}


def test_cache_hits_only_on_the_same_settings_checkpoint_and_code(tmp_path, fake_training, monkeypatch):
    cfg = load_config("tiny_math")
    run = lambda c, ckpt="ck": common.rl_run("r", c, Path(ckpt), [], [], tmp_path, _summary)  # noqa: E731
    first = run(cfg)
    assert run(cfg) == first and len(fake_training) == 1  # hit
    assert run(load_config("tiny_math", ["optim.lr=0.15"]))["lr"] == 0.15 and len(fake_training) == 2
    run(cfg, ckpt="other")  # another SFT checkpoint
    assert len(fake_training) == 3
    monkeypatch.setattr(common, "code_version", lambda: "another-commit")
    run(cfg)  # the same settings under other code
    assert len(fake_training) == 4
    assert not list(tmp_path.glob("*.tmp"))  # results are written whole


def test_a_changed_recipe_file_is_a_miss_though_its_name_is_the_same(tmp_path, fake_training):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text((Path(common.REPO) / "archer" / "recipes" / "tiny_math.yaml").read_text())
    common.rl_run("r", load_config(str(recipe)), Path("ck"), [], [], tmp_path, _summary)
    recipe.write_text(recipe.read_text().replace("  lr: 1.0e-4", "  lr: 5.0e-3"))  # the 50x lr of the audit
    out = common.rl_run("r", load_config(str(recipe)), Path("ck"), [], [], tmp_path, _summary)
    assert len(fake_training) == 2 and out["lr"] == load_config(str(recipe)).optim.lr


def test_code_version_covers_the_package_source():
    v = common.code_version()
    assert len(v) == 16 and v == common.code_version()


def test_a_fresh_run_into_a_used_folder_does_not_report_the_old_before(tmp_path, parity_math):
    """rl/loop reuses eval_before.json only when resuming: a fresh run evaluates its own model."""
    from helpers import QUICK

    from archer.rl.loop import train

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "eval_before.json").write_text(json.dumps({"avg@1": 0.99, "stale": True}))
    cfg = load_config("tiny_math", [*QUICK, "trainer.steps=1", "logging.sinks=[]", "logging.plots=false"])
    summary = train(cfg, run_dir=run_dir)
    assert "stale" not in summary["before"] and "stale" not in json.loads(
        (run_dir / "eval_before.json").read_text()
    )
