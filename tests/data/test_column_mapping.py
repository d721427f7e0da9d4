"""Issue 24: flat files in the layouts people have (GSM8K's {"question", "answer"}) through a column
mapping, data.prompt_key / data.answer_key and archer eval --prompt-key / --answer-key (verl's names);
1-based row numbers; a wrong --data name lists what --data accepts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from archer.config import load_config
from archer.data.formats import load_dataset
from archer.eval.datasets import load_eval_set
from archer.tasks.problems import load_problems

GSM8K = [
    {"question": "Natalia sold 48 clips and then 24 more. How many?", "answer": "48 + 24 = 72\n#### 72"},
    {"question": "A shirt costs 1,200 cents. Two?", "answer": "2 * 1200 = 2400\n#### 2,400"},
]


@pytest.fixture
def gsm8k(tmp_path: Path) -> Path:
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    return path


def test_gsm8k_layout_with_a_prompt_key(gsm8k):
    problems = load_dataset(gsm8k, prompt_key="question")
    assert [p.answer for p in problems] == ["72", "2400"]
    assert problems[0].prompt == GSM8K[0]["question"] and problems[0].kind == "math"
    assert problems[0].id == "gsm8k/0" and problems[0].meta["solution"] == GSM8K[0]["answer"]


def test_missing_column_names_the_setting_and_the_row(gsm8k):
    with pytest.raises(ValueError) as exc:
        load_dataset(gsm8k, prompt_key="prompt")
    assert str(exc.value) == (
        f"{gsm8k}: row 1 (columns format): ValueError: no column 'prompt' (data.prompt_key, archer eval "
        "--prompt-key); the row's columns: ['answer', 'question']"
    )


def test_train_config_maps_the_columns_and_leaves_bundled_samples_alone(gsm8k):
    cfg = load_config(
        "tiny_math",
        [f"data.train={gsm8k}", "data.prompt_key=question", "data.eval=math500", "data.num_eval=2"],
    )
    train, evals = load_problems(cfg)
    assert [p.answer for p in train] == ["72", "2400"] and len(evals) == 2


def test_eval_prompt_key_and_wrong_name(gsm8k):
    from archer.cli.eval import load_problems as eval_problems

    args = argparse.Namespace(
        data=[str(gsm8k)], format="auto", limit=None, prompt_key="question", answer_key=None
    )
    assert [p.answer for p in eval_problems(args)] == ["72", "2400"]
    with pytest.raises(FileNotFoundError) as exc:
        load_eval_set("gsm8k")
    assert str(exc.value) == (
        "--data gsm8k: no such file, bundled sample or task; bundled samples: math500, aime24, amc23, "
        "humaneval, mbpp_sample, livecodebench_sample, code_contests_sample; tasks: synthetic_code, "
        "synthetic_interpreter, synthetic_math, synthetic_paths"
    )


def test_column_mapping_on_a_task_is_a_config_error():
    from archer.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_config("tiny_math", ["data.prompt_key=question"])
    assert str(exc.value) == (
        "data.prompt_key: maps the columns of a dataset file, but data.train 'synthetic_math' is a task "
        "(generated problems)"
    )
