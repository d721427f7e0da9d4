"""``archer status RUN_DIR [--json]``: where a training run stands, read from its files alone.

Shows the recipe, the state (``status.json``: running, restarting, finished, failed; a ``running`` run
whose processes are all gone is reported as such), the step reached (``metrics.jsonl``) of
``trainer.steps``, the last complete checkpoint and its step, the restarts so far with their reasons,
and per rank its last heartbeat, stage, step, node and last error (``health/rank_<r>.json``, written by
:mod:`archer.distributed.health`); for a run placed on Ray nodes (``resources.nodes``) also the nodes and
world size, and each Ray rollout and reward actor with its node, pid and last error
(``health/<role>_<pid>.json``, :mod:`archer.distributed.placement`). A process on another host is
reported as such (its pid cannot be checked from here). Works on a finished, running or crashed run, and on a run from
before heartbeats existed (those parts are then missing); a folder without ``config.yaml`` is not a run
and gets one line and exit status 2. Never imports torch: it answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from archer.distributed.health import HEALTH_DIR, STATUS_FILE, read_json
from archer.safe_yaml import load_yaml

_STEP_DIR = re.compile(r"^step_(\d+)$")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archer status", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run directory (the --out of archer train)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _last_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint (a ``step_N`` folder with its ``COMPLETE`` marker)."""
    root = run_dir / "checkpoints"
    found = []
    for p in root.iterdir() if root.is_dir() else []:
        m = _STEP_DIR.match(p.name)
        if m and (p / "COMPLETE").is_file():
            found.append((int(m.group(1)), p))
    return max(found) if found else None


def _step_reached(run_dir: Path) -> int | None:
    step = None
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            step = max(step or 0, int(json.loads(line).get("step", 0)))
        except (ValueError, TypeError, AttributeError):
            continue  # a torn last line from a kill
    return step


def _alive(pid: Any, host: Any = None) -> bool | None:
    """Whether process ``pid`` lives; None when it ran on another host (a Ray node this one cannot see)."""
    if host is not None and host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def report(run_dir: str | Path) -> dict[str, Any]:
    """The status of the run in ``run_dir`` as a dict; ``ValueError`` when it is not a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir} is not a run directory (no config.yaml)")
    config = load_yaml((run_dir / "config.yaml").read_bytes(), source=str(run_dir / "config.yaml")) or {}
    job = read_json(run_dir / STATUS_FILE) or {}
    ranks = []
    for path in sorted((run_dir / HEALTH_DIR).glob("rank_*.json")):
        beat = read_json(path)
        if beat is not None:
            beat["alive"] = _alive(beat.get("pid"), beat.get("host"))
            ranks.append(beat)
    workers = []  # Ray rollout and reward actors (archer.distributed.placement.register_worker)
    for path in sorted((run_dir / HEALTH_DIR).glob("*_*.json")):
        beat = read_json(path)
        if beat is not None and not path.name.startswith("rank_") and beat.get("role"):
            beat["alive"] = _alive(beat.get("pid"), beat.get("host")) if not beat.get("ended") else False
            workers.append(beat)
    state = job.get("state", "unknown (no status.json)")
    if state in ("running", "restarting") and ranks and not any(b["alive"] is not False for b in ranks):
        state = f"{state}, but no process is alive (crashed or killed?)"
    last = _last_checkpoint(run_dir)
    return {
        "run_dir": str(run_dir),
        "recipe": job.get("recipe") or config.get("recipe"),
        "state": state,
        "updated": job.get("updated"),
        "step": _step_reached(run_dir),
        "steps": (config.get("trainer") or {}).get("steps"),
        "checkpoint": {"step": last[0], "path": str(last[1])} if last else None,
        "restarts": job.get("restarts", []),
        "error": job.get("error"),
        "ranks": sorted(ranks, key=lambda b: int(b.get("rank", 0))),
        "launcher": job.get("launcher", "local"),
        "nodes": job.get("nodes"),
        "world_size": job.get("world_size"),
        "workers": sorted(workers, key=lambda b: (str(b.get("role")), float(b.get("started") or 0))),
    }


def _ago(t: Any, now: float) -> str:
    return f"{now - float(t):.0f} s ago" if isinstance(t, (int, float)) else "never"


def format_report(r: dict[str, Any], now: float | None = None) -> str:
    """The report as aligned text lines."""
    now = time.time() if now is None else now
    ck = r["checkpoint"]
    lines = [
        f"run         {r['run_dir']}",
        f"recipe      {r['recipe'] or '-'}",
        f"state       {r['state']}" + (f" (updated {_ago(r['updated'], now)})" if r["updated"] else ""),
        f"step        {r['step'] if r['step'] is not None else '-'} of {r['steps']} (metrics.jsonl)",
        "checkpoint  " + (f"step {ck['step']}: {ck['path']}" if ck else "none complete"),
        f"restarts    {len(r['restarts'])}",
    ]
    for i, rs in enumerate(r["restarts"], 1):
        lines.append(f"  {i}. from {rs.get('from')}: {rs.get('reason')}")
    if r["error"]:
        lines.append(f"error       {r['error']}")
    if r.get("launcher") == "ray":
        lines.append(f"launcher    ray: {r.get('nodes')} node(s), world size {r.get('world_size')}")
    for b in r["ranks"]:
        op = f", in {b['op']}" if b.get("op") else ""
        node = f" on node {b['node']}" if b.get("node") else ""
        line = (
            f"rank {b.get('rank')}      heartbeat {_ago(b.get('time'), now)}, stage '{b.get('stage')}' at step "
            f"{b.get('step')}{op}{node}, pid {b.get('pid')} ({_state(b['alive'])}), attempt {b.get('attempt', 0)}"
        )
        lines.append(line + (f"; last error: {b['error']}" if b.get("error") else ""))
    for b in r.get("workers", []):
        line = (
            f"{b.get('role'):<11} on node {b.get('node_ip', b.get('host'))}/{str(b.get('node_id', ''))[:8]}, "
            f"pid {b.get('pid')} ({_state(b['alive'])}), started {_ago(b.get('started'), now)}"
        )
        lines.append(line + (f"; last error: {b['error']}" if b.get("error") else ""))
    return "\n".join(lines)


def _state(alive: bool | None) -> str:
    return "on another host" if alive is None else ("alive" if alive else "gone")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        r = report(args.run_dir)
    except ValueError as exc:
        print(f"archer status: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
