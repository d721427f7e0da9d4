"""docs/BYO_MODEL.md runs as written: every fenced block, in order, in a scratch folder (python blocks
named by their first line, ``# NAME.py``, are written as that file; each line of a bash block is run
with ``archer`` as ``python -m archer``). Then the run's own claims are checked: two steps, one
``reward/fn/<name>`` metric per function, the accuracy line at the start, the evaluation's summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "BYO_MODEL.md"


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.S)


def test_every_block_is_a_file_or_a_command():
    blocks = _blocks()
    assert [lang for lang, _ in blocks] == ["python", "bash", "python", "bash", "python", "bash", "bash"]
    for lang, body in blocks:
        if lang == "python":
            assert re.fullmatch(r"# \w+\.py", body.splitlines()[0])


def test_walkthrough_runs_as_written(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    stderr = {}
    for lang, body in _blocks():
        if lang == "python":
            (tmp_path / body.splitlines()[0][2:].strip()).write_text(body)
            continue
        for line in filter(None, body.splitlines()):
            argv = line.split()
            argv = [sys.executable, "-m", "archer", *argv[1:]] if argv[0] == "archer" else argv
            argv = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
            proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
            stderr[argv[3] if len(argv) > 3 else argv[1]] = proc.stderr
    steps = [json.loads(x) for x in (tmp_path / "runs/byo/metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2
    assert {"reward/fn/mentions_answer", "reward/fn/short"} <= steps[0].keys()
    assert stderr["train"].startswith(
        "archer: accuracy = the built-in verifier's verdict for the problem's kind (math, code, ...; "
        "where there is none: a verl 'acc', else reward > 0); reward = 1 x mentions_answer + 0.5 x short\n"
    )
    assert json.loads((tmp_path / "ev/byo/summary.json").read_text())
