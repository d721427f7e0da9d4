"""Logger registry (TensorBoard / W&B / MLflow / trackio as optional sinks), install hints, config
validation of logging.sinks, and report-ready plots (labels, run name, every series visible)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from archer.config import load_config
from archer.errors import ConfigError
from archer.tracking import sinks as tlog
from archer.tracking.sinks import (
    SINKS,
    MetricsLogger,
    mlflow_key,
    read_metrics,
    register_sink,
)


class _Recorder(tlog.Sink):
    events: list = []

    def __init__(self, run_dir, settings, config):
        self.events.append(("open", run_dir.name, settings.get("sinks"), config.get("recipe")))

    def log(self, metrics, step):
        self.events.append(("log", step, dict(metrics)))

    def close(self):
        self.events.append(("close",))


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setitem(SINKS, "recorder", (_Recorder, ""))
    _Recorder.events = []
    return _Recorder.events


def test_registered_sink_gets_numeric_metrics_at_the_step(tmp_path, recorder):
    config = {"recipe": "tiny_math", "logging": {"sinks": ["recorder"], "tensorboard": False}}
    logger = MetricsLogger(tmp_path, total_steps=2, progress=False, config=config)
    logger.log(1, {"reward/mean": 0.5, "ok": True, "sample": {"prompt": "What is 2+2?"}, "bad": float("nan")})
    logger.close()
    assert recorder == [
        ("open", tmp_path.name, ["recorder"], "tiny_math"),
        ("log", 1, {"reward/mean": 0.5}),
        ("close",),
    ]
    row = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert row["sample"] == {"prompt": "What is 2+2?"} and row["bad"] == "nan"


def test_missing_sink_is_one_note_with_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    monkeypatch.setitem(sys.modules, "trackio", None)
    logger = MetricsLogger(tmp_path, total_steps=1, progress=False, sinks=["mlflow", "trackio"])
    logger.log(1, {"x": 1.0})
    logger.close()
    assert len(logger.notes) == 2
    assert logger.notes[0].startswith(
        "mlflow: not installed (pip install 'archer[mlflow]'); skipped, "
        "metrics.jsonl and plots/ are written anyway"
    )
    assert "pip install 'archer[trackio]'" in logger.notes[1]
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["x"] == 1.0


def test_tensorboard_missing_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    logger = MetricsLogger(tmp_path, total_steps=1, progress=False, sinks=["tensorboard"])
    logger.close()
    assert logger.notes and "pip install 'archer[tensorboard]'" in logger.notes[0]


def test_mlflow_sink_calls(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("mlflow")
    fake.set_tracking_uri = lambda uri: calls.append(("uri", uri))
    fake.set_experiment = lambda name: calls.append(("experiment", name))
    fake.start_run = lambda run_name: calls.append(("start", run_name))
    fake.log_params = lambda params: calls.append(("params", params))
    fake.log_metrics = lambda metrics, step: calls.append(("metrics", metrics, step))
    fake.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    config = {
        "logging": {"mlflow_tracking_uri": "file:///tmp/x", "mlflow_experiment": "exp"},
        "algo": {"loss": "aspo"},
    }
    logger = MetricsLogger(tmp_path, total_steps=1, progress=False, config=config, sinks=["mlflow"])
    logger.log(3, {"eval/avg@8": 0.25})
    logger.close()
    assert calls[:3] == [("uri", "file:///tmp/x"), ("experiment", "exp"), ("start", tmp_path.name)]
    assert calls[3][1]["algo.loss"] == "aspo"
    assert calls[4:] == [("metrics", {"eval/avg_at_8": 0.25}, 3), ("end",)]
    assert mlflow_key("a/b c.d-e_f@1!") == "a/b c.d-e_f_at_1_"


def test_trackio_sink_calls(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("trackio")
    fake.init = lambda project, name, config: calls.append(("init", project, name))
    fake.log = lambda metrics, step: calls.append(("log", metrics, step))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, "trackio", fake)
    logger = MetricsLogger(
        tmp_path,
        total_steps=1,
        progress=False,
        config={"logging": {"sinks": ["trackio"], "trackio_project": "proj"}},
    )
    logger.log(2, {"r": 1.0})
    logger.close()
    assert calls == [("init", "proj", tmp_path.name), ("log", {"r": 1.0}, 2), ("finish",)]


def test_sink_failing_mid_run_is_dropped(tmp_path, monkeypatch):
    class Broken(tlog.Sink):
        def __init__(self, *a):
            pass

        def log(self, metrics, step):
            raise OSError("server gone")

    register_sink("broken_test", Broken)
    try:
        logger = MetricsLogger(tmp_path, total_steps=2, progress=False, sinks=["broken_test"])
        logger.log(1, {"x": 1.0})
        logger.log(2, {"x": 2.0})
        logger.close()
    finally:
        SINKS.pop("broken_test")
    assert logger.notes == ["broken_test: logging failed (OSError: server gone); dropped"]
    assert [r["x"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1.0, 2.0]


def test_sinks_have_one_home():
    """logging.tensorboard / logging.wandb were a second spelling of logging.sinks: now a clear error."""
    assert load_config("tiny_math").logging.sinks == ["tensorboard"]
    for key in ("logging.tensorboard=false", "logging.wandb=true"):
        with pytest.raises(ConfigError, match="moved to logging.sinks"):
            load_config("tiny_math", [key])


def test_config_logging_sinks_validated():
    cfg = load_config(
        "tiny_math", ["logging.sinks=[mlflow, trackio]", "logging.mlflow_tracking_uri=file:///x"]
    )
    assert cfg.logging.sinks == ["mlflow", "trackio"]
    with pytest.raises(ConfigError, match=r"^logging.sinks\[1\]: unknown value 'neptune'"):
        load_config("tiny_math", ["logging.sinks=[wandb, neptune]"])


# ---------------------------------------------------------------------------------------------
# plots


def _write_metrics(run_dir, steps=20, eval_every=5):
    rows = []
    for s in range(1, steps + 1):
        row = {
            "step": s,
            "reward/mean": s / steps,
            "reward/accuracy": s / steps,  # identical series
            "actor/clip_frac": 0.0,
            "actor/clip_frac_pos_upper": 0.0,
            "actor/entropy": 1.0 - s / 40,
        }
        if s % eval_every == 0:
            row["eval/avg@8"] = s / 40
        rows.append(row)
    rows.insert(0, {"step": 0, "eval/avg@8": 0.0, "eval/pass@8": 0.1})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_plot_panels_are_report_ready(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archer.tracking import plots

    run_dir = tmp_path / "my_run"
    run_dir.mkdir()
    _write_metrics(run_dir)
    written = plots.plot_run(run_dir)
    names = {p.name for p in written}
    assert {"reward.png", "clip.png", "entropy.png", "eval.png", "overview.png"} <= names
    from PIL import Image

    width, height = Image.open(run_dir / "plots" / "reward.png").size
    assert (width, height) == (int(plots.SIZE[0] * plots.DPI), int(plots.SIZE[1] * plots.DPI))

    rows = plots.read_metrics(run_dir / "metrics.jsonl")
    fig, ax = plt.subplots()
    lines = [(k, *plots._series(rows, k)) for k in ["reward/mean", "reward/accuracy"]]
    plots._draw(ax, "Reward - my_run", lines, plots.YLABELS["reward"])
    assert ax.get_title() == "Reward - my_run"
    assert ax.get_xlabel() == "RL step" and ax.get_ylabel() == "reward / accuracy"
    drawn = ax.get_lines()
    # identical series stay distinguishable: different style and width, both in the legend
    assert drawn[0].get_linestyle() != drawn[1].get_linestyle()
    assert drawn[0].get_linewidth() > drawn[1].get_linewidth()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["reward/mean", "reward/accuracy"]
    assert all(float(t).is_integer() for t in ax.xaxis.get_major_locator().tick_values(0, 7))
    plt.close(fig)

    # periodic eval points (steps 0, 5, 10, 15, 20) are drawn as visible markers
    fig, ax = plt.subplots()
    xs, ys = plots._series(rows, "eval/avg@8")
    assert xs == [0, 5, 10, 15, 20]
    plots._draw(ax, "Evaluation", [("eval/avg@8", xs, ys)])
    assert ax.get_lines()[0].get_marker() == "o" and ax.get_lines()[0].get_markevery() is None
    plt.close(fig)
