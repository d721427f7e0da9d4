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
        head_node_args={"num_cpus": 2, "resources": {"gen": 1}, "include_dashboard": False},
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


def test_one_job_across_ray_nodes_equals_the_local_run(cluster, tmp_path, monkeypatch, capfd):
    from archer.rl.loop import train

    monkeypatch.delenv(health.FAULT_ENV, raising=False)
    # spawn: a forked rank would inherit this process's gRPC state (the Cluster's client) and hang in ray.init
    monkeypatch.setattr(launch, "default_start_method", lambda: "spawn")
    local = train(multi_node_config(cluster.address, "resources.train_procs=2"), run_dir=tmp_path / "local")
    placed = train(multi_node_config(cluster.address, "resources.nodes=2"), run_dir=tmp_path / "ray")

    status = json.loads((tmp_path / "ray" / health.STATUS_FILE).read_text())
    trainer_nodes = [w["node_id"] for w in status["workers"]]
    assert status["launcher"] == "ray" and status["world_size"] == 2 and status["state"] == "finished"
    assert sorted(trainer_nodes) == sorted([cluster.node_ids["a"], cluster.node_ids["b"]])
    rollout, reward = _workers(tmp_path / "ray", "rollout"), _workers(tmp_path / "ray", "reward")
    assert len(rollout) == 2 and {w["node_id"] for w in rollout} == {cluster.node_ids["head"]}
    assert len(reward) == 2 and {w["node_id"] for w in reward} == {cluster.node_ids["c"]}
    beats = [json.loads(health.heartbeat_path(tmp_path / "ray", k).read_text()) for k in (0, 1)]
    assert [b["node"].split("/")[1] for b in beats] == [n[:8] for n in trainer_nodes]

    want, got = _steps(tmp_path / "local"), _steps(tmp_path / "ray")
    assert [r["step"] for r in got] == [1, 2]
    for key in (
        "actor/grad_norm",
        "reward/mean",
        "data/prompt_hash",
        "actor/entropy",
        "rollout/weight_version",
    ):
        assert [r.get(key) for r in got] == [r.get(key) for r in want], key
    assert placed["dist"]["replica_digests"] == local["dist"]["replica_digests"]  # bitwise-equal weights
    assert placed["dist"]["replicas_identical"]
    err = capfd.readouterr().err  # the ranks' lines reach this terminal with their role and node
    assert f"(trainer rank 1 @ {beats[1]['node']}" in err and f"(trainer rank 0 @ {beats[0]['node']}" in err
