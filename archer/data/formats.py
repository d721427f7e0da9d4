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
import os
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
    # bytes the file's compressed fields may still inflate to, shared by all its rows (set on first use)
    inflate_left: list[int] = field(default_factory=lambda: [-1])

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
    """Raw rows of a ``.jsonl``/``.json``/``.parquet`` file.

    Every problem with the file is a ``ValueError`` naming it (and the line, for JSONL): not UTF-8
    (binary garbage), invalid JSON, JSON nested deeper than Python's recursion limit, a row that is
    not an object, text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which
    could never be written back as UTF-8), an unreadable parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix == ".json":
        text = _read_text(path)
        data = _loads(text, f"{path}")
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json dataset must hold a list of rows")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise ValueError(f"{path}: row {i + 1}: a row must be a JSON object")
            if "\\u" in text:
                _check_unicode(row, f"{path}: row {i + 1}")
        return data
    rows = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path}: line {lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1});"
                    " expected JSON lines"
                ) from None
            if not line.strip():
                continue
            row = _loads(line, f"{path}: line {lineno}")
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {lineno}: a row must be a JSON object")
            if "\\u" in line:  # only an escape can produce a lone surrogate
                _check_unicode(row, f"{path}: line {lineno}")
            rows.append(row)
    return rows


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); expected JSON"
        ) from None


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nests too deeply to read") from None


def _check_unicode(value: Any, where: str) -> None:
    """Every string in ``value`` (iteratively: rows may nest deeply) encodes as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = item[exc.start]
                raise ValueError(
                    f"{where}: text is not valid Unicode (lone surrogate \\u{ord(bad):04x} at character {exc.start})"
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# Bytes one dataset file may expand to when decoded (parquet's dictionary and run-length encodings,
# LiveCodeBench's zlib-compressed tests, summed over all its rows): the larger of MIN_DECODED and
# EXPANSION x its size on disk; ARCHER_MAX_DECODED_BYTES overrides. A 0.8 KiB parquet decoded to
# 1.27 GiB of rows, and five 256 MiB rows of a 1.3 MiB file to 1.41 GiB; honest files stay far below.
MIN_DECODED = 256 << 20
EXPANSION = 100
PARQUET_BATCH_ROWS = 256


def decoded_limit(path: Path | str) -> int:
    env = os.environ.get("ARCHER_MAX_DECODED_BYTES")
    if env:
        return int(env)
    try:
        size = Path(path).stat().st_size
    except OSError:  # rows that did not come from a file
        size = 0
    return max(MIN_DECODED, EXPANSION * size)


def _decoded_bytes(batch: Any) -> int:
    """What a record batch weighs once every row is materialised: Arrow's ``nbytes`` counts a
    dictionary once, however many rows repeat its values, so dictionary columns are summed per row
    (the lengths of the referenced values), without decoding them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for col in batch.columns:
        if pa.types.is_dictionary(col.type) and len(col):
            values = col.dictionary
            if (
                pa.types.is_string(values.type)
                or pa.types.is_binary(values.type)
                or pa.types.is_large_string(values.type)
                or pa.types.is_large_binary(values.type)
            ):
                sizes = pc.binary_length(values)
            else:
                per = values.nbytes // max(len(values), 1) + 1
                sizes = pa.array([per] * len(values), pa.int64())
            used = pc.sum(pc.take(sizes, col.indices)).as_py() or 0
            total += int(used) + col.indices.nbytes
        else:
            total += col.nbytes
    return total


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file, read in record batches of PARQUET_BATCH_ROWS rows with dictionaries
    decoded, counting each batch's decoded bytes: past :func:`parquet_decoded_limit` the file is
    refused (``ValueError``) with at most the limit and one batch in memory, never the whole table
    (dictionary columns are weighed per row before they are materialised)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    limit = decoded_limit(path)
    rows: list[dict[str, Any]] = []
    decoded = 0
    try:
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if declared > limit:
            raise ValueError(f"{path}: declares {declared} decoded bytes, over the limit of {limit}")
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            decoded += _decoded_bytes(batch)  # before any row becomes Python objects
            if decoded > limit:
                raise ValueError(
                    f"{path}: decodes to more than {limit} bytes (a compression or dictionary bomb?); "
                    "refused (raise ARCHER_MAX_DECODED_BYTES for a file this large)"
                )
            rows.extend(batch.to_pylist())
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())})") from None
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
    raise ValueError(
        f"cannot tell the format of a row with fields {sorted(row)}; known formats: {list(FORMATS)}"
    )


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
    if format == "auto" and (options.get("prompt_key") or options.get("answer_key")):
        format = "columns"  # a column mapping (data.prompt_key / data.answer_key) names the layout
    elif format == "auto":
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
            raise ValueError(
                f"{source}: row {i + 1} ({format} format): {type(exc).__name__}: {exc}"
            ) from None
    return out


# ---------------------------------------------------------------- bundled datasets

# Public benchmark samples shipped in the package (archer/data/bundled/README.md: sources, licences);
# ``--data math500`` works anywhere, without the file.
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED: dict[str, str] = {
    "math500": "math/math500.jsonl",
    "aime24": "math/aime24.jsonl",
    "amc23": "math/amc23.jsonl",
    "humaneval": "code/humaneval.jsonl",
    "mbpp_sample": "code/mbpp_sample.jsonl",
    "livecodebench_sample": "code/livecodebench_sample.jsonl",
    "code_contests_sample": "code/code_contests_sample.jsonl",
}


def bundled_names() -> list[str]:
    return list(BUNDLED)


def resolve_data_path(path: str | Path) -> Path:
    """An existing file as given; else a bundled name (``math500``) as its packaged file; else the
    path (reading it reports it missing)."""
    p = Path(path)
    if not p.is_file() and str(path) in BUNDLED:
        return BUNDLED_DIR / BUNDLED[str(path)]
    return p


def load_dataset(
    path: str | Path,
    format: str = "auto",
    *,
    data_source: str | None = None,
    limit: int | None = None,
    **options: Any,
) -> list[Problem]:
    """Load ``path`` as problems. ``format`` is a registered name or ``"auto"``; ``data_source``
    overrides the one the loader would record; ``limit`` keeps the first rows only.

    ``path`` may also be a bundled name (:data:`BUNDLED`: ``math500``, ``aime24``, ``humaneval``, ...);
    a file of that name in the working directory wins. A task's held-out problems (``synthetic_math``)
    are loaded one layer up, by :func:`archer.eval.datasets.load_eval_set`."""
    path = resolve_data_path(path)
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
        rows.append(
            {
                "data_source": p.data_source,
                "prompt": build_messages(p),
                "ability": p.kind,
                "reward_model": {"style": "rule", "ground_truth": truth},
                "extra_info": {"index": i, "id": p.id, "meta": json.dumps(p.meta)},
            }
        )
    return rows


def save_rows(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSONL (``.jsonl``/``.json`` list) or parquet by the file suffix, atomically: the
    rows go to a temporary file in the same folder that replaces ``path`` only once complete, so a
    failure (a row that cannot be encoded, a full disk, an interrupt) leaves any old ``path`` as it
    was and no partial file. A row that cannot be written is a ``ValueError`` naming ``path`` and it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            for i, row in enumerate(rows):
                _check_row_writable(row, path, i)
            pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
        elif suffix == ".json":
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write("[" + ",".join(_encode_row(row, path, i) for i, row in enumerate(rows)) + "]")
                fh.flush()
                os.fsync(fh.fileno())
        else:
            with tmp.open("w", encoding="utf-8") as fh:
                for i, row in enumerate(rows):
                    fh.write(_encode_row(row, path, i) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _row_name(row: Any, index: int) -> str:
    rid = row.get("id") if isinstance(row, dict) else None
    return f"row {index + 1}" + (f" (id {rid!r})" if isinstance(rid, (str, int)) else "")


def _encode_row(row: Any, path: Path, index: int) -> str:
    """One JSON line, checked to encode as UTF-8 (a lone surrogate would fail halfway through a write)."""
    try:
        text = json.dumps(row, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{path}: {_row_name(row, index)} holds text that is not valid Unicode ({exc.reason}:"
            f" {exc.object[exc.start : exc.end]!a}); nothing was written"
        ) from None
    except RecursionError:
        raise ValueError(
            f"{path}: {_row_name(row, index)} nests too deeply to write; nothing was written"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{path}: {_row_name(row, index)} cannot be written as JSON ({exc}); nothing was written"
        ) from None
    return text


def _check_row_writable(row: Any, path: Path, index: int) -> None:
    try:
        _check_unicode(row, "")
    except ValueError as exc:
        raise ValueError(f"{path}: {_row_name(row, index)}{exc}; nothing was written") from None


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
