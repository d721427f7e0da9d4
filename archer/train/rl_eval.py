"""Evaluation inside a run: avg@k and pass@k of the current policy on held-out problems.

Generation uses the run's engine with the ``eval.*`` sampling settings and a fixed seed (the same
before and after RL, so both evaluations see the same random numbers); scoring uses the run's scorer,
so a broken verifier counts as wrong, never as a crash. Metrics come from
:func:`archer.eval.metrics.aggregate` (unbiased pass@k of Chen et al. 2021).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from archer.config import Config
from archer.train.scorer import Scorer, safe_score


def evaluate_policy(engine: Any, scorer: Scorer, prompt_ids: list[list[int]], problems: list[Any],
                    cfg: Config, max_new_tokens: int, seed: int) -> dict[str, Any]:
    """avg@k and pass@k of the current policy on held-out problems (``eval.*`` sampling settings)."""
    from archer.eval.metrics import aggregate
    from archer.rollout.base import SamplingParams

    e = cfg.eval
    params = SamplingParams(n=e.n, temperature=e.temperature, top_p=e.top_p,
                            max_new_tokens=e.max_new_tokens or max_new_tokens, seed=seed)
    t0 = time.time()
    with torch.no_grad():
        outs = engine.generate(prompt_ids, params)  # [P][n]; the engine switches to eval mode itself
    texts = [r.text for group in outs for r in group]
    probs = [problems[i] for i, group in enumerate(outs) for _ in group]
    results = safe_score(scorer, texts, probs)
    correct = [[results[i * e.n + j].correct for j in range(e.n)] for i in range(len(outs))]
    out = aggregate(correct, e.ks)
    out.pop("ks", None)
    out["seconds"] = round(time.time() - t0, 2)
    out["mean_length"] = sum(len(r.response_ids) for g in outs for r in g) / max(len(texts), 1)
    return out
