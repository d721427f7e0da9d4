"""Curricula (archer.data.curriculum, archer.rl.potential): stages fold in step order, the
potential curriculum draws the highest-potential prompts first, kind order, resume keeps the data order."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from archer.config import load_config
from archer.data.curriculum import (
    Curriculum,
    Stage,
    build_curriculum,
    kind_stages,
    length_stages,
    potential_stages,
    stage_starts,
)
from archer.errors import ConfigError
from archer.rl.batch import PromptSampler
from archer.rl.potential import compute_potentials, potential_of, read_potential_file


def test_stages_fold_in_start_order_and_compose():
    pool = frozenset({1, 2})
    cur = Curriculum(length_stages([[0, 8], [5, 16]]) + [Stage(3, pool=pool, name="p")], 4)
    assert [cur.at(s).max_new_tokens for s in range(7)] == [8, 8, 8, 8, 8, 16, 16]
    assert [cur.at(s).pool for s in (0, 2, 3, 6)] == [None, None, pool, pool]
    assert Curriculum([], 12).at(100).max_new_tokens == 12 and cur.at(4).names == ("p",)


def test_potential_stages_take_the_top_quarter_half_three_quarters_all():
    potential = [0.1, 0.9, 0.5, 0.0, 0.7, 0.3, 0.9, 0.2]  # order: 1, 6 (tie by index), 4, 2, 5, 7, 0, 3
    stages = potential_stages(potential, [0, 10, 20, 30])
    assert [sorted(s.pool) for s in stages] == [
        [1, 6],
        [1, 2, 4, 6],
        [1, 2, 4, 5, 6, 7],
        list(range(8)),
    ]
    assert [s.start for s in stages] == [0, 10, 20, 30]
    assert stage_starts([], 4, 40) == [0, 10, 20, 30] and stage_starts([0, 3], 2, 40) == [0, 3]
    with pytest.raises(ValueError, match="2 starts for 4 stages"):
        stage_starts([0, 3], 4, 40)


def test_sampler_draws_stage_pools_in_seeded_order_and_resumes_exactly():
    potential = [i / 39 for i in range(40)]  # prompt 39 has the highest potential
    cur = Curriculum(potential_stages(potential, [0, 2, 4, 6]), 8)
    sampler = PromptSampler(40, seed=3)
    drawn = [sampler.next(5, cur.at(step).pool) for step in range(8)]
    for step, idx in enumerate(drawn):
        k = min(step // 2 + 1, 4)
        assert set(idx) <= set(range(40 - 10 * k, 40)), (step, idx)  # the top k quarters only
    assert set(drawn[0]) | set(drawn[1]) <= set(range(30, 40)) and len(set(drawn[0] + drawn[1])) == 10
    # stop after step 3, restore the state in a fresh sampler: the same prompts follow
    replay = PromptSampler(40, seed=3)
    for step in range(4):
        replay.next(5, cur.at(step).pool)
    resumed = PromptSampler(40, seed=3)
    resumed.load_state_dict(json.loads(json.dumps(replay.state_dict())))
    assert [resumed.next(5, cur.at(step).pool) for step in range(4, 8)] == drawn[4:]


def test_kind_order_is_math_then_code():
    kinds = ["code", "math", "math", "code", "math"]
    stages = kind_stages(kinds, ["math", "code"], [0, 5])
    assert sorted(stages[0].pool) == [1, 2, 4] and sorted(stages[1].pool) == [0, 3]
    with pytest.raises(ValueError, match="no training problem of kind 'code'"):
        kind_stages(["math"], ["math", "code"], [0, 5])
    cfg = load_config("tiny_math", ["data.curriculum=kind_order", "data.curriculum_steps=[0, 7]"])
    probs = [SimpleNamespace(kind=k) for k in kinds]
    cur = build_curriculum(cfg, probs)
    assert sorted(cur.at(6).pool) == [1, 2, 4] and sorted(cur.at(7).pool) == [0, 3]
    assert cur.at(7).max_new_tokens == cfg.rollout.max_new_tokens  # the length track is untouched


def test_potential_by_hand_and_from_a_file(tmp_path):
    assert potential_of([0.5]) == 1.0 and potential_of([1.0, 1.0]) == 0.0 and potential_of([0.0]) == 0.0
    assert potential_of([0.25, 0.75]) == 1.0  # pooled p = 1/2
    assert potential_of([0.0, 0.5]) == pytest.approx(4 * 0.25 * 0.75)  # 0.75
    probs = [SimpleNamespace(id="a"), SimpleNamespace(id="b")]
    f = tmp_path / "pot.jsonl"
    f.write_text('{"id": "b", "potential": 0.3}\n{"id": "a", "pass_rates": [0.0, 0.5]}\n')
    assert read_potential_file(f, probs) == pytest.approx([0.75, 0.3])
    f.write_text('{"id": "a", "potential": 0.3}\n')
    with pytest.raises(ValueError, match="no potential for problem 'b'"):
        read_potential_file(f, probs)
    f.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1"):
        read_potential_file(f, probs)


def test_compute_potentials_over_sampling_modes():
    class Engine:  # prompt i is solved with probability (i/3) at T=1 and always at T=0.5
        def generate(self, prompts, params):
            out = []
            for p in prompts:
                i = p[0]
                ok = [params.temperature < 1 or k < i for k in range(params.n)]
                out.append([SimpleNamespace(text="right" if r else "wrong") for r in ok])
            return out

    def score(responses, probs):
        return [SimpleNamespace(correct=r == "right") for r in responses]

    pot, rates = compute_potentials(
        Engine(),
        [[0], [1], [2], [3]],
        [None] * 4,
        score,
        temperatures=[1.0, 0.5],
        samples=3,
        max_new_tokens=4,
        seed=0,
    )
    assert rates == {"T=1": [0.0, 1 / 3, 2 / 3, 1.0], "T=0.5": [1.0] * 4}
    assert pot == pytest.approx([potential_of([a, 1.0]) for a in (0.0, 1 / 3, 2 / 3, 1.0)])
    assert pot[0] == pytest.approx(1.0) and pot[3] == 0.0


def test_curriculum_config_is_validated():
    for override, field in [
        ("data.curriculum=magic", "data.curriculum"),
        ("data.curriculum_steps=[0, 0]", "data.curriculum_steps[1]"),
        ("data.curriculum_kinds=[math, poetry]", "data.curriculum_kinds[1]"),
        ("data.potential_file=/nonexistent.jsonl", "data.potential_file"),
        ("data.potential_temperatures=[0]", "data.potential_temperatures[0]"),
    ]:
        with pytest.raises(ConfigError, match=field.replace("[", r"\[")):
            load_config("tiny_math", [override])
    with pytest.raises(ConfigError, match="one start step per stage"):
        load_config("tiny_math", ["data.curriculum=potential", "data.curriculum_steps=[0, 5]"])


@pytest.mark.slow
def test_potential_run_schedules_stages_and_resumes_with_the_same_data_order(tmp_path, monkeypatch):
    from helpers import QUICK as FAST
    from helpers import parity_verifier as parity

    from archer.rewards import registry
    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    overrides = FAST + [
        "trainer.steps=4",
        "trainer.save_every=2",
        "data.curriculum=potential",
        "data.curriculum_steps=[0, 1, 2, 3]",
        "data.potential_samples=2",
        "data.potential_temperatures=[1.0]",
        "eval.enabled=false",
        "logging.plots=false",
        "logging.sinks=[]",
    ]
    ref = train(load_config("tiny_math", overrides), run_dir=tmp_path / "ref")
    # stage k of 4 draws from the top k quarters of the 40 prompts
    assert [h["data/curriculum_pool"] for h in ref["history"]] == [10, 20, 30, 40]
    saved = json.loads((tmp_path / "ref" / "potential.json").read_text())
    assert len(saved["potential"]) == 40 and list(saved["pass_rates"]) == ["T=1"]
    # the same run stopped after step 2, then resumed: the same prompts at steps 3 and 4
    run = tmp_path / "run"
    train(load_config("tiny_math", overrides + ["trainer.steps=2"]), run_dir=run)
    potential_before = (run / "potential.json").read_text()
    resumed = train(load_config("tiny_math", overrides), run_dir=run, resume=True)
    assert (run / "potential.json").read_text() == potential_before  # read back, not recomputed
    hashes = {h["step"]: h["data/prompt_hash"] for h in resumed["history"]}
    assert hashes == {h["step"]: h["data/prompt_hash"] for h in ref["history"] if h["step"] > 2}
