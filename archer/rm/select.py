"""Best-of-N selection by a reward model (AceCoder's test-time use of AceCode-RM, arXiv:2502.01718 Sec. 3.2).

For each problem of an evaluation directory, the reward model scores every generated response and the
highest-scoring one is "the answer" (the first on a tie); its verdict from ``results.jsonl`` (the rule
verifier's) decides whether the problem is solved. Reported next to the two bounds the selection lies
between: ``mean_accuracy`` (avg@1: a random pick) and ``oracle`` (pass@N: any correct response).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archer.data.formats import save_rows
from archer.data.schema import Problem
from archer.eval import store
from archer.models.reward_model import RewardModel


def best_of_n(
    results: Sequence[dict[str, Any]],
    generations: dict[str, dict[str, Any]],
    problems_by_id: dict[str, Problem],
    rm: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, one row per problem with the pick) for ``results`` rows that have generations."""
    rows = [r for r in results if r["id"] in generations and r.get("samples")]
    prompts, responses, owner = [], [], []
    for k, r in enumerate(rows):
        texts = generations[r["id"]]["responses"][: len(r["samples"])]
        prompts += [problems_by_id[r["id"]].prompt] * len(texts)
        responses += list(texts)
        owner += [k] * len(texts)
    scores = rm.score(prompts, responses) if responses else []
    per: list[list[float]] = [[] for _ in rows]
    for k, s in zip(owner, scores):
        per[k].append(float(s))
    picks = []
    for r, sc in zip(rows, per):
        best = max(range(len(sc)), key=lambda i: (sc[i], -i))
        picks.append(
            {
                "id": r["id"],
                "pick": best,
                "correct": bool(r["samples"][best]["correct"]),
                "rm_scores": sc,
                "verdicts": [bool(s["correct"]) for s in r["samples"][: len(sc)]],
            }
        )
    n = max(len(picks), 1)
    summary = {
        "problems": len(picks),
        "accuracy": sum(p["correct"] for p in picks) / n,
        "mean_accuracy": sum(sum(p["verdicts"]) / max(len(p["verdicts"]), 1) for p in picks) / n,
        "oracle": sum(any(p["verdicts"]) for p in picks) / n,
    }
    return summary, picks


def best_of_n_dir(
    out_dir: str | Path, problems: Sequence[Problem], rm_dir: str, device: str = "cpu"
) -> dict[str, Any]:
    """Best-of-N over an ``archer eval`` directory; writes ``rm_best_of_n.jsonl`` (atomically)."""

    out = Path(out_dir)
    by_id = {p.id: p for p in problems}
    gens = {g["id"]: g for g in store.read_jsonl(out / store.GENERATIONS) if g.get("id") in by_id}
    results = [r for r in store.read_jsonl(out / store.RESULTS) if r.get("id") in by_id]
    summary, picks = best_of_n(results, gens, by_id, RewardModel(rm_dir, device))
    save_rows(picks, out / "rm_best_of_n.jsonl")
    return {"model": str(rm_dir), **summary}
