"""PNG curves of a run from its ``metrics.jsonl`` (matplotlib, Agg backend, no display needed).

One figure per panel in ``PANELS`` (only metrics present in the log are drawn) plus ``overview.png``
with all of them as subplots. Missing or non-numeric values are skipped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from archer.train.logging import read_metrics

# file stem -> (title, [metric keys drawn on it])
PANELS: dict[str, tuple[str, list[str]]] = {
    "reward": ("Reward", ["reward/mean", "reward/accuracy"]),
    "entropy": ("Policy entropy", ["actor/entropy"]),
    "response_length": ("Response length (tokens)", ["response/length_mean"]),
    "clip": ("Clip fractions", ["actor/clip_frac", "actor/clip_frac_pos_upper", "actor/clip_frac_neg_lower",
                                "actor/dual_clip_frac"]),
    "grad_norm": ("Gradient norm", ["actor/grad_norm"]),
    "kl": ("KL to reference", ["actor/kl"]),
    "eval": ("Evaluation", ["eval/avg@1", "eval/pass@1"]),
    "time": ("Time per step (s)", ["time/generate", "time/reward", "time/train"]),
}


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
        fig, ax = plt.subplots(figsize=(5, 3.2))
        _draw(ax, title, lines)
        fig.tight_layout()
        target = out_dir / f"{stem}.png"
        fig.savefig(target, dpi=90)
        plt.close(fig)
        written.append(target)
    if drawn:
        cols = 3
        rows_n = math.ceil(len(drawn) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.2 * rows_n), squeeze=False)
        for ax, (_stem, title, lines) in zip(axes.flat, drawn):
            _draw(ax, title, lines)
        for ax in list(axes.flat)[len(drawn):]:
            ax.axis("off")
        fig.tight_layout()
        target = out_dir / "overview.png"
        fig.savefig(target, dpi=80)
        plt.close(fig)
        written.append(target)
    return written


def _draw(ax: Any, title: str, lines: list[tuple[str, list[float], list[float]]]) -> None:
    for key, xs, ys in lines:
        ax.plot(xs, ys, marker="o" if len(xs) < 3 else None, label=key, linewidth=1.2)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend(fontsize=7)
