"""Metric sinks for a run directory: ``metrics.jsonl`` (always), TensorBoard, W&B, a rich progress bar.

``metrics.jsonl`` holds one JSON object per step (``{"step": s, "time": t, ...}``), flushed every
line so that a killed run keeps everything up to its last step; on resume, lines after the resumed
step are dropped (those steps are redone). TensorBoard is used when ``tensorboard`` (or
``torch.utils.tensorboard``'s backend) is importable; W&B only when installed *and* asked for
(``logging.wandb=true``). A missing optional sink is reported once, never fatal.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

PROGRESS_KEYS = (("reward", "reward/mean"), ("acc", "reward/accuracy"), ("ent", "actor/entropy"),
                 ("s/step", "time/step"))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as strings
    return value


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only lines with ``step <= last_step`` (used on resume)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", -1)) <= last_step:
                keep.append(line)
        except (ValueError, json.JSONDecodeError):
            continue  # a torn last line from a kill
    path.write_text("".join(k + "\n" for k in keep))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsLogger:
    """Writes step metrics to every configured sink and drives the progress bar."""

    def __init__(self, run_dir: str | Path, *, total_steps: int, start_step: int = 0,
                 tensorboard: bool = True, wandb: bool = False, wandb_project: str = "archer",
                 progress: bool = True, config: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        truncate_metrics(self.path, start_step)
        self._fh = open(self.path, "a")
        self.notes: list[str] = []
        self._tb = self._open_tensorboard() if tensorboard else None
        self._wandb = self._open_wandb(wandb_project, config) if wandb else None
        self._progress = None
        self._task = None
        if progress:
            self._open_progress(total_steps, start_step)

    def _open_tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as exc:  # tensorboard not installed
            self.notes.append(f"tensorboard disabled: {exc}")
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _open_wandb(self, project: str, config: dict[str, Any] | None) -> Any:
        try:
            import wandb
        except ImportError:
            self.notes.append("wandb requested but not installed (pip install 'archer[wandb]')")
            return None
        return wandb.init(project=project, dir=str(self.run_dir), config=config or {},
                          name=self.run_dir.name, resume="allow")

    def _open_progress(self, total: int, start: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]RL"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=start, info="")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": time.time(), **{k: _clean(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        numeric = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)
        if self._progress is not None:
            info = "  ".join(f"{short} {numeric[key]:.3f}" for short, key in PROGRESS_KEYS if key in numeric)
            self._progress.update(self._task, completed=step, info=info)

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, flush=True)

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self.stop_progress()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if not self._fh.closed:
            self._fh.close()
