"""Evaluation: pass@k / avg@k metrics, the generate-then-score runner, and the checkpoint watcher.

``from archer.eval import pass_at_k, avg_at_k`` is cheap (no torch); the runner (which needs an
engine) is imported on first use of :func:`evaluate`.
"""

from __future__ import annotations

from typing import Any

from archer.eval.metrics import aggregate, avg_at_k, pass_at_k, pass_at_k_exact, per_problem_metrics

__all__ = ["aggregate", "avg_at_k", "evaluate", "pass_at_k", "pass_at_k_exact", "per_problem_metrics"]


def __getattr__(name: str) -> Any:
    # lazy: the runner pulls in the reward registry and (through the engine) torch
    if name == "evaluate":
        from archer.eval.runner import evaluate

        return evaluate
    raise AttributeError(f"module 'archer.eval' has no attribute {name!r}")
