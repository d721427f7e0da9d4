"""Evaluation inside a run: avg@k and pass@k of the current policy on held-out problems.

The run evaluates through :func:`archer.eval.runner.evaluate`, the same path as ``archer eval``, with
the run's engine, the ``eval.*`` sampling settings and a fixed seed (the same before and after RL, so
both evaluations see the same random numbers; all problems are sampled in one engine call), and the
run's scorer, so a broken verifier counts as wrong, never as a crash. Metrics are the runner's
summary (unbiased pass@k of Chen et al. 2021) without the per-problem records, but with each problem's
accuracy (``per_problem_avg``), from which :func:`improvement` gives the paired standard error of the
change.
"""

from __future__ import annotations

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
    return out


def headline_metric(key: str) -> bool:
    """The evaluation numbers a run logs, prints and compares: avg@k, pass@k, and the tool-use rate of
    a tool run (``rollout.tools``)."""
    return "@" in key or key in ("tool_use_rate", "tool_calls_per_response")


def improvement(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """``after - before`` for every :func:`headline_metric`, plus ``avg_se``: the paired standard error
    of the avg@k change over the same problems (absent when the two evaluations' problems differ)."""

    out = {k: after[k] - before[k] for k in after if headline_metric(k) and k in before}
    a, b = after.get("per_problem_avg"), before.get("per_problem_avg")
    if a is not None and b is not None and len(a) == len(b):
        out["avg_se"] = paired_standard_error(b, a)
    return out
