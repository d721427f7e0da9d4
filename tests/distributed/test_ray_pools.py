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
    from archer.distributed.reward_pool import RayRewardScorer

    log = tmp_path / "calls.txt"
    n = 24
    responses, problems = _batch(n)
    scorer = RayRewardScorer(
        2, cpus_per_worker=0.5, chunk_size=2, max_in_flight=2,
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
    from archer.distributed.reward_pool import RayRewardScorer

    def crash_worker(responses, problems):
        import os

        os._exit(1)  # the actor process dies on every call

    responses, problems = _batch(4)
    scorer = RayRewardScorer(1, cpus_per_worker=0.5, chunk_size=2, max_in_flight=1, max_retries=1, max_restarts=10,
                             verifiers={"math": crash_worker})
    results = scorer.score(responses, problems)
    scorer.close()
    assert [r.reward for r in results] == [0.0] * 4
    assert all("reward actor died" in r.info["reason"] for r in results)
    assert scorer.restarts == 4  # 2 chunks x (1 try + 1 retry), each death replaced the actor


def test_reward_pool_matches_local_scorer_and_passes_options(ray_session):
    from archer.distributed.reward_pool import RayRewardScorer
    from archer.rewards.registry import register_verifier, score_responses

    def with_option(responses, problems, scale=1.0):
        return [RewardResult(scale * len(r), len(r) > 2, {}) for r in responses]

    responses, problems = _batch(7)
    register_verifier("math", with_option)  # the local registry, for the reference answer
    try:
        local = score_responses(responses, problems, scale=0.5)
    finally:
        register_verifier("math", "archer.rewards.math:score_math_problems")
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
