import pytest

from archer.cli.main import COMMANDS, main
from archer.data.schema import Problem, load_problems_from_rows
from archer.rewards.registry import register_verifier, score_responses
from archer.rewards.types import RewardResult


def test_cli_usage_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_cli_unknown_command(capsys):
    assert main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_cli_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"archer {version('archer')}"
    assert "--version" in (main([]), capsys.readouterr().out)[1]


def test_cli_closed_pipe_ends_quietly():
    """`archer train --print-config | head -1`: exit 0, no 'Broken pipe' error or traceback."""
    import subprocess
    import sys

    proc = subprocess.run(
        f"{sys.executable} -m archer train --print-config | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "model:" and proc.stderr == ""
    # a reader that leaves before the first write (the old CLI printed "error: [Errno 32] Broken pipe")
    proc = subprocess.run(
        f"set -o pipefail; {sys.executable} -m archer train --print-config | true",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == ""


def test_problem_validation_names_the_row():
    rows = [
        {"id": "a", "prompt": "1+1?", "kind": "math", "answer": "2"},
        {"id": "b", "prompt": "x", "kind": "math"},
    ]
    with pytest.raises(ValueError, match=r"row 2: .*answer"):
        load_problems_from_rows(rows, "f.jsonl")
    with pytest.raises(ValueError, match="kind"):
        Problem(id="c", prompt="p", kind="poetry", answer="1")


def test_score_responses_groups_and_survives_a_broken_verifier():
    calls = []

    def echo(responses, problems, scale=1.0):
        calls.append(len(responses))
        return [
            RewardResult(scale * float(r == p.answer), r == p.answer) for r, p in zip(responses, problems)
        ]

    def broken(responses, problems):
        raise RuntimeError("boom")

    register_verifier("echo_test", echo, data_sources=["echo_src"])
    register_verifier("broken_test", broken, data_sources=["broken_src"])
    probs = [
        Problem("1", "q", "math", answer="a", data_source="echo_src"),
        Problem("2", "q", "math", answer="b", data_source="broken_src"),
        Problem("3", "q", "math", answer="c", data_source="echo_src"),
    ]
    out = score_responses(["a", "b", "x"], probs, scale=2.0, unused_option=1)
    assert calls == [2]
    assert [r.reward for r in out] == [2.0, 0.0, 0.0]
    assert "boom" in out[1].info["reason"]


def test_score_responses_survives_a_verifier_that_cannot_import():
    register_verifier("missing_test", "archer.no_such_module:fn", data_sources=["missing_src"])
    out = score_responses(["a"], [Problem("1", "q", "math", answer="a", data_source="missing_src")])
    assert out[0].reward == 0.0 and not out[0].correct
    assert "ModuleNotFoundError" in out[0].info["reason"]


def test_cli_user_errors_are_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ARCHER_DEBUG", raising=False)
    missing = tmp_path / "missing.jsonl"
    assert main(["data", "dedup", "--in", str(missing), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archer data: error:") and "missing.jsonl" in err and "Traceback" not in err
    data = tmp_path / "math.jsonl"
    data.write_text('{"problem": "1+1?", "answer": "2"}\n')
    assert (
        main(
            ["eval", "--model", str(tmp_path / "nomodel"), "--data", str(data), "--out", str(tmp_path / "ev")]
        )
        == 2
    )
    assert "not a Hugging Face model directory" in capsys.readouterr().err
    monkeypatch.setenv("ARCHER_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["data", "dedup", "--in", str(missing), "--out", str(tmp_path / "o.jsonl")])
