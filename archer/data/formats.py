"""Dataset formats: read a benchmark file in its published layout and return :class:`Problem` records.

A format is registered by name with two functions: ``detect(row) -> bool`` (does a raw row look like
this format?) and ``convert(row, index, ctx) -> Problem``. :func:`load_dataset` reads the rows of a
JSONL, JSON (list) or parquet file, picks the format (``format="auto"`` sniffs the first row against
the detectors in registration order, most specific first) and converts every row; a row that does not
convert is an error naming the file and the row. Loaders for math layouts live in
``archer.data.formats_math``, for code layouts in ``archer.data.formats_code``, for archer's own and
verl's layouts in ``archer.data.formats_generic``; each registers here on import.

Writers: :func:`save_problems` (archer's own layout, one ``Problem.to_dict`` per row; in parquet the
``tests``/``meta``/chat ``prompt`` fields are JSON strings so heterogeneous rows share one schema) and
:func:`to_verl_rows` / ``save_problems(..., layout="verl")`` (the verl RL layout: ``prompt`` chat
list, ``data_source``, ``ability``, ``reward_model.ground_truth``, ``extra_info``).

Limits: files are read whole into memory (fine for benchmark and RL training sets of up to a few
hundred thousand rows); parquet needs pyarrow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archer.data.schema import Problem


@dataclass(frozen=True)
class Context:
    """What a row converter may need besides the row: the file it came from and caller overrides."""

    path: Path
    data_source: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return self.path.stem.lower()


@dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[dict[str, Any]], bool]
    convert: Callable[[dict[str, Any], int, Context], Problem]
    description: str = ""


# format name -> Format, in sniffing order (the registry is the only module-level state)
FORMATS: dict[str, Format] = {}


def register_format(
    name: str,
    detect: Callable[[dict[str, Any]], bool],
    convert: Callable[[dict[str, Any], int, Context], Problem],
    description: str = "",
) -> None:
    """Register a loader; later registrations are sniffed after earlier ones."""
    FORMATS[name] = Format(name, detect, convert, description)


def format_names() -> list[str]:
    _ensure_builtin()
    return list(FORMATS)


def _ensure_builtin() -> None:
    # the built-in loaders register on import (importing here avoids a cycle at module load); the
    # order is the sniffing order: archer's own rows and verl first, the loose math layout last
    import importlib

    for module in ("formats_generic", "formats_code", "formats_math"):
        importlib.import_module(f"archer.data.{module}")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Raw rows of a ``.jsonl``/``.json``/``.parquet`` file; a bad JSON line names file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json dataset must hold a list of rows")
        return data
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {lineno}: a row must be a JSON object")
            rows.append(row)
    return rows


def sniff_format(row: dict[str, Any]) -> str:
    """The first registered format whose detector accepts ``row``; an error lists the known formats."""
    _ensure_builtin()
    for fmt in FORMATS.values():
        try:
            if fmt.detect(row):
                return fmt.name
        except Exception:  # a detector that trips on an odd row just says "not mine"
            continue
    raise ValueError(f"cannot tell the format of a row with fields {sorted(row)}; known formats: {list(FORMATS)}")


def convert_rows(
    rows: Sequence[dict[str, Any]],
    format: str = "auto",
    *,
    source: str | Path = "<rows>",
    data_source: str | None = None,
    **options: Any,
) -> list[Problem]:
    """Convert raw rows with the named (or sniffed) format; errors name ``source`` and the row index."""
    _ensure_builtin()
    if not rows:
        return []
    if format == "auto":
        format = sniff_format(rows[0])
    if format not in FORMATS:
        raise KeyError(f"unknown dataset format {format!r}; known: ['auto', {', '.join(map(repr, FORMATS))}]")
    ctx = Context(Path(source), data_source, dict(options))
    convert = FORMATS[format].convert
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(convert(row, i, ctx))
        except Exception as exc:
            raise ValueError(f"{source}: row {i} ({format} format): {type(exc).__name__}: {exc}") from None
    return out


def load_dataset(
    path: str | Path, format: str = "auto", *, data_source: str | None = None, limit: int | None = None,
    **options: Any,
) -> list[Problem]:
    """Load ``path`` as problems. ``format`` is a registered name or ``"auto"``; ``data_source``
    overrides the one the loader would record; ``limit`` keeps the first rows only."""
    rows = read_rows(path)
    if limit is not None:
        rows = rows[:limit]
    return convert_rows(rows, format, source=path, data_source=data_source, **options)


def load_datasets(paths: Iterable[str | Path], format: str = "auto", **kwargs: Any) -> list[Problem]:
    """Concatenate several files (each sniffed on its own when ``format="auto"``)."""
    out: list[Problem] = []
    for p in paths:
        out.extend(load_dataset(p, format, **kwargs))
    return out


# ---------------------------------------------------------------- writing


def problem_to_row(problem: Problem, flat: bool = False) -> dict[str, Any]:
    """archer layout row; ``flat=True`` JSON-encodes nested fields (for parquet's fixed schema)."""
    row = problem.to_dict()
    if flat:
        for key in ("tests", "meta"):
            row[key] = None if row[key] is None else json.dumps(row[key])
        if isinstance(row["prompt"], list):
            row["prompt"] = json.dumps(row["prompt"])
            row["meta"] = json.dumps(dict(problem.meta, prompt_is_chat=True))
    return row


def to_verl_rows(problems: Sequence[Problem]) -> list[dict[str, Any]]:
    """verl layout (as read by verl's RLHFDataset): chat ``prompt``, ``reward_model.ground_truth``.

    Math ground truth is the answer string; code ground truth is the tests dict as a JSON string.
    """
    from archer.data.prompts import build_messages

    rows = []
    for i, p in enumerate(problems):
        truth = p.answer if p.kind == "math" else json.dumps(p.tests)
        rows.append({
            "data_source": p.data_source,
            "prompt": build_messages(p),
            "ability": p.kind,
            "reward_model": {"style": "rule", "ground_truth": truth},
            "extra_info": {"index": i, "id": p.id, "meta": json.dumps(p.meta)},
        })
    return rows


def save_rows(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSONL (``.jsonl``/``.json`` list) or parquet by the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(rows)), path)
    elif suffix == ".json":
        path.write_text(json.dumps(list(rows), ensure_ascii=False), encoding="utf-8")
    else:
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# layout name -> rows builder; "archer" rows load back with format "problem", "verl" with "verl"
LAYOUTS: dict[str, Callable[[Sequence[Problem], bool], list[dict[str, Any]]]] = {
    "archer": lambda problems, flat: [problem_to_row(p, flat) for p in problems],
    "verl": lambda problems, flat: to_verl_rows(problems),
}


def save_problems(problems: Sequence[Problem], path: str | Path, layout: str = "archer") -> Path:
    """Write problems in ``layout`` (``archer`` or ``verl``) as JSONL or parquet (by suffix)."""
    if layout not in LAYOUTS:
        raise KeyError(f"unknown layout {layout!r}; known: {sorted(LAYOUTS)}")
    flat = Path(path).suffix.lower() == ".parquet"
    return save_rows(LAYOUTS[layout](problems, flat), path)
