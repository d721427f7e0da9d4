"""Reward scoring on Ray actors: math pools and code sandboxes on any node's CPUs.

:class:`RayRewardScorer` implements the trainer's ``Scorer`` protocol (``score(responses, problems)``,
``close()``) and is picked with ``resources.backend: ray``. Each actor runs the same
:func:`archer.rewards.registry.score_responses` the local scorer runs, so a recipe's rewards do not
depend on where they were computed.

How a batch flows:

- the batch is cut into chunks of item indices; every actor holds at most ``max_in_flight`` chunks at
  a time (back-pressure: a slow sandbox cannot be buried under the whole batch, and a dead actor loses
  at most that much work);
- results come back keyed by item index and are written once (the first answer for an index wins, a
  late duplicate is dropped), so retrying a chunk is idempotent;
- an actor that dies mid-batch (node lost, OOM, ``ray.kill``) has its in-flight chunks put back in
  the queue and is replaced by a fresh actor (up to ``max_restarts`` per ``score`` call); the other
  actors keep draining the queue meanwhile;
- with ``chunk_timeout_s``, an actor whose current chunk runs longer than that (a hung verifier, a
  wedged sandbox) is killed and handled as a death;
- a chunk that has failed ``max_retries`` times, or a task error that is not an actor death, gives
  reward 0 with ``info["reason"]`` for its items: a broken verifier never ends a run.

Limits: verifiers registered in the driver process with ``register_verifier`` are not seen by the
actors (separate processes); pass them with ``verifiers={name: fn_or_"module:function"}`` or a
``setup`` callable that registers them. ``archer`` must be importable on every node.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from archer.data.schema import Problem
from archer.distributed._ray import actor_died_errors, ensure_ray
from archer.distributed.placement import describe, register_worker
from archer.rewards.registry import register_verifier, score_responses
from archer.rewards.types import RewardResult


class RewardWorker:
    """The actor body: one process that scores chunks with the reward registry."""

    def __init__(
        self,
        verifiers: dict[str, Any] | None,
        setup: Callable[[], None] | None,
        opts: dict[str, Any],
        env: dict[str, str] | None = None,
    ) -> None:
        os.environ.update(env or {})  # this actor's own process: sizes the verifiers' worker pools
        self.where = register_worker("reward")
        for name, target in (verifiers or {}).items():
            register_verifier(name, target)
        if setup is not None:
            setup()
        self.opts = opts

    def score(
        self, indices: list[int], responses: list[str], problems: list[Problem]
    ) -> tuple[list[int], list[RewardResult]]:
        return indices, score_responses(responses, problems, **self.opts)

    def pid(self) -> int:
        return os.getpid()

    def __repr__(self) -> str:  # Ray's prefix of this actor's log lines
        return describe("reward worker", self.where)


@dataclass
class _Chunk:
    indices: list[int]
    attempts: int = 0


@dataclass
class _Slot:
    actor: Any
    generation: int = 0
    load: int = 0  # chunks in flight on this actor
    progress: float = 0.0  # when its current chunk started (time.monotonic)


class RayRewardScorer:
    """Score responses on ``num_workers`` Ray actors with ``cpus_per_worker`` CPUs each.

    ``address``: ``None`` reuses a running Ray session or starts a local one; ``"auto"`` or
    ``"HOST:PORT"`` joins a cluster. ``verifier_opts`` are passed to every verifier by name, as with
    the local scorer (e.g. ``timeout=5.0``, ``memory_mb=1024``). ``env`` is set in each actor's
    process before any verifier runs; by default ``ARCHER_MATH_WORKERS`` and
    ``ARCHER_SANDBOX_WORKERS`` are the actor's CPUs, so the math-verify pool and the code sandbox
    match the CPUs Ray reserved. ``resources``: custom Ray resources each actor asks for (a node label of
    ``resources.placement``, :mod:`archer.distributed.placement`), which pins the actors to those nodes.
    """

    def __init__(
        self,
        num_workers: int,
        cpus_per_worker: float = 1.0,
        address: str | None = None,
        *,
        chunk_size: int | None = None,
        max_in_flight: int = 2,
        max_retries: int = 3,
        max_restarts: int | None = None,
        chunk_timeout_s: float | None = None,
        actor_start_s: float = 60.0,
        verifiers: dict[str, Any] | None = None,
        setup: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
        resources: dict[str, float] | None = None,
        **verifier_opts: Any,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if chunk_timeout_s is not None and chunk_timeout_s <= 0:
            raise ValueError(f"chunk_timeout_s must be > 0 or None, got {chunk_timeout_s}")
        self._ray = ensure_ray(address)
        self.num_workers = num_workers
        self.chunk_size = chunk_size
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.max_restarts = num_workers * 2 if max_restarts is None else max_restarts
        self.chunk_timeout_s = chunk_timeout_s
        self._actor_cls = self._ray.remote(num_cpus=cpus_per_worker, resources=resources or {})(RewardWorker)
        # one math-verify process per CPU the actor holds, not one per core of the node
        n_cpus = str(max(1, round(cpus_per_worker)))
        actor_env = {"ARCHER_MATH_WORKERS": n_cpus, "ARCHER_SANDBOX_WORKERS": n_cpus, **(env or {})}
        self._init_args = (verifiers, setup, dict(verifier_opts), actor_env)
        # a new actor's first chunk also waits for the actor to start (imports, verifier pools)
        self.actor_start_s = actor_start_s
        self._slots = [
            _Slot(self._new_actor(), progress=time.monotonic() + self.actor_start_s)
            for _ in range(num_workers)
        ]
        self.restarts = 0  # actors replaced over this scorer's life (for logs)

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(*self._init_args)

    @property
    def actors(self) -> list[Any]:
        """The current actor handles (a replaced actor's slot holds the new handle)."""
        return [s.actor for s in self._slots]

    def _chunks(self, n: int) -> deque[_Chunk]:
        # default: ~4 chunks per actor, so work balances while per-call overhead stays small
        size = self.chunk_size or max(1, math.ceil(n / (4 * self.num_workers)))
        return deque(_Chunk(list(range(s, min(s + size, n)))) for s in range(0, n, size))

    def score(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[RewardResult]:
        """``results[i]`` scores ``responses[i]`` against ``problems[i]``; each index exactly once."""
        if len(responses) != len(problems):
            raise ValueError(f"{len(responses)} responses for {len(problems)} problems")
        ray = self._ray
        died = actor_died_errors(ray)
        n = len(responses)
        results: list[RewardResult | None] = [None] * n
        queue = self._chunks(n)
        in_flight: dict[Any, tuple[int, int, _Chunk]] = {}  # ref -> (slot, generation, chunk)
        restarts_left = self.max_restarts
        while queue or in_flight:
            for k, slot in enumerate(self._slots):
                while queue and slot.actor is not None and slot.load < self.max_in_flight:
                    chunk = queue.popleft()
                    ref = slot.actor.score.remote(
                        chunk.indices,
                        [responses[i] for i in chunk.indices],
                        [problems[i] for i in chunk.indices],
                    )
                    in_flight[ref] = (k, slot.generation, chunk)
                    if slot.load == 0:  # an idle actor starts this chunk now (a new one once it is up)
                        slot.progress = max(slot.progress, time.monotonic())
                    slot.load += 1
            if not in_flight:
                raise RuntimeError(
                    f"all {self.num_workers} reward actors are dead and the restart budget "
                    f"({self.max_restarts}) is spent; {len(queue)} chunks unscored"
                )
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self._wait_timeout())
            if self.chunk_timeout_s is not None:
                self._kill_hung()
            for ref in ready:
                k, generation, chunk = in_flight.pop(ref)
                slot = self._slots[k]
                if slot.generation == generation:
                    slot.load -= 1
                    slot.progress = time.monotonic()  # its next queued chunk starts now
                try:
                    indices, scored = ray.get(ref)
                except died as exc:
                    restarts_left = self._on_actor_death(k, generation, restarts_left)
                    self._retry(chunk, queue, results, f"reward actor died: {type(exc).__name__}")
                    continue
                except Exception as exc:  # task error that is not a death: zero reward, reason kept
                    self._fail(chunk, results, f"reward task failed: {type(exc).__name__}: {exc}")
                    continue
                for i, result in zip(indices, scored):
                    if results[i] is None:  # idempotent: a duplicate answer for an index is dropped
                        results[i] = result
        return results  # type: ignore[return-value]

    def _wait_timeout(self) -> float | None:
        return None if self.chunk_timeout_s is None else min(1.0, self.chunk_timeout_s / 4)

    def _kill_hung(self) -> None:
        """Kill an actor whose current chunk has run past ``chunk_timeout_s``: its chunks then fail as
        a death and are retried on the replacement, so a hung verifier costs one timeout, not the run."""
        now = time.monotonic()
        for slot in self._slots:
            if slot.actor is not None and slot.load > 0 and now - slot.progress > self.chunk_timeout_s:
                self._ray.kill(slot.actor, no_restart=True)
                slot.progress = float("inf")  # killed once; the death is handled when its refs fail

    def _on_actor_death(self, k: int, generation: int, restarts_left: int) -> int:
        slot = self._slots[k]
        if slot.generation != generation or slot.actor is None:
            return restarts_left  # this death was already handled (another chunk of the same actor)
        slot.generation += 1
        slot.load = 0
        slot.progress = time.monotonic() + self.actor_start_s
        if restarts_left > 0:
            slot.actor = self._new_actor()
            self.restarts += 1
            return restarts_left - 1
        slot.actor = None  # no budget: route the remaining work to the live actors
        return restarts_left

    def _retry(self, chunk: _Chunk, queue: deque[_Chunk], results: list, reason: str) -> None:
        chunk.attempts += 1
        if chunk.attempts > self.max_retries:
            self._fail(chunk, results, f"{reason} ({chunk.attempts} attempts)")
        else:
            queue.append(chunk)

    @staticmethod
    def _fail(chunk: _Chunk, results: list, reason: str) -> None:
        for i in chunk.indices:
            if results[i] is None:
                results[i] = RewardResult(0.0, False, {"reason": reason})

    def close(self) -> None:
        """Kill the actors (the Ray session itself is left to whoever started it)."""
        for slot in self._slots:
            if slot.actor is not None:
                self._ray.kill(slot.actor, no_restart=True)
                slot.actor = None

    def __enter__(self) -> RayRewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
