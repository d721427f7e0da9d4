"""Reward throughput: the local scorer vs 1 and 2 Ray reward actors, and a model of N nodes.

Measures, on real public items (MATH-500 reference solutions for math, HumanEval ``gpt_solution``
answers run against their tests in the sandbox for code):

Half the math responses are another problem's solution (a wrong answer). Times are medians of 3.

- items/s of ``archer.rewards.registry.score_responses`` in the driver process (the local backend;
  its math-verify pool and sandbox use every core of the machine);
- items/s of ``RayRewardScorer`` with 1 and 2 actors of 1 CPU each on a local Ray cluster;
- the design's overheads: the per-batch round trip (a batch of one item per actor) and the driver's
  per-chunk cost (a no-op verifier, one item per chunk);
- the weight-sync time of ``RayRolloutPool.update_weights`` on CPU for two model sizes, over the object
  store and over the collective gloo group, interleaved. A GPU (NCCL) measurement is not done here.

Model for N nodes of C CPUs (W = N*C actors of 1 CPU, a batch of n items cut in 4W chunks; the
driver hands out chunks while the actors work, so the slower of the two sets the pace)::

    T(n, W) = o_batch + max(n * c_item / W, 4W * d_chunk)        items/s = n / T

with ``c_item`` = seconds per item on one actor (from the 1-actor run), ``o_batch`` and ``d_chunk``
measured here. It assumes items cost the same everywhere and the driver is the only shared resource.
The actors' work falls as 1/W while the driver's grows as W: they cross at
``W* = sqrt(n * c_item / (4 * d_chunk))``, past which more actors make a batch slower.

Run: ``python benchmarks/reward_scaling.py [--math 500] [--code 64] [--out benchmarks/results/reward_scaling.md]``
(writes the table and, beside it, the json artifact with every timing sample)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "archer" / "data" / "bundled"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import _artifact as artifact_  # noqa: E402

# the local Ray cluster's workers inherit this environment: they import archer from the same checkout
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def load_items(n_math: int, n_code: int):
    from archer.data.formats import load_dataset

    math = load_dataset(DATA / "math" / "math500.jsonl", limit=n_math)
    code = load_dataset(DATA / "code" / "humaneval.jsonl", limit=n_code)
    # every other response is the next problem's solution: a wrong answer, so half the items go
    # through the symbolic comparison instead of a quick exact match
    sols = [p.meta["solution"] for p in math]
    math_responses = [sols[i] if i % 2 == 0 else sols[(i + 1) % len(sols)] for i in range(len(sols))]
    return {
        "math": (math_responses, math),
        "code": ([p.meta["gpt_solution"] for p in code], code),
    }


def timed(fn, repeat: int = 1) -> list[float]:
    """The wall times of ``repeat`` calls (the caller takes the median and keeps the samples)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _times(samples: list[float]) -> dict:
    """``s``: the median the table and the model use; ``s_samples``: every repeat."""
    return {"s": statistics.median(samples), "s_samples": samples}


def noop_verifier(responses, problems):
    from archer.rewards.types import RewardResult

    return [RewardResult(0.0, False, {}) for _ in responses]


