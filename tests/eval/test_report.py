"""The evaluation report: fractions everywhere (as summary.json), and a progress line that is never silent."""

from __future__ import annotations

import io

from archer.eval.report import Progress, print_summary


def test_summary_table_prints_fractions(capsys):
    print_summary(
        {
            "ks": [1, 8],
            "num_problems": 3,
            "avg@1": 0.41666,
            "pass@1": 0.41666,
            "avg@8": 0.41666,
            "pass@8": 1.0,
            "truncated_fraction": 0.25,
            "mean_response_tokens": 12.0,
        }
    )
    out = capsys.readouterr().out
    assert "0.417" in out and "1.000" in out and "truncated fraction 0.250" in out
    assert "41.7" not in out and "%" not in out


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_reports_eta_and_accuracy_and_throttles_when_not_a_terminal():
    stream, clock = io.StringIO(), FakeClock()
    bar = Progress(100, label="generate + score", stream=stream, every_s=30.0, clock=clock)
    clock.t = 10.0
    bar.add_scores(correct=3, samples=16)
    bar.update(10)  # the first batch is always shown
    clock.t = 20.0
    bar.update(20)  # 10 s later: throttled
    clock.t = 45.0
    bar.add_scores(correct=5, samples=16)
    bar.update(30)
    clock.t = 150.0
    bar.update(100)  # the end is always shown
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("generate + score [##") and "10/100 problems" in lines[0]
    assert "0:00:10 elapsed, ETA 0:01:30" in lines[0] and "accuracy 0.188 (16 samples)" in lines[0]
    assert "30/100" in lines[1] and "accuracy 0.250 (32 samples)" in lines[1]
    assert "100/100" in lines[2] and "ETA 0:00:00" in lines[2]


def test_progress_counts_eta_from_the_problems_of_this_run_only():
    stream, clock = io.StringIO(), FakeClock()
    bar = Progress(100, stream=stream, done=50, clock=clock)  # a resumed run: 50 were done before
    clock.t = 10.0
    bar.update(60)
    assert "60/100" in stream.getvalue() and "ETA 0:00:40" in stream.getvalue()
