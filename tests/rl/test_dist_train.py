"""``train`` with ``resources.train_procs=2``: two local gloo ranks run the real loop end to end.

The math verifier is swapped for the parity rule of test_e2e (inherited by the forked ranks) so a tiny
model gets groups with reward variance. Checked: the run completes, rank 0 alone wrote the run
directory (one metrics row per step, one TensorBoard file), the step metrics are global, the replicas
end bitwise identical and equal to the saved checkpoint, and training moved the weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import parity_verifier as parity

from archer.config import load_config
from archer.errors import ConfigError
from archer.rewards import registry

FAST = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.sft_epochs=1",
    "model.sft_examples=16",
    "model.sft_batch_size=4",
    "model.sft_max_len=128",
    "data.generator={level: easy}",
    "data.num_train=24",
    "data.num_eval=2",
    "data.seed=0",
    "rollout.batch_size=3",
    "rollout.n=4",
    "rollout.max_new_tokens=8",
    "rollout.max_gen_batches=2",
    "trainer.steps=2",
    "trainer.save_every=1",
    "trainer.threads=1",
    "trainer.mini_batches=2",
    "trainer.micro_batch_tokens=64",
    "optim.lr=1e-2",
    "algo.entropy_target=5.0",
    "eval.n=2",
    "eval.ks=[1, 2]",
    "data.num_eval=2",
    "eval.every=1",
    "logging.progress=false",
    "logging.plots=false",
    "resources.train_procs=2",
]


def test_resource_fields_are_validated():
    with pytest.raises(ConfigError, match="resources.train_procs"):
        load_config("tiny_math", ["resources.train_procs=0"])
    with pytest.raises(ConfigError, match=r"resources.dist_backend.*'gloo'"):
        load_config("tiny_math", ["resources.dist_backend=mpi"])
    assert load_config("tiny_math", ["resources.train_procs=4"]).resources.train_procs == 4


def _digest(model):
    """The digest the trainer computes: of its TokenScorer, whose parameter names carry ``policy.``."""
    from archer.distributed.world import replica_digest
    from archer.rl.update import TokenScorer

    return replica_digest(TokenScorer(model))


@pytest.mark.slow
def test_two_process_run_end_to_end(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from archer.distributed import launch
    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    monkeypatch.setattr(launch, "default_start_method", lambda: "fork")  # the ranks inherit the patch
    summary = train(load_config("tiny_math", FAST), run_dir=tmp_path)
    assert summary["steps"] == 2 and len(summary["history"]) == 2
    d = summary["dist"]
    assert d["world_size"] == 2 and d["replicas_identical"]
    assert len(d["replica_digests"]) == 2 and d["replica_digests"][0] == d["replica_digests"][1]

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]  # written once, by rank 0
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1
    assert (tmp_path / "eval_before.json").is_file() and (tmp_path / "summary.json").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["dist"]["replicas_identical"]
    for r in steps:  # global over both ranks' groups: rows = kept groups x n
        assert r["filter/kept_groups"] <= 3
        if "update/rows" in r:
            assert r["update/rows"] == 4 * r["filter/kept_groups"]
    assert any("actor/grad_norm" in r for r in steps), "no step trained"
    assert "eval/avg@2" in steps[0]  # the mid-run evaluation ran on rank 0 and reached the log

    final = tmp_path / "checkpoints" / "step_000002"
    assert (final / "COMPLETE").is_file() and summary["final_checkpoint"] == str(final)
    saved = AutoModelForCausalLM.from_pretrained(final)
    assert _digest(saved) == d["replica_digests"][0]
    start = AutoModelForCausalLM.from_pretrained(tmp_path / "sft_model").state_dict()
    moved = max((v - start[k]).abs().max().item() for k, v in saved.state_dict().items())
    assert moved > 1e-4
    assert torch.distributed.is_initialized() is False  # the parent never joined a group

    # resume on two ranks: both load step 2, the before-evaluation is reused, step 3 is appended
    before = (tmp_path / "eval_before.json").read_text()
    resumed = train(load_config("tiny_math", FAST + ["trainer.steps=3"]), run_dir=tmp_path, resume=True)
    assert resumed["steps"] == 3 and [h["step"] for h in resumed["history"]] == [3]
    assert resumed["dist"]["replicas_identical"] and resumed["before"] == json.loads(before)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2, 3]


@pytest.mark.slow
def test_fsdp_run_equals_ddp_run_exports_and_resumes_on_one_process(tmp_path, monkeypatch):
    """trainer.strategy=fsdp on 2 gloo ranks: after 3 steps the weights equal the ddp run's (same data,
    same seeds; ddp equals one process, tests/rl/test_dist_update.py); its sharded checkpoint exports
    to one Hugging Face model and resumes in a single process."""
    from transformers import AutoModelForCausalLM

    from archer.cli.export import export_checkpoint
    from archer.distributed import launch
    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    monkeypatch.setattr(launch, "default_start_method", lambda: "fork")
    base = [o for o in FAST if not o.startswith(("trainer.steps", "eval.every", "algo.entropy_target"))]
    base += ["trainer.steps=3", "trainer.save_every=0", "eval.enabled=false"]
    ddp = train(load_config("tiny_math", base + ["trainer.strategy=ddp"]), run_dir=tmp_path / "ddp")
    fsdp = train(load_config("tiny_math", base + ["trainer.strategy=fsdp"]), run_dir=tmp_path / "fsdp")
    assert fsdp["dist"]["strategy"] == "fsdp" and fsdp["steps"] == 3
    assert [h["data/prompt_hash"] for h in fsdp["history"]] == [h["data/prompt_hash"] for h in ddp["history"]]
    assert any("actor/grad_norm" in h for h in fsdp["history"])

    ckpt = tmp_path / "fsdp" / "checkpoints" / "step_000003"
    assert (ckpt / "COMPLETE").is_file() and (ckpt / "archer_ckpt.json").is_file()
    exported = export_checkpoint(ckpt, tmp_path / "hf")
    got = AutoModelForCausalLM.from_pretrained(exported).state_dict()
    want = AutoModelForCausalLM.from_pretrained(tmp_path / "ddp" / "checkpoints" / "step_000003").state_dict()
    assert max((got[k] - want[k]).abs().max().item() for k in want) < 1e-5
    start = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "sft_model").state_dict()
    assert max((got[k] - start[k]).abs().max().item() for k in want) > 1e-4

    # the 2-rank sharded checkpoint resumes on world size 1
    one = [o for o in base if o != "resources.train_procs=2"] + ["trainer.strategy=fsdp", "trainer.steps=4"]
    resumed = train(load_config("tiny_math", one), run_dir=tmp_path / "fsdp", resume=True)
    assert [h["step"] for h in resumed["history"]] == [4]


def test_async_on_two_ranks_staleness_zero_equals_sync_and_fsdp_trains(tmp_path, monkeypatch):
    """trainer.mode=async with resources.train_procs=2: the main rank's producer generates each round as
    the synchronous step splits it (rank r's share with rank r's seed) and broadcasts it; K=0 ends where
    the 2-rank synchronous run ends (every shared metric, bitwise-equal replicas); K=1 under FSDP
    trains with one-version-old samples, its producer fed the gathered full weights."""
    from archer.distributed import launch
    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    monkeypatch.setattr(launch, "default_start_method", lambda: "fork")  # the ranks inherit the patch
    base = [o for o in FAST if o not in ("eval.every=1", "trainer.save_every=1")] + [
        "eval.every=0",
        "trainer.save_every=0",
        "trainer.steps=3",
    ]
    sync = train(load_config("tiny_math", base), run_dir=tmp_path / "sync")
    k0 = ["trainer.mode=async", "trainer.max_staleness=0"]
    asyn = train(load_config("tiny_math", base + k0), run_dir=tmp_path / "async")

    def steps(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if "reward/mean" in r]

    a, b = steps(tmp_path / "sync"), steps(tmp_path / "async")
    assert len(a) == len(b) == 3 and any(r["filter/rounds"] > 1 for r in a)  # refills were asked for
    for x, y in zip(a, b):
        for k in x:
            if not k.startswith(("time/", "sample", "time")):
                assert x[k] == y[k], k
    assert asyn["dist"]["replica_digests"] == sync["dist"]["replica_digests"]

    k1 = ["trainer.mode=async", "trainer.max_staleness=1", "trainer.strategy=fsdp"]
    fsdp = train(load_config("tiny_math", base + k1), run_dir=tmp_path / "fsdp")
    rows = steps(tmp_path / "fsdp")
    assert fsdp["dist"]["strategy"] == "fsdp" and fsdp["steps"] == 3 and len(rows) == 3
    assert max(r["async/staleness_max"] for r in rows) == 1 and all(
        r["async/staleness_max"] <= 1 for r in rows
    )
    assert any("actor/tis_mean" in r for r in rows)  # stale samples: the decoupled correction ran


def test_an_engine_with_its_own_weights_gets_the_full_weights_under_fsdp(tmp_path, monkeypatch):
    """trainer.strategy=fsdp on 2 ranks with an engine holding its own weights (vLLM and Ray workers
    alike: they load through archer.rollout.vllm.full_state_dict): it starts from, and after every update
    gets, the policy's full weights (an FSDP state dict is sharded, DTensors, even inside full_weights;
    before the fix the first weight sync failed). Float32 copies: sampler and trainer log-probs agree."""
    from transformers import AutoModelForCausalLM

    import archer.rollout as rollout
    from archer.distributed import launch
    from archer.models.loader import unwrap
    from archer.rl.loop import train
    from archer.rollout.hf import HFEngine
    from archer.rollout.vllm import full_state_dict

    class OwnWeights(HFEngine):
        shares_policy = False

        def update_weights(self, module, version=None):
            super().update_weights(full_state_dict(module))

    def build(cfg, model, tokenizer, **kw):
        engine = OwnWeights(AutoModelForCausalLM.from_config(unwrap(model).config), tokenizer)
        engine.update_weights(model)
        return engine, cfg

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    monkeypatch.setattr(launch, "default_start_method", lambda: "fork")
    monkeypatch.setattr(rollout, "build_rollout", build)
    base = [o for o in FAST if o not in ("eval.every=1", "trainer.save_every=1")]
    over = base + ["eval.every=0", "trainer.save_every=0", "trainer.strategy=fsdp"]
    out = train(load_config("tiny_math", over), run_dir=tmp_path)
    assert out["steps"] == 2 and any("actor/grad_norm" in h for h in out["history"])
    assert all(h["rollout/logprob_diff_max"] < 1e-5 for h in out["history"])
