"""Layouts that are not tied to one benchmark: archer's own rows and verl's RL parquet.

- ``problem``: rows written by :func:`archer.data.formats.save_problems` (``Problem.to_dict``; in
  parquet the nested fields are JSON strings and are decoded back here).
- ``verl``: ``prompt`` (chat list), ``data_source``, ``ability``, ``reward_model.ground_truth``,
  ``extra_info``. The kind is ``ability`` when it says math or code, else it is read from the ground
  truth: a JSON object with test fields (``inputs``/``outputs``, ``assert``, ...) is code, anything else is
  a math answer. Code ground truth in the LiveCodeBench list layout (``[{"input", "output"}, ...]``) is
  also accepted.
"""

from __future__ import annotations

import json
from typing import Any

from archer.data.formats import Context, register_format
from archer.data.schema import Problem

_CODE_ABILITIES = {"code", "coding", "programming"}
_MATH_ABILITIES = {"math", "mathematics"}


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _detect_problem(row: dict[str, Any]) -> bool:
    return {"id", "prompt", "kind"} <= row.keys()


def _convert_problem(row: dict[str, Any], index: int, ctx: Context) -> Problem:
    row = dict(row)
    row["meta"] = _maybe_json(row.get("meta")) or {}
    row["tests"] = _maybe_json(row.get("tests"))
    if row["meta"].pop("prompt_is_chat", False):
        row["prompt"] = json.loads(row["prompt"])
    if ctx.data_source:
        row["data_source"] = ctx.data_source
    return Problem.from_dict(row)


def _detect_verl(row: dict[str, Any]) -> bool:
    return isinstance(row.get("reward_model"), dict) and "prompt" in row


def tests_from_ground_truth(truth: Any) -> dict[str, Any] | None:
    """A code tests dict from a verl ground truth, or None when it is not code tests."""
    truth = _maybe_json(truth)
    if isinstance(truth, dict):
        if "input_output" in truth:  # APPS/TACO style nesting
            truth = _maybe_json(truth["input_output"])
        if isinstance(truth, dict) and ({"inputs", "outputs"} <= truth.keys() or "assert" in truth):
            return truth
        return None
    if isinstance(truth, list) and truth and all(isinstance(t, dict) and "input" in t for t in truth):
        from archer.data.formats_code import tests_from_case_list

        return tests_from_case_list(truth)
    return None


def _convert_verl(row: dict[str, Any], index: int, ctx: Context) -> Problem:
    prompt = row["prompt"]
    if hasattr(prompt, "tolist"):  # numpy array from some parquet readers
        prompt = prompt.tolist()
    prompt = _maybe_json(prompt)
    if isinstance(prompt, list):
        prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    truth = row["reward_model"].get("ground_truth")
    if truth is None:
        raise ValueError("reward_model.ground_truth is missing")
    ability = str(row.get("ability") or "").lower()
    tests = None if ability in _MATH_ABILITIES else tests_from_ground_truth(truth)
    if ability in _CODE_ABILITIES and tests is None:
        raise ValueError("ability is code but reward_model.ground_truth holds no tests")
    extra = row.get("extra_info") or {}
    meta = {"extra_info": extra} if extra else {}
    pid = extra.get("id", extra.get("index", index)) if isinstance(extra, dict) else index
    source = ctx.data_source or str(row.get("data_source") or ctx.stem)
    if tests is not None:
        return Problem(f"{source}/{pid}", prompt, "code", tests=tests, data_source=source, meta=meta)
    if isinstance(truth, (list, tuple)):  # some sets list several accepted answers; keep the first
        meta["all_answers"] = [str(t) for t in truth]
        truth = truth[0]
    return Problem(f"{source}/{pid}", prompt, "math", answer=str(truth), data_source=source, meta=meta)


register_format("problem", _detect_problem, _convert_problem, "archer's own rows (Problem.to_dict)")
register_format("verl", _detect_verl, _convert_verl, "verl RL parquet: prompt chat list + reward_model")
