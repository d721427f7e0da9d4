"""Shared pieces of the toy RL benchmarks (``vs_trl.py``, ``algorithms_toy.py``).

Both benchmarks start every run from the same SFT checkpoint of the default CPU demo
(``archer/recipes/tiny_math.yaml``: a tiny Qwen2 model and tokenizer built on the spot, SFT-warmed on
imperfect worked solutions of synthetic arithmetic), and judge every run with the same held-out
evaluation (``archer.eval.runner.evaluate`` over an ``HFEngine``, fixed seed and sampling settings).

- :func:`toy_config` loads the recipe with its own settings (task generator, noisy SFT warm-up, lr and
  warm-up, steps, batch) plus dotted overrides: only 1 torch thread (:data:`BENCH_OVERRIDES`) and
  whatever a comparison changes; quick mode cuts the SFT warm-up and the evaluation.
- :func:`sft_checkpoint` builds the SFT model once and caches it under ``runs/bench_cache/<hash>``
  (``runs/`` is git-ignored); the hash covers the config sections that shape the model (``model``,
  ``data``, ``trainer.seed``) and the code version (:func:`code_version`), so a changed recipe or a
  changed archer rebuilds it.
- :func:`rl_run` is one RL run from that checkpoint, or its saved result when every setting of the
  resolved config, the checkpoint and the code version match (:func:`run_key`).
- :func:`load_policy` returns a fresh copy (model, tokenizer) of that checkpoint for each run.
- :func:`evaluate_model` is the shared held-out evaluation (avg@k, pass@k).

Limits: single process, CPU; timings on a shared machine are noisy (see ``machine_note``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# where caches and run folders go: runs/ (git-ignored), or ARCHER_BENCH_RUNS (the test suite sets a
# temporary folder, so tests leave nothing behind in the checkout)
from archer.atomic_json import write_json  # noqa: E402  (the repository is on sys.path now)

RUNS = Path(os.environ.get("ARCHER_BENCH_RUNS") or REPO / "runs")
CACHE = RUNS / "bench_cache"
RESULTS = REPO / "benchmarks" / "results"

# quick (smoke) mode: a much shorter SFT warm-up and a small evaluation
QUICK_OVERRIDES = [
    "model.sft_examples=300",
    "model.sft_epochs=1",
    "data.num_eval=16",
    "eval.n=4",
    "eval.ks=[1,4]",
]


# Logging off, no checkpoints, and 1 torch thread (the recipe's own setting too: on the shared, loaded 2-core
# machine a 2-thread forward+backward of the tiny model measured 3-8x slower than 1 thread). Everything
# else (task generator, SFT warm-up with slip noise, lr 1e-4 with 5 warm-up steps, 60 steps, 16 x 8
# rollouts) comes from the recipe, so the benchmarks compare on the run that `archer train` makes.
BENCH_OVERRIDES = [
    "logging.progress=false",
    "logging.sinks=[]",
    "logging.plots=false",
    "trainer.save_every=0",
    "trainer.save_final=false",
    "trainer.threads=1",
]


def toy_config(overrides: list[str] | None = None, *, quick: bool = False, recipe: str = "tiny_math") -> Any:
    """``recipe`` (default: the demo's), :data:`BENCH_OVERRIDES`, then ``overrides`` (quick mode adds
    :data:`QUICK_OVERRIDES` before them)."""
    from archer.config import load_config

    extra = (QUICK_OVERRIDES if quick else []) + list(overrides or [])
    return load_config(recipe, BENCH_OVERRIDES + extra)


@functools.cache
def code_version() -> str:
    """SHA-256 of archer's source and bundled recipes: a cached result is reused only by the code that
    made it (a changed loss, sampler or recipe file is a new key)."""
    h = hashlib.sha256()
    for p in sorted((REPO / "archer").rglob("*")):
        if p.suffix in (".py", ".yaml", ".jinja") and p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def run_key(cfg: Any, *parts: Any) -> str:
    """What a cached run must match: every setting of the resolved config (so the recipe file's contents,
    not only its name), the code version, and ``parts`` (the SFT checkpoint it starts from)."""
    blob = {"config": cfg.to_dict(), "code": code_version(), "parts": [str(p) for p in parts]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _policy_key(cfg: Any) -> str:
    d = cfg.to_dict()
    blob = {"model": d["model"], "data": d["data"], "seed": d["trainer"]["seed"], "code": code_version()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def sft_checkpoint(cfg: Any, log=print) -> tuple[Path, dict[str, Any]]:
    """Path of the cached SFT checkpoint for ``cfg`` (built on first use) and its SFT info."""
    from archer.rl.setup import build_policy
    from archer.tasks.problems import load_problems

    path = CACHE / _policy_key(cfg)
    info_file = path / "sft_info.json"
    if info_file.is_file():
        return path, json.loads(info_file.read_text())
    train, _ = load_problems(cfg)
    t0 = time.time()
    model, tok, info = build_policy(cfg, train, log)
    info = dict(info, seconds=round(time.time() - t0, 1))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    info_file.write_text(json.dumps(info, indent=2))
    return path, info


def load_policy(path: Path) -> tuple[Any, Any]:
    """A fresh float32 copy of the checkpoint at ``path`` (model in train mode) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.train()
    return model, tok


