"""``archer eval`` with tools: the run's tool settings, tool-use rate in the summary."""

from __future__ import annotations

import argparse

import pytest

from archer.cli.eval import build_parser, with_tool_args
from archer.config import load_config, save_config
from archer.errors import ConfigError
from archer.eval.runner import summarize
from archer.rollout.tools import ToolEngine


class _Engine:
    tokenizer = None


def _args(argv):
    return build_parser().parse_args(["run", "--model", "m", "--data", "math500", *argv])


def test_tool_settings_come_from_the_run_or_the_flags(tmp_path):
    assert with_tool_args(_Engine(), _args([])).__class__ is _Engine  # no tools: the engine as is
    cfg = load_config("tiny_interpreter")
    save_config(cfg, tmp_path / "config.yaml")
    eng = with_tool_args(_Engine(), _args(["--tools-from", str(tmp_path)]))
    assert isinstance(eng, ToolEngine)
    assert eng.settings.max_turns == cfg.rollout.max_turns and eng.settings.output_chars == 64
    eng = with_tool_args(
        _Engine(), _args(["--tools-from", str(tmp_path), "--max-turns", "2", "--tool-timeout", "1"])
    )
    assert eng.settings.max_turns == 2 and eng.settings.timeout_s == 1.0
    eng = with_tool_args(_Engine(), _args(["--tools", "python"]))
    assert isinstance(eng, ToolEngine) and eng.settings.max_turns == 4
    with pytest.raises(ConfigError, match="unknown tool 'bash'"):
        with_tool_args(_Engine(), _args(["--tools", "bash"]))
    with pytest.raises(ConfigError, match="not found"):
        with_tool_args(_Engine(), _args(["--tools-from", str(tmp_path / "nope")]))
    assert isinstance(_args([]), argparse.Namespace)
    from archer.cli.eval import resolve_template

    # the prompt template too: tiny_interpreter asks the raw problem text
    assert resolve_template(_args(["--tools-from", str(tmp_path)])) == "raw"
    assert resolve_template(_args(["--tools-from", str(tmp_path), "--template", "math"])) == "math"
    assert resolve_template(_args([])) == "auto"


def test_summary_reports_the_tool_use_rate():
    rows = [
        {"samples": [{"correct": True, "tool_calls": 1}, {"correct": False, "tool_calls": 0}]},
        {"samples": [{"correct": True, "tool_calls": 2}, {"correct": True, "tool_calls": 1}]},
    ]
    s = summarize(rows, [1])
    assert s["tool_use_rate"] == 0.75 and s["tool_calls_per_response"] == 1.0 and s["avg@1"] == 0.75
    assert "tool_use_rate" not in summarize([{"samples": [{"correct": True}]}], [1])


def test_archer_eval_with_tools_runs_end_to_end(tmp_path, capsys):
    import json

    from archer.cli.eval import main
    from archer.models.tiny import build_tiny_model, build_tokenizer

    ckpt = tmp_path / "ckpt"
    tok = build_tokenizer(["Compute 123*456. ```python\nprint(1)\n```\n\\boxed{56088}"] * 20, vocab_size=300)
    build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=0).save_pretrained(
        ckpt
    )
    tok.save_pretrained(ckpt)
    out = tmp_path / "ev"
    argv = ["--model", str(ckpt), "--data", "synthetic_interpreter", "--tools", "python", "--max-turns", "2"]
    argv += ["--n", "2", "--k", "1,2", "--limit", "2", "--max-new-tokens", "8", "--out", str(out)]
    assert main(argv) == 0
    assert "tool use rate" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_problems"] == 2 and 0.0 <= summary["tool_use_rate"] <= 1.0
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert all(len(g["tool_calls"]) == 2 for g in gens)
