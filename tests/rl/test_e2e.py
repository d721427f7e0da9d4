"""End to end on a tiny model: every artefact of a run, kill -9 + resume, bad data, broken verifiers.

The math verifier is swapped for a parity rule (reward 1 when the response has an even number of
characters) so that a random-init model still produces groups with reward variance and the update
path runs; everything else is the real pipeline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import QUICK

from archer.config import load_config
from archer.rewards import registry

REPO = Path(__file__).resolve().parents[2]

FAST = QUICK


@pytest.mark.slow
def test_run_writes_every_artefact(tmp_path, parity_math):
    from transformers import AutoModelForCausalLM

    from archer.rl.loop import train

    cfg = load_config("tiny_math", FAST + ["algo.overlong_buffer=2", "algo.entropy_target=5.0"])
    seen = []
    summary = train(cfg, run_dir=tmp_path, on_step=lambda step, m: seen.append(step))
    assert seen == [1, 2, 3] and summary["steps"] == 3 and len(summary["history"]) == 3
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for phase in ("before", "after"):
        assert {"avg@1", "pass@1", "avg@2", "pass@2"} <= set(on_disk[phase])
        assert 0.0 <= on_disk[phase]["avg@2"] <= on_disk[phase]["pass@2"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for key in (
        "reward/mean",
        "reward/accuracy",
        "response/length_mean",
        "response/truncation_rate",
        "time/generate",
        "time/reward",
        "time/train",
        "filter/kept_groups",
        "data/prompt_hash",
        "optim/lr",
        "entropy/controller_coef",
    ):
        assert key in steps[0], key
    trained = [r for r in steps if "actor/grad_norm" in r]
    assert trained, "no step had reward variance"
    for key in (
        "actor/entropy",
        "actor/clip_frac",
        "actor/ratio_mean",
        "actor/ratio_max",
        "actor/kl",
        "actor/high_entropy_frac",
        "actor/pg_loss",
    ):
        assert key in trained[0], key
    assert any(r.get("eval/avg@2") is not None for r in rows)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "eval_before.json").is_file()
    assert list((tmp_path / "tensorboard").iterdir())
    for name in ("reward.png", "entropy.png", "overview.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    final = Path(on_disk["final_checkpoint"])
    assert final.name == "step_000003" and (final / "COMPLETE").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(final))
    assert model.config.hidden_size == 32
    assert (tmp_path / "sft_model" / "config.json").is_file()


CHILD = textwrap.dedent("""
    import sys
    from archer.rewards.registry import register_verifier
    from archer.rewards.types import RewardResult
    def parity(responses, problems, **_):
        return [RewardResult(float(len(r) % 2 == 0), len(r) % 2 == 0, {}) for r in responses]
    register_verifier("math", parity)
    from archer.cli.train import main
    sys.exit(main(sys.argv[1:]))
