"""Recovery time per failure kind on a Ray cluster, and the overhead of the multi-node path vs one node.

A local Ray cluster of separate raylets (``ray.cluster_utils.Cluster``: a head for the rollout and reward
actors, two labelled nodes for the training ranks, as ``archer cluster start --head`` / ``join
--resources`` would make on separate hosts) runs tiny_math (the test suite's tiny model, a reward by file
path with the parity rule so every step trains, 2 data-parallel ranks, one rollout and one reward actor
per rank) and measures:

- ``overhead``: wall time of the run with its ranks placed on 2 Ray nodes (``resources.nodes=2``) vs the
  same run with 2 local processes (``launch_local``), both with the same rollout and reward actors;
- ``trainer rank kill``: kill -9 of rank 1 at the start of step 2 (``ARCHER_FAULT_INJECT``), one restart:
  extra wall time over the uninterrupted Ray run (noticing, the restart, the redone step);
- ``hang``: rank 1 stops at step 2, ``resources.watchdog_s=5``, one restart: extra wall time;
- ``node loss``: rank 1 stops at step 2 and its node is removed (raylet and processes killed), one
  restart on the node left (``resources.min_nodes=1``): extra wall time (the resumed steps run on a world
  of 1, so part of the difference is the smaller world);
- ``rollout worker kill``: a pool of 2 tiny-HF rollout actors, one killed mid-generation: extra time of
  the generate call (the replacement's start, weight load and regeneration of its shard);
- ``reward worker kill``: a pool of 2 reward actors scoring math responses, one killed mid-batch: extra
  time of the score call.

    python benchmarks/cluster_faults.py            # writes benchmarks/results/cluster_faults.{md,json}
    python benchmarks/cluster_faults.py --quick    # 2 steps, one repeat, results in a temporary folder

Limits: every "node" is a raylet on this machine (no network between hosts, one filesystem), so the
overhead is that of Ray's placement, actor start and log streaming, not of a real network; timings on a
2-core machine are dominated by process start-up and imports. A number measured while other processes
share the cores is noisy (the machine note says so from the load average); one warm-up run on the Ray
path (Ray's worker pool, imports) comes first and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

# the tests' QUICK config (tests/helpers.py), restated: a benchmark does not import the test suite
TINY = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.sft_epochs=1",
    "model.sft_examples=16",
    "model.sft_batch_size=4",
    "model.sft_max_len=128",
    "data.generator={level: easy}",
    "data.num_train=24",
    "data.num_eval=2",
    "data.seed=0",
    "rollout.batch_size=2",
    "rollout.n=4",
    "rollout.max_new_tokens=8",
    "rollout.max_gen_batches=2",
    "trainer.save_every=1",
    "trainer.threads=1",
    "trainer.mini_batches=2",
    "trainer.micro_batch_tokens=64",
    "optim.lr=1e-2",
    "eval.n=2",
    "eval.ks=[1, 2]",
    "logging.progress=false",
    "logging.plots=false",
    "logging.sinks=[]",
    "resources.backend=ray",
    "resources.num_reward_workers=1",
    "resources.rollout_workers=1",
    "resources.placement={trainer: train, rollout: gen, reward: score}",
]


def parity(completions, **_):
    """The reward (by file path, so every process loads it): 1 for a response of even length."""
    return [float(len(c) % 2 == 0) for c in completions]


def _config(address: str, steps: int, *extra: str):
    from archer.config import load_config

    return load_config(
        "tiny_math",
        [
            *TINY,
            f"trainer.steps={steps}",
            f"reward.function={__file__}:parity",
            f"resources.address={address}",
            *extra,
        ],
    )


def _timed_run(cfg, run_dir: Path, fault: str | None = None, during=None) -> float:
    from archer.distributed import health
    from archer.rl.loop import train

    os.environ.pop(health.FAULT_ENV, None)
    if fault:
        os.environ[health.FAULT_ENV] = fault
    side = threading.Thread(target=during, args=(run_dir,), daemon=True) if during else None
    t0 = time.perf_counter()
    try:
        if side:
            side.start()
        train(cfg, run_dir=run_dir)
    finally:
        os.environ.pop(health.FAULT_ENV, None)
    if side:
        side.join(120)
    return time.perf_counter() - t0


def _remove_rank_1s_node(cluster):
    from archer.distributed import health

    def act(run_dir: Path) -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            beat = health.read_json(health.heartbeat_path(run_dir, 1)) or {}
            if beat.get("step") == 2 and beat.get("stage") == "generate":
                break
            time.sleep(0.2)
        node_id = (health.read_json(run_dir / health.STATUS_FILE) or {})["workers"][1]["node_id"]
        cluster.remove_node(
            next(n for n in cluster.worker_nodes if n.node_id == node_id), allow_graceful=False
        )

    return act


def _pool_kill(kind: str, address: str) -> tuple[float, float]:
    """(seconds of a call without a fault, with one actor killed mid-call) for a rollout or reward pool."""
    import signal

    import ray

    from archer.data.schema import Problem

    if kind == "rollout":
        from archer.models.tiny import build_tiny_model, build_tokenizer
        from archer.rollout.base import SamplingParams
        from archer.rollout.ray_pool import RayRolloutPool, worker_engine_factory

        tok = build_tokenizer([f"{a}+{b}={a + b}" for a in range(12) for b in range(12)], vocab_size=300)
        model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=0)
        pool = RayRolloutPool(
            worker_engine_factory("hf", model, tok, {}),
            num_workers=2,
            cpus_per_worker=0.5,
            address=address,
            initial_weights=model,
            resources={"gen": 0.001},
        )
        prompts = [f"{a}+{b}=" for a in range(8) for b in range(8)]

        def call():
            return pool.generate(prompts, SamplingParams(n=4, max_new_tokens=32, seed=1))

        def victim():
            return int(pool.where[0]["pid"])
    else:
        from archer.rewards.ray_pool import RayRewardScorer

        pool = RayRewardScorer(2, cpus_per_worker=0.5, address=address, resources={"score": 0.001})
        problems = [Problem(id=f"p{i}", prompt="q", kind="math", answer=str(i)) for i in range(64)]
        responses = [f"\\boxed{{{i}}}" for i in range(64)]

        def call():
            return pool.score(responses, problems)

        def victim():
            return int(ray.get(pool.actors[0].pid.remote()))

    try:
        call()  # warm: actors up, imports done
        t0 = time.perf_counter()
        call()
        clean = time.perf_counter() - t0
        pid = victim()
        timer = threading.Timer(clean / 3, os.kill, args=(pid, signal.SIGKILL))
        t0 = time.perf_counter()
        timer.start()
        call()
        faulted = time.perf_counter() - t0
        timer.join()
    finally:
        pool.close()
    return clean, faulted


def measure(quick: bool, work: Path, repeats: int | None = None) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from archer.distributed import launch

    steps, repeats = (2, 1) if quick else (4, repeats or 3)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 4, "resources": {"gen": 1, "score": 1}, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, resources={"train": 1})
    cluster.add_node(num_cpus=1, resources={"train": 1})
    cluster.wait_for_nodes(timeout=60)
    launch.default_start_method = lambda: "spawn"  # forked ranks would inherit this driver's gRPC state
    rows: dict[str, list[float]] = {}
    try:
        addr = cluster.address
        _timed_run(
            _config(addr, 1, "resources.nodes=2", "eval.enabled=false"), work / "warm-up"
        )  # not counted
        for r in range(repeats):
            local = _timed_run(_config(addr, steps, "resources.train_procs=2"), work / f"local{r}")
            placed = _timed_run(_config(addr, steps, "resources.nodes=2"), work / f"ray{r}")
            rows.setdefault("one node, 2 local processes (s)", []).append(local)
            rows.setdefault("2 Ray nodes, 1 rank each (s)", []).append(placed)
            rows.setdefault("multi-node overhead (s)", []).append(placed - local)
            restart = _config(addr, steps, "resources.nodes=2", "trainer.max_restarts=1")
            killed = _timed_run(restart, work / f"kill{r}", fault="1:2")
            rows.setdefault("trainer rank kill: extra wall time (s)", []).append(killed - placed)
            hang = _config(
                addr, steps, "resources.nodes=2", "trainer.max_restarts=1", "resources.watchdog_s=5"
            )
            hung = _timed_run(hang, work / f"hang{r}", fault="1:2:hang")
            rows.setdefault("hang (watchdog_s=5): extra wall time (s)", []).append(hung - placed)
            lose = _config(
                addr, steps, "resources.nodes=2", "resources.min_nodes=1", "trainer.max_restarts=1"
            )
            lost = _timed_run(lose, work / f"node{r}", fault="1:2:hang", during=_remove_rank_1s_node(cluster))
            rows.setdefault("node loss, restart on 1 node: extra wall time (s)", []).append(lost - placed)
            # the lost node's stand-in, from the main thread (Ray installs signal handlers on a new node)
            cluster.add_node(num_cpus=1, resources={"train": 1})
            cluster.wait_for_nodes(timeout=60)
            for kind in ("rollout", "reward"):
                clean, faulted = _pool_kill(kind, addr)
                rows.setdefault(f"{kind} worker kill: extra time of the call (s)", []).append(faulted - clean)
                rows.setdefault(f"{kind} call without a fault (s)", []).append(clean)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {
        "quick": quick,
        "steps": steps,
        "repeats": repeats,
        "median": {k: statistics.median(v) for k, v in rows.items()},
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 steps, one repeat, results in a temporary folder"
    )
    parser.add_argument(
        "--out-dir", default=None, help="where the .md and .json go (default: benchmarks/results)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="repeats of the full mode (default 3)")
    args = parser.parse_args(argv)
    from _toy_common import machine_note, md_table

    out = Path(args.out_dir) if args.out_dir else (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="archer-cluster-faults-") as work:
        result = measure(args.quick, Path(work), args.repeats)
    result["machine"] = machine_note()
    table = md_table(
        ["measure", "median", "runs"],
        [[k, v, ", ".join(f"{x:.1f}" for x in result["runs"][k])] for k, v in result["median"].items()],
    )
    md = (
        f"# cluster_faults ({'quick' if args.quick else 'full'}: {result['steps']} steps, "
        f"{result['repeats']} repeat(s))\n\n{table}\n\n{result['machine']}\n"
    )
    (out / "cluster_faults.json").write_text(json.dumps(result, indent=1))
    (out / "cluster_faults.md").write_text(md)
    print(md)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
