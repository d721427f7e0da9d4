"""archer.rollout.process.ProcessEngine: the HF engine in a child process over shared-memory weights.
Checked against the HF engine in this process (bit for bit), and for its failure modes: an error in
the child, a killed child, a dead parent, a bad weight push."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_model, tiny_tokenizer

from archer.rollout.base import SamplingParams
from archer.rollout.hf import HFEngine
from archer.rollout.process import ProcessEngine

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PARAMS = SamplingParams(n=3, max_new_tokens=12, temperature=1.0, seed=5)
PROMPTS = [[5, 6, 7], [9, 10], [11, 12, 13, 14]]


@pytest.fixture(scope="module")
def pair():
    """(policy, its HF engine here, a process engine over a copy); the copy is the engine's own."""
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    policy = tiny_model(tok)
    engine = ProcessEngine(copy.deepcopy(policy), tok)
    yield policy, HFEngine(policy, tok), engine
    engine.close()


def _same(a, b) -> bool:
    return all(
        x.response_ids == y.response_ids and x.logprobs == y.logprobs and x.text == y.text
        for ga, gb in zip(a, b, strict=True)
        for x, y in zip(ga, gb, strict=True)
    )


def test_samples_equal_the_hf_engine_in_this_process_before_and_after_a_weight_push(pair):
    policy, here, there = pair
    assert _same(there.generate(PROMPTS, PARAMS), here.generate(PROMPTS, PARAMS))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stale = there.generate(PROMPTS, PARAMS)
    assert not _same(stale, here.generate(PROMPTS, PARAMS))  # the push below is what matters
    there.update_weights(policy.state_dict())
    assert _same(there.generate(PROMPTS, PARAMS), here.generate(PROMPTS, PARAMS))


def test_an_error_in_the_child_is_one_line_and_the_engine_keeps_working(pair):
    _, here, there = pair
    with pytest.raises(RuntimeError, match=r"rollout process \(pid \d+\) failed in generate: IndexError"):
        there.generate([[10**6]], PARAMS)  # a token id outside the vocabulary
    assert _same(there.generate(PROMPTS[:1], PARAMS), here.generate(PROMPTS[:1], PARAMS))


def test_a_push_missing_weights_is_refused_before_any_is_written(pair):
    policy, here, there = pair
    state = {k: v + 1.0 for k, v in policy.state_dict().items()}
    state.pop(next(iter(state)))
    with pytest.raises(KeyError, match="weights missing"):
        there.update_weights(state)
    assert _same(there.generate(PROMPTS[:1], PARAMS), here.generate(PROMPTS[:1], PARAMS))


def test_a_killed_child_is_a_clear_error_not_a_hang():
    tok = tiny_tokenizer()
    engine = ProcessEngine(tiny_model(tok), tok)
    os.kill(engine.pid, signal.SIGKILL)
    t0 = time.time()
    with pytest.raises(RuntimeError, match=r"died during generate \(exit code -9\)"):
        engine.generate(PROMPTS, PARAMS)
    assert time.time() - t0 < 5
    engine.close()


def test_close_stops_the_child_and_a_dead_parent_leaves_no_child(tmp_path: Path):
    tok = tiny_tokenizer()
    engine = ProcessEngine(tiny_model(tok), tok)
    engine.close()
    assert not engine.proc.is_alive() and engine.proc.exitcode == 0
    with pytest.raises(RuntimeError, match="after close"):
        engine.generate(PROMPTS, PARAMS)
    # a parent script read from standard input, without a main guard: the child does not run it again
    # (it never imports the parent's __main__), it generates; the parent is then killed without close(),
    # and the child sees its pipe close and exits by itself
    runs = tmp_path / "runs.txt"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from helpers import tiny_model, tiny_tokenizer
        from archer.rollout.base import SamplingParams
        from archer.rollout.process import ProcessEngine
        with open({str(runs)!r}, "a") as f:
            f.write("ran\\n")
        tok = tiny_tokenizer()
        engine = ProcessEngine(tiny_model(tok), tok)
        out = engine.generate([[5, 6]], SamplingParams(n=2, max_new_tokens=4, seed=1))
        print(engine.pid, len(out[0]), flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, cwd=tmp_path)
    child, samples = map(int, out.stdout.split()[:2])
    assert samples == 2 and runs.read_text() == "ran\n"
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):
        time.sleep(0.2)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie (exited, not reaped by init yet) is gone
    except FileNotFoundError:
        return False


def test_refuses_a_model_off_the_cpu():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="CPU models"):
        ProcessEngine(tiny_model(tok).to("meta"), tok)
