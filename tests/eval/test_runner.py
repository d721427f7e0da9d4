"""The evaluation runner: scoring and metrics with a scripted engine, resumption, the CLI end to end."""

from __future__ import annotations

import json

import pytest

from archer.data.schema import Problem
from archer.eval import store
from archer.eval.runner import evaluate, generate_phase, score_phase
from archer.rollout.base import Rollout


class ScriptedEngine:
    """Returns fixed responses per prompt (matched by a substring), cycling over n samples."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = script
        self.calls: list[list[str]] = []

    def generate(self, prompts, params):
        self.calls.append(list(prompts))
        out = []
        for i, prompt in enumerate(prompts):
            key = next(k for k in self.script if k in prompt)
            texts = self.script[key]
            out.append(
                [
                    Rollout(
                        i,
                        [1],
                        [2, 3],
                        [-0.1, -0.2],
                        texts[j % len(texts)],
                        j == 1,
                        "length" if j == 1 else "eos",
                    )
                    for j in range(params.n)
                ]
            )
        return out


def _problems():
    return [
        Problem("a", "What is 2+3?", "math", answer="5", data_source="toy1"),
        Problem("b", "What is 7*6?", "math", answer="42", data_source="toy2"),
        Problem("c", "What is 1+1?", "math", answer="2", data_source="toy2"),
    ]


SCRIPT = {"2+3": ["\\boxed{5}", "\\boxed{4}"], "7*6": ["\\boxed{41}", "no answer"], "1+1": ["\\boxed{2}"]}


def test_evaluate_metrics_and_records():
    engine = ScriptedEngine(SCRIPT)
    out = evaluate(engine, None, _problems(), n=2, ks=[1, 2, 8], max_new_tokens=4)
    # per problem correct: a [1,0], b [0,0], c [1,1]
    assert out["avg@1"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert out["pass@2"] == pytest.approx((1 + 0 + 1) / 3)
    assert out["ks"] == [1, 2] and out["skipped_k"] == [8]
    assert out["by_source"]["toy2"]["pass@2"] == pytest.approx(0.5)
    assert out["truncated_fraction"] == pytest.approx(0.5)
    rec = {r["id"]: r for r in out["records"]}
    assert [s["correct"] for s in rec["a"]["samples"]] == [True, False]
    assert rec["b"]["samples"][1]["reason"] == "no_answer" and rec["a"]["samples"][0]["reason"] == "equal"
    assert rec["a"]["responses"] == ["\\boxed{5}", "\\boxed{4}"]
    assert "reason step by step" in engine.calls[0][0]  # the math template was applied


def test_phases_resume_and_skip_done(tmp_path, monkeypatch):
    engine = ScriptedEngine(SCRIPT)
    probs = _problems()
    generate_phase(engine, None, probs[:2], tmp_path, n=2, batch_size=1)
    assert len(engine.calls) == 2 and not (tmp_path / store.GENERATED_MARKER).read_text() == ""
    # a crash mid-write leaves a partial last line; resume regenerates only what is missing
    with (tmp_path / store.GENERATIONS).open("a") as fh:
        fh.write('{"id": "c", "responses": ["trunc')
    generate_phase(engine, None, probs, tmp_path, n=2, batch_size=1)
    assert engine.calls[2:] and len(engine.calls) == 3 and "1+1" in engine.calls[2][0]
    assert [g["id"] for g in store.read_jsonl(tmp_path / store.GENERATIONS)] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="n=2"):
        generate_phase(engine, None, probs, tmp_path, n=4)

    summary = score_phase(probs, tmp_path, ks=[1, 2])
    assert summary["pass@2"] == pytest.approx(2 / 3) and summary["missing"] == 0
    # scoring again re-reads results instead of calling the verifier
    import archer.rewards.registry as registry

    monkeypatch.setattr(registry, "score_responses", lambda *a, **k: pytest.fail("re-scored"))
    assert score_phase(probs, tmp_path, ks=[1, 2])["pass@2"] == summary["pass@2"]
    rows = store.read_jsonl(tmp_path / store.RESULTS)
    assert {r["id"] for r in rows} == {"a", "b", "c"}
    assert json.loads((tmp_path / store.SUMMARY).read_text())["avg@1"] == summary["avg@1"]


def test_duplicate_ids_rejected():
    p = _problems()[0]
    with pytest.raises(ValueError, match="duplicated"):
        evaluate(ScriptedEngine(SCRIPT), None, [p, p], n=1)


def test_cli_end_to_end_tiny_model(tiny_model_dir, shared_data, tmp_path, code_verifier, capsys):
    from archer.cli.eval import main

    out = tmp_path / "ev"
    argv = [
        "--model",
        str(tiny_model_dir),
        "--data",
        str(shared_data / "math/math500.jsonl"),
        str(shared_data / "code/humaneval.jsonl"),
        "--limit",
        "2",
        "--n",
        "2",
        "--k",
        "1,2,4",
        "--max-new-tokens",
        "6",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    summary = json.loads((out / store.SUMMARY).read_text())
    assert {"avg@1", "pass@1", "avg@2", "pass@2"} <= summary.keys() and "avg@4" not in summary
    assert summary["num_problems"] == 4 and summary["num_samples"] == 8 and summary["skipped_k"] == [4]
    assert set(summary["by_source"]) == {"math500", "humaneval"}
    gens = store.read_jsonl(out / store.GENERATIONS)
    assert len(gens) == 4 and all(len(g["responses"]) == 2 for g in gens)
    assert gens[0]["prompt"].startswith("<|im_start|>user\n") and gens[0]["prompt"].endswith("assistant\n")
    results = store.read_jsonl(out / store.RESULTS)
    assert all(s["reason"] for r in results for s in r["samples"])
    assert "avg@1" in capsys.readouterr().out
    # resume: nothing regenerated, nothing rescored
    size = (out / store.GENERATIONS).stat().st_size
    assert main(argv) == 0
    assert (out / store.GENERATIONS).stat().st_size == size and len(
        store.read_jsonl(out / store.RESULTS)
    ) == 4
    # scoring alone, as on a CPU machine, from the directory's config
    (out / store.SUMMARY).unlink()
    (out / store.RESULTS).unlink()
    assert main(["score", "--out", str(out)]) == 0
    again = json.loads((out / store.SUMMARY).read_text())
    assert {k: again[k] for k in ("avg@1", "pass@2", "num_samples")} == {
        k: summary[k] for k in ("avg@1", "pass@2", "num_samples")
    }


def test_measure_pass_rates_feeds_difficulty_filter():
    from archer.curation.filters import filter_pass_rate
    from archer.eval.runner import measure_pass_rates

    probs = _problems()
    rates = measure_pass_rates(ScriptedEngine(SCRIPT), None, probs, n=2)
    assert rates == [0.5, 0.0, 1.0]
    kept, removed = filter_pass_rate(probs, rates, low=0.1, high=0.9)
    assert [p.id for p in kept] == ["a"] and {r["id"] for r in removed} == {"b", "c"}
