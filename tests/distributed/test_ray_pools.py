"""Ray reward and rollout actors on one local Ray cluster (2 CPUs), shared by every test here."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from archer.data.schema import Problem
from archer.rewards.types import RewardResult

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'archer[ray]')")


@pytest.fixture(scope="module")
def ray_session():
    # the stand-in engines below live in this test module, which the actors cannot import by name
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _recording_verifier(log_path: str, delay: float):
    """A batch verifier that appends ``item_id pid`` per scored item; reward = the item's number."""

    def verify(responses, problems):
        import os

        out = []
        for response, problem in zip(responses, problems):
            time.sleep(delay)
            with open(log_path, "a") as f:
                f.write(f"{problem.id} {os.getpid()}\n")
            out.append(RewardResult(float(response.removeprefix("r")), True, {"id": problem.id}))
        return out

    return verify


def _batch(n: int):
    problems = [Problem(id=f"p{i}", prompt=f"q{i}", kind="math", answer="1") for i in range(n)]
    return [f"r{i}" for i in range(n)], problems


def _log(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(a, int(b)) for a, b in (line.split() for line in path.read_text().splitlines())]


def test_reward_actor_killed_mid_batch_loses_and_duplicates_nothing(ray_session, tmp_path):
    from archer.rewards.ray_pool import RayRewardScorer

    log = tmp_path / "calls.txt"
    n = 24
    responses, problems = _batch(n)
    scorer = RayRewardScorer(
        2,
        cpus_per_worker=0.5,
        chunk_size=2,
        max_in_flight=2,
        verifiers={"math": _recording_verifier(str(log), 0.03)},
    )
    victim = scorer.actors[0]
    victim_pid = ray.get(victim.pid.remote())
    out: dict[str, list] = {}
    worker = threading.Thread(target=lambda: out.setdefault("results", scorer.score(responses, problems)))
    worker.start()
    deadline = time.time() + 30
    while victim_pid not in {pid for _, pid in _log(log)} and time.time() < deadline:
        time.sleep(0.005)
    ray.kill(victim, no_restart=True)  # the victim has scored part of its share, not all of it
    worker.join(timeout=60)
    scorer.close()

    results = out["results"]
    assert [r.reward for r in results] == [float(i) for i in range(n)]  # keyed by index, none lost
    assert [r.info["id"] for r in results] == [p.id for p in problems]
    calls = _log(log)
    assert {i for i, _ in calls} == {p.id for p in problems}  # every item verified at least once
    pids = {pid for _, pid in calls}
    assert victim_pid in pids and len(pids) == 3  # victim, survivor and the victim's replacement
    assert scorer.restarts == 1
    victim_items = [i for i, pid in calls if pid == victim_pid]
    assert 0 < len(victim_items) < n  # the kill really landed mid-batch


def test_reward_chunks_exhausting_retries_give_zero_reward_not_a_crash(ray_session, tmp_path):
    from archer.rewards.ray_pool import RayRewardScorer

    def crash_worker(responses, problems):
        import os

        os._exit(1)  # the actor process dies on every call

    responses, problems = _batch(4)
    scorer = RayRewardScorer(
        1,
        cpus_per_worker=0.5,
        chunk_size=2,
        max_in_flight=1,
        max_retries=0,
        max_restarts=10,
        verifiers={"math": crash_worker},
    )
    results = scorer.score(responses, problems)
    scorer.close()
    assert [r.reward for r in results] == [0.0] * 4
    assert all("reward actor died" in r.info["reason"] for r in results)
    assert scorer.restarts == 2  # 2 chunks x 1 try (no retry allowed), each death replaced the actor


def test_hung_reward_actor_is_killed_after_the_chunk_timeout_and_its_items_retried(ray_session, tmp_path):
    from archer.rewards.ray_pool import RayRewardScorer

    arm, fired = str(tmp_path / "arm"), str(tmp_path / "fired")

    def hang_once(responses, problems):
        import os

        if os.path.exists(arm) and not os.path.exists(fired):
            open(fired, "w").close()
            time.sleep(600)  # a wedged verifier: only the chunk timeout gets this batch back
        return [RewardResult(float(r.removeprefix("r")), True, {}) for r in responses]

    responses, problems = _batch(6)
    scorer = RayRewardScorer(
        1, cpus_per_worker=0.5, chunk_size=3, chunk_timeout_s=1.0, verifiers={"math": hang_once}
    )
    assert [r.reward for r in scorer.score(responses[:1], problems[:1])] == [0.0]  # actor up, not armed
    Path(arm).touch()
    results = scorer.score(responses, problems)
    scorer.close()
    assert Path(fired).exists() and scorer.restarts == 1
    assert [r.reward for r in results] == [float(i) for i in range(6)]


