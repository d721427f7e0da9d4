"""The checkpoint watcher on a fake run directory: once per checkpoint, markers, retries, split phases."""

from __future__ import annotations

import json
import shutil

from archer.data.schema import Problem
from archer.eval import store
from archer.eval.watch import Watcher, find_checkpoints


def _run_dir(tmp_path, tiny_model_dir):
    ckpts = tmp_path / "run" / "checkpoints"
    for name, complete, model in [
        ("step_000010", True, True),
        ("step_000020", False, True),
        ("step_000005", True, True),
        ("step_000030", True, False),
    ]:
        d = ckpts / name
        if model:
            shutil.copytree(tiny_model_dir, d)
        else:
            d.mkdir(parents=True)
        if complete:
            (d / "COMPLETE").write_text("")
    return tmp_path / "run"


def _problems():
    return [
        Problem("p1", "What is 2+3?", "math", answer="5", data_source="toy"),
        Problem("p2", "What is 1+1?", "math", answer="2", data_source="toy"),
    ]


def test_find_checkpoints_needs_marker_and_sorts_by_step(tmp_path, tiny_model_dir):
    run = _run_dir(tmp_path, tiny_model_dir)
    assert [c.name for c in find_checkpoints(run)] == ["step_000005", "step_000010", "step_000030"]


def test_cli_watch_once_evaluates_once_and_retries_failures(tmp_path, tiny_model_dir, shared_data):
    from archer.cli.eval import main

    run = _run_dir(tmp_path, tiny_model_dir)
    argv = [
        "watch",
        str(run),
        "--data",
        str(shared_data / "math/aime24.jsonl"),
        "--limit",
        "2",
        "--n",
        "2",
        "--k",
        "1,2",
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
        "--once",
        "--backoff",
        "0",
        "--max-attempts",
        "2",
    ]
    assert main(argv) == 0
    ev = run / "eval"
    for name in ("step_000005", "step_000010"):
        summary = json.loads((ev / name / store.SUMMARY).read_text())
        assert summary["num_problems"] == 2 and {"avg@2", "pass@2"} <= summary.keys()
    assert not (ev / "step_000020").exists()  # no COMPLETE marker: still being written
    history = store.read_jsonl(ev / "history.jsonl")
    assert [h["step"] for h in history] == [5, 10]
    state = json.loads((ev / "watch_state_generate.json").read_text())
    assert state["step_000030"]["attempts"] == 1 and not state["step_000030"]["gave_up"]

    # restart: completed checkpoints are not redone, the failed one is retried until it gives up
    assert main(argv) == 0
    assert main(argv) == 0
    assert len(store.read_jsonl(ev / "history.jsonl")) == 2
    state = json.loads((ev / "watch_state_generate.json").read_text())
    assert state["step_000030"]["attempts"] == 2 and state["step_000030"]["gave_up"]


def test_split_phases_and_backoff(tmp_path, tiny_model_dir):
    from archer.eval.engine import load_engine

    run = _run_dir(tmp_path, tiny_model_dir)
    now = [1000.0]
    calls = []

    def factory(ckpt):
        calls.append(ckpt.name)
        return load_engine(str(ckpt), "cpu")

    kw = dict(
        n=1,
        ks=[1],
        sampling={"max_new_tokens": 3, "seed": 0},
        clock=lambda: now[0],
        log=lambda m: None,
        backoff_s=10.0,
        max_attempts=3,
    )
    gen = Watcher(run, _problems(), phase="generate", engine_factory=factory, **kw)
    score = Watcher(run, _problems(), phase="score", **kw)
    assert score.step() == []  # nothing generated yet
    assert gen.step() == ["generate:step_000005", "generate:step_000010"]
    assert not (run / "eval" / "step_000005" / store.SUMMARY).exists()
    assert score.step() == ["score:step_000005", "score:step_000010"]
    assert (run / "eval" / "step_000010" / store.SUMMARY).exists()
    # step_000030 failed once at t=1000: not due before t=1010, retried after
    assert gen.state("generate")["step_000030"]["next_try"] == 1010.0
    assert gen.step() == [] and calls.count("step_000030") == 1
    now[0] = 1011.0
    gen.step()
    assert calls.count("step_000030") == 2 and gen.state("generate")["step_000030"]["next_try"] == 1031.0
    assert calls.count("step_000010") == 1
