"""Training ranks as Ray actors across nodes: ``resources.nodes=N`` with ``resources.train_procs`` per node.

:func:`launch_ray` is the second launcher beside :func:`archer.distributed.launch.launch_local`
(:func:`archer.distributed.launch.launcher_name` picks it when ``resources.nodes > 0``). It joins the
Ray cluster at ``resources.address`` (``auto``: the one this node belongs to), reserves one placement
group bundle per node (``STRICT_SPREAD``: every bundle on another node) holding ``train_procs`` ranks of
``resources.rank_cpus`` CPUs (and one GPU each when the cluster has GPUs), plus the ``trainer`` label of
``resources.placement`` when given, and starts one :class:`RankActor` per rank. Rank ``i * train_procs
+ j`` is the ``j``-th rank of bundle ``i``. Each actor gets the environment torchrun would set, with
``MASTER_ADDR`` the IP Ray reports for rank 0's node and ``MASTER_PORT`` a port free there, then runs
the same entry point as a local rank (:func:`archer.rl.loop.train`, which joins the group in
:func:`archer.distributed.world.join_world`: gloo on CPU, NCCL on GPU). The rollout and reward actors
the ranks start go where ``resources.placement`` says (:mod:`archer.distributed.placement`); every
actor of the job inherits ``ARCHER_RUN_DIR`` and registers its node in ``<run>/health``.

Logs: the driver joins Ray with ``log_to_driver``, so every actor's lines reach the terminal prefixed by
Ray with the actor's role, rank and node (``(trainer rank 1 @ 10.0.0.3/5c1e09aa pid=...)``).

Failures (one attempt): the driver waits on every rank's ``run`` call. The first that fails (its actor
died: kill -9, OOM, its node lost; the watchdog of :mod:`archer.distributed.health` ended a hung rank;
or it raised) starts a grace of :data:`archer.distributed.launch.GRACE_S` seconds for the others
(their collectives fail at once), then every rank actor is killed and the placement group removed,
so the rollout and reward actors they own go too. The attempt ends with one line naming the rank (a
rank hung outside a collective is blamed first), how it ended, its stage and node. Restarts follow
:func:`archer.distributed.launch.with_restarts` (``trainer.max_restarts``, from the last complete
checkpoint). A restart after a node loss runs on the nodes that can still host a bundle, down to
``resources.min_nodes`` (a smaller data-parallel world: the global batch is the same, split over fewer
ranks, so later steps differ from an uninterrupted run's); with fewer, or on a first attempt the cluster
cannot place, the run ends at once with one line saying how many nodes it found and needs.

Limits: the run directory must be on a filesystem every node mounts (checked at start: a node that does
not see it is named); a node's capacity is read from Ray's resource totals, so a node busy with another
job's actors counts as free until the placement group waits ``resources.placement_timeout_s``; the
driver itself is not a rank and holds no model.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archer.distributed._ray import actor_died_errors, ensure_ray
from archer.distributed.health import FAULT_ENV, NODE_ENV, RESTART_ENV, record_error, write_status
from archer.distributed.launch import GRACE_S, NoRestart, blame, free_port, stage_note, with_restarts
from archer.distributed.placement import RUN_DIR_ENV, describe, here, label_resources, node_name
from archer.errors import RankFailure

RESERVE_SLICE_S = 5.0  # how long one placement request waits before the cluster is read again


class RankActor:
    """One training rank in a Ray actor: the torchrun environment, then the caller's entry point."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.where = here()

    def __repr__(self) -> str:  # Ray's prefix of this actor's log lines
        return describe(f"trainer rank {self.rank}", self.where)

    def locate(self, run_dir: str) -> dict[str, Any]:
        """Where this rank runs and whether it sees the run directory."""
        return dict(self.where, visible=Path(run_dir).is_dir())

    def free_port(self) -> int:
        return free_port("")  # on this actor's node, every interface

    def run(
        self, entry: Callable[..., Any], cfg: Any, run_dir: str, resume: bool, env: dict[str, str]
    ) -> Any:
        os.environ.update(env)
        if FAULT_ENV not in env:  # the driver's test hook only: never one a raylet or a reused worker kept
            os.environ.pop(FAULT_ENV, None)
        if cfg.trainer.threads is None:
            import torch

            torch.set_num_threads(max(1, int(cfg.resources.rank_cpus)))
        try:
            summary = entry(cfg, run_dir=run_dir, resume=resume)
        except Exception as exc:
            text = str(exc).strip()
            line = f"raised {type(exc).__name__}" + (f": {text.splitlines()[0]}" if text else "")
            record_error(run_dir, self.rank, line[:500])
            raise
        return summary if self.rank == 0 else None


