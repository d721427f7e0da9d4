"""Sharded checkpoints of a 2-rank FSDP2 update: they export to one Hugging Face checkpoint equal to
the single-process update, and resume on world size 1 with the optimizer state (momentum) restored.
(The update's equality across strategies and ranks is tested in tests/rl/test_dist_update.py.)"""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.usefixtures("one_torch_thread")

transformers = pytest.importorskip("transformers")

LR, MOMENTUM = 0.5, 0.9
# ragged response masks: token counts 3, 7 on rank 0 and 10, 1 on rank 1, so a per-rank (or per
# micro-batch) normaliser would give a different update than the global one
RESPONSE = [(2, 5), (1, 8), (0, 10), (9, 10)]  # [start, end) of each row's response tokens
ADVANTAGES = [1.0, -0.5, 0.75, -1.25]


def _tiny_model():
    cfg = transformers.Qwen2Config(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(cfg)


def _batch():
    """4 packed rows with ragged response masks and advantages of both signs."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (4, 12), generator=g)  # [B, T]
    mask = torch.zeros(4, 12)  # [B, T]: 1 where the token at t is a trained response token
    for i, (a, b) in enumerate(RESPONSE):
        mask[i, a + 1 : b + 1] = 1.0
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "response_mask": mask,
        "advantages": torch.tensor(ADVANTAGES),
        "rewards": torch.tensor([1.0, 0.0, 1.0, 0.0]),
    }
    return batch


def _update(scorer, opt, rows, world=None):
    """One PPO step at ratio 1 (old = current log-probs) over ``rows``, one row per micro-batch."""
    from archer.rl.update import UpdateSettings, update_minibatch

    batch = _batch()
    with torch.no_grad():
        ref = _tiny_model()
        from archer.rl.update import TokenScorer

        old, _ = TokenScorer(ref)(
            batch["input_ids"], batch["attention_mask"], batch["response_mask"], with_entropy=False
        )
    batch["old_log_prob"] = old
    settings = UpdateSettings(loss="ppo", agg="token-mean", loss_params={}, grad_clip=100.0)
    return update_minibatch(scorer, opt, batch, [[r] for r in rows], settings, world)


def _worker(rank, world_size, port, out_dir):
    import torch.distributed as dist

    from archer.distributed.checkpoint import save_sharded
    from archer.distributed.world import ProcessWorld
    from archer.rl.update import TokenScorer

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    world = ProcessWorld(torch.device("cpu"), "fsdp", owns_group=False)
    scorer = world.shard(TokenScorer(_tiny_model()))
    assert type(scorer.policy.model.layers[0].mlp.up_proj.weight).__name__ == "DTensor"
    opt = torch.optim.SGD(scorer.parameters(), lr=LR, momentum=MOMENTUM)
    _update(scorer, opt, [2 * rank, 2 * rank + 1], world)
    save_sharded(
        os.path.join(out_dir, "ckpt"),
        scorer,
        opt,
        step=1,
        config=scorer.policy.config,
        extra={"note": "two ranks", "prefix": "policy."},
    )
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference():
    from archer.rl.update import TokenScorer

    scorer = TokenScorer(_tiny_model())
    opt = torch.optim.SGD(scorer.parameters(), lr=LR, momentum=MOMENTUM)
    _update(scorer, opt, range(4))
    return scorer, opt


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_rank")
    # fork: the ranks inherit this process's imported torch/transformers instead of importing them again
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="fork")
    scorer, opt = _reference()
    return out, scorer, opt


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _assert_same(a: dict, b: dict, tol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=tol, rtol=0), k


def test_export_from_two_shards_loads_with_from_pretrained(two_rank_run, tmp_path):
    from archer.cli.export import main

    out, ref, _ = two_rank_run
    ref_model = ref.policy
    assert _max_diff(ref_model.state_dict(), _tiny_model().state_dict()) > 1e-4  # the update moved weights
    assert sorted(p.name for p in (out / "ckpt").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert main([str(out / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    _assert_same(loaded.state_dict(), ref_model.state_dict())
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, ref_model(input_ids=ids).logits, atol=1e-5)


def test_export_rejects_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    from archer.cli.export import main

    assert main([str(tmp_path), "--out", str(tmp_path / "hf")]) == 1
    assert "not an archer sharded checkpoint" in capsys.readouterr().err


def test_resume_two_shards_on_world_size_one(two_rank_run):
    from archer.distributed.checkpoint import load_sharded
    from archer.rl.update import TokenScorer

    out, ref, ref_opt = two_rank_run
    scorer = TokenScorer(_tiny_model())
    opt = torch.optim.SGD(scorer.parameters(), lr=LR, momentum=MOMENTUM)
    meta = load_sharded(out / "ckpt", scorer, opt)
    assert meta["step"] == 1 and meta["world_size"] == 2 and meta["extra"]["note"] == "two ranks"
    _assert_same(scorer.state_dict(), ref.state_dict())
    # one more step on both: equal only if the momentum buffers were restored too
    ref, ref_opt_state = copy.deepcopy(ref), copy.deepcopy(ref_opt.state_dict())
    ref_opt = torch.optim.SGD(ref.parameters(), lr=LR, momentum=MOMENTUM)
    ref_opt.load_state_dict(ref_opt_state)
    _update(scorer, opt, range(4))
    _update(ref, ref_opt, range(4))
    _assert_same(scorer.state_dict(), ref.state_dict())
    weights_only = TokenScorer(_tiny_model())
    load_sharded(out / "ckpt", weights_only)  # same weights, fresh optimizer (no momentum)
    _update(weights_only, torch.optim.SGD(weights_only.parameters(), lr=LR, momentum=MOMENTUM), range(4))
    assert _max_diff(weights_only.state_dict(), ref.state_dict()) > 1e-6  # the restored momentum mattered


def test_single_process_checkpoint_with_tied_embeddings_and_tokenizer_round_trips(tmp_path):
    from archer.cli.export import main
    from archer.distributed.checkpoint import load_sharded, save_sharded
    from archer.models.tiny import build_tiny_model, build_tokenizer

    tok = build_tokenizer([f"{a}+{b}={a + b}" for a in range(15) for b in range(15)], vocab_size=290)
    model = build_tiny_model(tok, hidden_size=32, num_layers=1)  # tied input/output embeddings
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.arange(8)[None], labels=torch.arange(8)[None]).loss.backward()
    opt.step()
    save_sharded(tmp_path / "ckpt", model, opt, step=7, tokenizer=tok)
    assert main([str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert loaded.config.tie_word_embeddings
    _assert_same(loaded.state_dict(), model.state_dict(), tol=0)
    assert (
        transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")("3+4=7").input_ids
        == tok("3+4=7").input_ids
    )

    other = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=3)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    assert load_sharded(tmp_path / "ckpt", other, other_opt)["step"] == 7
    _assert_same(other.state_dict(), model.state_dict(), tol=0)
    state, other_state = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], other_state[i]["exp_avg"]) for i in state)
