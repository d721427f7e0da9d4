"""``archer data`` commands end to end on small files."""

from __future__ import annotations

import json

from archer.cli.data import main
from archer.data.formats import load_dataset, read_rows


def test_dedup_decontaminate_convert(tmp_path, shared_data):
    aime = load_dataset(shared_data / "math/aime24.jsonl")
    rows = [
        {"problem": "Brand new question about primes and the number 17?", "answer": "3"},
        {"problem": aime[0].prompt, "answer": "1"},  # contaminated: copy of an AIME problem
        {"problem": "brand new question about primes and the number 17", "answer": "3"},
    ]  # exact dup
    src = tmp_path / "train.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    assert main(["dedup", "--in", str(src), "--out", str(tmp_path / "d.jsonl")]) == 0
    assert len(load_dataset(tmp_path / "d.jsonl")) == 2
    removed = [json.loads(x) for x in (tmp_path / "d.jsonl.removed.jsonl").read_text().splitlines()]
    assert removed[0]["reason"] == "exact"

    assert (
        main(
            [
                "decontaminate",
                "--in",
                str(tmp_path / "d.jsonl"),
                "--against",
                str(shared_data / "math/aime24.jsonl"),
                str(shared_data / "math/math500.jsonl"),
                "--out",
                str(tmp_path / "c.parquet"),
            ]
        )
        == 0
    )
    kept = load_dataset(tmp_path / "c.parquet")
    assert [p.answer for p in kept] == ["3"]

    assert (
        main(
            [
                "convert",
                "--in",
                str(tmp_path / "c.parquet"),
                "--out",
                str(tmp_path / "v.parquet"),
                "--layout",
                "verl",
            ]
        )
        == 0
    )
    [row] = read_rows(tmp_path / "v.parquet")
    assert row["reward_model"]["ground_truth"] == "3" and row["prompt"][0]["role"] == "user"
    assert "\\boxed{}" in row["prompt"][0]["content"]


def test_filter_min_tests(tmp_path, shared_data):
    out = tmp_path / "f.jsonl"
    assert (
        main(
            [
                "filter",
                "--in",
                str(shared_data / "code/livecodebench_sample.jsonl"),
                "--min-tests",
                "10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert [p.id for p in load_dataset(out)] == [
        "livecodebench/leetcode/2727",
        "livecodebench/atcoder/abc301_a",
    ]
