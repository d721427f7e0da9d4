"""Asynchronous vs synchronous RL on the 2-core machine (issue #25): throughput, time to a held-out target,
final accuracy; and staleness 0 through the async machinery against the synchronous run.

Both sides are the default CPU demo (``archer/recipes/tiny_math.yaml``) from the same cached SFT
checkpoint, with the same seeds, data and steps; only ``trainer.mode`` differs:

- ``sync``: generate, then train, on the trainer's thread; ``trainer.threads=2`` for the update (the HF
  engine generates with 1 thread, its default, measured faster for a tiny model);
- ``async``: ``trainer.mode=async trainer.max_staleness=K`` (default 1) with the producer's copy of the
  policy in a child process (``trainer.async_producer=process``, the CPU default): generation on one
  core, the trainer on the other, ``trainer.threads=1`` on each side (2 in total, as sync's update);
- ``async_thread`` (secondary, not in the verdict): the same with the producer as a thread of the
  trainer's process (``trainer.async_producer=thread``), which shares Python's lock with the trainer.

Runs are interleaved by seed (each seed's modes back to back). Each run also records where its step time
goes (``time/generate``, ``time/logprobs``, ``time/update``), from which the report derives the ceiling
that perfect overlap would give on two cores.

Declared before it runs (:data:`DESIGN`): the primary measure is the final held-out avg@8 of async
minus sync, paired by seed, with a margin of 0.05; the verdict is one of the three outcomes of
``_toy_common.decide``. Secondary (reported, not the verdict): steps per minute of training wall time
(the sum of ``time/step``: the before/after evaluations excluded, generation included), and the time to
a fixed held-out target, ``SFT avg@8 + --target-gain`` (the same checkpoint for every run), evaluated on
snapshots of the policy taken every ``--eval-every`` steps (offline, after the run: the evaluation
never pauses one side and not the other). The issue's bar: steps/min >= 1.5x sync, time to target
<= 0.7x sync, accuracy equal within the 3-seed interval.

The time target was raised from +0.05 to +0.12 before the run of 2026-12-05, because every run had
reached +0.05 at its first snapshot (uninformative); snapshots every 5 steps (was 10).

Also run (``--check-k0``, on by default): sync and async with ``max_staleness=0`` at 1 thread each for
a few steps; their shared metrics and final weights must be identical (reported as ``k0_identical``).

Outputs: ``benchmarks/results/async_rl.{md,json}`` (quick mode: ``runs/bench_logs/async_rl_quick``); the
json is the artifact (``_artifact.publish``: command, load, source hash, raw per-run numbers).
Finished runs are kept in ``runs/bench_logs/async_rl[_quick]/<mode>_s<seed>.json`` and reused when
every setting and the code are the same (``--fresh`` ignores them).

Run: ``python benchmarks/async_rl.py [--seeds 0,1,2] [--steps N] [--staleness 1] [--quick]``.

Limits: timings need a quiet machine (the artifact records the load; numbers from a loaded machine are
not results); processes and threads are not pinned to cores (the OS spreads the two busy ones).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _artifact as artifact_  # noqa: E402
import _toy_common as common  # noqa: E402

DESIGN = common.StudyDesign(
    question="Does fully asynchronous RL (bounded staleness) keep the final held-out accuracy of sync?",
    primary="final held-out avg@k (avg@8 at the recipe's eval.n), async - sync, paired by seed",
    unit="accuracy",
    margin=0.05,
    seeds=(0, 1, 2),
    secondary=("steps per minute, async / sync", "time to the held-out target, async / sync"),
)
COMPONENTS = ("generate", "reward", "logprobs", "update", "step")
TARGET_GAIN = 0.12  # declared before the run of 2026-12-05: +0.05 was reached at the first snapshot by every
# run (uninformative); +0.12 is about half of sync's earlier gain over SFT (0.445 -> 0.68)
MODES = {
    "sync": ["trainer.mode=sync", "trainer.threads=2"],
    # the producer in a child process over shared-memory weights: generation on one core, the update on
    # the other (trainer.async_producer=auto on CPU)
    "async": ["trainer.mode=async", "trainer.threads=1", "trainer.async_producer=process"],
    # secondary: the producer as a thread of the trainer's process (the two take turns on Python's lock)
    "async_thread": ["trainer.mode=async", "trainer.threads=1", "trainer.async_producer=thread"],
}


def run_mode(
    mode: str, seed: int, base: list[str], a: Any, ckpt: Path, train: list, evals: list, cache: Path
) -> dict:
    """One run; its per-step times and the held-out avg/pass@k of policy snapshots every ``eval_every``."""
    over = base + MODES[mode] + [f"trainer.seed={seed}"]
    if mode != "sync":
        over += [f"trainer.max_staleness={a.staleness}"] + (["rollout.partial=true"] if a.partial else [])
        over += a.async_extra
    cfg = common.toy_config(over, quick=a.quick)
    snaps: dict[int, Any] = {}

    def hook(step: int, metrics: dict, model: Any, tok: Any) -> None:
        if step % a.eval_every == 0 or step == cfg.trainer.steps:
            snaps[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def summarize(out: dict, model: Any, tok: Any) -> dict:
        hist = out["history"]
        step_s = [h["time/step"] for h in hist]
        curve = {}
        for step, state in sorted(snaps.items()):
            model.load_state_dict(state)
            curve[step] = common.evaluate_model(model, tok, evals, cfg)
        return {
            "mode": mode,
            "seed": seed,
            "step_seconds": step_s,
            "curve": {str(s): {k: e[k] for k in common.metric_keys(cfg)} for s, e in curve.items()},
            "staleness_mean": [h.get("async/staleness_mean") for h in hist],
            # where a step's time goes (means over steps): generation (the producer's, in async), the
            # old/reference log-prob forwards and the AdamW steps (the trainer's)
            "components_s": {
                k: sum(h.get(f"time/{k}", 0.0) for h in hist) / len(hist)
                for k in ("generate", "reward", "logprobs", "update", "step")
            },
            "trainer_idle_s": sum(h.get("async/trainer_idle_s", 0.0) for h in hist),
            "worker_idle_s": sum(h.get("async/worker_idle_s", 0.0) for h in hist),
        }

    return common.rl_run(f"{mode}_s{seed}", cfg, ckpt, train, evals, cache, summarize, step_hook=hook)


def time_to(run: dict, target: float, key: str) -> float | None:
    """Training seconds (cumulative ``time/step``) at the first snapshot whose ``key`` reaches ``target``."""
    cum = [0.0]
    for s in run["step_seconds"]:
        cum.append(cum[-1] + s)
    for step, ev in sorted(((int(s), e) for s, e in run["curve"].items())):
        if ev[key] >= target:
            return cum[step]
    return None


def check_k0(base: list[str], quick: bool, ckpt: Path, train: list, evals: list, steps: int) -> bool:
    """Sync and async with max_staleness=0 (1 thread each): identical shared metrics and final weights."""
    import torch

    from archer.rl.loop import train as rl_train

    outs, weights = [], []
    for extra in (["trainer.mode=sync"], ["trainer.mode=async", "trainer.max_staleness=0"]):
        cfg = common.toy_config(base + extra + ["trainer.threads=1", f"trainer.steps={steps}"], quick=quick)
        model, tok = common.load_policy(ckpt)
        run_dir = common.RUNS / "bench_logs" / f"async_rl_k0_{extra[0].split('=')[1]}_{time.time_ns()}"
        outs.append(
            rl_train(
                cfg, run_dir=run_dir, model=model, tokenizer=tok, train_problems=train, eval_problems=evals
            )
        )
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    same_metrics = all(
        a[k] == b.get(k)
        for a, b in zip(outs[0]["history"], outs[1]["history"])
        for k in a
        if not k.startswith(("time/", "sample"))
    )
    return same_metrics and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--seeds", default=",".join(map(str, DESIGN.seeds)), help="comma-separated trainer.seed values"
    )
    ap.add_argument(
        "--steps", type=int, default=None, help="RL steps per run (default: the recipe's; quick 3)"
    )
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, from {', '.join(MODES)} (sync and async needed)",
    )
    ap.add_argument("--staleness", type=int, default=1, help="trainer.max_staleness of the async runs")
    ap.add_argument("--partial", action="store_true", help="async runs with rollout.partial=true")
    ap.add_argument("--eval-every", type=int, default=None, help="policy snapshots evaluated every N steps")
    ap.add_argument(
        "--target-gain", type=float, default=TARGET_GAIN, help=f"target = SFT avg@8 + this ({TARGET_GAIN})"
    )
    ap.add_argument("--no-check-k0", action="store_true", help="skip the staleness-0 identity check")
    ap.add_argument(
        "--quick", action="store_true", help="smoke mode: tiny SFT, 3 steps, one seed, small eval"
    )
    ap.add_argument(
        "--async-extra",
        nargs="*",
        default=[],
        help="more overrides for the async runs only, e.g. resources.rollout_workers=1 (generation in a Ray "
        "actor process)",
    )
    ap.add_argument(
        "--extra",
        nargs="*",
        default=[],
        help="overrides for every run, the SFT model included, e.g. a workload with longer responses",
    )
    ap.add_argument("--fresh", action="store_true", help="ignore finished runs kept from an earlier run")
    ap.add_argument("--out-dir", default=None, help="where the .md/.json go (default benchmarks/results)")
    a = ap.parse_args(argv)
    modes = [m for m in a.modes.split(",") if m]
    if not {"sync", "async"} <= set(modes) or not set(modes) <= set(MODES):
        ap.error(f"--modes: sync and async, plus any of {', '.join(MODES)}; got {a.modes!r}")
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    if a.quick and a.seeds == ",".join(map(str, DESIGN.seeds)):
        seeds = [0]
    steps = a.steps or (3 if a.quick else common.toy_config().trainer.steps)
    a.eval_every = a.eval_every or (1 if a.quick else 5)
    base = [f"trainer.steps={steps}", "eval.every=0", *a.extra]
    if a.quick:  # zero-variance groups kept: the barely trained model gets no reward, the update still runs
        base += [
            "rollout.batch_size=4",
            "rollout.n=4",
            "rollout.dynamic_sampling=false",
            "algo.filter_zero_variance=false",
        ]
    started = artifact_.start()
    out_dir, cache = common.study_dirs("async_rl", a.quick, a.out_dir, a.fresh)
    cfg = common.toy_config(base, quick=a.quick)
    ckpt, _ = common.sft_checkpoint(cfg)
    train, evals = common.problems(cfg)
    key, pkey = common.metric_keys(cfg)
    model, tok = common.load_policy(ckpt)
    before = common.evaluate_model(model, tok, evals, cfg)
    target = before[key] + a.target_gain
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for s in seeds:  # interleaved: each seed's modes back to back, so drift in the machine hits all alike
        for m in modes:
            runs[m].append(run_mode(m, s, base, a, ckpt, train, evals, cache))

    def final(r: dict) -> float:
        return r["curve"][str(max(int(s) for s in r["curve"]))][key]

    diffs = [final(x) - final(y) for x, y in zip(runs["async"], runs["sync"])]
    decision = common.decide(diffs, DESIGN.margin)
    spm = {m: [len(r["step_seconds"]) / (sum(r["step_seconds"]) / 60) for r in rs] for m, rs in runs.items()}
    ttt = {m: [time_to(r, target, key) for r in rs] for m, rs in runs.items()}
    vs_sync = {m: artifact_.ratio(spm[m], spm["sync"]) for m in modes if m != "sync"}
    ratio_ttt = {
        m: [x / y if x is not None and y else None for x, y in zip(ttt[m], ttt["sync"])]
        for m in modes
        if m != "sync"
    }
    k0 = None if a.no_check_k0 else check_k0(base, a.quick, ckpt, train, evals, min(steps, 3))
    rows = []
    for m, rs in runs.items():
        f = [final(r) for r in rs]
        rows.append(
            [
                m,
                "{:.3f} [{:.3f}, {:.3f}]".format(*common.mean_ci(f)),
                "{:.1f} [{:.1f}, {:.1f}]".format(*common.mean_ci(spm[m])),
                "1" if m == "sync" else artifact_.fmt_ci(vs_sync[m], 2, "x"),
                ", ".join("-" if t is None else f"{t:.0f}" for t in ttt[m]),
                "{:.1f}".format(sum(r["trainer_idle_s"] for r in rs) / len(rs)),
                "{:.1f}".format(sum(r["worker_idle_s"] for r in rs) / len(rs)),
            ]
        )
    table = common.md_table(
        [
            "mode",
            f"final held-out {key} (95% CI)",
            "steps/min (95% CI)",
            "steps/min vs sync (95% CI)",
            f"s to {key} >= {target:.3f} per seed",
            "trainer idle s",
            "worker idle s",
        ],
        rows,
    )
    verdict = common.describe(decision, DESIGN)
    secondary = [
        f"- {m}: steps/min / sync per seed {', '.join(f'{x:.2f}' for x in vs_sync[m]['per_repeat'])} (bar >= 1.5); "
        f"time to target / sync {', '.join('-' if x is None else f'{x:.2f}' for x in ratio_ttt[m])} (bar <= 0.7)"
        for m in vs_sync
    ]
    comp = {
        m: {k: statistics.mean(r["components_s"][k] for r in rs) for k in COMPONENTS}
        for m, rs in runs.items()
    }
    comp_rows = [[m, *(f"{comp[m][k]:.3f}" for k in COMPONENTS)] for m in modes]
    g, u2 = comp["sync"]["generate"], comp["sync"]["logprobs"] + comp["sync"]["update"]
    g1, u1 = comp["async"]["generate"], comp["async"]["logprobs"] + comp["async"]["update"]
    ceiling = (g + u2) / max(g1, u1)
    lines = [
        f"# Async vs sync RL (tiny_math, {steps} steps, seeds {seeds}, max_staleness {a.staleness}"
        f"{', partial rollouts' if a.partial else ''})\n",
        f"`python benchmarks/async_rl.py {' '.join(sys.argv[1:] if argv is None else argv)}`; modes: "
        + "; ".join(f"{m} = `{' '.join(MODES[m])}`" for m in modes)
        + f". Held-out {key} of policy snapshots every {a.eval_every} steps, evaluated after each run.\n",
        table,
        "",
        verdict,
        "",
        "Secondary (not the verdict):",
        *secondary,
        f"- staleness 0 through the async machinery identical to sync: {k0}",
        "",
        f"SFT held-out {key} {before[key]:.3f}, {pkey} {before[pkey]:.3f}; target {target:.3f}.",
        "",
        "Where a step's time goes (s, means over steps and seeds; async: generate is the producer's, the rest "
        "the trainer's):\n",
        common.md_table(["mode", *COMPONENTS], comp_rows),
        "",
        f"Ceiling with perfect overlap: sync's step is generate + (log-probs + update at 2 threads) = "
        f"{g:.3f} + {u2:.3f} s; async's is at least the longer side, max(generate {g1:.3f}, log-probs + update "
        f"at 1 thread {u1:.3f}) s: at most {ceiling:.2f}x sync's steps/min on these two cores.",
    ]
    results = {
        "design": DESIGN.__dict__,
        "quick": a.quick,
        "steps": steps,
        "seeds": seeds,
        "modes": {m: MODES[m] for m in modes},
        "staleness": a.staleness,
        "partial": a.partial,
        "async_extra": a.async_extra,
        "extra": a.extra,
        "before": before,
        "target": target,
        "decision": decision,
        "steps_per_min": {m: artifact_.timing(v) for m, v in spm.items()},
        "steps_per_min_vs_sync": vs_sync,
        "time_to_target_s": ttt,
        "ratio_time_to_target": ratio_ttt,
        "k0_identical": k0,
        "components_s": comp,
        "ceiling_steps_per_min_vs_sync": ceiling,
        "runs": runs,
    }
    artifact_.publish("async_rl", lines, results, out=out_dir / "async_rl.md", argv=argv, started=started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
