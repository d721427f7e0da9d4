"""Evaluation inside a run: avg@k and pass@k of the current policy on held-out problems.

The run evaluates through :func:`archer.eval.runner.evaluate`, the same path as ``archer eval``, with
the run's engine, the ``eval.*`` sampling settings and a fixed seed (the same before and after RL, so
both evaluations see the same random numbers; all problems are sampled in one engine call), and the
run's scorer, so a broken verifier counts as wrong, never as a crash. Metrics are the runner's
summary (unbiased pass@k of Chen et al. 2021) without the per-problem records, but with each problem's
accuracy (``per_problem_avg``), from which :func:`improvement` gives the paired standard error of the
change.

Same measurement: each evaluation records how it measured (``measurement``: the problems, n, k,
temperature, top-p, response budget, seed, prompt template and engine), and :func:`improvement`
refuses to compare two evaluations that measured differently (:class:`MeasurementMismatch`), so a
before/after change is never an artefact of a changed setting.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import torch

from archer.config import Config
from archer.eval.metrics import paired_standard_error
from archer.eval.runner import evaluate
from archer.rewards.types import Scorer, safe_score


def evaluate_policy(
    engine: Any,
    tokenizer: Any,
    scorer: Scorer,
    problems: list[Any],
    cfg: Config,
    max_new_tokens: int,
    seed: int,
) -> dict[str, Any]:
    """avg@k and pass@k of the current policy on held-out problems (``eval.*`` sampling settings)."""

    e = cfg.eval
    t0 = time.time()
    with torch.no_grad():  # the engine switches to eval mode itself
        out = evaluate(
            engine,
            tokenizer,
            problems,
            n=e.n,
            ks=e.ks,
            temperature=e.temperature,
            top_p=e.top_p,
            max_new_tokens=e.max_new_tokens or max_new_tokens,
            seed=seed,
            template=cfg.data.prompt_template,
            batch_size=max(len(problems), 1),
            score_fn=lambda responses, probs: safe_score(scorer, responses, probs),
            stop=tuple(cfg.rollout.stop),
        )
    # per-problem accuracy, in the problems' order: the paired error of a before/after improvement
    out["per_problem_avg"] = [r["num_correct"] / r["n"] for r in out.pop("records", [])]
    out.pop("ks", None)
    out["seconds"] = round(time.time() - t0, 2)
    out["measurement"] = measurement(engine, problems, cfg, e.max_new_tokens or max_new_tokens, seed)
    return out


class MeasurementMismatch(ValueError):
    """Two evaluations to be compared measured differently."""


def measurement(
    engine: Any, problems: list[Any], cfg: Config, max_new_tokens: int, seed: int
) -> dict[str, Any]:
    """What an evaluation's numbers depend on besides the policy: two evaluations compare only when
    these are equal."""
    e = cfg.eval
    ids = "\n".join(str(getattr(p, "id", i)) for i, p in enumerate(problems))
    return {
        "problems": hashlib.sha256(ids.encode()).hexdigest()[:16],
        "num_problems": len(problems),
        "n": e.n,
        "ks": list(e.ks),
        "temperature": e.temperature,
        "top_p": e.top_p,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "template": cfg.data.prompt_template,
        "engine": type(engine).__name__,
    }


def headline_metric(key: str) -> bool:
    """The evaluation numbers a run logs, prints and compares: avg@k, pass@k, and the tool-use rate of
    a tool run (``rollout.tools``)."""
    return "@" in key or key in ("tool_use_rate", "tool_calls_per_response")


def improvement(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """``after - before`` for every :func:`headline_metric`, plus ``avg_se``: the paired standard error
    of the avg@k change over the same problems (absent when the two evaluations' problems differ).
    Raises :class:`MeasurementMismatch` when both record how they measured and it differs."""
    mb, ma = before.get("measurement"), after.get("measurement")
    if mb is not None and ma is not None and mb != ma:
        changed = sorted(k for k in set(mb) | set(ma) if mb.get(k) != ma.get(k))
        raise MeasurementMismatch(
            f"the evaluations before and after measured differently ({', '.join(changed)}): "
            + "; ".join(f"{k}: {mb.get(k)!r} -> {ma.get(k)!r}" for k in changed)
        )
    out = {k: after[k] - before[k] for k in after if headline_metric(k) and k in before}
    a, b = after.get("per_problem_avg"), before.get("per_problem_avg")
    if a is not None and b is not None and len(a) == len(b):
        out["avg_se"] = paired_standard_error(b, a)
    return out