""")


def _steps(path: Path) -> dict[int, dict]:
    out = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "reward/mean" in row:
            out[row["step"]] = row
    return out


@pytest.mark.slow
def test_kill9_then_resume_continues_with_same_data_order(tmp_path, parity_math):
    from archer.rl.loop import train

    overrides = FAST + [
        "trainer.steps=5",
        "trainer.save_every=2",
        "data.num_eval=2",
        "logging.plots=false",
        "logging.sinks=[]",
    ]
    reference = train(load_config("tiny_math", overrides), run_dir=tmp_path / "ref")
    ref_steps = {h["step"]: h for h in reference["history"]}

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(script), "tiny_math", *overrides, "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and max(_steps(metrics), default=0) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before_kill = _steps(metrics)
    assert max(before_kill) < 5  # killed mid-run
    from archer.models.checkpoint import latest_checkpoint

    resumed_from = int(latest_checkpoint(run_dir).name.split("_")[1])
    assert resumed_from in (2, 4)

    done = subprocess.run(
        [sys.executable, str(script), "--out", str(run_dir), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    after = _steps(metrics)
    assert sorted(after) == [1, 2, 3, 4, 5]  # no duplicated or missing step lines
    for step in range(1, 6):
        # same prompts, same samples, same rewards as the uninterrupted run
        assert after[step]["data/prompt_hash"] == ref_steps[step]["data/prompt_hash"], step
        assert after[step]["reward/mean"] == pytest.approx(ref_steps[step]["reward/mean"], abs=1e-9), step
    for step, row in before_kill.items():
        assert row["data/prompt_hash"] == after[step]["data/prompt_hash"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 5
    from safetensors.torch import load_file

    a = load_file(str(run_dir / "checkpoints" / "step_000005" / "model.safetensors"))
    b = load_file(str(tmp_path / "ref" / "checkpoints" / "step_000005" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_malformed_dataset_row_fails_before_training(tmp_path):
    from archer.rl.loop import train

    data = tmp_path / "train.jsonl"
    good = {"id": "a", "prompt": "1+1?", "kind": "math", "answer": "2"}
    data.write_text(
        json.dumps(good) + "\n" + json.dumps({"id": "b", "prompt": "2+2?", "kind": "math"}) + "\n"
    )
    cfg = load_config("tiny_math", FAST + [f"data.train={data}", "data.eval=null", "model.sft_epochs=0"])
    with pytest.raises(ValueError) as info:
        train(cfg, run_dir=tmp_path / "run")
    msg = str(info.value)
    assert "train.jsonl" in msg and "row 2" in msg  # names the file and the row (1-based: the second line)
    assert not (tmp_path / "run" / "sft_model").exists()  # nothing was built


def test_broken_verifier_gives_zero_reward_and_the_run_continues(tmp_path, monkeypatch):
    from archer.rl.loop import train

    def broken(responses, problems, **_):
        raise RuntimeError("verifier exploded")

    monkeypatch.setitem(registry._VERIFIERS, "math", broken)
    cfg = load_config(
        "tiny_math",
        FAST
        + [
            "trainer.steps=1",
            "model.sft_epochs=0",
            "eval.enabled=false",
            "logging.plots=false",
            "logging.sinks=[]",
        ],
    )
    summary = train(cfg, run_dir=tmp_path)
    step = summary["history"][0]
    assert step["reward/mean"] == 0.0 and step["update/skipped_no_signal"] == 1
    assert "verifier exploded" in next(iter(step["reward/failure_reasons"]))


def test_cli_reports_config_errors(capsys):
    from archer.cli.train import main

    assert main(["tiny_math", "algo.loss=nope"]) == 2
    err = capsys.readouterr().err
    assert "algo.loss" in err and "aspo" in err
    assert main(["--list"]) == 0
    assert "tiny_math" in capsys.readouterr().out
    assert main(["--resume"]) == 2
    assert main(["tiny_math", "optim.lr=1e-4", "--print-config"]) == 0
    assert "lr: 0.0001" in capsys.readouterr().out


def test_nan_advantages_in_the_loop_skip_updates_and_keep_weights(tmp_path, parity_math, monkeypatch):
    """Injected NaNs reach the loss: every optimizer step of the run is skipped and logged."""
    import archer.rl.batch as batch
    from archer.rl.loop import train

    real = batch.compute_advantages
    monkeypatch.setattr(batch, "compute_advantages", lambda name, rewards: real(name, rewards) * float("nan"))
    cfg = load_config(
        "tiny_math",
        FAST
        + [
            "trainer.steps=2",
            "model.sft_epochs=0",
            "eval.enabled=false",
            "logging.plots=false",
            "logging.sinks=[]",
        ],
    )
    summary = train(cfg, run_dir=tmp_path)
    trained = [h for h in summary["history"] if "update/skipped_nonfinite" in h]
    assert trained, "no step reached the update"
    for h in trained:
        assert h["update/skipped_nonfinite"] == 2 and h["update/optimizer_steps"] == 0  # 2 mini-batches
    from safetensors.torch import load_file

    sft = load_file(str(tmp_path / "sft_model" / "model.safetensors"))
    final = load_file(str(tmp_path / "checkpoints" / "step_000002" / "model.safetensors"))
    for k in sft:
        assert torch.equal(sft[k], final[k]), k


def test_cli_overrides_anywhere_and_list_describes_recipes(tmp_path, monkeypatch, capsys):
    from archer.cli.train import main

    monkeypatch.chdir(tmp_path)

    assert main(["--print-config", "algo.loss=dapo", "tiny_math", "optim.lr=1e-4"]) == 0
    out = capsys.readouterr().out
    assert "loss: dapo" in out and "lr: 0.0001" in out
    assert main(["tiny_math", "--out", "unused_dir", "algo.loss=dapo", "--print-config"]) == 0
    assert "loss: dapo" in capsys.readouterr().out
    assert not Path("unused_dir").exists()  # --print-config creates nothing
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert (
        re.search(r"^tiny_math +The default CPU demo", out, re.M)
        and "CPU demo: builds its model and data" in out
    )
    assert "needs a model (model.path=DIR" in out  # the big recipes say what they need


def test_cli_refuses_a_used_out_dir_and_creates_nothing_on_bad_inputs(tmp_path, capsys):
    from archer.cli.train import main

    used = tmp_path / "used"
    used.mkdir()
    (used / "config.yaml").write_text("recipe: tiny_math\n")
    assert main(["tiny_math", "--out", str(used)]) == 2
    assert "--resume" in capsys.readouterr().err and sorted(p.name for p in used.iterdir()) == ["config.yaml"]
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["tiny_math", "--out", str(other), "--overwrite"]) == 2  # not a run: never deleted
    assert (other / "keep.txt").is_file() and "no config.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --resume and --overwrite exclude each other
        main(["tiny_math", "--resume", "--overwrite", "--out", str(used)])
    # the README's big-recipe command with a missing model: one line, no run directory
    run = tmp_path / "big"
    assert (
        main(
            [
                "archer2_aspo_math",
                f"model.path={tmp_path / 'no_model'}",
                "data.train=math500",
                "--out",
                str(run),
            ]
        )
        == 2
    )
    assert "model.path" in capsys.readouterr().err and not run.exists()
    assert main(["tiny_math", "data.train=missing.jsonl", "--out", str(run)]) == 2
    assert "data.train: 'missing.jsonl' not found" in capsys.readouterr().err and not run.exists()


def test_cli_overwrite_deletes_only_a_previous_run(tmp_path):
    from archer.cli.train import _prepare_run_dir
    from archer.errors import ConfigError

    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.yaml").write_text("recipe: tiny_math\n")
    with pytest.raises(ConfigError, match="--overwrite"):
        _prepare_run_dir(old, resume=False, overwrite=False)
    _prepare_run_dir(old, resume=False, overwrite=True)
    assert not old.exists()
    _prepare_run_dir(tmp_path / "fresh", resume=False, overwrite=False)  # absent or empty: fine


def test_cli_recipe_eval_file_falls_back_to_the_bundled_sample():
    from archer.cli.train import _check_inputs
    from archer.data.formats import BUNDLED_DIR

    cfg = load_config("archer2_aspo_math", ["model.path=null", "data.train=math500"])
    notes = _check_inputs(cfg)  # the recipe says data/aime24.jsonl, which a fresh clone lacks
    assert cfg.data.train == str(BUNDLED_DIR / "math" / "math500.jsonl")
    assert cfg.data.eval == str(BUNDLED_DIR / "math" / "aime24.jsonl")
    assert notes == ["data.eval: data/aime24.jsonl not found; using the bundled aime24 sample"]


@pytest.mark.slow
def test_a_named_rollout_correction_trains_and_logs_its_metrics(tmp_path, parity_math):
    """algo.rollout_correction reaches the update: the HF engine shares the policy, so the sampler's
    log-probs are the old ones, nothing is rejected and the sampler/trainer KL is 0."""
    from archer.rl.loop import train

    cfg = load_config(
        "tiny_math",
        FAST
        + [
            "trainer.steps=1",
            "algo.rollout_correction=seq_rs",
            "algo.rollout_correction_params={upper: 1.5}",
        ],
    )
    summary = train(cfg, run_dir=tmp_path)
    rows = [h for h in summary["history"] if "actor/grad_norm" in h]
    assert rows, summary["history"]
    for row in rows:
        assert row["actor/rc_weight_mean"] == 1.0 and row["actor/rc_seq_rejected_frac"] == 0.0
        assert row["rollout/kl_k1"] == 0.0 and row["rollout/kl_k3"] == 0.0
        assert "actor/tis_mean" not in row


def test_a_resume_from_sharded_weights_refreshes_an_engine_that_holds_its_own(tmp_path, parity_math, monkeypatch):
    """A sharded (FSDP) checkpoint's weights reach the policy after the rollout engine was built from the
    initial policy; an engine with its own copy (vLLM, Ray workers) must get them before the first resumed
    generation, not after that step's update. Simulated in one process: the checkpoint is declared
    sharded, its 'shards' are its full weights, and the engine is declared not to share the policy."""
    from safetensors.torch import load_file

    import archer.rl.step as step
    from archer.models import checkpoint as ckpt
    from archer.rl.loop import train
    from archer.rollout.hf import HFEngine

    over = FAST + ["trainer.save_every=1", "eval.enabled=false", "logging.plots=false", "logging.sinks=[]"]
    train(load_config("tiny_math", over + ["trainer.steps=1"]), run_dir=tmp_path)
    saved = load_file(str(tmp_path / "checkpoints" / "step_000001" / "model.safetensors"))
    initial = load_file(str(tmp_path / "sft_model" / "model.safetensors"))
    assert any(not torch.equal(saved[k], initial[k]) for k in saved)  # step 1 changed the weights

    def load_shards(last, scorer, optimizer=None):
        scorer.policy.load_state_dict(load_file(str(last / "model.safetensors")), strict=False)

    events = []
    real_generate = HFEngine.generate

    def generate(self, *a, **k):
        events.append(("generate", None))
        return real_generate(self, *a, **k)

    def update_weights(self, model, version=None):  # record what the engine would be sent
        events.append(("weights", {k: v.detach().clone() for k, v in model.state_dict().items()}))

    monkeypatch.setattr(ckpt, "is_sharded_checkpoint", lambda path: True)
    monkeypatch.setattr(ckpt, "load_sharded_checkpoint", load_shards)
    monkeypatch.setattr(step, "shares_policy", lambda engine: False)
    monkeypatch.setattr(HFEngine, "generate", generate)
    monkeypatch.setattr(HFEngine, "update_weights", update_weights)
    train(load_config("tiny_math", over + ["trainer.steps=2"]), run_dir=tmp_path, resume=True)
    kind, first = events[0]
    assert kind == "weights", [e[0] for e in events[:3]]  # before the first resumed generation
    assert all(torch.equal(first[k], saved[k]) for k in saved)  # ... and they are the checkpoint's
