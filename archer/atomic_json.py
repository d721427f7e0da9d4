"""Whole-or-nothing JSON files: what a run, a heartbeat or a benchmark writes for others to read.

A reader (``archer status``, a resumed run, a watchdog in another process) may open the file at any
moment, and the writer may be killed at any moment. :func:`write_json` writes to a temporary file in
the same folder (unique per process and thread: a heartbeat thread and the main thread may write the
same file) and renames it over the target, an atomic step on POSIX file systems: a reader sees the old
file or the new one, never half of either, and a kill leaves at most a stray temporary file.

Limits: atomic against readers and kills, not against power loss (no ``fsync``); two writers of one
file race to the last rename (each file here has one writer at a time).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def write_json(path: str | Path, obj: Any, *, indent: int = 2) -> None:
    """``obj`` as JSON at ``path`` (parents created), written whole or not at all. Values JSON cannot
    hold are written as their ``str`` (paths, dates); non-ASCII text is kept as is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(
            json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write or the rename failed
