"""Hostile dataset files through ``archer data``/``archer eval``: each is one error line naming the
file (and row), exit 2, and no output file, partial or otherwise; an old output is left intact."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from archer.cli.main import main as archer_main
from archer.data.formats import read_rows, save_rows
from archer.sandbox.zygote.safe_pickle import bounded_decompress, decode_lcb_tests

REPO = Path(__file__).resolve().parents[2]
MATH_ROW = {"problem": "What is 1+1?", "answer": "2"}


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = archer_main(list(argv))
    err = capsys.readouterr().err
    return rc, err


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _convert(capsys, src: Path, out: Path) -> tuple[int, str]:
    return _run(capsys, "data", "convert", "--in", str(src), "--out", str(out))


def _assert_one_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("archer data: error: ") or lines[0].startswith("archer eval: error: "), err
    for part in parts:
        assert part in lines[0], (part, err)


def test_nested_arrays_row_is_one_line_not_a_recursion_traceback(tmp_path, capsys):
    deep = '{"problem": "p", "answer": "1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    src = _write_lines(tmp_path / "deep.jsonl", [json.dumps(MATH_ROW), deep])
    rc, err = _convert(capsys, src, tmp_path / "out.jsonl")
    assert rc == 2
    _assert_one_line(err, str(src), "line 2", "nests too deeply")
    assert list(tmp_path.iterdir()) == [src]


def test_lone_surrogate_names_file_and_line_and_writes_nothing(tmp_path, capsys):
    src = _write_lines(
        tmp_path / "sur.jsonl", [json.dumps(MATH_ROW), '{"problem": "bad \\ud800 text", "answer": "3"}']
    )
    out = tmp_path / "out.jsonl"
    out.write_text("old output\n")
    rc, err = _convert(capsys, src, out)
    assert rc == 2
    _assert_one_line(err, str(src), "line 2", "lone surrogate \\ud800")
    assert out.read_text() == "old output\n"  # the previous output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "sur.jsonl"]


def test_valid_surrogate_pair_is_text(tmp_path):
    src = _write_lines(tmp_path / "pair.jsonl", ['{"problem": "smile \\ud83d\\ude00", "answer": "1"}'])
    assert read_rows(src)[0]["problem"] == "smile \U0001f600"


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_binary_garbage_names_the_file(tmp_path, capsys, suffix):
    src = tmp_path / f"garbage{suffix}"
    src.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage")
    rc, err = _convert(capsys, src, tmp_path / "out.jsonl")
    assert rc == 2
    _assert_one_line(err, str(src))
    assert not (tmp_path / "out.jsonl").exists()


def test_save_rows_is_atomic_and_names_the_row(tmp_path):
    out = tmp_path / "o.jsonl"
    save_rows([{"id": "a", "v": 1}], out)
    rows = [{"id": "ok", "v": 1}, {"id": "bad", "v": "x\udc80y"}]
    for suffix in (".jsonl", ".json", ".parquet"):
        target = out.with_suffix(suffix)
        with pytest.raises(
            ValueError, match=rf"{target.name}: row 2 \(id 'bad'\).*not valid Unicode.*nothing was written"
        ):
            save_rows(rows, target)
        assert not target.exists() or target == out
    assert out.read_text() == '{"id": "a", "v": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]  # no temporary file left


def _lcb_row(payload: bytes) -> dict:
    blob = base64.b64encode(zlib.compress(payload, 9)).decode()
    return {"content": "### Question:\nq\n### Format:\nf", "test": blob, "labels": {"task_id": "t/1"}}


def test_bounded_decompress_limit_is_exact():
    data = b"a" * 1000
    assert bounded_decompress(zlib.compress(data), max_bytes=1000) == data
    with pytest.raises(ValueError, match="inflate past the limit of 999 bytes"):
        bounded_decompress(zlib.compress(data), max_bytes=999)
    with pytest.raises(zlib.error):
        bounded_decompress(zlib.compress(data)[:-5], max_bytes=1000)  # truncated stream


def test_decompression_bomb_row_is_refused_with_bounded_memory(tmp_path):
    """A row whose tests inflate to 512 MiB: refused once past the limit, in a child process whose
    peak memory we measure (inflating in full held the bytes and the unpickled str: over 1 GiB; a
    1 GiB row drove `archer data convert` to 3 GiB RSS)."""
    code = textwrap.dedent(
        f"""
        import base64, json, pickle, resource, sys, zlib
        sys.path.insert(0, {str(REPO)!r})
        from archer.cli.main import main
        comp = zlib.compressobj(1)
        chunk = b"a" * (1 << 24)
        # pickle protocol 4 string header for a 512 MiB str, then the body streamed through zlib
        n = 1 << 29
        header = b"\\x80\\x04\\x8d" + n.to_bytes(8, "little")
        parts = [comp.compress(header)] + [comp.compress(chunk) for _ in range(n // len(chunk))]
        parts.append(comp.compress(b"\\x94."))
        parts.append(comp.flush())
        blob = base64.b64encode(b"".join(parts)).decode()
        row = {{"content": "### Question:\\nq", "test": blob, "labels": {{"task_id": "t/1"}}}}
        src = {str(tmp_path / "bomb.jsonl")!r}
        open(src, "w").write(json.dumps(row) + "\\n")
        del blob, parts, row
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rc = main(["data", "convert", "--in", src, "--out", {str(tmp_path / "out.jsonl")!r}])
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(rc, grew // 1024)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, grew_mb = map(int, proc.stdout.split())
    assert rc == 2, proc.stderr
    _assert_one_line(proc.stderr, "bomb.jsonl", "row 1", "inflate past the limit of 268435456 bytes")
    assert grew_mb < 700, grew_mb  # the limit (256 MiB) and the inflater's buffer growth: ~520 MB
    assert not (tmp_path / "out.jsonl").exists()


def test_parquet_dictionary_bomb_is_refused_with_bounded_memory(tmp_path):
    """Issue 20: a 0.5 KiB parquet file (one 1 MiB string, dictionary-encoded, repeated in 1300 rows)
    decoded to 1.3 GiB of rows when read as a whole table. Read in record batches, weighed before
    the rows become Python objects, it is refused within the file's decoded limit (256 MiB here)."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.insert(0, {str(REPO)!r})
        import pyarrow as pa, pyarrow.parquet as pq
        from archer.cli.main import main
        src = {str(tmp_path / "bomb.parquet")!r}
        values = pa.array(["x" * (1 << 20)])
        col = pa.DictionaryArray.from_arrays(pa.array([0] * 1300, pa.int32()), values)
        pq.write_table(pa.table({{"problem": col, "answer": pa.array(["2"] * 1300)}}), src, compression="zstd")
        del values, col
        print(__import__("os").path.getsize(src))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rc = main(["data", "convert", "--in", src, "--out", {str(tmp_path / "out.jsonl")!r}])
        print(rc, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    size, rest = proc.stdout.split("\n", 1)
    rc, grew_mb = map(int, rest.split())
    assert int(size) < 2048 and rc == 2, proc.stderr
    _assert_one_line(proc.stderr, "bomb.parquet", "decodes to more than 268435456 bytes")
    assert grew_mb < 400, grew_mb
    assert not (tmp_path / "out.jsonl").exists()


def test_the_inflate_limit_counts_the_whole_file_not_a_row(tmp_path):
    """Issue 20: the LiveCodeBench inflate limit was per row, so five rows each just under it peaked
    at 1.41 GiB. Rows of one file now share one budget: with 100 MiB for the file, three rows of
    40 MiB are refused at the third, naming it."""
    n = 40 << 20
    body = b'{"inputs": ["' + b"a" * (n - 32) + b'"], "outputs": ["1"]}'
    body = body + b" " * (n - len(body))
    blob = base64.b64encode(zlib.compress(pickle.dumps(body.decode(), protocol=4), 1)).decode()
    rows = [{"content": "### Question:\nq", "test": blob, "labels": {"task_id": f"t/{k}"}} for k in range(3)]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        os.environ["ARCHER_MAX_DECODED_BYTES"] = str(100 << 20)
        from archer.cli.main import main
        print(main(["data", "convert", "--in", {str(src)!r}, "--out", {str(tmp_path / "out.jsonl")!r}]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2", proc.stderr
    _assert_one_line(proc.stderr, "rows.jsonl", "row 3", "left to this file")
    assert not (tmp_path / "out.jsonl").exists()


def test_small_compressed_tests_still_decode():
    payload = pickle.dumps(json.dumps({"inputs": ["1\n"], "outputs": ["2\n"]}))
    assert decode_lcb_tests(_lcb_row(payload)["test"]) == {"inputs": ["1\n"], "outputs": ["2\n"]}


def test_eval_on_an_empty_file_is_an_error_not_a_zero_score(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = tmp_path / "ev"
    rc, err = _run(
        capsys, "eval", "--model", str(tmp_path / "no-model"), "--data", str(empty), "--out", str(out)
    )
    assert rc == 2
    _assert_one_line(err, str(empty), "no problems to evaluate")
    assert not out.exists()
    rc, err = _run(capsys, "eval", "score", "--out", str(out), "--data", str(empty))
    assert rc == 2
    _assert_one_line(err, "no problems to evaluate")


def test_eval_score_without_generations_is_an_error(tmp_path, capsys, shared_data):
    rc, err = _run(
        capsys,
        "eval",
        "score",
        "--out",
        str(tmp_path / "ev"),
        "--data",
        str(shared_data / "math/aime24.jsonl"),
    )
    assert rc == 2
    _assert_one_line(err, "generations.jsonl: no generations for the 30 problems")
    assert not (tmp_path / "ev").exists()


def test_eval_watch_missing_run_directory(tmp_path, capsys, shared_data):
    missing = tmp_path / "no-such-run"
    rc, err = _run(capsys, "eval", "watch", str(missing), "--data", str(shared_data / "math/aime24.jsonl"))
    assert rc == 2  # at once, without --once: it used to poll a missing folder for ever
    _assert_one_line(err, f"run directory not found: {missing}")
    assert not missing.exists()


def test_eval_watch_says_it_is_waiting(tmp_path, capsys, shared_data):
    (tmp_path / "run").mkdir()
    rc, err = _run(
        capsys,
        "eval",
        "watch",
        str(tmp_path / "run"),
        "--data",
        str(shared_data / "math/aime24.jsonl"),
        "--once",
    )
    assert rc == 0
    assert err.strip() == f"[watch] no complete checkpoint in {tmp_path / 'run' / 'checkpoints'} yet"
