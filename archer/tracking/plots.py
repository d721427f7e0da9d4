"""PNG curves of a run from its ``metrics.jsonl`` (matplotlib, Agg backend, no display needed).

One figure per panel in ``PANELS`` (only metrics present in the log are drawn) plus ``overview.png``
with all of them as subplots. Missing or non-numeric values are skipped.

Made to go into a report as they are: each figure is titled with the panel and the run name (the run
folder's name), both axes are labelled (x: RL step, integer ticks), every series has its own colour,
line style and marker so that overlapping series (e.g. clip fractions all at 0) stay visible, and
sparse series (periodic evaluation, logged every ``eval.every`` steps plus before and after training)
are drawn as connected points. Panel figures are 6.4 x 4 inches at 120 dpi.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from archer.tracking.sinks import read_metrics

# file stem -> (title, [metric keys drawn on it])
PANELS: dict[str, tuple[str, list[str]]] = {
    "reward": ("Reward", ["reward/mean", "reward/accuracy"]),
    "entropy": ("Policy entropy", ["actor/entropy"]),
    "response_length": ("Response length (tokens)", ["response/length_mean"]),
    "clip": (
        "Clip fractions",
        ["actor/clip_frac", "actor/clip_frac_pos_upper", "actor/clip_frac_neg_lower", "actor/dual_clip_frac"],
    ),
    "grad_norm": ("Gradient norm", ["actor/grad_norm"]),
    "kl": ("KL to reference", ["actor/kl"]),
    "eval": ("Evaluation", ["eval/avg@1", "eval/pass@1"]),
    "time": ("Time per step (s)", ["time/generate", "time/reward", "time/train"]),
}
# file stem -> y-axis label
YLABELS: dict[str, str] = {
    "reward": "reward / accuracy",
    "entropy": "entropy (nats/token)",
    "response_length": "tokens",
    "clip": "fraction of tokens",
    "grad_norm": "global L2 norm",
    "kl": "KL (nats/token)",
    "eval": "score",
    "time": "seconds",
}
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SIZE, DPI = (6.4, 4.0), 120


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(row.get("step", len(xs)))
            ys.append(float(v))
    return xs, ys


def plot_run(run_dir: str | Path) -> list[Path]:
    """Draw the panels for ``run_dir/metrics.jsonl`` into ``run_dir/plots/``; returns written files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = read_metrics(path)
    run_name = run_dir.resolve().name
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    drawn: list[tuple[str, str, list[tuple[str, list[float], list[float]]]]] = []
    for stem, (title, keys) in PANELS.items():
        lines = [(k, *_series(rows, k)) for k in keys]
        # eval keys depend on the configured k: pick up every eval/avg@K and eval/pass@K
        if stem == "eval":
            eval_keys = sorted({k for r in rows for k in r if k.startswith("eval/")})
            lines = [(k, *_series(rows, k)) for k in eval_keys]
        lines = [ln for ln in lines if ln[1]]
        if lines:
            drawn.append((stem, title, lines))
    written = []
    for stem, title, lines in drawn:
        fig, ax = plt.subplots(figsize=SIZE)
        _draw(ax, f"{title} - {run_name}", lines, YLABELS.get(stem, ""))
        fig.tight_layout()
        target = out_dir / f"{stem}.png"
        fig.savefig(target, dpi=DPI)
        plt.close(fig)
        written.append(target)
    if drawn:
        cols = 3
        rows_n = math.ceil(len(drawn) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.4 * rows_n), squeeze=False)
        for ax, (stem, title, lines) in zip(axes.flat, drawn):
            _draw(ax, title, lines, YLABELS.get(stem, ""))
        for ax in list(axes.flat)[len(drawn) :]:
            ax.axis("off")
        fig.suptitle(run_name)
        fig.tight_layout()
        target = out_dir / "overview.png"
        fig.savefig(target, dpi=100)
        plt.close(fig)
        written.append(target)
    return written


def _sparse(xs: list[float]) -> bool:
    """Logged at only some steps (periodic evaluation) or too few points to see a line."""
    if len(xs) < 8:
        return True
    return len(xs) <= (max(xs) - min(xs) + 1) / 2


def _draw(ax: Any, title: str, lines: list[tuple[str, list[float], list[float]]], ylabel: str = "") -> None:
    from matplotlib.ticker import MaxNLocator

    for i, (key, xs, ys) in enumerate(lines):
        marker = _MARKERS[i % len(_MARKERS)]
        sparse = _sparse(xs)
        # later series are drawn thinner, with smaller markers, on top, each with its own style and
        # marker, so that identical series (all at 0, say) stay visible as rings around each other
        ax.plot(
            xs,
            ys,
            linestyle=_STYLES[i % len(_STYLES)],
            linewidth=max(2.0 - 0.4 * i, 0.8),
            marker=marker,
            markersize=max((8.0 if sparse else 5.0) - 1.5 * i, 2.5),
            markevery=None if sparse else max(len(xs) // 12, 1),
            label=key,
            zorder=2 + i,
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("RL step")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