def measure_rewards(items, workers=(1, 2)):
    import ray

    from archer.rewards.ray_pool import RayRewardScorer
    from archer.rewards.registry import score_responses

    rows = []
    for kind, (responses, problems) in items.items():
        score_responses(responses[:4], problems[:4])  # start the pools outside the timing
        t = timed(lambda r=responses, p=problems: score_responses(r, p), repeat=3)
        rows.append({"kind": kind, "backend": "local", "workers": "-", "n": len(responses), **_times(t)})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    overhead = {}
    try:
        for w in workers:
            scorer = RayRewardScorer(w, cpus_per_worker=1.0)
            for kind, (responses, problems) in items.items():
                scorer.score(responses[: 2 * w], problems[: 2 * w])  # actors up, pools started
                t = timed(lambda r=responses, p=problems, s=scorer: s.score(r, p), repeat=3)
                rows.append({"kind": kind, "backend": "ray", "workers": w, "n": len(responses), **_times(t)})
            scorer.close()
        # per-batch round trip: one trivial item per actor, actors warm
        scorer = RayRewardScorer(1, cpus_per_worker=1.0, verifiers={"math": noop_verifier})
        responses, problems = items["math"]
        scorer.score(responses[:1], problems[:1])
        overhead["o_batch"] = statistics.median(
            timed(lambda: scorer.score(responses[:1], problems[:1]), repeat=20)
        )
        scorer.close()
        # driver cost per chunk: 64 no-op items, one per chunk, 8 in flight (so round-trip latency is
        # overlapped and what remains is the serial submit / wait / get work per chunk)
        scorer = RayRewardScorer(
            1, cpus_per_worker=1.0, chunk_size=1, max_in_flight=8, verifiers={"math": noop_verifier}
        )
        scorer.score(responses[:4], problems[:4])
        overhead["d_chunk"] = (
            statistics.median(timed(lambda: scorer.score(responses[:64], problems[:64]), repeat=3)) / 64
        )
        scorer.close()
    finally:
        ray.shutdown()
    return rows, overhead


def measure_weight_sync(sizes=((128, 4), (512, 8)), repeat: int = 5):
    """Per model size, both transports of ``RayRolloutPool.update_weights`` (object store, and the
    collective gloo group), each with 1 actor, pushes interleaved ``repeat`` times after a warm-up."""
    import ray

    from archer.models.tiny import build_tiny_model, build_tokenizer, count_parameters
    from archer.rollout.hf import HFEngine
    from archer.rollout.ray_pool import RayRolloutPool

    tok = build_tokenizer([f"{a}+{b}={a + b}" for a in range(30) for b in range(30)], vocab_size=300)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for hidden, layers in sizes:
            model = build_tiny_model(tok, hidden_size=hidden, num_layers=layers, num_heads=8, num_kv_heads=4)

            def factory(hidden=hidden, layers=layers):
                return HFEngine(
                    build_tiny_model(tok, hidden_size=hidden, num_layers=layers, num_heads=8, num_kv_heads=4),
                    tok,
                )

            pools = {
                transport: RayRolloutPool(factory, num_workers=1, cpus_per_worker=1.0, weight_sync=transport)
                for transport in ("object_store", "collective")
            }
            timings: dict[str, list[dict]] = {t: [] for t in pools}
            try:
                for pool in pools.values():
                    pool.update_weights(model)  # actor up, first-call costs paid
                for _ in range(repeat):
                    for transport, pool in pools.items():
                        timings[transport].append(pool.update_weights(model))
            finally:
                for pool in pools.values():
                    pool.close()
            mb = sum(v.numel() * v.element_size() for v in model.state_dict().values()) / 2**20
            total = {t: [x["total_s"] for x in ts] for t, ts in timings.items()}
            rows.append(
                {
                    "params": count_parameters(model),
                    "mb": mb,
                    **{
                        t: {
                            k: statistics.median(x[k] for x in ts)
                            for k in ("put_s", "send_s", "load_s", "total_s")
                            if k in ts[0]
                        }
                        for t, ts in timings.items()
                    },
                    "samples": timings,
                    # object store time / collective time, repeat by repeat: > 1 means the group is faster
                    "speedup": artifact_.ratio(total["object_store"], total["collective"]),
                }
            )
    finally:
        ray.shutdown()
    return rows


