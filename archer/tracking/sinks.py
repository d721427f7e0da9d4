"""Metric sinks for a run directory: ``metrics.jsonl`` (always), optional loggers, a rich progress bar.

``metrics.jsonl`` holds one JSON object per step (``{"step": s, "time": t, ...}``), flushed every
line so that a killed run keeps everything up to its last step; on resume, lines after the resumed
step are dropped (those steps are redone). It and ``plots/`` (``archer.tracking.plots``) need nothing
beyond the base install.

Optional loggers form a registry, :data:`SINKS` (name -> :class:`Sink` factory), chosen by
``logging.sinks`` (``[tensorboard, wandb, mlflow, trackio]``; default ``[tensorboard]``). Each is a pip extra: ``pip install 'archer[mlflow]'``.
A sink whose package is missing is reported once with that install hint and skipped, never fatal;
numeric metrics go to every open sink at the run's step. Settings: ``logging.wandb_project``,
``logging.mlflow_tracking_uri`` / ``mlflow_experiment`` (default: MLflow's own, ``./mlruns``),
``logging.trackio_project``; the run name is the run folder's name. Add a sink with
:func:`register_sink`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS_KEYS = (
    ("reward", "reward/mean"),
    ("acc", "reward/accuracy"),
    ("ent", "actor/entropy"),
    ("s/step", "time/step"),
)


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


class Sink:
    """An open optional logger: ``log(numeric_metrics, step)`` and ``close()``."""

    def log(self, metrics: dict[str, float], step: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _TensorBoard(Sink):
    def __init__(self, run_dir: Path, settings: dict[str, Any], config: dict[str, Any]) -> None:
        import tensorboard  # noqa: F401  (torch's SummaryWriter needs the tensorboard package)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb(Sink):
    def __init__(self, run_dir: Path, settings: dict[str, Any], config: dict[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=settings.get("wandb_project") or "archer",
            dir=str(run_dir),
            config=config,
            name=run_dir.name,
            resume="allow",
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.wandb.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


_MLFLOW_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def mlflow_key(key: str) -> str:
    """MLflow allows letters, digits, ``_-. /`` in names: ``eval/avg@8`` -> ``eval/avg_at_8``."""
    return _MLFLOW_BAD.sub("_", key.replace("@", "_at_"))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _MLflow(Sink):
    def __init__(self, run_dir: Path, settings: dict[str, Any], config: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        if settings.get("mlflow_tracking_uri"):
            mlflow.set_tracking_uri(settings["mlflow_tracking_uri"])
        mlflow.set_experiment(settings.get("mlflow_experiment") or "archer")
        self.run = mlflow.start_run(run_name=run_dir.name)
        params = {mlflow_key(k): str(v)[:250] for k, v in _flatten(config).items()}
        if params:
            mlflow.log_params(params)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({mlflow_key(k): v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class _Trackio(Sink):
    def __init__(self, run_dir: Path, settings: dict[str, Any], config: dict[str, Any]) -> None:
        import trackio

        self.trackio = trackio
        trackio.init(project=settings.get("trackio_project") or "archer", name=run_dir.name, config=config)

    def log(self, metrics: dict[str, float], step: int) -> None:
        try:
            self.trackio.log(metrics, step=step)
        except TypeError:  # an older trackio without step=: it counts calls, one per logged step
            self.trackio.log(metrics)

    def close(self) -> None:
        self.trackio.finish()


# name -> (factory(run_dir, logging settings, run config) -> Sink, pip extra that provides it)
SINKS: dict[str, tuple[Callable[[Path, dict[str, Any], dict[str, Any]], Sink], str]] = {
    "tensorboard": (_TensorBoard, "tensorboard"),
    "wandb": (_Wandb, "wandb"),
    "mlflow": (_MLflow, "mlflow"),
    "trackio": (_Trackio, "trackio"),
}


def register_sink(
    name: str, factory: Callable[[Path, dict[str, Any], dict[str, Any]], Sink], extra: str = ""
) -> None:
    """Make ``logging.sinks=[name]`` open ``factory(run_dir, logging_settings, config)``."""
    SINKS[name] = (factory, extra)


def install_hint(name: str) -> str:
    extra = SINKS[name][1] if name in SINKS else ""
    return f"pip install 'archer[{extra}]'" if extra else "see its documentation"


class MetricsLogger:
    """Writes step metrics to every configured sink and drives the progress bar."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
        config: dict[str, Any] | None = None,
        sinks: list[str] | None = None,
    ) -> None:
        """``sinks`` defaults to ``config["logging"]["sinks"]`` (none without a config)."""
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        truncate_metrics(self.path, start_step)
        self._fh = open(self.path, "a")
        self.notes: list[str] = []
        config = config or {}
        settings = dict(config.get("logging") or {})
        settings.setdefault("wandb_project", "archer")
        if sinks is None:
            sinks = list(dict.fromkeys(settings.get("sinks") or []))
        self.sinks: dict[str, Sink] = {}
        for name in sinks:
            self._open_sink(name, settings, config)
        self._progress = None
        self._task = None
        if progress:
            self._open_progress(total_steps, start_step)

    def _open_sink(self, name: str, settings: dict[str, Any], config: dict[str, Any]) -> None:
        if name not in SINKS:
            self.notes.append(f"logging.sinks: unknown sink {name!r}; known: {sorted(SINKS)}")
            return
        try:
            self.sinks[name] = SINKS[name][0](self.run_dir, settings, config)
        except ImportError as exc:
            self.notes.append(
                f"{name}: not installed ({install_hint(name)}); skipped, metrics.jsonl and "
                f"plots/ are written anyway [{exc}]"
            )
        except Exception as exc:  # a sink failing to start (no server, bad URI) never ends the run
            self.notes.append(f"{name}: could not start ({type(exc).__name__}: {exc}); skipped")

    def _open_progress(self, total: int, start: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]RL"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=start, info="")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": time.time(), **{k: _clean(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        numeric = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        }
        for name, sink in list(self.sinks.items()):
            try:
                sink.log(numeric, step)
            except Exception as exc:  # a sink that breaks mid-run is dropped, the run goes on
                self.notes.append(f"{name}: logging failed ({type(exc).__name__}: {exc}); dropped")
                self.message(self.notes[-1])
                del self.sinks[name]
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
        for sink in self.sinks.values():
            try:
                sink.close()
            except Exception:
                pass
        self.sinks = {}
        if not self._fh.closed:
            self._fh.close()
