"""The task registry: every bundled task, by name, with everything a run needs from it.

A :class:`Task` is a seeded generator of verifiable problems plus what surrounds them in a run:
demonstrations for the SFT warm-up, texts to train a tiny tokenizer on, the bundled recipe whose
held-out problems ``--data NAME`` evaluates on, and whether its demonstrations call a tool (their
observations are then written in the run's ``rollout.tool_format`` and are context in SFT, masked
from the loss, as in RL). The generic trainer
asks this registry (:func:`get_task`) and never tests a task's name.

Adding a task is one file in this folder that calls :func:`register_task` at import; the folder's
modules are imported on the first look-up (:func:`_discover`). A worked example is in
``docs/DESIGN.md`` ("Adding a task").
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archer.data.schema import Problem
from archer.errors import ConfigError

# (n, *, split, seed, options, unique) -> problems; options is the recipe's data.generator mapping
ProblemsFn = Callable[..., list[Problem]]
# (problems, *, noise, seed, options) -> chat rows {"messages": [user, assistant], "meta": {...}}
SFTRowsFn = Callable[..., list[dict[str, Any]]]
# (n, *, seed, options) -> texts with the chat markup
CorpusFn = Callable[..., list[str]]


@dataclass(frozen=True)
class Task:
    """One bundled task. ``problems`` raises :class:`archer.errors.ConfigError` naming
    ``data.generator`` for bad options and ``ValueError`` when it cannot draw ``n`` distinct problems."""

    name: str
    description: str
    recipe: str  # the bundled recipe that trains on it; `--data NAME` evaluates on its held-out set
    problems: ProblemsFn
    sft_rows: SFTRowsFn
    tokenizer_corpus: CorpusFn
    # demonstrations call a tool: sft_rows and tokenizer_corpus then also take ``tool_format`` (the run's
    # rollout.tool_format, archer.data.observations), so SFT writes observations as RL will show them
    tools: bool = False


def config_generator(generate: Callable[..., list[Problem]]) -> ProblemsFn:
    """A task's ``problems`` from a generator taking its options as ``config=``: every ``ValueError`` it
    raises is a bad ``data.generator`` option (a :class:`ConfigError` naming that setting)."""

    def problems(
        n: int, *, split: str, seed: int, options: dict[str, Any], unique: bool = True
    ) -> list[Problem]:
        try:
            return generate(n, split=split, seed=seed, config=options, unique=unique)
        except ValueError as exc:
            raise ConfigError(f"data.generator: {exc}") from None

    return problems


_TASKS: dict[str, Task] = {}
_NOT_TASKS = {"registry", "problems", "draw"}


def register_task(task: Task) -> Task:
    """Add ``task`` under ``task.name``; a second task of the same name is an error."""
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ValueError(f"task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


@functools.cache
def _discover() -> None:
    """Import every module of this folder once, so each registers its tasks."""
    for info in pkgutil.iter_modules([os.path.dirname(os.path.abspath(__file__))]):
        if not info.name.startswith("_") and info.name not in _NOT_TASKS:
            importlib.import_module(f"archer.tasks.{info.name}")


def task_names() -> list[str]:
    _discover()
    return sorted(_TASKS)


def is_task(name: Any) -> bool:
    return isinstance(name, str) and name in task_names()


def get_task(name: str, field: str = "data.train") -> Task:
    """The task called ``name``; an unknown name is a :class:`ConfigError` naming ``field``."""
    _discover()
    if name not in _TASKS:
        raise ConfigError(f"{field}: unknown task {name!r}; known: {task_names()}")
    return _TASKS[name]