def launch_ray(
    entry: Callable[..., dict[str, Any]],
    cfg: Any,
    run_dir: str | Path,
    resume: bool = False,
    latest: Callable[[Path], Path | None] | None = None,
) -> dict[str, Any]:
    """Run ``entry(cfg, run_dir=..., resume=...)`` in Ray actors on ``resources.nodes`` nodes and return
    rank 0's result, restarting up to ``trainer.max_restarts`` times (see the module docstring). Raises
    :class:`RankFailure` (one line) when it gives up, a rank's ``ValueError`` as it was raised."""
    run_dir = Path(run_dir)
    return with_restarts(
        lambda resume, attempt: _run_once(entry, cfg, run_dir, resume, attempt), cfg, run_dir, resume, latest
    )


def _bundle(cfg: Any, gpus: bool) -> dict[str, float]:
    r = cfg.resources
    bundle = {"CPU": r.train_procs * r.rank_cpus}
    if gpus:
        bundle["GPU"] = float(r.train_procs)
    for label, share in label_resources(r.placement, "trainer").items():
        bundle[label] = r.train_procs * share
    return bundle


def nodes_to_use(alive: list[dict[str, Any]], bundle: dict[str, float], cfg: Any) -> int:
    """How many nodes the ranks run on: ``resources.nodes`` when that many of the ``alive`` Ray nodes
    (``ray.nodes()`` entries) can each hold ``bundle``, else as many as can, down to
    ``resources.min_nodes``; :class:`NoRestart` with one line below that."""
    r = cfg.resources
    least = r.min_nodes or r.nodes
    fit = sum(
        1
        for n in alive
        if n.get("Alive") and all(n.get("Resources", {}).get(k, 0.0) >= v for k, v in bundle.items())
    )
    if fit >= r.nodes:
        return r.nodes
    if fit >= least:
        print(
            f"archer: only {fit} of resources.nodes={r.nodes} Ray node(s) can host {r.train_procs} training "
            f"rank(s) ({bundle}); running on {fit} (world size {fit * r.train_procs})",
            file=sys.stderr,
            flush=True,
        )
        return fit
    need = f"resources.nodes={r.nodes}" + (f", resources.min_nodes={r.min_nodes}" if r.min_nodes else "")
    raise NoRestart(
        f"only {fit} of {len([n for n in alive if n.get('Alive')])} alive Ray node(s) can host "
        f"{r.train_procs} training rank(s) ({bundle}); need {need}"
    )


