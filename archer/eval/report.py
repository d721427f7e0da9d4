"""Printing evaluation summaries as rich tables (plain text when stdout is not a terminal)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def summary_table(summary: dict[str, Any], title: str = "evaluation") -> Any:
    """A rich Table: one row per metric (avg@k, pass@k), one column overall plus one per data source."""
    from rich.table import Table

    ks: Sequence[int] = summary.get("ks", [])
    sources = summary.get("by_source", {})
    table = Table(title=f"{title} ({summary.get('num_problems', 0)} problems)")
    table.add_column("metric")
    table.add_column("all", justify="right")
    for src in sources:
        table.add_column(src, justify="right")
    for k in ks:
        for metric in (f"avg@{k}", f"pass@{k}"):
            cells = [_pct(summary.get(metric))] + [_pct(sources[s].get(metric)) for s in sources]
            table.add_row(metric, *cells)
    return table


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_summary(summary: dict[str, Any], title: str = "evaluation") -> None:
    from rich.console import Console

    console = Console()
    console.print(summary_table(summary, title))
    extra = []
    if summary.get("mean_response_tokens") is not None:
        extra.append(f"mean response tokens {summary['mean_response_tokens']:.1f}")
    if summary.get("truncated_fraction") is not None:
        extra.append(f"truncated {100 * summary['truncated_fraction']:.1f}%")
    if summary.get("missing"):
        extra.append(f"{summary['missing']} problems without generations")
    if summary.get("skipped_k"):
        extra.append(f"k > n skipped: {summary['skipped_k']}")
    if extra:
        console.print(", ".join(extra))
