"""Printing evaluation summaries as rich tables (plain text when stdout is not a terminal), and the
progress line of a running evaluation.

Every accuracy is a fraction in [0, 1] with three decimals, as in ``summary.json`` and the
``archer train`` report (0.412 is 41.2% of the samples correct)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from archer.rewards.code import CODE_OUTCOMES


def summary_table(summary: dict[str, Any], title: str = "evaluation") -> Any:
    """A rich Table: one row per metric (avg@k, pass@k, the standard error of avg, and the verdict mix of
    code samples), one column overall plus one per data source."""
    from rich.table import Table

    ks: Sequence[int] = summary.get("ks", [])
    sources = summary.get("by_source", {})
    table = Table(title=f"{title}: {summary.get('num_problems', 0)} problems", min_width=len(title) + 20)
    table.add_column("metric")
    table.add_column("all", justify="right")
    for src in sources:
        table.add_column(src, justify="right")
    for k in ks:
        for metric in (f"avg@{k}", f"pass@{k}"):
            cells = [_frac(summary.get(metric))] + [_frac(sources[s].get(metric)) for s in sources]
            table.add_row(metric, *cells)
    if summary.get("avg_se") is not None:
        table.add_row(
            "avg s.e.", _frac(summary["avg_se"]), *[_frac(sources[s].get("avg_se")) for s in sources]
        )
    verdicts = summary.get("verdicts") or {}
    for v in CODE_OUTCOMES:  # the code samples' verdict mix, as fractions of code samples
        if verdicts.get(v) or any((sources[s].get("verdicts") or {}).get(v) for s in sources):
            cells = [_frac((sources[s].get("verdicts") or {}).get(v, 0.0)) for s in sources]
            table.add_row(f"code: {v}", _frac(verdicts.get(v, 0.0)), *cells)
    return table


def _frac(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(summary: dict[str, Any], title: str = "evaluation") -> None:
    from rich.console import Console

    console = Console()
    console.print(summary_table(summary, title))
    extra = []
    if summary.get("mean_response_tokens") is not None:
        extra.append(f"mean response tokens {summary['mean_response_tokens']:.1f}")
    if summary.get("truncated_fraction") is not None:
        extra.append(f"truncated fraction {summary['truncated_fraction']:.3f}")
    if summary.get("tool_use_rate") is not None:  # a tool evaluation (--tools)
        extra.append(
            f"tool use rate {summary['tool_use_rate']:.3f} ({summary['tool_calls_per_response']:.2f} calls per response)"
        )
    if summary.get("missing"):
        extra.append(f"{summary['missing']} problems without generations")
    if summary.get("skipped_k"):
        extra.append(f"k > n skipped: {summary['skipped_k']}")
    if extra:
        console.print(", ".join(extra))


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """A progress line on stderr for a long evaluation: problems done, elapsed time, ETA and, when
    :meth:`add_scores` is fed, the running accuracy (fraction of correct samples so far).

    On a terminal the line is redrawn in place; otherwise (a log file, a pipe) a line is printed at
    most every ``every_s`` seconds and at the end, so a 15-minute evaluation is never silent.
    """

    def __init__(
        self,
        total: int,
        *,
        label: str = "generating",
        done: int = 0,
        stream: TextIO | None = None,
        every_s: float = 30.0,
        clock=time.monotonic,
    ) -> None:
        self.total, self.label, self.start_done = total, label, done
        self.done = done
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s, self.clock = every_s, clock
        self.t0 = clock()
        self.last = float("-inf")  # the first batch is always reported
        self.correct = self.samples = 0

    def add_scores(self, correct: int, samples: int) -> None:
        self.correct += correct
        self.samples += samples

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        new = self.done - self.start_done
        eta = elapsed / new * (self.total - self.done) if new > 0 else None
        width = 20
        filled = int(width * self.done / self.total) if self.total else width
        text = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} problems, "
            f"{_clock(elapsed)} elapsed, ETA {_clock(eta) if eta is not None else '?'}"
        )
        if self.samples:
            text += f", accuracy {self.correct / self.samples:.3f} ({self.samples} samples)"
        return text

    def update(self, done: int) -> None:
        self.done = done
        now = self.clock()
        final = done >= self.total
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        elif final or now - self.last >= self.every_s:
            self.stream.write(self.line() + "\n")
        else:
            return
        self.last = now
        self.stream.flush()
