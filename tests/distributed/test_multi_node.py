"""One training job across Ray nodes, on one machine: ``ray.cluster_utils.Cluster`` starts separate
raylets with their own resources, as ``archer cluster start --head`` / ``archer cluster join`` would on
separate hosts, and custom resources (``resources.placement``) force each role onto its nodes:

    head     CPU 2, gen     <- the rollout workers
    node a   CPU 1, train   <- trainer rank 0 (or 1)
    node b   CPU 1, train   <- the other trainer rank
    node c   CPU 2, score   <- the reward workers

The Ray-placed run (``resources.nodes=2``, one rank per node) must end where the same run with two
local processes (``launch_local``, the rollout and reward actors on the same nodes) ends: the same
per-step metrics and bitwise-equal final weights. The reward is a function given by file path (it
reaches every process) with the parity rule, so every step trains.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from helpers import QUICK

from archer.config import load_config
from archer.distributed import health, launch

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'archer[ray]')")

PARITY = f"{Path(__file__).with_name('parity_reward.py')}:parity"
LABELS = "{trainer: train, rollout: gen, reward: score}"


def multi_node_config(address: str, *extra: str):
    """helpers.QUICK, two data-parallel ranks, one rollout and one reward actor per rank, placed by label."""
    return load_config(
        "tiny_math",
        [
            *QUICK,
            "model.sft_examples=16",
            "data.num_train=24",
            "data.num_eval=2",
            "rollout.batch_size=2",
            "trainer.steps=2",
            "trainer.save_every=1",
            "logging.plots=false",
            "logging.sinks=[]",
            f"reward.function={PARITY}",
            "resources.backend=ray",
            "resources.num_reward_workers=1",
            "resources.rollout_workers=1",
            f"resources.address={address}",
            f"resources.placement={LABELS}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "resources": {"gen": 1},
            "include_dashboard": False,
            # a lost node is declared dead after ~1.5 s of failed health checks (Ray's default ~15 s)
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    nodes = {
        "a": c.add_node(num_cpus=1, resources={"train": 1}),
        "b": c.add_node(num_cpus=1, resources={"train": 1}),
        "c": c.add_node(num_cpus=2, resources={"score": 1}),
    }
    c.wait_for_nodes(timeout=60)
    c.node_ids = {"head": c.head_node.node_id, **{k: n.node_id for k, n in nodes.items()}}
    yield c
    ray.shutdown()
    c.shutdown()


def _steps(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward/mean" in r]


def _workers(run_dir: Path, role: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "health").glob(f"{role}_*.json"))]


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """The same run with two local processes (launch_local): what every Ray-placed run must end with."""
    from archer.rl.loop import train

    run_dir = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(health.FAULT_ENV, raising=False)
        # spawn: a forked rank would inherit this process's gRPC state (the Cluster's client), hang in ray.init
        mp.setattr(launch, "default_start_method", lambda: "spawn")
        summary = train(multi_node_config(cluster.address, "resources.train_procs=2"), run_dir=run_dir)
    return summary, _steps(run_dir)


KEYS = ("actor/grad_norm", "reward/mean", "data/prompt_hash", "actor/entropy", "rollout/weight_version")


def _same_run(run_dir: Path, summary: dict, reference, keys=KEYS) -> None:
    want_summary, want = reference
    got = _steps(run_dir)
    assert [r["step"] for r in got] == [1, 2]  # none lost, none duplicated
    for key in keys:
        assert [r.get(key) for r in got] == [r.get(key) for r in want], key
    assert (
        summary["dist"]["replica_digests"] == want_summary["dist"]["replica_digests"]
    )  # bitwise-equal weights


def test_one_job_across_ray_nodes_equals_the_local_run(cluster, reference, tmp_path, monkeypatch, capfd):
    from archer.rl.loop import train

    monkeypatch.delenv(health.FAULT_ENV, raising=False)
    placed = train(multi_node_config(cluster.address, "resources.nodes=2"), run_dir=tmp_path)

    status = json.loads((tmp_path / health.STATUS_FILE).read_text())
    trainer_nodes = [w["node_id"] for w in status["workers"]]
    assert status["launcher"] == "ray" and status["world_size"] == 2 and status["state"] == "finished"
    assert sorted(trainer_nodes) == sorted([cluster.node_ids["a"], cluster.node_ids["b"]])
    rollout, reward = _workers(tmp_path, "rollout"), _workers(tmp_path, "reward")
    assert len(rollout) == 2 and {w["node_id"] for w in rollout} == {cluster.node_ids["head"]}
    assert len(reward) == 2 and {w["node_id"] for w in reward} == {cluster.node_ids["c"]}
    beats = [json.loads(health.heartbeat_path(tmp_path, k).read_text()) for k in (0, 1)]
    assert [b["node"].split("/")[1] for b in beats] == [n[:8] for n in trainer_nodes]
    _same_run(tmp_path, placed, reference)
    assert placed["dist"]["replicas_identical"]
    err = capfd.readouterr().err  # the ranks' lines reach this terminal with their role and node
    from archer.cli import status as status_cli

    assert status_cli.main([str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert "launcher    ray: 2 node(s), world size 2" in out and "state       finished" in out
    assert f"stage 'done' at step 2 on node {beats[1]['node']}" in out
    assert out.count("\nrollout     on node ") == 2 and out.count("\nreward      on node ") == 2
    assert f"{cluster.node_ids['c'][:8]}, pid" in out.split("\nreward", 1)[1]
    assert f"(trainer rank 1 @ {beats[1]['node']}" in err and f"(trainer rank 0 @ {beats[0]['node']}" in err


@pytest.mark.slow
def test_killed_trainer_actor_restarts_from_its_checkpoint_to_the_same_result(
    cluster, reference, tmp_path, monkeypatch
):
    """kill -9 of rank 1's actor at the start of step 2: the attempt ends within the grace period, the
    run restarts (trainer.max_restarts=1) from step 1's checkpoint on new actors and ends where the
    uninterrupted run ends."""
    from archer.rl.loop import train

    monkeypatch.setenv(health.FAULT_ENV, "1:2")
    t0 = time.time()
    summary = train(
        multi_node_config(cluster.address, "resources.nodes=2", "trainer.max_restarts=1"), run_dir=tmp_path
    )
    status = json.loads((tmp_path / health.STATUS_FILE).read_text())
    assert len(status["restarts"]) == 1 and status["state"] == "finished"
    reason = status["restarts"][0]["reason"]
    assert reason.startswith("rank 1 died (") and "(stage 'generate' at step 2) on node" in reason, reason
    assert status["restarts"][0]["from"].endswith("step_000001")
    # the rebuilt rollout pool continues the weight numbering from the checkpoint (rollout/weight_version)
    _same_run(tmp_path, summary, reference)
    assert time.time() - t0 < 180


@pytest.mark.slow
def test_hung_trainer_actor_is_ended_by_its_watchdog_and_named(cluster, tmp_path, monkeypatch):
    from archer.errors import RankFailure
    from archer.rl.loop import train

    monkeypatch.setenv(health.FAULT_ENV, "1:2:hang")
    with pytest.raises(RankFailure) as info:
        train(
            multi_node_config(cluster.address, "resources.nodes=2", "resources.watchdog_s=5"),
            run_dir=tmp_path,
        )
    line = str(info.value)
    assert line.startswith("rank 1 made no progress for") and "stage 'generate' at step 2" in line, line
    assert "not in a collective (watchdog) on node" in line and line.endswith(
        "no restarts (trainer.max_restarts=0)"
    )
    hung_at = json.loads(health.heartbeat_path(tmp_path, 1).read_text())["stage_since"]
    assert time.time() - hung_at < 5 + launch.GRACE_S + 15


@pytest.mark.slow
def test_lost_node_restarts_on_the_nodes_left_with_a_smaller_world(cluster, tmp_path, monkeypatch):
    """Rank 1 stops at the start of step 2 (the test hook's hang: it holds the run still) and its node is
    removed, raylet and every process on it killed: the run restarts from step 1's checkpoint on the node
    left (resources.min_nodes=1, world size 1) and step 2 follows step 1 in metrics.jsonl. The cluster
    gets a new node with the same label afterwards."""
    from archer.rl.loop import train

    monkeypatch.setenv(health.FAULT_ENV, "1:2:hang")
    lost: list[str] = []

    def remove_rank_1s_node():
        deadline = time.time() + 150
        while time.time() < deadline:
            beat = health.read_json(health.heartbeat_path(tmp_path, 1)) or {}
            if beat.get("step") == 2 and beat.get("stage") == "generate":
                break
            time.sleep(0.2)
        node_id = (health.read_json(tmp_path / health.STATUS_FILE) or {})["workers"][1]["node_id"]
        lost.append(next(k for k, v in cluster.node_ids.items() if v == node_id))
        cluster.remove_node(
            next(n for n in cluster.worker_nodes if n.node_id == node_id), allow_graceful=False
        )

    killer = threading.Thread(target=remove_rank_1s_node, daemon=True)
    killer.start()
    try:
        cfg = multi_node_config(
            cluster.address,
            "resources.nodes=2",
            "resources.min_nodes=1",
            "trainer.max_restarts=1",
            "resources.placement_timeout_s=90",
        )
        train(cfg, run_dir=tmp_path)
    finally:
        killer.join(160)
        for name in lost:
            cluster.node_ids[name] = cluster.add_node(num_cpus=1, resources={"train": 1}).node_id
        cluster.wait_for_nodes(timeout=60)
    status = json.loads((tmp_path / health.STATUS_FILE).read_text())
    assert len(status["restarts"]) == 1 and status["state"] == "finished", status
    assert status["restarts"][0]["reason"].startswith("rank 1 "), status["restarts"]
    assert status["nodes"] == 1 and status["world_size"] == 1
    left = ({"a", "b"} - set(lost)).pop()
    assert [w["node_id"] for w in status["workers"]] == [cluster.node_ids[left]]
    assert [r["step"] for r in _steps(tmp_path)] == [1, 2]


@pytest.mark.slow
def test_rollout_and_reward_actor_kills_in_a_multi_node_run_change_nothing(
    cluster, reference, tmp_path, monkeypatch
):
    """kill -9 of one rollout actor and one reward actor while rank 0 is in step 1: both are
    replaced (the rollout shard regenerated with the same weights and seed, the reward chunks retried),
    and the run ends exactly where the uninterrupted one ends, no restart."""
    import os
    import signal

    from archer.rl.loop import train

    monkeypatch.delenv(health.FAULT_ENV, raising=False)
    killed: list[int] = []
    seen: list[dict] = []  # registered actors that were already gone when the killer looked

    def kill_one_of_each():
        deadline = time.time() + 150
        while time.time() < deadline:
            beat = health.read_json(health.heartbeat_path(tmp_path, 0)) or {}
            if beat.get("step") == 1:  # any stage of step 1: both pools of both ranks serve step 2 again
                break
            time.sleep(0.05)
        for role in ("rollout", "reward"):
            for worker in _workers(tmp_path, role):
                try:
                    os.kill(int(worker["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    seen.append(worker)  # not expected: listed in the assertion below
                    continue
                killed.append(int(worker["pid"]))
                break

    killer = threading.Thread(target=kill_one_of_each, daemon=True)
    killer.start()
    summary = train(multi_node_config(cluster.address, "resources.nodes=2"), run_dir=tmp_path)
    killer.join(160)
    assert len(killed) == 2, (killed, seen)
    status = json.loads((tmp_path / health.STATUS_FILE).read_text())
    assert not status.get("restarts") and status["state"] == "finished"
    rollout, reward = _workers(tmp_path, "rollout"), _workers(tmp_path, "reward")
    assert len(rollout) == 3 and len(reward) == 3  # one replacement each, registered on the same nodes
    assert {w["node_id"] for w in rollout} == {cluster.node_ids["head"]}
    assert {w["node_id"] for w in reward} == {cluster.node_ids["c"]}
    dead = next(w for w in rollout if w["pid"] == killed[0])
    assert dead["error"].startswith("rollout worker 0 died (")
    _same_run(tmp_path, summary, reference)
