"""Scorer registry: local scoring through the verifier registry, lazy Ray entry, failures as zero reward."""

from __future__ import annotations

import pytest

from archer.data.schema import Problem
from archer.rewards import registry
from archer.rewards import scoring as scorer_mod
from archer.rewards.scoring import LocalScorer, build_scorer
from archer.rewards.types import RewardResult, safe_score


def _problem(answer: str = "4") -> Problem:
    return Problem(id="p", prompt="2+2?", kind="math", answer=answer)


def test_local_scorer_passes_options_and_keeps_order(monkeypatch):
    seen = {}

    def verifier(responses, problems, *, timeout=1.0):
        seen["timeout"] = timeout
        return [RewardResult(float(r == p.answer), r == p.answer, {}) for r, p in zip(responses, problems)]

    monkeypatch.setitem(registry._VERIFIERS, "math", verifier)
    s = build_scorer("local", timeout=7.0)
    out = s.score(["4", "5", "3"], [_problem("4"), _problem("4"), _problem("3")])
    assert [r.reward for r in out] == [1.0, 0.0, 1.0] and seen["timeout"] == 7.0
    s.close()


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(KeyError, match="local.*ray"):
        build_scorer("slurm")


def test_ray_backend_is_lazy_and_gets_resources(monkeypatch):
    made = {}

    class FakeRay:
        def __init__(self, num_workers, cpus_per_worker, address, **opts):
            made.update(num_workers=num_workers, cpus=cpus_per_worker, address=address, **opts)

    class FakeModule:
        RayRewardScorer = FakeRay

    monkeypatch.setattr(scorer_mod.importlib, "import_module", lambda name: FakeModule)
    build_scorer("ray", num_workers=3, cpus_per_worker=0.5, address="auto", timeout=2.0)
    assert made == {"num_workers": 3, "cpus": 0.5, "address": "auto", "timeout": 2.0}
    build_scorer("ray", num_workers=1, resources={"score": 0.001})  # a resources.placement label
    assert made["resources"] == {"score": 0.001}


def test_safe_score_turns_a_broken_scorer_into_zero_rewards():
    class Broken:
        def score(self, responses, problems):
            raise ConnectionError("worker lost")

        def close(self):
            pass

    class Short(Broken):
        def score(self, responses, problems):
            return [RewardResult(1.0, True)]

    out = safe_score(Broken(), ["a", "b"], [_problem(), _problem()])
    assert [r.reward for r in out] == [0.0, 0.0] and "worker lost" in out[0].info["reason"]
    out = safe_score(Short(), ["a", "b"], [_problem(), _problem()])
    assert len(out) == 2 and "1 results for 2" in out[1].info["reason"]


def test_real_math_verifier_scores_boxed_answers():
    out = LocalScorer().score(["so \\boxed{4}", "\\boxed{5}", "no answer"], [_problem()] * 3)
    assert [r.correct for r in out] == [True, False, False]
    assert out[2].reward == 0.0


def test_reward_math_extraction_reaches_the_math_verifier():
    """reward.math_extraction is the run scorer's extraction policy: with `boxed` an "Answer:" line
    earns nothing; the default reads it."""
    from archer.config import load_config
    from archer.data.schema import Problem
    from archer.rewards.scoring import build_run_scorer

    problems = [Problem("p", "1+3?", "math", answer="4")]
    for mode, want in (("answer_line", True), ("boxed", False)):
        scorer = build_run_scorer(load_config("tiny_math", [f"reward.math_extraction={mode}"]))
        try:
            assert scorer.score(["so the result is\nAnswer: 4"], problems)[0].correct is want, mode
        finally:
            scorer.close()
