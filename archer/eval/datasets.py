"""What ``--data NAME`` means for every command: a file, a bundled benchmark sample, or a task.

A task's name (``synthetic_math``, ``synthetic_code``, ... from :mod:`archer.tasks.registry`) stands
for the held-out problems of the bundled recipe that trains on it, with that recipe's ``data.*``
settings and seed, so ``archer eval --data synthetic_math`` measures what ``archer train tiny_math``
reports. Everything else goes to :func:`archer.data.formats.load_dataset`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from archer.config import load_config
from archer.data.formats import bundled_names, load_dataset
from archer.data.schema import Problem
from archer.tasks.problems import load_problems
from archer.tasks.registry import get_task, is_task, task_names

TASK_DEFAULT_N = 64  # held-out problems of a task when no limit is given


def eval_set_names() -> list[str]:
    """Every name ``--data`` accepts besides a file: the bundled samples, then the tasks."""
    return [*bundled_names(), *task_names()]


def load_eval_set(
    path: str | Path, format: str = "auto", *, limit: int | None = None, **kw: Any
) -> list[Problem]:
    """Problems of a file, a bundled sample or a task (a file of that name in the working directory wins)."""
    name = str(path)
    if not Path(path).is_file() and is_task(name):
        n = TASK_DEFAULT_N if limit is None else max(0, limit)
        cfg = load_config(get_task(name).recipe, [f"data.num_eval={n}", "data.num_train=1"])
        return load_problems(cfg)[1]
    if not Path(path).is_file() and name not in bundled_names():
        raise FileNotFoundError(
            f"--data {name}: no such file, bundled sample or task; bundled samples: "
            f"{', '.join(bundled_names())}; tasks: {', '.join(task_names())}"
        )
    if name in bundled_names() and not Path(path).is_file():
        kw = {k: v for k, v in kw.items() if k not in ("prompt_key", "answer_key")}  # its own layout
    return load_dataset(path, format, limit=limit, **kw)


def load_eval_sets(paths: Iterable[str | Path], format: str = "auto", **kw: Any) -> list[Problem]:
    """Concatenate several ``--data`` items (each file sniffed on its own when ``format="auto"``)."""
    out: list[Problem] = []
    for p in paths:
        out.extend(load_eval_set(p, format, **kw))
    return out
