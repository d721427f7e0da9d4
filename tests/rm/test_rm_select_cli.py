"""Best-of-N by a reward model (unit and through archer eval score --rm), and the archer rm command line."""

from __future__ import annotations

import json

import pytest

from archer.cli.main import main as archer_main
from archer.data.schema import Problem
from archer.rm.select import best_of_n
from archer.tasks import synthetic


class FixedRM:
    def __init__(self, scores):
        self.scores = scores

    def score(self, prompts, responses):
        return [self.scores[r] for r in responses]


def test_best_of_n_picks_the_top_scored_response_and_reports_the_bounds():
    probs = {i: Problem(i, f"q {i}", "math", answer="1") for i in ("a", "b", "c")}
    gens = {
        "a": {"responses": ["a0", "a1", "a2"]},
        "b": {"responses": ["b0", "b1"]},
        "c": {"responses": ["c0", "c1"]},
    }
    verdicts = {"a": [False, True, False], "b": [True, False], "c": [False, False]}
    results = [{"id": i, "samples": [{"correct": v} for v in verdicts[i]]} for i in ("a", "b", "c")]
    rm = FixedRM({"a0": 0.1, "a1": 0.9, "a2": 0.5, "b0": 1.0, "b1": 1.0, "c0": 0.0, "c1": 2.0})
    summary, picks = best_of_n(results, gens, probs, rm)
    assert [p["pick"] for p in picks] == [1, 0, 1]  # b: a tie goes to the first
    assert summary == {
        "problems": 3,
        "accuracy": 2 / 3,
        "mean_accuracy": (1 / 3 + 1 / 2 + 0) / 3,
        "oracle": 2 / 3,
    }
    assert (
        best_of_n(results, gens, probs, FixedRM({**rm.scores, "a1": -5.0, "b1": 3.0}))[0]["accuracy"] == 0.0
    )


def test_eval_score_with_rm_reports_best_of_n(tmp_path, tiny_rm, capsys):
    problems = synthetic.code_problems(3, split="test", seed=0)
    out = tmp_path / "ev"
    out.mkdir()
    rows = [
        {"id": p.id, "prompt": p.prompt, "responses": [synthetic.code_solution(p), "no code"]}
        for p in problems
    ]
    (out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "config.json").write_text(json.dumps({"n": 2}))
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in problems))
    assert (
        archer_main(
            ["eval", "score", "--out", str(out), "--data", str(data), "--k", "1", "--rm", str(tiny_rm)]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    b = summary["rm_best_of_n"]
    assert b["problems"] == 3 and b["mean_accuracy"] == 0.5 and b["oracle"] == 1.0
    assert b["accuracy"] == 1.0  # tiny_rm was trained to prefer code over "no code"
    assert len((out / "rm_best_of_n.jsonl").read_text().splitlines()) == 3
    assert "best-of-2 by reward model" in capsys.readouterr().out


def test_rm_cli_pairs_from_samples_train_and_score(tmp_path, tiny_lm_dir, capsys):
    problems = synthetic.code_problems(6, split="train", seed=2)
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in problems))
    half = "```python\ndef f(x):\n    return 0\n```"  # passes some asserts at most
    samples = tmp_path / "samples.jsonl"
    rows = [
        {"id": p.id, "responses": [synthetic.code_solution(p), synthetic.code_solution(p, 1), half]}
        for p in problems
    ]
    rows[0]["pass_rates"] = [1.0, 0.5, 0.25]  # given: not re-run
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = tmp_path / "pairs.jsonl"
    args = ["rm", "pairs", "--samples", str(samples), "--data", str(data), "--out", str(pairs)]
    assert archer_main(args + ["--min-rejected", "-0.01", "--min-gap", "0.4"]) == 0
    got = [json.loads(x) for x in pairs.read_text().splitlines()]
    assert got and all(r["chosen_pass_rate"] - r["rejected_pass_rate"] > 0.4 for r in got)
    assert all(r["chosen_pass_rate"] > 0.8 for r in got)
    first = [r for r in got if r["id"] == problems[0].id]
    assert [(r["chosen_pass_rate"], r["rejected_pass_rate"]) for r in first] == [(1.0, 0.5), (1.0, 0.25)]
    rm_dir = tmp_path / "rm"
    train = ["rm", "train", "--data", str(pairs), "--model", str(tiny_lm_dir), "--out", str(rm_dir)]
    assert archer_main(train + ["--lr", "1e-3", "--max-length", "96", "--eval-data", str(pairs)]) == 0
    assert "held-out pairwise accuracy" in capsys.readouterr().out
    scored = tmp_path / "scored.jsonl"
    assert archer_main(["rm", "score", "--model", str(rm_dir), "--in", str(pairs), "--out", str(scored)]) == 0
    out = [json.loads(x) for x in scored.read_text().splitlines()]
    assert all(
        isinstance(r["rm_score_chosen"], float) and isinstance(r["rm_score_rejected"], float) for r in out
    )
    assert "pairwise accuracy" in capsys.readouterr().out


def test_rm_cli_bad_inputs_are_one_line_errors(tmp_path, tiny_lm_dir, capsys):
    missing = str(tmp_path / "x.jsonl")
    assert archer_main(["rm", "score", "--model", str(tiny_lm_dir), "--in", missing, "--out", "y.jsonl"]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": 1, "rejected": "r"}\n')
    assert (
        archer_main(["rm", "score", "--model", str(tiny_lm_dir), "--in", str(bad), "--out", "y.jsonl"]) == 2
    )
    assert "not a reward model" in capsys.readouterr().err  # a causal LM folder
    assert (
        archer_main(
            ["rm", "train", "--data", str(bad), "--model", str(tiny_lm_dir), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "must be strings" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"id": "a", "responses": ["x", "y"], "pass_rates": [1.0]}\n')
    argv = [
        "rm",
        "pairs",
        "--samples",
        str(samples),
        "--data",
        "synthetic_code",
        "--out",
        str(tmp_path / "p.jsonl"),
    ]
    assert archer_main(argv) == 2
    assert "1 pass_rates for 2 responses" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        archer_main(
            ["rm", "pairs", "--data", "synthetic_code", "--out", str(tmp_path / "p.jsonl"), "--min-gap", "x"]
        )


def test_rm_cli_pairs_samples_from_a_model_and_resumes(tmp_path, tiny_lm_dir, capsys):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in synthetic.code_problems(3, seed=4)))
    pairs = tmp_path / "pairs.jsonl"
    argv = ["rm", "pairs", "--model", str(tiny_lm_dir), "--data", str(data), "--out", str(pairs), "--n", "2"]
    assert archer_main(argv + ["--max-new-tokens", "6"]) == 0
    samples = [json.loads(x) for x in (tmp_path / "pairs.jsonl.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(
        len(s["responses"]) == 2 and s["pass_rates"] == [0.0, 0.0] for s in samples
    )
    assert pairs.is_file() and "0 pairs from 0 of 3 problems" in capsys.readouterr().out
    assert archer_main(argv) == 0  # every problem sampled already: no model is loaded
    assert "3 already in" in capsys.readouterr().err