def test_reward_pool_matches_local_scorer_and_passes_options(ray_session):
    from archer.rewards.ray_pool import RayRewardScorer
    from archer.rewards.registry import register_verifier, score_responses

    def with_option(responses, problems, scale=1.0):
        return [RewardResult(scale * len(r), len(r) > 2, {}) for r in responses]

    responses, problems = _batch(7)
    register_verifier("math", with_option)  # the local registry, for the reference answer
    try:
        local = score_responses(responses, problems, scale=0.5)
    finally:
        register_verifier("math", "archer.rewards.math.score:score_math_problems")
    scorer = RayRewardScorer(2, cpus_per_worker=0.5, verifiers={"math": with_option}, scale=0.5)
    remote = scorer.score(responses, problems)
    assert scorer.score([], []) == []
    scorer.close()
    assert remote == local


def test_missing_ray_is_a_clear_error(monkeypatch):
    from archer.distributed import _ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"archer\[ray\]"):
        _ray.import_ray()


def _tiny_lm(seed: int):
    from archer.models.tiny import build_tiny_model, build_tokenizer

    texts = [f"{a}+{b}={a + b}" for a in range(12) for b in range(12)]
    tok = build_tokenizer(texts, vocab_size=300)
    return tok, build_tiny_model(tok, hidden_size=32, num_layers=1, seed=seed)


def _two_policies(worker_seed: int):
    """Two tiny policies (model1: "the trainer's weights after one update"), a factory of actor engines
    over a third, differently seeded model, and the greedy samples of each policy on three prompts."""
    from archer.rollout.base import SamplingParams
    from archer.rollout.hf import HFEngine

    tok, model0 = _tiny_lm(seed=0)
    _, model1 = _tiny_lm(seed=1)

    def engine_factory():
        from archer.models.tiny import build_tiny_model

        return HFEngine(build_tiny_model(tok, hidden_size=32, num_layers=1, seed=worker_seed), tok)

    prompts = ["1+2=", "3+4=", "10+11="]
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=6)
    local0 = _signature(HFEngine(model0, tok).generate(prompts, params))
    local1 = _signature(HFEngine(model1, tok).generate(prompts, params))
    return tok, model0, model1, engine_factory, prompts, params, local0, local1


def _signature(rollouts):
    """Greedy tokens and their log-probs: what a model's weights decide."""
    return [[(r.response_ids, r.logprobs) for r in g] for g in rollouts]


def _same(a, b, tol=1e-4) -> bool:
    pairs = [(x, y) for ga, gb in zip(a, b) for x, y in zip(ga, gb)]
    return len(a) == len(b) and all(
        x[0] == y[0] and max(abs(p - q) for p, q in zip(x[1], y[1])) < tol for x, y in pairs
    )


def test_rollout_actors_sync_weights_and_stamp_versions_so_stale_rollouts_show(ray_session):
    from archer.rollout.ray_pool import RayRolloutPool, StaleRolloutError, check_fresh, staleness

    tok, model0, model1, engine_factory, prompts, params, local0, local1 = _two_policies(worker_seed=0)
    assert not _same(local0, local1)

    pool = RayRolloutPool(engine_factory, num_workers=2, cpus_per_worker=0.25)
    assert pool.num_gpus_per_worker == 0.0  # no GPU in this cluster
    try:
        out0 = pool.generate(prompts, params)
        assert [[r.prompt_index for r in g] for g in out0] == [[0, 0], [1, 1], [2, 2]]
        assert _same(_signature(out0), local0)  # the actors hold the trainer's initial weights
        assert {r.meta["weight_version"] for g in out0 for r in g} == {0}

        in_flight = pool.generate_async(prompts, params)  # queued on the actors before the update
        timing = pool.update_weights(model1.state_dict())
        assert pool.version == 1 and timing["version"] == 1.0
        assert timing["total_s"] >= timing["load_s"] > 0 and timing["put_s"] > 0
        stale = pool.collect(in_flight)
        assert {r.meta["weight_version"] for g in stale for r in g} == {0}
        assert staleness(stale, pool.version) == 1
        with pytest.raises(StaleRolloutError, match="1 weight version"):
            check_fresh(stale, pool.version)
        check_fresh(stale, pool.version, max_staleness=1)

        out1 = pool.generate(prompts, params)
        assert _same(_signature(out1), local1)  # ... and now the updated ones
        assert staleness(out1, pool.version) == 0
        pool.update_weights(model0)  # a module works too; version 2
        assert {r.meta["weight_version"] for g in pool.generate(prompts[:1], params) for r in g} == {2}
        with pytest.raises(Exception, match="weight version must increase"):
            ray.get(pool.workers[0].update_weights.remote(model0.state_dict(), 2))
    finally:
        pool.close()


