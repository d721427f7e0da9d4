"""A trainer that survives its failures: heartbeats, the watchdog, restarts, ``archer status``.

Faults are injected through the single test hook ``ARCHER_FAULT_INJECT=RANK:STEP[:kill|hang]``
(:func:`archer.distributed.health.fault_hook`), inherited by the forked ranks. The 2-process runs use
test_dist_train's tiny config with the parity verifier (every group carries signal, so every step
trains) and a checkpoint every step.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest
from helpers import QUICK
from helpers import parity_verifier as parity

from archer.cli import status as status_cli
from archer.config import load_config
from archer.distributed import health, launch
from archer.errors import RankFailure
from archer.rewards import registry

# helpers.QUICK with two gloo ranks, a checkpoint every step and a smaller task (later overrides win)
FAST_2P = [
    *QUICK,
    "model.sft_examples=16",
    "data.num_train=24",
    "data.num_eval=2",
    "rollout.batch_size=3",
    "trainer.save_every=1",
    "logging.plots=false",
    "resources.train_procs=2",
]


@pytest.fixture
def forked(monkeypatch):
    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    monkeypatch.setattr(launch, "default_start_method", lambda: "fork")  # the ranks inherit the patch
    monkeypatch.delenv(health.FAULT_ENV, raising=False)
    return monkeypatch


def _steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward/mean" in r]


def _report(run_dir, capsys):
    assert status_cli.main([str(run_dir)]) == 0
    return capsys.readouterr().out


# ------------------------------------------------------------------------------- units (no training)


def _hang(run_dir, timeout_s):
    h = health.Health(run_dir, 3, timeout_s)
    h.mark("update", 7)
    with h.collective("all_reduce"):
        time.sleep(60)


def test_watchdog_ends_a_stuck_rank_with_its_stage_and_collective(tmp_path):
    p = multiprocessing.get_context("fork").Process(target=_hang, args=(tmp_path, 0.5))
    t0 = time.time()
    p.start()
    p.join(20)
    assert p.exitcode == health.WATCHDOG_EXIT and time.time() - t0 < 5
    beat = json.loads(health.heartbeat_path(tmp_path, 3).read_text())
    assert beat["stage"] == "update" and beat["step"] == 7 and beat["op"] == "all_reduce"
    assert "no progress" in beat["error"] and "in collective all_reduce" in beat["error"]


def test_status_json_merges_atomically_and_appends_restarts(tmp_path):
    health.write_status(tmp_path, recipe="r", state="running")
    health.write_status(tmp_path, state="restarting", restart={"reason": "x"})
    health.write_status(tmp_path, restart={"reason": "y"})
    s = json.loads((tmp_path / health.STATUS_FILE).read_text())
    assert (
        s["recipe"] == "r"
        and s["state"] == "restarting"
        and [r["reason"] for r in s["restarts"]] == ["x", "y"]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failure_line_blames_the_rank_hung_outside_a_collective(tmp_path):
    for rank, error in (
        (0, "raised RuntimeError: gloo timed out"),
        (1, "made no progress for 5 s in stage 'generate' at step 2, not in a collective (watchdog)"),
    ):
        health.Health(tmp_path, rank).mark("generate", 2)
        health.record_error(tmp_path, rank, error)
    line = launch.failure_line(tmp_path, [1, health.WATCHDOG_EXIT], first=0, attempt=0)
    assert line.startswith("rank 1 made no progress") and "\n" not in line
    assert launch.failure_line(tmp_path, [1, -9], first=0, attempt=1) == "rank 0 exited with status 1"


def _crash(cfg, run_dir, resume):
    raise RuntimeError(f"boom (resume={resume})")


def _bad_input(cfg, run_dir, resume):
    raise ValueError("data.train: row 3 has no prompt")


def test_launcher_gives_up_after_max_restarts_and_never_restarts_a_user_error(tmp_path, capsys):
    from types import SimpleNamespace

    cfg = SimpleNamespace(
        resources=SimpleNamespace(train_procs=1), trainer=SimpleNamespace(threads=1, max_restarts=1)
    )
    with pytest.raises(RankFailure) as info:
        launch.launch_local(_crash, cfg, tmp_path, start_method="fork")
    assert str(info.value) == "rank 0 raised RuntimeError: boom (resume=True); gave up after 1 restart(s)"
    err = capsys.readouterr().err
    assert (
        "archer: restart 1/1 from the start (no complete checkpoint yet): rank 0 raised RuntimeError: boom"
        in err
    )
    status = json.loads((tmp_path / health.STATUS_FILE).read_text())
    assert status["state"] == "failed" and len(status["restarts"]) == 1
    with pytest.raises(ValueError, match="row 3 has no prompt"):  # raised as raised, not restarted
        launch.launch_local(_bad_input, cfg, tmp_path, start_method="fork")
    assert "restart" not in capsys.readouterr().err


def test_status_on_a_non_run_folder_is_one_line(tmp_path, capsys):
    assert status_cli.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"archer status: error: {tmp_path} is not a run directory (no config.yaml)"


def test_status_of_a_finished_run(tmp_path, capsys):
    """A run's files as the trainer leaves them (written here: no training needed)."""
    (tmp_path / "config.yaml").write_text("recipe: tiny_math\ntrainer: {steps: 2}\n")
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n{"step": 2}\n{"step": 3, "x"')  # torn
    for step, complete in ((1, True), (2, True), (3, False)):
        (tmp_path / "checkpoints" / f"step_{step:06d}").mkdir(parents=True)
        if complete:
            (tmp_path / "checkpoints" / f"step_{step:06d}" / "COMPLETE").write_text("")
    health.write_status(tmp_path, recipe="tiny_math", state="finished")
    health.Health(tmp_path, 0).close()
    out = _report(tmp_path, capsys)
    assert "state       finished" in out and "step        2 of 2" in out and "restarts    0" in out
    assert "checkpoint  step 2:" in out and "rank 0      heartbeat" in out and "stage 'done'" in out
    assert status_cli.main([str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"]["step"] == 2


def test_max_restarts_is_validated():
    from archer.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.max_restarts"):
        load_config("tiny_math", ["trainer.max_restarts=-1"])
    with pytest.raises(ConfigError, match="resources.watchdog_s"):
        load_config("tiny_math", ["resources.watchdog_s=0"])


# ------------------------------------------------------------------------------- 2-process runs


def test_hung_rank_is_found_by_the_watchdog_and_named(tmp_path, forked, capsys):
    from archer.rl.loop import train

    forked.setenv(health.FAULT_ENV, "1:2:hang")
    t0 = time.time()
    with pytest.raises(RankFailure) as info:
        train(load_config("tiny_math", FAST_2P + ["resources.watchdog_s=6"]), run_dir=tmp_path)
    line = str(info.value)
    assert line.startswith("rank 1 made no progress for") and "stage 'generate' at step 2" in line
    assert "not in a collective (watchdog); no restarts (trainer.max_restarts=0)" in line
    hung_at = json.loads(health.heartbeat_path(tmp_path, 1).read_text())["stage_since"]
    detected = time.time() - hung_at
    assert 6 <= detected < 6 + launch.GRACE_S + 10, detected  # timeout + tick + grace + slack
    assert time.time() - t0 < 120
    out = _report(tmp_path, capsys)
    assert "state       failed" in out and "checkpoint  step 1:" in out
    assert "rank 1      heartbeat" in out and "not in a collective (watchdog)" in out


@pytest.mark.slow
def test_killed_rank_fails_or_restarts_to_the_uninterrupted_result(tmp_path, forked, capsys):
    """kill -9 of rank 1 at the start of step 2: without restarts the run fails at once with one line;
    with one restart it resumes from step 1's checkpoint and ends where an uninterrupted run ends
    (the checkpoint holds weights, optimizer, scheduler, data order and every RNG state)."""
    from archer.rl.loop import train

    whole = train(load_config("tiny_math", FAST_2P), run_dir=tmp_path / "whole")

    forked.setenv(health.FAULT_ENV, "1:2")
    t0 = time.time()
    with pytest.raises(
        RankFailure, match=r"^rank 1 died of signal SIGKILL \(stage 'generate' at step 2\); no "
    ):
        train(load_config("tiny_math", FAST_2P), run_dir=tmp_path / "failed")
    killed_at = json.loads(health.heartbeat_path(tmp_path / "failed", 1).read_text())["stage_since"]
    assert time.time() - killed_at < launch.GRACE_S + 10 and time.time() - t0 < 120
    out = _report(tmp_path / "failed", capsys)
    assert "state       failed" in out and "step        1 of 3" in out and "checkpoint  step 1:" in out
    assert "rank 1 died of signal SIGKILL" in out

    restarted = train(load_config("tiny_math", FAST_2P + ["trainer.max_restarts=1"]), run_dir=tmp_path / "re")
    assert "archer: restart 1/1 from checkpoint" in capsys.readouterr().err
    assert [r["step"] for r in _steps(tmp_path / "re")] == [1, 2, 3]  # none lost, none duplicated
    want, got = _steps(tmp_path / "whole"), _steps(tmp_path / "re")
    for key in ("actor/grad_norm", "reward/mean", "data/prompt_hash", "actor/entropy"):
        assert [r.get(key) for r in got] == [r.get(key) for r in want], key
    assert restarted["dist"]["replica_digests"] == whole["dist"]["replica_digests"]  # bitwise equal weights
    out = _report(tmp_path / "re", capsys)
    assert "state       finished" in out and "restarts    1" in out and "step        3 of 3" in out
    assert os.environ.get("WORLD_SIZE") is None
