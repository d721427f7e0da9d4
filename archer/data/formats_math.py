"""Math benchmark layouts: MATH-500, AIME, AMC (and any JSONL with ``problem`` + ``answer``).

- ``math``: ``problem`` (text) and ``answer``. The id is ``id`` or ``unique_id`` when present, else
  the row index; ``data_source`` defaults to the file stem (``math500``, ``aime24``, ``amc23``).
- AMC publishes answers as floats (``27.0``); an integral float is written as an integer string
  (``"27"``), other floats keep Python's shortest repr (``"0.5"``), so ``\\boxed{27}`` matches.
- Fields other than problem/answer (solution, subject, level, url, ...) are kept in ``meta``.
- ``columns``: any flat layout, named by ``prompt_key`` / ``answer_key`` (``data.prompt_key`` /
  ``data.answer_key``, ``archer eval --prompt-key/--answer-key``; verl's names), e.g. GSM8K's
  ``{"question", "answer"}``; never sniffed, chosen when a key is given. The prompt is a string or a chat
  list; an answer holding GSM8K's ``#### 72`` keeps the number after ``####`` (commas dropped, as verl's
  GSM8K preprocessing does) and the whole text as ``meta["solution"]``.
"""

from __future__ import annotations

import math
from typing import Any

from archer.data.formats import Context, register_format
from archer.data.schema import Problem

_ID_FIELDS = ("id", "unique_id", "idx")


def normalize_answer_value(value: Any) -> str:
    """Gold answer as a string; integral floats lose their ``.0`` (AMC), bools are rejected."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"answer must be a string or a number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"answer must be finite, got {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (int, str)):
        text = str(value).strip()
        if not text:
            raise ValueError("answer is empty")
        return text
    raise ValueError(f"answer must be a string or a number, got {type(value).__name__}")


def _detect_math(row: dict[str, Any]) -> bool:
    return isinstance(row.get("problem"), str) and "answer" in row


def _convert_math(row: dict[str, Any], index: int, ctx: Context) -> Problem:
    problem = row["problem"]
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("'problem' must be a non-empty string")
    answer = normalize_answer_value(row.get("answer"))
    raw_id = next((row[f] for f in _ID_FIELDS if row.get(f) is not None), index)
    source = ctx.data_source or ctx.stem
    meta = {k: v for k, v in row.items() if k not in ("problem", "answer")}
    return Problem(f"{source}/{raw_id}", problem, "math", answer=answer, data_source=source, meta=meta)


register_format("math", _detect_math, _convert_math, "MATH-500 / AIME / AMC JSONL: problem + answer")


def _convert_columns(row: dict[str, Any], index: int, ctx: Context) -> Problem:
    pk = ctx.options.get("prompt_key") or "prompt"
    ak = ctx.options.get("answer_key") or "answer"
    for key, setting in ((pk, "prompt_key"), (ak, "answer_key")):
        if key not in row:
            raise ValueError(
                f"no column {key!r} (data.{setting}, archer eval --{setting.replace('_', '-')}); "
                f"the row's columns: {sorted(row)}"
            )
    prompt = row[pk]
    if hasattr(prompt, "tolist"):  # numpy array from some parquet readers
        prompt = prompt.tolist()
    if isinstance(prompt, list):
        prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    elif not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"column {pk!r} must be a non-empty string or a chat list, got {prompt!r}")
    answer = row[ak]
    meta = {k: v for k, v in row.items() if k not in (pk, ak)}
    if isinstance(answer, str) and "####" in answer:  # GSM8K: the reasoning, then "#### 72"
        meta.setdefault("solution", answer)
        answer = answer.rsplit("####", 1)[1].strip().replace(",", "")
    answer = normalize_answer_value(answer)
    raw_id = next((row[f] for f in _ID_FIELDS if row.get(f) is not None), index)
    source = ctx.data_source or ctx.stem
    return Problem(f"{source}/{raw_id}", prompt, "math", answer=answer, data_source=source, meta=meta)


register_format(
    "columns",
    lambda row: False,  # never sniffed: chosen by a prompt_key / answer_key
    _convert_columns,
    "any flat layout: the prompt and answer columns named by prompt_key / answer_key (GSM8K's question/answer)",
)