def render(rows, overhead, sync_rows, nodes=(1, 2, 4, 8, 16, 32), cpus_per_node=16, batch=4096) -> str:
    out = ["| items | backend | actors | n | seconds | items/s |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(
            f"| {r['kind']} | {r['backend']} | {r['workers']} | {r['n']} | {r['s']:.2f} | {r['n'] / r['s']:.1f} |"
        )
    o, d = overhead["o_batch"], overhead["d_chunk"]
    out += [
        "",
        f"Measured overheads: per-batch round trip o_batch = {o * 1e3:.1f} ms, "
        f"driver per-chunk d_chunk = {d * 1e3:.2f} ms.",
        "",
    ]
    c_item = {}
    for r in rows:
        if r["backend"] == "ray" and r["workers"] == 1:
            c_item[r["kind"]] = max(r["s"] - o, 1e-9) / r["n"]
    check = []
    for r in rows:
        if r["backend"] == "ray" and r["workers"] == 2:
            pred = o + max(r["n"] * c_item[r["kind"]] / 2, 8 * d)
            check.append(
                f"{r['kind']}: predicted {r['n'] / pred:.1f} items/s for 2 actors, "
                f"measured {r['n'] / r['s']:.1f}"
            )
    out += [
        "Model check on this machine (2 cores, so 2 actors also compete with the driver): "
        + "; ".join(check)
        + ".",
        "",
    ]
    kinds = sorted(c_item)
    out += [
        f"Predicted throughput for a batch of {batch} items, N nodes x {cpus_per_node} CPUs "
        "(one 1-CPU actor per CPU):",
        "",
        "| nodes | actors | " + " | ".join(f"{k} items/s" for k in kinds) + " |",
        "| --- | --- | " + " | ".join("---" for _ in kinds) + " |",
    ]
    for n_nodes in nodes:
        w = n_nodes * cpus_per_node
        cells = [f"{batch / (o + max(batch * c_item[k] / w, 4 * w * d)):.0f}" for k in kinds]
        out.append(f"| {n_nodes} | {w} | " + " | ".join(cells) + " |")
    crossover = ", ".join(f"{k} {(batch * c_item[k] / (4 * d)) ** 0.5:.0f}" for k in kinds)
    out += ["", f"Driver-bound beyond W* = sqrt(n c_item / (4 d_chunk)) actors: {crossover} (n = {batch})."]
    out += [
        "",
        "Weight sync to 1 rollout actor on CPU, median of 5 interleaved pushes per transport (object store:"
        " ray.put + the actor's fetch and load; collective: a gloo broadcast in 64 MiB buckets + load):",
        "",
        "| params | MB (fp32) | object store: put s | load s | total s | collective: send s | receive + load s "
        "| total s | object store / collective |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sync_rows:
        o, c = r["object_store"], r["collective"]
        out.append(
            f"| {r['params'] / 1e6:.1f}M | {r['mb']:.0f} | {o['put_s']:.3f} | {o['load_s']:.3f} | {o['total_s']:.3f} "
            f"| {c['send_s']:.3f} | {c['load_s']:.3f} | {c['total_s']:.3f} | {artifact_.fmt_ci(r['speedup'], 2, 'x')} |"
        )
    out += ["", "GPU weight sync (NCCL): not measured here (no GPU on this machine)."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--math", type=int, default=500, help="MATH-500 items")
    parser.add_argument("--code", type=int, default=64, help="HumanEval items")
    parser.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "results" / "reward_scaling.md"),
        help="the markdown table; the json artifact goes beside it",
    )
    args = parser.parse_args(argv)
    started = artifact_.start()
    items = load_items(args.math, args.code)
    rows, overhead = measure_rewards(items)
    sync_rows = measure_weight_sync()
    table = render(rows, overhead, sync_rows)
    print(table)
    results = {
        "settings": {"math": args.math, "code": args.code},
        "rows": rows,
        "overhead": overhead,
        "weight_sync": sync_rows,
    }
    out = Path(args.out)
    artifact_.write_artifact(
        "reward_scaling", results, argv=argv, started=started, out=out.with_suffix(".json")
    )
    import platform

    import ray
    import torch

    env = artifact_.environment(started)
    header = (
        f"# reward_scaling\n\n`python benchmarks/reward_scaling.py --math {args.math} --code {args.code}`\n\n"
        f"Machine: {os.cpu_count()} CPU cores, no GPU, {platform.python_version()}, torch "
        f"{torch.__version__}, ray {ray.__version__}; load average {env['load_start']} at the start, "
        f"{env['load_end']} at the end. Times are medians of the repeats (every sample is in the json). "
        "With 2 cores, 2 actors also compete with the driver, so they cannot show a 2x gain here.\n\n"
    )
    out.write_text(header + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
