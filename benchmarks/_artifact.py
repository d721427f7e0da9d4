"""The JSON artifact a timing benchmark writes beside its markdown table.

Every headline in ``BENCHMARKS.md`` points at a file in ``benchmarks/results/`` that a reader can load
without parsing a table: :func:`write_artifact` writes ``<name>.json`` with the command that regenerates
it, the machine and its load before and after the run, the archer source hash
(``_toy_common.code_version``), the git commit when there is one, and the results themselves.

Timings carry their raw samples and an interval, never a bare best-of:

- :func:`timing` summarises one side's repeated measurements (median, mean, 95% t-interval of the mean).
- :func:`ratio` summarises a speed-up from two sides measured the same number of times, repeat by repeat
  (``a[i] / b[i]``; the benchmarks interleave the two sides, so a repeat's pair shares the machine's
  state). The interval is the t-interval of those per-repeat ratios: with 2-3 repeats it is wide, which
  is the honest statement of what so few repeats show. Fewer than 2 repeats gives no interval (NaN).

Limits: the interval covers repeat-to-repeat noise on this machine at this load, not the spread across
machines; the load averages recorded beside it say whether other processes shared the cores.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _toy_common import REPO, RESULTS, code_version, mean_ci  # noqa: E402  (benchmarks/ is on sys.path)

from archer.atomic_json import write_json


def _git(*args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _git_commit() -> str | None:
    out = _git("rev-parse", "HEAD")
    return (out.stdout.strip() or None) if out else None


def _git_dirty() -> bool | None:
    out = _git("status", "--porcelain", "--", "archer", "benchmarks")
    return bool(out.stdout.strip()) if out and out.returncode == 0 else None


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def start() -> dict[str, Any]:
    """Call before measuring: the load average and time at the start (passed to :func:`write_artifact`)."""
    return {
        "load_start": _load(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(),
        "archer_source_start": code_version(),
        "git_dirty_start": _git_dirty(),
    }


def environment(started: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    env = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "archer_source": code_version(),
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),
        "load_end": _load(),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    if started and started.get("archer_source_start") not in (None, env["archer_source"]):
        env["warning"] = "archer's source changed during the run: the result belongs to neither hash alone"
    return {**(started or {}), **env}


def timing(samples: list[float]) -> dict[str, Any]:
    """One side's repeated timings (seconds, or any per-repeat measure)."""
    vals = [float(s) for s in samples]
    mean, low, high = mean_ci(vals)
    return {
        "n": len(vals),
        "median": statistics.median(vals) if vals else float("nan"),
        "mean": mean,
        "ci95": [low, high],
        "samples": vals,
    }


def ratio(a: list[float], b: list[float]) -> dict[str, Any]:
    """``a / b`` repeat by repeat (a speed-up when a and b are rates, or b and a are times)."""
    if len(a) != len(b):
        raise ValueError(f"ratio needs as many repeats on each side, got {len(a)} and {len(b)}")
    per = [x / y for x, y in zip(a, b)]
    mean, low, high = mean_ci(per)
    return {"n": len(per), "mean": mean, "ci95": [low, high], "per_repeat": per}


def fmt_ci(summary: dict[str, Any], digits: int = 2, unit: str = "") -> str:
    """``1.23x [1.10, 1.36]`` (or just the mean when there is no interval)."""
    low, high = summary["ci95"]
    mean = f"{summary['mean']:.{digits}f}{unit}"
    if low != low:  # NaN: fewer than 2 repeats
        return mean
    return f"{mean} [{low:.{digits}f}, {high:.{digits}f}]"


def write_artifact(
    name: str,
    results: Any,
    *,
    argv: list[str] | None = None,
    started: dict[str, Any] | None = None,
    out: str | Path | None = None,
) -> Path:
    """Write ``benchmarks/results/<name>.json`` (or ``out``) atomically; returns its path."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python", f"benchmarks/{name}.py", *map(shlex.quote, args)])
    path = Path(out) if out is not None else RESULTS / f"{name}.json"
    write_json(
        path, {"benchmark": name, "command": command, "environment": environment(started), "results": results}
    )
    return path


def machine_line(env: dict[str, Any], extra: str = "") -> str:
    """One sentence for a table's footer: cores, processor, versions and the load at start and end."""
    return (
        f"Machine: {env['cpus']} CPU cores ({env['processor']}), torch {env['torch']}, Python {env['python']}"
        f"{extra}; load average {env.get('load_start')} at the start, {env['load_end']} at the end."
    )


def publish(
    name: str,
    lines: list[str],
    results: Any,
    *,
    out: str | Path,
    argv: list[str] | None = None,
    started: dict[str, Any] | None = None,
    extra: str = "",
) -> Path:
    """Write the markdown ``lines`` plus a machine line to ``out`` and the json artifact beside it."""
    env = environment(started)
    text = "\n".join([*lines, "", machine_line(env, extra)]) + "\n"
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return write_artifact(name, results, argv=argv, started=started, out=out.with_suffix(".json"))
