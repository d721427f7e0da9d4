"""A run's problems from its config: a registered task's generator or a dataset file.

``data.train`` / ``data.eval`` name a task of the registry (:mod:`archer.tasks.registry`; options in
``data.generator``) or a dataset file read by :func:`archer.data.formats.load_dataset` (a malformed row
is an error naming the file and the row). ``data.eval`` unset with a task as ``data.train`` evaluates
on that task's ``test`` split (disjoint from ``train`` by construction, seed ``data.seed + 1``).

The config is taken by duck typing (``cfg.data``, ``cfg.model``): this layer sits below ``archer.config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archer.data.formats import bundled_names, load_dataset, resolve_data_path
from archer.data.observations import TOOL_FORMATS
from archer.data.prompts import user_message
from archer.data.schema import Problem
from archer.errors import ConfigError
from archer.tasks.draw import SPLITS
from archer.tasks.registry import Task, get_task, is_task, task_names

# seeds: RL's train problems use data.seed, its held-out problems data.seed + 1, SFT data.seed + SFT_SEED
SFT_SEED_OFFSET = 7919
# data.eval_split: where a task's held-out problems come from (every split of the draw but train)
EVAL_SPLITS = tuple(split for split in SPLITS if split != "train")
TOKENIZER_TEXTS = 2000
GENERIC_CORPUS_TASK = "synthetic_code"  # a dataset file's from-scratch tokenizer: the math and code corpus


def _generate(name: str, n: int, split: str, seed: int, options: dict[str, Any], field: str) -> list[Problem]:
    try:
        return get_task(name, field).problems(n, split=split, seed=seed, options=options)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def load_problems(cfg: Any) -> tuple[list[Problem], list[Problem]]:
    """(train, eval) problems; errors name the config field or the file and row."""
    d = cfg.data
    if is_task(d.train):
        train = _generate(d.train, d.num_train, "train", d.seed, d.generator, "data.num_train")
    else:
        train = _load_file(d.train, "data.train", d)[: d.num_train]
    if is_task(d.eval) or (d.eval is None and is_task(d.train)):
        source = d.eval or d.train
        evals = (
            _generate(source, d.num_eval, d.eval_split, d.seed + 1, d.generator, "data.num_eval")
            if d.num_eval
            else []
        )
    elif d.eval is not None:
        evals = _load_file(d.eval, "data.eval", d)[: d.num_eval or None]
    else:
        evals = []
    if not train:
        raise ConfigError(f"data.train: {d.train!r} holds no problems")
    return train, evals


def _load_file(path: str, field: str, d: Any) -> list[Problem]:
    resolved = resolve_data_path(path)  # a bundled sample's name (math500, aime24, ...) or a file
    if isinstance(resolved, str) or not Path(resolved).is_file():
        raise ConfigError(
            f"{field}: file {path!r} not found (or use a bundled name: {bundled_names()}, or a task: {task_names()})"
        )
    # the column mapping is for the user's files; a bundled sample (math500, ...) keeps its own layout
    bundled = not Path(path).is_file() and path in bundled_names()
    keys = {} if bundled else {"prompt_key": d.prompt_key, "answer_key": d.answer_key}
    return load_dataset(resolved, **{k: v for k, v in keys.items() if v})


def sft_examples(cfg: Any) -> list[dict[str, Any]]:
    """Chat-format SFT rows from the run's task (train split, a seed disjoint from RL's), asked exactly as
    RL and evaluation will ask (the run's prompt template)."""
    d, m = cfg.data, cfg.model
    if not is_task(d.train):
        raise ConfigError(
            "model.sft_epochs: SFT warm-up needs a bundled generator as data.train "
            f"({task_names()}); run `archer sft` on your data first instead"
        )
    task = get_task(d.train)
    seed = d.seed + SFT_SEED_OFFSET
    probs = task.problems(m.sft_examples, split="train", seed=seed, options=d.generator, unique=False)
    rows = task.sft_rows(probs, noise=m.sft_noise, seed=seed, options=d.generator, **_tool_kw(cfg, task))
    for row, problem in zip(rows, probs):
        row["messages"][0]["content"] = user_message(problem, d.prompt_template)
    return rows


def tokenizer_texts(cfg: Any, train: list[Problem]) -> list[str]:
    """Texts a from-scratch tokenizer is trained on: the task's corpus (the math and code corpus for a
    dataset file), plus the prompt template's instruction text so that it tokenizes into a few tokens."""
    d = cfg.data
    task = get_task(d.train) if is_task(d.train) else get_task(GENERIC_CORPUS_TASK)
    options = d.generator if is_task(d.train) else {}
    corpus = task.tokenizer_corpus(TOKENIZER_TEXTS, seed=d.seed, options=options, **_tool_kw(cfg, task))
    return corpus + [user_message(p, d.prompt_template) for p in train[:200]]


def observation_pattern(cfg: Any) -> str | None:
    """Regex of tool observations in the task's demonstrations (SFT masks them), when the run uses tools."""
    if not cfg.rollout.tools or not is_task(cfg.data.train) or not get_task(cfg.data.train).tools:
        return None
    return TOOL_FORMATS[cfg.rollout.tool_format].pattern


def _tool_kw(cfg: Any, task: Task) -> dict[str, Any]:
    return {"tool_format": cfg.rollout.tool_format} if task.tools else {}