def _run_once(entry: Callable[..., Any], cfg: Any, run_dir: Path, resume: bool, attempt: int) -> Any:
    """One attempt: place the ranks, run them, clean up; a failure becomes one line (RankFailure)."""
    from ray.util.placement_group import remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    r = cfg.resources
    ray = ensure_ray(r.address, log_to_driver=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    bundle = _bundle(cfg, gpus)
    pg, nodes = _reserve(ray, cfg, bundle)
    size = nodes * r.train_procs
    actors: list[Any] = []
    try:
        env = {RUN_DIR_ENV: str(run_dir.resolve()), RESTART_ENV: str(attempt)}
        if os.environ.get(FAULT_ENV):  # the test hook reaches the ranks as it reaches forked ones
            env[FAULT_ENV] = os.environ[FAULT_ENV]
        cls = ray.remote(RankActor)
        for i in range(nodes):
            for j in range(r.train_procs):
                actors.append(
                    cls.options(
                        num_cpus=r.rank_cpus,
                        num_gpus=1 if gpus else 0,
                        resources=label_resources(r.placement, "trainer"),
                        scheduling_strategy=PlacementGroupSchedulingStrategy(
                            pg, placement_group_bundle_index=i
                        ),
                        runtime_env={"env_vars": env},  # inherited by the rollout and reward actors
                    ).remote(i * r.train_procs + j)
                )
        wheres = _locate(ray, actors, run_dir, r.placement_timeout_s)
        port = ray.get(actors[0].free_port.remote(), timeout=60)
        write_status(
            run_dir,
            launcher="ray",
            nodes=nodes,
            world_size=size,
            workers=[dict(w, role="trainer", rank=k, attempt=attempt) for k, w in enumerate(wheres)],
        )
        refs = {}
        for k, actor in enumerate(actors):
            rank_env = dict(
                env,
                MASTER_ADDR=str(wheres[0].get("node_ip", "127.0.0.1")),
                MASTER_PORT=str(port),
                RANK=str(k),
                WORLD_SIZE=str(size),
                LOCAL_RANK="0" if gpus else str(k % r.train_procs),  # Ray shows each GPU rank one device
                **{NODE_ENV: node_name(wheres[k])},
            )
            refs[actor.run.remote(entry, cfg, str(run_dir), resume, rank_env)] = k
        return _wait(ray, refs, wheres, run_dir, attempt)
    finally:
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        try:
            remove_placement_group(pg)
        except Exception:  # noqa: BLE001 - the cluster went away
            pass


def _reserve(ray: Any, cfg: Any, bundle: dict[str, float]) -> tuple[Any, int]:
    """A ready placement group of one ``bundle`` per node and its node count. Waits in slices of
    :data:`RESERVE_SLICE_S`, re-reading the cluster between them: a node that died but still looks alive
    (Ray notices a lost raylet only after its health checks fail) drops out and the group is asked again
    for the nodes left. :class:`NoRestart` after ``resources.placement_timeout_s``."""
    from ray.util.placement_group import placement_group, remove_placement_group

    timeout_s = cfg.resources.placement_timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = nodes_to_use(ray.nodes(), bundle, cfg)
        strategy = "STRICT_SPREAD" if nodes > 1 else "PACK"
        pg = placement_group([dict(bundle) for _ in range(nodes)], strategy=strategy)
        if pg.wait(max(0.1, min(RESERVE_SLICE_S, deadline - time.monotonic()))):
            return pg, nodes
        remove_placement_group(pg)
        if time.monotonic() >= deadline:
            raise NoRestart(
                f"Ray did not offer {nodes} node(s) with {bundle} each within "
                f"resources.placement_timeout_s={timeout_s:g} s (free now: {ray.available_resources()})"
            )


def _locate(ray: Any, actors: list[Any], run_dir: Path, timeout_s: float) -> list[dict[str, Any]]:
    """Every rank's node, once its actor is up; one line when a rank cannot start or see the run."""
    refs = [a.locate.remote(str(run_dir)) for a in actors]
    try:
        wheres = ray.get(refs, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - an actor that cannot start (archer missing on a node, ...)
        text = str(exc).strip().splitlines()
        raise NoRestart(
            f"a training rank's Ray actor did not start: {type(exc).__name__}"
            + (f": {text[0][:300]}" if text else "")
        ) from None
    for k, where in enumerate(wheres):
        if not where["visible"]:
            raise NoRestart(
                f"rank {k} on node {where.get('node_ip')} does not see the run directory {run_dir}: put it "
                "on a filesystem every node mounts (the ranks read and write it)"
            )
    return wheres


def _wait(ray: Any, refs: dict[Any, int], wheres: list[dict[str, Any]], run_dir: Path, attempt: int) -> Any:
    """Rank 0's result once every rank returned, or a RankFailure for the first that failed (the others
    get GRACE_S seconds to end on their own, then the caller kills them)."""
    died = actor_died_errors(ray)
    pending, hows = dict(refs), {}
    summary, first, first_dead, deadline, user_error = None, None, None, None, None
    while pending and (deadline is None or time.monotonic() < deadline):
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            k = pending.pop(ref)
            try:
                out = ray.get(ref)
            except died as exc:
                hows[k] = _death(ray, wheres[k], exc)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                if isinstance(cause, ValueError) and user_error is None:
                    user_error = cause  # a config or data error: raised as raised, never restarted
                text = str(cause).strip()
                hows[k] = f"raised {type(cause).__name__}" + (
                    f": {text.splitlines()[0][:300]}" if text else ""
                )
            else:
                if k == 0:
                    summary = out
                continue
            if first is None:
                first, deadline = k, time.monotonic() + GRACE_S
            if first_dead is None and k in hows and not hows[k].startswith("raised"):
                first_dead = k  # a rank that died is the cause; the others' collectives failed after it
    if user_error is not None:
        raise user_error
    if first is None:
        return summary
    rank, beat = blame(run_dir, len(wheres), first if first_dead is None else first_dead, attempt)
    how = str(beat["error"]) if beat.get("error") else hows.get(rank, "was stopped")
    node = wheres[rank].get("node_ip", "?")
    raise RankFailure(f"rank {rank} {how}{stage_note(beat, how)} on node {node}")


def _death(ray: Any, where: dict[str, Any], exc: BaseException) -> str:
    """How a rank's actor ended, from Ray's view of its node."""
    node_id = where.get("node_id")
    try:
        alive = any(n.get("NodeID") == node_id and n.get("Alive") for n in ray.nodes())
    except Exception:  # noqa: BLE001 - the GCS itself is unreachable
        alive = True
    if not alive:
        return f"was lost with its node ({str(node_id)[:8]})"
    return f"died ({type(exc).__name__}: its process ended, e.g. kill -9 or the OOM killer)"