def problems(cfg: Any) -> tuple[list[Any], list[Any]]:
    """(train, held-out eval) problems of the recipe (``data.num_eval`` held-out ones)."""
    from archer.tasks.problems import load_problems

    train, evals = load_problems(cfg)
    return train, evals


def evaluate_model(model: Any, tokenizer: Any, eval_problems: list[Any], cfg: Any, seed: int = 1234) -> dict:
    """The shared held-out evaluation: ``eval.n`` samples per problem at the recipe's eval sampling."""
    from archer.eval.runner import evaluate
    from archer.rollout.hf import HFEngine

    e = cfg.eval
    engine = HFEngine(model, tokenizer, device="cpu")
    t0 = time.time()
    out = evaluate(
        engine,
        tokenizer,
        eval_problems,
        n=e.n,
        ks=e.ks,
        temperature=e.temperature,
        top_p=e.top_p,
        max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens,
        seed=seed,
        template=cfg.data.prompt_template,
        batch_size=16,
    )
    out.pop("records", None)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def metric_keys(cfg: Any) -> list[str]:
    """avg@K (mean accuracy of the samples) and pass@K for the largest K of ``eval.ks``."""
    k = max(cfg.eval.ks)
    return [f"avg@{k}", f"pass@{k}"]


def machine_note() -> str:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, torch {torch.__version__}; load average at the end "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} ("
        + (
            "above the benchmark's own ~1: other processes shared the cores, so absolute times are noisy; "
            if load[0] > 1.5
            else "about the benchmark's own; "
        )
        + "both sides of a comparison ran back to back)."
    )


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def study_dirs(tag: str, quick: bool, out_dir: str | None, fresh: bool) -> tuple[Path, Path]:
    """(output folder, run cache) of a study: ``--out-dir``, else ``benchmarks/results`` (quick:
    ``runs/bench_logs/<tag>_quick``); finished runs live in ``runs/bench_logs/<tag>[_quick]``, whose
    results ``fresh`` deletes."""
    name = f"{tag}_quick" if quick else tag
    cache = RUNS / "bench_logs" / name
    out = Path(out_dir) if out_dir else (cache if quick else RESULTS)
    for d in (out, cache):
        d.mkdir(parents=True, exist_ok=True)
    if fresh:
        for f in cache.glob("*.json"):
            f.unlink()
    return out, cache


def heldout_curve(out: dict[str, Any], k: int) -> dict[str, list[Any]]:
    """A run's held-out avg@k / pass@k at step 0 (before), every ``eval.every`` steps and the end."""
    hist = out["history"]
    ev = (
        [(0, out["before"])]
        + [
            (h["step"], {m: h[f"eval/{m}"] for m in (f"avg@{k}", f"pass@{k}")})
            for h in hist
            if f"eval/avg@{k}" in h
        ]
        + [(len(hist), out["after"])]
    )
    return {
        "eval_steps": [s for s, _ in ev],
        "avg_at_k": [e.get(f"avg@{k}") for _, e in ev],
        "pass_at_k": [e.get(f"pass@{k}") for _, e in ev],
    }


