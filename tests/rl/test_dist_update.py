"""Data-parallel ``update_minibatch`` on 2 gloo ranks (ddp and fsdp worlds) equals one process on all rows.

Fixed packed rows with ragged response masks are split across two ranks; each rank runs its rows in
its own micro-batches. The reference is the single-process update on every row (one process, one
call). Checked for both strategies (``ddp`` replicas, ``fsdp`` FSDP2 shards gathered back): updated
weights (1e-6), merged metrics, a rank with zero rows (under fsdp it runs dummy micro-batches so the
collectives line up), and a NaN on one rank making both ranks skip. SGD with momentum keeps the comparison exact to float rounding (Adam's first
step ``g / |g|`` would amplify rounding on near-zero gradients).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

transformers = pytest.importorskip("transformers")

# (prompt_len, response_len) of 6 rows: ragged, so per-rank normalisers would differ from the global one
ROWS = [(3, 5), (2, 9), (4, 1), (3, 7), (2, 3), (5, 6)]
CASES = {
    # name: (loss, agg, max_len, pos_nll_coef, rank 0 rows, rank 1 rows)
    "aspo_token_mean": ("aspo", "token-mean", 16.0, 0.1, [0, 2, 4], [1, 3, 5]),
    "dapo_drgrpo_uneven": ("dapo", "seq-mean-token-sum-norm", None, 0.0, [5, 1, 0, 3], [2, 4]),
    "rank1_empty": ("aspo", "token-mean", 16.0, 0.1, [0, 1, 2, 3, 4, 5], []),
}
LR = 0.2
STRATEGIES = ("ddp", "fsdp")


def _model():
    cfg = transformers.Qwen2Config(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(cfg)


def _batch(nan_row: int | None = None):
    """Packed rows with old/ref log-probs near the model's and advantages of both signs."""
    from archer.rl.batch import pack
    from archer.rl.update import sequence_logprobs

    g = torch.Generator().manual_seed(3)
    rows = [
        (torch.randint(1, 40, (p,), generator=g).tolist(), torch.randint(1, 40, (r,), generator=g).tolist())
        for p, r in ROWS
    ]
    batch = pack(rows, pad_id=0)
    with torch.no_grad():
        lp, _ = sequence_logprobs(_model(), batch, with_entropy=False)  # [B, T]
    mask = batch["response_mask"]
    batch["old_log_prob"] = (lp + 0.3 * torch.randn(lp.shape, generator=g)) * mask
    batch["ref_log_prob"] = (lp + 0.2 * torch.randn(lp.shape, generator=g)) * mask
    batch["advantages"] = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, -0.7])
    batch["rewards"] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    if nan_row is not None:
        batch["advantages"][nan_row] = float("nan")
    return batch, [p + r for p, r in ROWS]


def _settings(loss, agg, max_len, pos_nll):
    from archer.rl.update import UpdateSettings

    params = {"kl_coef": 0.01} if loss == "aspo" else {}
    return UpdateSettings(
        loss=loss,
        agg=agg,
        loss_params=params,
        entropy_coef=0.01,
        pos_nll_coef=pos_nll,
        max_reward=1.0,
        max_len=max_len,
        grad_clip=0.5,
    )


def _step(rows, case, nan_row=None, world=None):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from archer.rl.batch import micro_batches
    from archer.rl.update import TokenScorer, update_minibatch

    loss, agg, max_len, pos_nll = case[:4]
    batch, lengths = _batch(nan_row)
    scorer = TokenScorer(_model())
    if world is not None:
        scorer = world.shard(scorer)
    opt = torch.optim.SGD(scorer.parameters(), lr=LR, momentum=0.9)
    micro = [[rows[j] for j in m] for m in micro_batches([lengths[i] for i in rows], 24)]
    metrics = update_minibatch(scorer, opt, batch, micro, _settings(loss, agg, max_len, pos_nll), world)
    state = get_model_state_dict(scorer, options=StateDictOptions(full_state_dict=True))
    return {k.removeprefix("policy."): v.detach().clone() for k, v in state.items()}, metrics


def _worker(rank, port, out_dir):
    import torch.distributed as dist

    from archer.distributed.world import ProcessWorld

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    for strategy in STRATEGIES:
        world = ProcessWorld(torch.device("cpu"), strategy, owns_group=False)
        for name, case in CASES.items():
            results[strategy, name] = _step(case[4 + rank], case, world=world)
        # NaN in a row that rank 1 alone holds: both ranks must skip and keep their weights
        results[strategy, "nan_on_rank1"] = _step(
            CASES["aspo_token_mean"][4 + rank], CASES["aspo_token_mean"], nan_row=3, world=world
        )
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_update")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=2, join=True, start_method="fork")
        got = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
        ref = {name: _step(list(range(len(ROWS))), case) for name, case in CASES.items()}
    finally:
        torch.set_num_threads(threads)
    return got, ref


def _max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_take_the_single_process_step(ranks_out, name, strategy):
    got, ref = ranks_out
    ref_state, ref_metrics = ref[name]
    init = _model().state_dict()
    assert _max_diff(ref_state, init) > 1e-3  # the step moved the weights
    for rank in range(2):
        state, metrics = got[rank][strategy, name]
        assert _max_diff(state, ref_state) < 1e-6, (name, rank)
        assert metrics["skipped_nonfinite"] == 0.0
        assert set(metrics) == set(ref_metrics)
        for k, v in ref_metrics.items():
            assert metrics[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (name, rank, k)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_replicas_are_bitwise_identical(ranks_out, strategy):
    got, _ = ranks_out
    for name in CASES:
        assert _max_diff(got[0][strategy, name][0], got[1][strategy, name][0]) == 0.0, name


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_nan_on_one_rank_makes_both_skip(ranks_out, strategy):
    got, _ = ranks_out
    init = _model().state_dict()
    for rank in range(2):
        state, metrics = got[rank][strategy, "nan_on_rank1"]
        assert metrics == {"skipped_nonfinite": 1.0}
        assert _max_diff(state, init) == 0.0
    # the single process on all rows skips as well (the same decision)
    _, single = _step(list(range(len(ROWS))), CASES["aspo_token_mean"], nan_row=3)
    assert single == {"skipped_nonfinite": 1.0}


def test_a_per_rank_normaliser_would_differ(ranks_out):
    # each rank alone on its half (no sync), averaged: must not match the reference, else the tests above
    # could not tell a global normaliser from per-rank ones
    _, ref = ranks_out
    case = CASES["dapo_drgrpo_uneven"]
    halves = [_step(case[4 + r], case)[0] for r in range(2)]
    avg = {k: (halves[0][k] + halves[1][k]) / 2 for k in halves[0]}
    assert _max_diff(avg, ref["dapo_drgrpo_uneven"][0]) > 1e-5