def _weights_equal(pool, model) -> bool:
    """Every actor's engine holds exactly ``model``'s tensors."""
    want = model.state_dict()
    for worker in pool.workers:
        have = ray.get(worker.__ray_call__.remote(lambda w: dict(w.engine.model.state_dict())))
        if set(have) != set(want) or not all(torch_equal(have[k], want[k]) for k in want):
            return False
    return True


def torch_equal(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and torch.equal(a, b)


def test_collective_weight_sync_gives_the_actors_the_same_weights_as_the_object_store(
    ray_session, monkeypatch
):
    """``weight_sync="collective"``: a gloo group of this process and 2 actors, bucketed; the actors then
    generate exactly what the trainer's weights generate, versions follow, and the timings say which
    transport ran. ``auto`` falls back to the object store, with one line, when the group cannot form."""
    from archer.distributed import weight_sync
    from archer.rollout.ray_pool import RayRolloutPool

    tok, model0, model1, engine_factory, prompts, params, local0, local1 = _two_policies(worker_seed=5)
    pool = RayRolloutPool(
        engine_factory,
        num_workers=2,
        cpus_per_worker=0.25,
        initial_weights=model0,
        weight_sync="collective",
        bucket_mb=0.01,  # several buckets even for this tiny model
    )
    try:
        assert pool.sync_backend == "gloo" and pool.last_sync["collective"] == 1.0
        assert _weights_equal(pool, model0)
        assert _same(_signature(pool.generate(prompts, params)), local0)
        timing = pool.update_weights(model1)
        assert timing["collective"] == 1.0 and timing["buckets"] > 1 and timing["version"] == 1.0
        assert timing["total_s"] >= timing["send_s"] > 0
        assert _weights_equal(pool, model1) and not _weights_equal(pool, model0)  # bit for bit, every actor
        out1 = pool.generate(prompts, params)
        assert _same(_signature(out1), local1)
        assert {r.meta["weight_version"] for g in out1 for r in g} == {1}
        assert pool.metrics()["rollout/weight_sync_collective"] == 1.0
    finally:
        pool.close()

    lines = []

    def no_store(*args, **kwargs):
        raise OSError("address in use")

    monkeypatch.setattr(weight_sync.WeightGroup, "reserve", staticmethod(no_store))
    pool = RayRolloutPool(
        engine_factory,
        num_workers=1,
        cpus_per_worker=0.25,
        initial_weights=model1,
        weight_sync="auto",
        log=lines.append,
    )
    try:
        assert pool.sync_backend == "object_store" and pool.last_sync["collective"] == 0.0
        assert lines == [
            "weight sync: could not form a gloo group with 1 rollout worker(s): address in use; "
            "using the Ray object store"
        ]
        assert _weights_equal(pool, model1)
    finally:
        pool.close()
    with pytest.raises(RuntimeError, match="could not form a gloo group"):
        RayRolloutPool(engine_factory, num_workers=1, cpus_per_worker=0.25, weight_sync="collective")
    with pytest.raises(ValueError, match="weight_sync must be one of"):
        RayRolloutPool(engine_factory, num_workers=1, weight_sync="nccl")


def _head_dim_32_lm(seed: int):
    from archer.models.tiny import build_tiny_model, build_tokenizer

    texts = [f"{a}+{b}={a + b}" for a in range(12) for b in range(12)]
    tok = build_tokenizer(texts, vocab_size=300)
    return tok, build_tiny_model(tok, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=1, seed=seed)


def _recomputed_gap(model, rollouts, temperature: float) -> float:
    import torch

    gap = 0.0
    for group in rollouts:
        for r in group:
            ids = torch.tensor([r.prompt_ids + r.response_ids])
            with torch.no_grad():
                logits = model(ids).logits[0].float() / temperature
            p, steps = len(r.prompt_ids), torch.arange(len(r.response_ids))
            ref = logits.log_softmax(-1)[p - 1 + steps, torch.tensor(r.response_ids)]
            gap = max(gap, float((torch.tensor(r.logprobs) - ref).abs().max()))
    return gap


def test_vllm_rollout_actors_start_from_the_trainers_weights_sync_and_stamp_versions(ray_session):
    """vLLM engines in Ray actors: the trainer's weights reach them through the gloo broadcast group
    (bucketed), then, the group left, through the object store; after each push their samples are the
    new weights' (log-prob gap < 1e-4). One pool for both paths (a vLLM actor takes ~10 s to start)."""
    pytest.importorskip("vllm", reason="vllm is not installed (pip install 'archer[vllm]')")
    from archer.rollout.base import SamplingParams, shares_policy
    from archer.rollout.ray_pool import RayRolloutPool, staleness, worker_engine_factory

    tok, model0 = _head_dim_32_lm(seed=0)
    _, model1 = _head_dim_32_lm(seed=1)
    factory = worker_engine_factory("vllm", model0, tok, {"kv_cache_bytes": 16 << 20, "max_model_len": 128})
    prompts = ["1+2=", "3+4=", "10+11=", "5"]
    params = SamplingParams(n=2, temperature=0.8, max_new_tokens=6, seed=11)
    pool = RayRolloutPool(
        factory,
        num_workers=2,
        cpus_per_worker=0.5,
        initial_weights=model0,
        weight_sync="collective",
        bucket_mb=0.01,
    )
    try:
        assert not shares_policy(pool) and pool.version == 0
        assert ray.get([w.get_version.remote() for w in pool.workers]) == [0, 0]
        assert ray.get([w.engine_version.remote() for w in pool.workers]) == [
            0,
            0,
        ]  # VLLMEngine's own counter
        out0 = pool.generate(prompts, params)  # the actors' vLLM holds the trainer's weights (dummy before)
        assert [[r.prompt_index for r in g] for g in out0] == [[0, 0], [1, 1], [2, 2], [3, 3]]
        assert _recomputed_gap(model0, out0, 0.8) < 1e-4
        assert {r.meta["weight_version"] for g in out0 for r in g} == {0}
        timing = pool.update_weights(model1)  # a module: tied lm_head named, sent once
        assert timing["version"] == 1.0 and timing["load_s"] > 0
        assert timing["collective"] == 1.0  # broadcast over the group
        out1 = pool.generate(prompts, params)
        assert _recomputed_gap(model1, out1, 0.8) < 1e-4 and _recomputed_gap(model0, out1, 0.8) > 1e-2
        assert staleness(out1, pool.version) == 0 and staleness(out0, pool.version) == 1
        assert pool.metrics()["rollout/weight_version"] == 1.0
        pool._drop_group("test")  # from now on through the object store
        timing = pool.update_weights(model0)
        assert timing["collective"] == 0.0 and timing["version"] == 2.0
        out2 = pool.generate(prompts, params)
        assert _recomputed_gap(model0, out2, 0.8) < 1e-4 and _recomputed_gap(model1, out2, 0.8) > 1e-2
    finally:
        pool.close()


RAY_RUN = [  # a 3-step tiny_math run with one rollout worker
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.sft_epochs=0",
    "data.generator={level: easy}",
    "data.num_train=16",
    "data.num_eval=4",
    "rollout.batch_size=4",
    "rollout.n=4",
    "rollout.max_new_tokens=6",
    "rollout.max_gen_batches=1",
    "trainer.save_every=0",
    "trainer.threads=1",
    "trainer.micro_batch_tokens=64",
    "optim.lr=1e-2",
    "eval.n=2",
    "eval.ks=[1, 2]",
    "logging.progress=false",
    "logging.plots=false",
    "logging.sinks=[]",
    "resources.rollout_workers=1",
    "resources.rollout_cpus_per_worker=0.5",
    "trainer.steps=3",
    "rollout.dynamic_sampling=false",
]


@pytest.mark.parametrize("off_policy", [False, True], ids=["on-policy", "one-step-off"])
def test_archer_train_runs_rollouts_on_ray_workers(ray_session, tmp_path, monkeypatch, off_policy):
    """``resources.rollout_workers=1``: the engine lives in an actor, the trainer syncs it after every
    update (versions follow ``policy_version``), recomputes old log-probs and turns truncated IS on.
    ``rollout.one_step_off_policy``: step t+1 is generated while step t trains, one version stale."""
    from helpers import parity_verifier as parity

    from archer.config import load_config
    from archer.errors import ConfigError
    from archer.rewards import registry
    from archer.rl import run as rl
    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    runs = []
    real = rl.RLRun.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        runs.append(self)

    monkeypatch.setattr(rl.RLRun, "__init__", spy)
    cfg = load_config(
        "tiny_math",
        RAY_RUN + [f"rollout.one_step_off_policy={str(off_policy).lower()}"],
    )
    worker_versions = []

    def on_step(step, metrics):
        pool = runs[0].engine.pool if off_policy else runs[0].engine
        worker_versions.append(ray.get(pool.workers[0].get_version.remote()))

    summary = train(cfg, run_dir=tmp_path, on_step=on_step)
    run = runs[0]
    try:
        assert summary["steps"] == 3 and run.cfg.algo.tis_cap == 2.0
        assert run.engine.version == run.policy_version == 3  # synced after each update
        assert worker_versions == [1, 2, 3]  # the actor held each update's weights
        assert [h["rollout/weight_version"] for h in summary["history"]] == [1.0, 2.0, 3.0]  # logged per step
        # the run default rollout.weight_sync=auto formed the gloo group: every push was a broadcast
        assert [h["rollout/weight_sync_collective"] for h in summary["history"]] == [1.0, 1.0, 1.0]
        pool = run.engine.pool if off_policy else run.engine
        assert pool.workers == []  # train() closed the engine: no Ray actor outlives the run
        diffs = [h["rollout/logprob_diff_max"] for h in summary["history"]]
        if not off_policy:
            assert all(d < 1e-4 for d in diffs)  # float32 copies of the current weights
            return
        # step 1 generated fresh; steps 2 and 3 were generated during the previous update: 1 version old
        assert [h["rollout/staleness_max"] for h in summary["history"]] == [0.0, 1.0, 1.0]
        assert run.engine.hits == 2 and run.engine.misses >= 1
        assert diffs[0] < 1e-4 and all(d > 1e-4 for d in diffs[1:])  # the trainer sees the lag ...
        assert all(
            "actor/tis_mean" in h for h in summary["history"] if "actor/grad_norm" in h
        )  # ... TIS corrects it
    finally:
        run.engine.close()
    with pytest.raises(ConfigError, match="rollout_workers"):
        load_config("tiny_math", ["rollout.one_step_off_policy=true"])


def test_async_partial_rollouts_run_in_chunks_on_a_ray_worker(ray_session, tmp_path, monkeypatch):
    """trainer.mode=async with rollout.partial on a Ray rollout worker: every round is generated in
    chunks of rollout.partial_chunk_tokens through the pool, the weights reach the worker between
    chunks, every response token carries the version that sampled it, and staleness stays bounded."""
    from helpers import parity_verifier as parity

    from archer.config import load_config
    from archer.rewards import registry
    from archer.rl import run as rl
    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    calls, rounds = [], []
    real = rl.RLRun.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        engine, make = self.rounds.engine, self.rounds._make_round
        generate = engine.generate

        def counted(prompts, params):  # the producer's calls (the evaluation shares the pool)
            if threading.current_thread().name == "archer-async-producer":
                calls.append(params.max_new_tokens)
            return generate(prompts, params)

        def kept(*a):
            rounds.append(make(*a))
            return rounds[-1]

        engine.generate, self.rounds._make_round = counted, kept

    monkeypatch.setattr(rl.RLRun, "__init__", spy)
    over = ["trainer.mode=async", "trainer.max_staleness=1", "rollout.partial=true"]
    summary = train(
        load_config("tiny_math", RAY_RUN + over + ["rollout.partial_chunk_tokens=2"]), run_dir=tmp_path
    )
    assert summary["steps"] == 3
    assert calls and all(c <= 2 for c in calls) and len(calls) > len(rounds)  # chunked, several per round
    for rnd in rounds:
        for g in rnd.groups:
            for ro in g.responses:
                versions = ro.meta["token_versions"]
                assert len(versions) == len(ro.response_ids) and versions == sorted(versions)
                assert rnd.version <= versions[0] if versions else True
    assert all(h["async/staleness_max"] <= 1 for h in summary["history"])
    assert [h["rollout/weight_sync_collective"] for h in summary["history"]] == [1.0, 1.0, 1.0]