def mean_curve(runs: list[dict[str, Any]], key: str) -> list[float | None]:
    """Per-step mean over seeds of ``run[key]``, skipping missing (None) and NaN values; None where no
    run has a value."""
    out: list[float | None] = []
    for i in range(max(len(r[key]) for r in runs)):
        vals = [
            r[key][i] for r in runs if i < len(r[key]) and r[key][i] is not None and r[key][i] == r[key][i]
        ]
        out.append(statistics.mean(vals) if vals else None)
    return out


def rl_run(
    label: str,
    cfg: Any,
    ckpt: Path,
    train: list[Any],
    evals: list[Any],
    cache: Path,
    summarize: Callable[[dict[str, Any], Any, Any], dict[str, Any]],
    step_hook: Callable[[int, dict[str, Any], Any, Any], None] | None = None,
    **train_kw: Any,
) -> dict[str, Any]:
    """One RL run of ``cfg`` from a fresh copy of the SFT checkpoint ``ckpt``, summarised by
    ``summarize(out, model, tokenizer)`` and saved as ``cache/<label>.json`` (with its key and wall
    time); a saved result is returned instead when its key (:func:`run_key`) matches. ``train_kw`` go
    to :func:`archer.rl.loop.train` (a scorer, ``on_step``); ``step_hook(step, metrics, model, tokenizer)``,
    when given, runs after every step with the policy being trained (for measurements that need it)."""
    from archer.rl.loop import train as rl_train

    key = run_key(cfg, ckpt)
    f = cache / f"{label}.json"
    if (old := cached(f, key, label)) is not None:
        return old
    model, tok = load_policy(ckpt)
    if step_hook is not None:
        train_kw["on_step"] = lambda step, metrics: step_hook(step, metrics, model, tok)
    t0 = time.time()
    out = rl_train(
        cfg,
        run_dir=cache / f"run_{label}",
        model=model,
        tokenizer=tok,
        train_problems=train,
        eval_problems=evals,
        **train_kw,
    )
    res = {"key": key, "wall": time.time() - t0, **summarize(out, model, tok)}
    write_json(f, res)  # written whole, then renamed: a kill never leaves half a result
    return res


def cached(path: Path, key: str, label: str) -> dict[str, Any] | None:
    """A result saved earlier for exactly this configuration (``key`` stored in it), else None."""
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("key") == key:
            print(f"{label}: reusing {path}", flush=True)
            return old
    return None


