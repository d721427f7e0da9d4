"""2-process gloo training (FSDP2 and the ddp fallback) equals one process on the whole batch;
its sharded checkpoint exports to one Hugging Face checkpoint and resumes on world size 1."""

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
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(cfg)


def _micro_batches(rows):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (4, 12), generator=g)  # [B, T]
    mask = torch.zeros(4, 11)  # [B, T-1]: mask of the predicted tokens ids[:, 1:]
    for i, (a, b) in enumerate(RESPONSE):
        mask[i, a:b] = 1.0
    adv = torch.tensor(ADVANTAGES)
    return [{"input_ids": ids[i : i + 1], "response_mask": mask[i : i + 1], "adv": adv[i : i + 1]} for i in rows]


def _pg_loss(model, mb, norm):
    """PPO at ratio 1 (old = sg(logp)), token-mean over the mini-batch: gradient -A grad(logp) / N."""
    from archer.algo import compute_policy_loss

    logits = model(input_ids=mb["input_ids"]).logits[:, :-1].float()  # [1, T-1, V]
    logp = torch.log_softmax(logits, -1).gather(-1, mb["input_ids"][:, 1:, None]).squeeze(-1)  # [1, T-1]
    loss, _ = compute_policy_loss("ppo", log_prob=logp, old_log_prob=logp.detach(), advantages=mb["adv"],
                                  response_mask=mb["response_mask"], loss_normalizer=norm)
    return loss


def _worker(rank, world_size, port, out_dir):
    from archer.distributed.checkpoint import save_sharded
    from archer.distributed.fsdp import (
        full_state_dict,
        global_loss_normalizer,
        init_distributed,
        shard_model,
        train_step,
    )

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed()
    assert info.backend == "gloo" and info.world_size == 2
    rows = [2 * rank, 2 * rank + 1]  # each rank holds half of the batch, one row per micro-batch
    masks = [mb["response_mask"][:, : 6 + 5 * rank] for mb in _micro_batches(rows)]  # ragged widths too
    norm = global_loss_normalizer(masks, entropy_quantile=0.8)
    if rank == 0:
        torch.save(norm, os.path.join(out_dir, "norm.pt"))
    for strategy in ("fsdp", "ddp"):
        model = shard_model(_tiny_model(), strategy)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        metrics = train_step(model, opt, _micro_batches(rows), _pg_loss)
        full = full_state_dict(model)
        if rank == 0:
            torch.save({"state": full, "metrics": metrics}, os.path.join(out_dir, f"{strategy}.pt"))
        if strategy == "fsdp":
            assert type(model.model.layers[0].mlp.up_proj.weight).__name__ == "DTensor"
            save_sharded(os.path.join(out_dir, "ckpt"), model, opt, step=1, extra={"note": "two ranks"})
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference():
    from archer.distributed.fsdp import train_step

    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    metrics = train_step(model, opt, _micro_batches(range(4)), _pg_loss)
    return model, opt, metrics


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_rank")
    # fork: the ranks inherit this process's imported torch/transformers instead of importing them again
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="fork")
    model, opt, metrics = _reference()
    return out, model, opt, metrics


def _assert_same(a: dict, b: dict, tol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=tol, rtol=0), k


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_two_gloo_ranks_match_one_process_on_the_whole_batch(two_rank_run, strategy):
    out, ref_model, _, ref_metrics = two_rank_run
    got = torch.load(out / f"{strategy}.pt")
    ref = ref_model.state_dict()
    _assert_same(got["state"], ref)
    assert got["metrics"]["tokens"] == ref_metrics["tokens"] == 21.0
    assert got["metrics"]["loss"] == pytest.approx(ref_metrics["loss"], abs=1e-6)
    init = _tiny_model().state_dict()
    assert max((ref[k] - init[k]).abs().max().item() for k in ref) > 1e-3  # the step moved the weights


def test_global_loss_normalizer_equals_the_one_of_the_whole_mini_batch(two_rank_run):
    from archer.algo import loss_normalizer

    out = two_rank_run[0]
    masks = [mb["response_mask"][:, : 6 + 5 * (i // 2)] for i, mb in enumerate(_micro_batches(range(4)))]
    expected = loss_normalizer(masks, entropy_quantile=0.8)
    got = torch.load(out / "norm.pt", weights_only=False)
    assert got == expected
    assert got.max_len == 11.0 and got.tokens == 3 + 5 + 10 + 1  # rank 0 sees width 6 only


def test_global_normaliser_differs_from_per_rank_one(two_rank_run):
    # the same step with each rank normalising by its own token count: must not match the reference,
    # otherwise the test above could not tell the two apart
    from archer.distributed.fsdp import train_step

    _, ref_model, _, _ = two_rank_run
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    mbs = _micro_batches(range(4))
    from archer.algo import LossNormalizer

    for mb, n_rank in zip(mbs, [10.0, 10.0, 11.0, 11.0]):  # rank 0 holds 3 + 7 tokens, rank 1 10 + 1
        mb["norm"] = LossNormalizer(tokens=n_rank, seqs=2.0, max_len=11.0)
    # the mean over 2 ranks of each rank's own token-mean loss
    train_step(model, opt, mbs, lambda m, mb, n: _pg_loss(m, mb, mb["norm"]) / 2)
    diff = max((model.state_dict()[k] - v).abs().max().item() for k, v in ref_model.state_dict().items())
    assert diff > 1e-4


def test_export_from_two_shards_loads_with_from_pretrained(two_rank_run, tmp_path):
    from archer.distributed.export import main

    out, ref_model, _, _ = two_rank_run
    assert sorted(p.name for p in (out / "ckpt").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert main([str(out / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    _assert_same(loaded.state_dict(), ref_model.state_dict())
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, ref_model(input_ids=ids).logits, atol=1e-5)


def test_export_rejects_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    from archer.distributed.export import main

    assert main([str(tmp_path), "--out", str(tmp_path / "hf")]) == 1
    assert "not an archer sharded checkpoint" in capsys.readouterr().err


def test_resume_two_shards_on_world_size_one(two_rank_run):
    from archer.distributed.checkpoint import load_sharded
    from archer.distributed.fsdp import train_step

    out, ref_model, ref_opt, _ = two_rank_run
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    meta = load_sharded(out / "ckpt", model, opt)
    assert meta["step"] == 1 and meta["world_size"] == 2 and meta["extra"] == {"note": "two ranks"}
    _assert_same(model.state_dict(), ref_model.state_dict())
    # one more step on both: equal only if the momentum buffers were restored too
    ref_model, ref_opt_state = copy.deepcopy(ref_model), copy.deepcopy(ref_opt.state_dict())
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=LR, momentum=MOMENTUM)
    ref_opt.load_state_dict(ref_opt_state)
    train_step(model, opt, _micro_batches(range(4)), _pg_loss)
    train_step(ref_model, ref_opt, _micro_batches(range(4)), _pg_loss)
    _assert_same(model.state_dict(), ref_model.state_dict())


def test_single_process_checkpoint_with_tied_embeddings_and_tokenizer_round_trips(tmp_path):
    from archer.distributed.checkpoint import load_sharded, save_sharded
    from archer.distributed.export import main
    from archer.models import build_tiny_model, build_tokenizer

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
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")("3+4=7").input_ids == tok("3+4=7").input_ids

    other = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=3)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    assert load_sharded(tmp_path / "ckpt", other, other_opt)["step"] == 7
    _assert_same(other.state_dict(), model.state_dict(), tol=0)
    state, other_state = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], other_state[i]["exp_avg"]) for i in state)
