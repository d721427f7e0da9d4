"""Where a run's Ray actors go: the roles, their node labels, and where an actor landed.

A run has three kinds of Ray actors, its *roles* (:data:`PLACEMENT_ROLES`): ``trainer`` (the training
ranks, :mod:`archer.distributed.ray_launch`), ``rollout`` (:mod:`archer.rollout.ray_pool`) and
``reward`` (:mod:`archer.rewards.ray_pool`). ``resources.placement`` maps a role to a custom Ray
resource that the nodes meant for it advertise (``archer cluster join HEAD --resources '{"gen": 1}'``);
each actor of that role then asks for :data:`LABEL_SHARE` of it, so any number of them fit on such a
node and none lands elsewhere. A role without a label goes wherever Ray finds room. This is how a
recipe says "colocated" (no labels, or one label for several roles) or "disaggregated" (a label per
role).

Every Ray actor of a run also reports where it runs (:func:`here`: node id, IP, pid) in its log prefix
(its ``__repr__``) and, when the run directory is known (``ARCHER_RUN_DIR``, set by the Ray launcher
for every actor of the job), in ``<run>/health/<role>_<pid>.json`` (:func:`register_worker`), which
``archer status`` lists. Ray is imported only inside the functions that need it.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

PLACEMENT_ROLES = ("trainer", "rollout", "reward")
LABEL_SHARE = 0.001  # of a node's label resource per actor: a node labelled {"NAME": 1} takes 1000
RUN_DIR_ENV = "ARCHER_RUN_DIR"


def label_resources(placement: dict[str, str] | None, role: str) -> dict[str, float]:
    """The custom resources an actor of ``role`` asks for (empty when the role has no label)."""
    if role not in PLACEMENT_ROLES:
        raise ValueError(f"unknown role {role!r}; known: {list(PLACEMENT_ROLES)}")
    label = (placement or {}).get(role)
    return {label: LABEL_SHARE} if label else {}


def here() -> dict[str, Any]:
    """This process's node (Ray's node id and IP when inside Ray, else the host name) and pid."""
    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        if ray.is_initialized():
            out["node_id"] = ray.get_runtime_context().get_node_id()
            out["node_ip"] = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - no Ray, or not inside a Ray worker: the host name says enough
        pass
    return out


def node_name(where: dict[str, Any]) -> str:
    """``"10.0.0.2/3f2a9c1e"``: a node's IP and the start of its Ray node id (the host name outside Ray)."""
    node = where.get("node_ip", where.get("host", "?"))
    node_id = str(where.get("node_id", ""))[:8]
    return f"{node}/{node_id}" if node_id else str(node)


def describe(role: str, where: dict[str, Any]) -> str:
    """``"rollout worker @ 10.0.0.2/3f2a9c1e"``: the log prefix of an actor."""
    return f"{role} @ {node_name(where)}"


def register_worker(role: str, **extra: Any) -> dict[str, Any]:
    """Record this actor in ``<run>/health/<role>_<pid>.json`` when ``ARCHER_RUN_DIR`` names a run
    directory that this node sees; returns where it runs either way."""
    where = dict(here(), role=role, started=time.time(), **extra)
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir and Path(run_dir).is_dir():
        from archer.atomic_json import write_json
        from archer.distributed.health import HEALTH_DIR

        try:
            write_json(Path(run_dir) / HEALTH_DIR / f"{role}_{os.getpid()}.json", where)
        except OSError:
            pass
    return where


def record_worker_error(role: str, pid: int, error: str) -> None:
    """Add ``error`` (one line) to a registered actor's file (the pool that saw it die calls this)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return
    from archer.atomic_json import write_json
    from archer.distributed.health import HEALTH_DIR, read_json

    path = Path(run_dir) / HEALTH_DIR / f"{role}_{pid}.json"
    beat = read_json(path)
    if beat is not None:
        beat.update(error=error[:500], ended=time.time())
        try:
            write_json(path, beat)
        except OSError:
            pass
