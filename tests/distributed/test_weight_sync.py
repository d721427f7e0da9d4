"""The collective weight-sync group (archer.distributed.weight_sync): bucket plans by hand, a gloo group
of three processes that must deliver a mixed-dtype state dict bit for bit, and a dead member that must
turn a send into a one-line error within the group's timeout instead of a hang."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time

import pytest
import torch

from archer.distributed.weight_sync import TensorSpec, WeightGroup, plan_buckets, specs_of

MIB = 2**20


def _spec(name, n, dtype="float32"):
    return TensorSpec(name, (n,), dtype)


def test_bucket_plan_by_hand():
    # 4-byte floats: 0.25 MiB = 65536 elements
    q = 65536
    specs = [
        _spec("a", q),  # 0.25 MiB
        _spec("b", q),  # 0.5 MiB so far: still fits 0.6
        _spec("c", q),  # would be 0.75: new bucket
        _spec("d", q, "bfloat16"),  # dtype change: new bucket (0.125 MiB)
        _spec("e", 10 * q),  # 2.5 MiB, larger than a bucket: alone
        _spec("f", 1),
    ]
    assert plan_buckets(specs, bucket_mb=0.6) == [[0, 1], [2], [3], [4], [5]]
    assert plan_buckets(specs, bucket_mb=100) == [[0, 1, 2], [3], [4, 5]]
    with pytest.raises(ValueError, match="bucket_mb"):
        plan_buckets(specs, bucket_mb=0)


def test_specs_refuse_non_tensors():
    assert specs_of({"w": torch.zeros(2, 3, dtype=torch.bfloat16)}) == [TensorSpec("w", (2, 3), "bfloat16")]
    with pytest.raises(TypeError, match="'step' is a int"):
        specs_of({"w": torch.zeros(1), "step": 3})


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(300, 64, generator=g),
        "layer.0.w": torch.randn(64, 64, generator=g).to(torch.bfloat16),
        "layer.0.b": torch.randn(64, generator=g),
        "counts": torch.randint(0, 1000, (17,), generator=g),
        "scalar": torch.tensor(3.5),
        "head.weight": torch.randn(300, 64, generator=g),
    }


def _fingerprint(t: torch.Tensor) -> tuple[str, tuple[int, ...], str]:
    """dtype, shape and a hash of the raw bytes: equal only for a bit-for-bit copy."""
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return str(t.dtype), tuple(t.shape), hashlib.sha256(raw).hexdigest()


def _member(address, rank, size, queue, updates, die_after):
    try:
        group = WeightGroup(tuple(address), rank, size, "gloo", timeout_s=20)
        specs = specs_of(_state(0))
        for u in range(updates):
            if die_after is not None and u == die_after and rank == 1:
                queue.close()
                queue.join_thread()  # what was reported reaches the test first
                os._exit(1)  # killed mid-run: the sender must notice, not hang
            got = group.receive(specs, bucket_mb=0.05)
            queue.put((rank, u, {k: _fingerprint(v) for k, v in got.items()}))
        group.close()
    except Exception as exc:  # noqa: BLE001 - report to the test
        queue.put((rank, -1, repr(exc)))


def _start(size, updates, die_after=None, timeout_s=20.0):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    store = WeightGroup.reserve("127.0.0.1", size, timeout_s)
    procs = [
        ctx.Process(target=_member, args=(("127.0.0.1", store.port), r, size, queue, updates, die_after))
        for r in range(1, size)
    ]
    for p in procs:
        p.start()
    sender = WeightGroup(("127.0.0.1", store.port), 0, size, "gloo", timeout_s, _store=store)
    return sender, procs, queue


def test_gloo_group_delivers_every_tensor_bit_for_bit():
    sender, procs, queue = _start(size=3, updates=2)
    try:
        sent = []
        for u in range(2):
            state = _state(u)
            info = sender.send(state, bucket_mb=0.05)
            assert info["buckets"] > 3  # small buckets: the plan really splits
            assert info["bytes"] == sum(t.numel() * t.element_size() for t in state.values())
            sent.append(state)
        got = [queue.get(timeout=30) for _ in range(4)]
    finally:
        sender.close()
        for p in procs:
            p.join(timeout=30)
    assert sorted((r, u) for r, u, _ in got) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for _rank, u, state in got:
        assert state == {k: _fingerprint(v) for k, v in sent[u].items()}
        assert list(state) == list(sent[u])


def test_a_dead_member_is_an_error_naming_the_broadcast_not_a_hang():
    sender, procs, queue = _start(size=3, updates=2, die_after=1, timeout_s=10.0)
    try:
        sender.send(_state(0), bucket_mb=0.05)  # both members alive
        for _ in range(2):
            queue.get(timeout=30)
        procs[0].join(timeout=30)
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"weight sync \(gloo, rank 0 of 3\): broadcast of bucket 1/"):
            sender.send(_state(1), bucket_mb=0.05)
        assert time.perf_counter() - start < 15  # within the group's timeout
    finally:
        sender.close()
        for p in procs:
            p.kill()
            p.join(timeout=10)


def test_group_arguments_are_checked():
    with pytest.raises(ValueError, match="backend"):
        WeightGroup(("127.0.0.1", 1), 0, 2, "mpi")
    with pytest.raises(ValueError, match="size >= 2"):
        WeightGroup(("127.0.0.1", 1), 0, 1)
