"""Files of an evaluation directory: append-only JSONL that survives a crash, and atomic JSON.

A run killed mid-write leaves at most one partial last line in a JSONL file; :func:`read_jsonl` skips
lines that do not parse (and :func:`append_jsonl` starts on a fresh line), so resuming re-does only the
records that were not fully written. JSON state files are written to a temporary file and renamed,
so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GENERATIONS = "generations.jsonl"
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"
GENERATED_MARKER = "GENERATED"  # written when every problem has its samples


def _dumps(obj: Any) -> str:
    # default=str: verifier info may hold odd values (Fractions, numpy scalars); never fail a record
    return json.dumps(obj, ensure_ascii=False, default=str)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file, skipping blank and unparsable (partially written) lines; [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows, each on its own line, flushed and fsynced so a later crash keeps them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
    with path.open("a", encoding="utf-8") as fh:
        if needs_newline:
            fh.write("\n")  # the previous run died mid-line: keep that fragment on its own line
        for row in rows:
            fh.write(_dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``, ``default`` when it does not exist; a damaged file is a ``ValueError``
    naming it (these files are written atomically, so damage comes from outside)."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
