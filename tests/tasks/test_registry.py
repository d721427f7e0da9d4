"""The task registry: every bundled task is found by name, and adding a task is one file.

The worked example of docs/DESIGN.md ("Adding a task") is taken from the document as written, dropped
into archer/tasks/, and trained on for two steps: if the document or the registry drifts, this fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from archer.errors import ConfigError
from archer.tasks import registry

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "archer" / "tasks" / "doc_example_larger.py"


def test_bundled_tasks_are_registered_with_their_recipes():
    from archer.config import recipe_names

    names = registry.task_names()
    assert {"synthetic_math", "synthetic_code", "synthetic_paths", "synthetic_interpreter"} <= set(names)
    for name in names:
        task = registry.get_task(name)
        assert task.name == name and task.recipe in recipe_names() and task.description


def test_unknown_task_names_the_setting_and_lists_the_known():
    with pytest.raises(ConfigError, match=r"data.eval: unknown task 'nope'; known: \['synthetic_code'"):
        registry.get_task("nope", "data.eval")


def test_a_second_task_of_the_same_name_is_refused():
    task = registry.get_task("synthetic_math")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_task(registry.Task(**{**task.__dict__, "description": "other"}))


@pytest.fixture
def example_task():
    text = (REPO / "docs" / "DESIGN.md").read_text()
    section = text[text.index("## Adding a task") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    EXAMPLE.write_text(code)
    registry._discover.cache_clear()
    try:
        yield
    finally:
        EXAMPLE.unlink()
        registry._TASKS.pop("larger", None)
        registry._discover.cache_clear()


def test_the_documented_example_task_is_one_file_that_trains(example_task, tmp_path):
    from archer.config import load_config
    from archer.rl.loop import train
    from archer.tasks.problems import load_problems, sft_examples

    assert "larger" in registry.task_names()
    overrides = [
        "data.train=larger",
        "data.num_train=40",
        "data.num_eval=4",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.sft_epochs=1",
        "model.sft_examples=32",
        "trainer.steps=2",
        "rollout.batch_size=2",
        "rollout.n=2",
        "rollout.max_new_tokens=16",
        "eval.n=1",
        "eval.ks=[1]",
        "logging.sinks=[]",
        "logging.plots=false",
        "logging.progress=false",
    ]
    cfg = load_config("tiny_math", overrides)
    train_p, eval_p = load_problems(cfg)
    assert len(train_p) == 40 and len(eval_p) == 4
    assert not {p.prompt for p in train_p} & {p.prompt for p in eval_p}  # disjoint splits
    assert all(int(p.answer) == max(map(int, re.findall(r"\d+", p.prompt))) for p in train_p)
    assert sft_examples(cfg)[0]["messages"][1]["content"].startswith("\\boxed{")
    summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["steps"] == 2 and len(summary["history"]) == 2


def test_a_request_beyond_a_generators_capacity_fails_fast_naming_the_setting():
    """data.num_train far beyond what the task can generate is one line naming the setting, in seconds
    (it was ten minutes of silent drawing, and the same again on --resume)."""
    import time

    from archer.config import load_config
    from archer.tasks.problems import load_problems

    t0 = time.time()
    with pytest.raises(
        ConfigError, match=r"data.num_train: could not draw 1000000 distinct train problems: "
    ):
        load_problems(load_config("tiny_math", ["data.num_train=1000000"]))
    assert time.time() - t0 < 30
