"""A rollout actor killed with SIGKILL at several moments: its prompts are generated again on a
replacement that holds the pool's current weights, and every prompt's rollouts come back exactly once.

The stand-in engine sleeps per prompt, logs every prompt it generates (with its pid) and answers
``PROMPT:SEED:wVERSION``, so the output says which weights and which seed produced it, and the log
counts the generations (the dead actor's prompts appear twice there, never twice in the output).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'archer[ray]')")

PROMPTS = [f"p{i}" for i in range(8)]  # 4 per actor
DELAY = 0.25  # seconds per prompt: a shard takes 1 s


@pytest.fixture(scope="module")
def ray_session():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this file
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class SlowEngine:
    def __init__(self, log: str) -> None:
        self.log, self.weights = log, 0

    def generate(self, prompts, params):
        from archer.rollout.base import Rollout

        out = []
        for i, p in enumerate(prompts):
            time.sleep(DELAY)
            with open(self.log, "a") as f:
                f.write(f"{p} {os.getpid()}\n")
            text = f"{p}:{params.seed}:w{self.weights}"
            out.append([Rollout(i, [], [], [], text, False, "stop") for _ in range(params.n)])
        return out

    def update_weights(self, state_dict):
        self.weights = int(state_dict["w"])


def _factory(log: str):
    return lambda: SlowEngine(log)


def _texts(out):
    return [[r.text for r in g] for g in out]


def _expected(weights: int, seed: int = 10):
    return [[f"{p}:{seed + i // 4}:w{weights}"] * 2 for i, p in enumerate(PROMPTS)]


def _kill(pool, w: int) -> int:
    pid = int(pool.where[w]["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


def _generations(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines():
        counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    return counts


@pytest.mark.parametrize("kill_after", [0.0, 0.4, 0.9, 1.6, "random", "push"])
def test_killed_rollout_actor_is_replaced_and_its_prompts_regenerated_once(ray_session, tmp_path, kill_after):
    """0.0: before its shard starts; 0.4 / 0.9: mid-shard; 1.6: after its shard finished (the result may
    already be out of the actor); random: a seeded moment in the shard; push: between a generation and
    the weight push that follows, which then replaces it."""
    from archer.rollout.base import SamplingParams
    from archer.rollout.ray_pool import RayRolloutPool

    log = tmp_path / "generated.txt"
    pool = RayRolloutPool(_factory(str(log)), num_workers=2, cpus_per_worker=0.5, initial_weights={"w": 0})
    params = SamplingParams(n=2, seed=10)
    try:
        if kill_after == "push":
            assert _texts(pool.generate(PROMPTS, params)) == _expected(0)
            dead = _kill(pool, 0)
            pool.update_weights({"w": 1})  # finds worker 0 dead: its replacement loads version 1
            assert pool.replacements == 1 and pool.regenerated_prompts == 0
        else:
            delay = random.Random(7).uniform(0, 1.0) if kill_after == "random" else kill_after
            handle = pool.generate_async(PROMPTS, params)
            timer = threading.Timer(delay, _kill, args=(pool, 0))
            timer.start()
            timer.join()
            dead = int(pool.where[0]["pid"])
            out = pool.collect(handle)
            assert _texts(out) == _expected(0)  # none lost, none twice, in prompt order
            assert [r.prompt_index for g in out for r in g] == [i for i in range(8) for _ in range(2)]
            if pool.replacements == 0:  # its result was out before the kill: the next push finds it dead
                assert kill_after == 1.6
                pool.update_weights({"w": 1})
            else:
                pool.update_weights({"w": 1})
                assert pool.regenerated_prompts == 4
            assert pool.replacements == 1
        assert int(pool.where[0]["pid"]) != dead
        assert _texts(pool.generate(PROMPTS, params)) == _expected(1)  # the replacement holds version 1
        assert pool.metrics()["rollout/worker_replacements"] == 1.0
        counts = _generations(log)
        # each prompt of the surviving actor generated once per generate call; the dead actor's prompts
        # at most once more (the generation the kill interrupted, or the one that finished before it)
        assert all(counts[p] == 2 for p in PROMPTS[4:]), counts
        assert all(2 <= counts[p] <= 3 for p in PROMPTS[:4]), counts
    finally:
        pool.close()


def test_rollout_replacements_past_the_budget_are_one_clear_error(ray_session, tmp_path):
    from archer.rollout.base import SamplingParams
    from archer.rollout.ray_pool import RayRolloutPool

    pool = RayRolloutPool(
        _factory(str(tmp_path / "g.txt")), num_workers=2, cpus_per_worker=0.5, max_replacements=1
    )
    try:
        handle = pool.generate_async(PROMPTS, SamplingParams(n=1, seed=1))
        _kill(pool, 0)
        _kill(pool, 1)
        with pytest.raises(
            RuntimeError, match=r"rollout worker 1 died .*replacement budget \(1 per call\) is spent"
        ):
            pool.collect(handle)
    finally:
        pool.close()


@pytest.mark.parametrize("when", ["mid-shard", "push"])
def test_a_killed_actor_under_collective_sync_is_replaced_and_the_pool_moves_to_the_object_store(
    ray_session, tmp_path, when
):
    """With ``weight_sync="collective"`` the group's members are fixed: a replacement cannot join it. A
    kill found while collecting (mid-shard) or by the broadcast of the next push leaves the group with one
    line, gives the replacement the weights of the last push through the object store, and every later
    push goes that way; no prompt is lost or returned twice."""
    import torch

    from archer.rollout.base import SamplingParams
    from archer.rollout.ray_pool import RayRolloutPool

    log, lines = tmp_path / "generated.txt", []
    pool = RayRolloutPool(
        _factory(str(log)), num_workers=2, cpus_per_worker=0.5, initial_weights={"w": torch.tensor(0)},
        weight_sync="collective", log=lines.append,
    )  # fmt: skip
    params = SamplingParams(n=2, seed=10)
    try:
        assert pool.sync_backend == "gloo" and pool.last_sync["collective"] == 1.0
        if when == "push":
            assert _texts(pool.generate(PROMPTS, params)) == _expected(0)
            _kill(pool, 0)
            timing = pool.update_weights({"w": torch.tensor(1)})  # the broadcast fails; the store delivers
            assert timing["collective"] == 0.0 and pool.replacements == 1
        else:
            handle = pool.generate_async(PROMPTS, params)
            timer = threading.Timer(0.4, _kill, args=(pool, 0))
            timer.start()
            timer.join()
            assert _texts(pool.collect(handle)) == _expected(0)  # the replacement got version 0's weights
            assert pool.replacements == 1 and pool.regenerated_prompts == 4
            assert pool.update_weights({"w": torch.tensor(1)})["collective"] == 0.0
        assert pool.sync_backend == "object_store"
        assert len(lines) == 1 and lines[0].startswith("weight sync: leaving the gloo group")
        assert _texts(pool.generate(PROMPTS, params)) == _expected(1)
    finally:
        pool.close()
