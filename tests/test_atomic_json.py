"""archer.atomic_json.write_json: whole or nothing, for readers in other processes and threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from archer.atomic_json import write_json


def test_writes_the_object_whole_with_parents_unicode_and_str_fallback(tmp_path: Path):
    path = tmp_path / "a" / "b" / "status.json"
    write_json(path, {"name": "café", "where": tmp_path, "n": [1, 2]})
    text = path.read_text(encoding="utf-8")
    assert "café" in text and text.endswith("}\n")
    assert json.loads(text) == {"name": "café", "where": str(tmp_path), "n": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    path = tmp_path / "summary.json"
    write_json(path, {"v": 1})
    loop: list = []
    loop.append(loop)  # not JSON: a circular reference
    with pytest.raises(ValueError, match="[Cc]ircular"):
        write_json(path, {"v": loop})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_threads_writing_one_file_never_leave_it_half_written(tmp_path: Path):
    """A heartbeat thread and the main thread write the same file: every read sees one whole version."""
    path = tmp_path / "beat.json"
    write_json(path, {"i": -1, "pad": "x" * 20000})
    stop, bad = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                data = json.loads(path.read_text())
            except ValueError as exc:  # a torn read
                bad.append(exc)
            else:
                assert len(data["pad"]) == 20000

    def write(k: int) -> None:
        for i in range(200):
            write_json(path, {"i": k * 1000 + i, "pad": "x" * 20000})

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert not bad
    assert [p.name for p in tmp_path.iterdir()] == ["beat.json"]