# two-sided 95% t quantiles by degrees of freedom (a normal 1.96 beyond the table)
_T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t95(df: int) -> float:
    """Two-sided 95% t quantile for ``df`` degrees of freedom: the table's, or the nearest tabled df
    below it (a slightly wider interval, never a narrower one); 1.96 is never used below df 120."""
    if df < 1:
        return float("nan")
    return _T95[max(k for k in _T95 if k <= df)]


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of a 95% t-interval; (mean, nan, nan) for fewer than 2 values."""
    vals = [v for v in values if v == v]
    if not vals:
        return float("nan"), float("nan"), float("nan")
    m = statistics.mean(vals)
    if len(vals) < 2:
        return m, float("nan"), float("nan")
    half = t95(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return m, m - half, m + half


def clustered_mean_ci(values: list[float], clusters: list[Any]) -> dict[str, float]:
    """Mean of per-item ``values`` with a 95% interval that respects their clustering (items of one
    cluster, e.g. the pairs of one problem, are not independent): the cluster-robust (sandwich) variance
    of the mean, ``C/(C-1) * sum_c (sum_{i in c} (y_i - mean))^2 / N^2``, with a t quantile on C-1
    degrees of freedom. With one item per cluster it is the ordinary t-interval. Fewer than 2
    clusters: no interval (nan)."""
    if len(values) != len(clusters):
        raise ValueError(f"{len(values)} values for {len(clusters)} cluster labels")
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0, "clusters": 0}
    m = sum(values) / n
    resid: dict[Any, float] = {}
    for v, c in zip(values, clusters):
        resid[c] = resid.get(c, 0.0) + (v - m)
    C = len(resid)
    out = {"mean": m, "n": n, "clusters": C, "low": float("nan"), "high": float("nan")}
    if C < 2:
        return out
    se = math.sqrt(C / (C - 1) * sum(e * e for e in resid.values()) / (n * n))
    half = t95(C - 1) * se
    return dict(out, low=m - half, high=m + half, se=se)


# ----------------------------------------------------------------- inference with three outcomes

# one-sided t quantiles at 0.80 (power 80%) by degrees of freedom (the normal 0.8416 beyond the table)
_T80 = {1: 1.376, 2: 1.061, 3: 0.978, 4: 0.941, 5: 0.920, 6: 0.906, 7: 0.896, 8: 0.889, 9: 0.883, 10: 0.879}
_T80.update({15: 0.866, 20: 0.860, 30: 0.854})
OUTCOMES = ("effect", "no effect larger than the margin", "inconclusive")


@dataclasses.dataclass(frozen=True)
class StudyDesign:
    """What a study declares before it runs: its question, the one primary measure the verdict is
    about (a paired difference, with its unit), the equivalence margin (effects smaller than it do not
    matter for the question), the seeds, and the secondary measures (reported, never the verdict)."""

    question: str
    primary: str
    unit: str
    margin: float
    seeds: tuple[int, ...]
    secondary: tuple[str, ...] = ()


def _quantile(table: dict[int, float], df: int, beyond: float) -> float:
    """The table's quantile at ``df``, or at the nearest tabled df below it (conservative)."""
    below = [k for k in table if k <= df]
    return table[max(below)] if below else beyond


def decide(diffs: list[float], margin: float) -> dict[str, Any]:
    """The verdict on paired differences ``diffs`` by rules fixed in advance:

    - ``effect``: the 95% t-interval excludes 0;
    - ``no effect larger than the margin``: the interval lies inside (-margin, +margin);
    - ``inconclusive``: neither (the interval contains 0 and reaches beyond the margin).

    ``mde`` is the smallest effect this design could detect (two-sided 5%, power 80%) at the observed
    spread: (t_0.975 + t_0.80) x s.e.; an inconclusive verdict with ``mde > margin`` is underpowered.
    Fewer than 2 finite values: ``inconclusive`` with no interval."""
    vals = [v for v in diffs if v == v]
    m, lo, hi = mean_ci(vals)
    out: dict[str, Any] = {"n": len(vals), "mean": m, "low": lo, "high": hi, "margin": margin}
    if len(vals) < 2 or lo != lo:
        return dict(out, verdict="inconclusive", mde=float("nan"), underpowered=True)
    df = len(vals) - 1
    se = statistics.stdev(vals) / math.sqrt(len(vals))
    mde = (_quantile(_T95, df, 1.96) + _quantile(_T80, df, 0.8416)) * se
    if lo > 0 or hi < 0:
        verdict = "effect"
    elif -margin < lo and hi < margin:
        verdict = "no effect larger than the margin"
    else:
        verdict = "inconclusive"
    return dict(out, verdict=verdict, mde=mde, underpowered=verdict == "inconclusive" and mde > margin)


def describe(decision: dict[str, Any], design: StudyDesign) -> str:
    """One sentence: the verdict word the rules returned, the interval, the margin and the MDE."""
    d = decision
    ci = (
        f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        if d["low"] == d["low"]
        else f"{d['mean']:+.4f}"
    )
    power = (
        " (underpowered: the design cannot detect an effect of the margin's size)"
        if d["underpowered"]
        else ""
    )
    return (
        f"{d['verdict'].upper()}{power}. Primary measure, declared in advance: {design.primary} = {ci} {design.unit} "
        f"over {d['n']} seeds; margin +/-{design.margin:g} {design.unit}; smallest detectable effect "
        f"{d['mde']:.4f} {design.unit} (5% two-sided, 80% power, at the observed spread)."
    )
