"""Before and after a run are measured the same way: problems, n, k, temperature, top-p, response
budget, seed, prompt template and engine. Each one changed makes the comparison an error (it was
silently compared: an after-evaluation at another temperature and seed passed every test)."""

from __future__ import annotations

import json

import pytest
from helpers import QUICK

from archer.config import load_config
from archer.rl.evaluate import MeasurementMismatch, improvement, measurement


class EngineA:
    pass


class EngineB:
    pass


def _m(**change):
    class P:
        def __init__(self, i):
            self.id = f"p{i}"

    cfg = load_config("tiny_math")
    problems = [P(i) for i in range(4)]
    engine, max_new, seed = EngineA(), 64, 7
    for key, value in change.items():
        if key == "problems":
            problems = [P(i) for i in value]
        elif key == "engine":
            engine = value
        elif key == "max_new_tokens":
            max_new = value
        elif key == "seed":
            seed = value
        elif key == "template":
            cfg.data.prompt_template = value
        else:
            setattr(cfg.eval, key, value)
    return measurement(engine, problems, cfg, max_new, seed)


BASE = {"avg@1": 0.5, "per_problem_avg": [0.5, 0.5, 0.5, 0.5]}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"problems": [0, 1, 2, 5]}, "problems"),
        ({"n": 4}, "n"),
        ({"ks": [1, 4]}, "ks"),
        ({"temperature": 0.6}, "temperature"),
        ({"top_p": 0.9}, "top_p"),
        ({"max_new_tokens": 128}, "max_new_tokens"),
        ({"seed": 8}, "seed"),
        ({"template": "raw"}, "template"),
        ({"engine": EngineB()}, "engine"),
    ],
)
def test_each_setting_changed_between_before_and_after_is_refused(change, field):
    before = dict(BASE, measurement=_m())
    assert improvement(before, dict(BASE, measurement=_m()))["avg@1"] == 0.0  # the same: compared
    with pytest.raises(MeasurementMismatch, match=rf"measured differently \({field}"):
        improvement(before, dict(BASE, measurement=_m(**change)))


def test_a_run_records_one_measurement_and_a_resume_with_other_eval_settings_stops_at_start(
    tmp_path, parity_math
):
    from archer.rl.loop import train

    quiet = [*QUICK, "trainer.steps=2", "logging.sinks=[]", "logging.plots=false"]
    summary = train(load_config("tiny_math", quiet), run_dir=tmp_path / "run")
    before, after = summary["before"]["measurement"], summary["after"]["measurement"]
    assert before == after and before["num_problems"] == 4 and before["seed"] == 7
    on_disk = json.loads((tmp_path / "run" / "eval_before.json").read_text())
    assert on_disk["measurement"] == before
    changed = load_config("tiny_math", [*quiet, "trainer.steps=3", "eval.temperature=0.5"])
    with pytest.raises(
        MeasurementMismatch, match="measured with other evaluation settings \\(temperature\\)"
    ):
        train(changed, run_dir=tmp_path / "run", resume=True)
