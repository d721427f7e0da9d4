"""Fully asynchronous RL: a producer thread generates rounds into a bounded buffer while the trainer
trains; staleness is bounded, counted, and enforced per sample (``trainer.mode=async``).

Design (AReaL, Fu et al. 2025, "AReaL: A Large-Scale Asynchronous Reinforcement Learning System for
Language Reasoning", arXiv 2505.24298, sections 4-5; the names follow verl's fully-async trainer):

- **Rounds as jobs.** The synchronous step generates round ``(s, 0)`` of step ``s`` and, under DAPO
  dynamic sampling, refill rounds ``(s, 1), (s, 2), ...`` until enough groups carry signal. The
  producer generates the same rounds with the same seeds: round 0 of every step ahead of the trainer,
  and refill rounds when the trainer asks for them (a refill goes first).
- **Bounded staleness (the gate).** A round of step ``s`` starts only when the producer holds weights of
  version ``u >= s - K`` (``K = trainer.max_staleness``; version = optimizer updates so far, so step
  ``s`` trains with version ``s``): every sample the trainer takes is at most ``K`` versions old when it
  was started. ``K = 0`` generates every round with the trainer's current weights, after the previous
  update: the synchronous run, exactly (same prompts, seeds, weights and log-probs).
- **Bounded buffer.** The buffer holds finished rounds; ``capacity`` counts groups, the round being
  generated included (reserved when it starts). Rounds of future steps may use ``capacity - batch_size``
  so that a round of the trainer's current step always fits (no deadlock with a small buffer).
- **Weight push.** After each update the trainer posts a snapshot of its weights (:meth:`post_weights`,
  never blocking); the producer loads the newest one before its next round, or with partial rollouts
  (:mod:`archer.rollout.partial`) before its next chunk, so an update interrupts generation in flight and
  the response continues with the new weights.
- **Per-token versions.** Every rollout carries ``meta["token_versions"]`` (the version that sampled each
  of its tokens); its staleness at step ``s`` is ``s - min(token_versions)``.
- **Stale samples.** The surplus of a step (groups with signal beyond ``rollout.batch_size``, which the
  synchronous step discards) is carried to the next step; a carried group whose staleness exceeds ``K``
  is dropped or down-weighted (``trainer.stale_policy``), and counted (:func:`admit`).

Accounting (:class:`Counters`, in samples = responses): ``produced = consumed + dropped + filtered +
pending`` at every step end (pending: in the buffer or carried). A checkpoint stores the counters without
the rounds that are still in the buffer or being generated, and those rounds' prompts (the data order
already moved past them): a resumed run generates them again, in the same order, and counts them once.

Where the producer's generation runs (``trainer.async_producer``, :data:`archer.rl.rounds.
PRODUCER_ENGINES`): with the HF engine, in a child process over a shared-memory copy of the policy
(:mod:`archer.rollout.process`; the default on CPU, where a thread would take turns with the trainer on
Python's lock) or in this thread (the default on GPU); vLLM and Ray rollout workers generate outside
this process already. The thread itself only schedules, scores and shapes.

Several training processes (``resources.train_procs`` or ``resources.nodes`` > 1, DDP or FSDP): the
producer lives on the main rank, generates each round as the synchronous step splits it over the ranks
(rank ``r``'s share ``prompts[r::size]`` with rank ``r``'s seed) and broadcasts it; every rank trains its
rows; after the update every rank takes part in gathering the full weights (FSDP) that the producer gets.

Limits: with several training processes, no Ray rollout workers (a ``ConfigError``); torch's CPU
thread count is process-wide, so a producer thread runs with ``trainer.threads`` (a producer process
with as many of its own).
"""

from __future__ import annotations

import threading
import time
from collections import Counter as _Counter
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from archer.rollout.partial import VERSIONS_KEY

WEIGHT_KEY = "advantage_weight"  # a down-weighted stale sample: its advantage is multiplied by this


# ------------------------------------------------------------------------------- staleness


def token_versions(rollout: Any) -> list[int]:
    """The policy version of each response token (``meta["token_versions"]``); a rollout with only a
    whole-rollout version (``meta["weight_version"]``, Ray workers) has it on every token."""
    meta = getattr(rollout, "meta", None) or {}
    if VERSIONS_KEY in meta:
        return list(meta[VERSIONS_KEY])
    if "weight_version" in meta:
        return [int(meta["weight_version"])] * len(rollout.response_ids)
    raise KeyError(f"rollout has no meta[{VERSIONS_KEY!r}]: it did not come from the async producer")


def sample_staleness(rollout: Any, version: int) -> int:
    """Versions between the trainer's ``version`` and the rollout's oldest token (0 = on-policy). A
    response with no token is as old as the weights that started it (``meta["start_version"]``)."""
    versions = token_versions(rollout)
    oldest = min(versions) if versions else int(rollout.meta.get("start_version", version))
    return version - oldest


@dataclass
class Admitted:
    """What :func:`admit` returns: the groups to train on and the samples it dropped or down-weighted."""

    groups: list[Any]
    dropped: int = 0
    downweighted: int = 0


def admit(groups: list[Any], version: int, max_staleness: int, policy: str, weight: float) -> Admitted:
    """Apply the staleness bound at trainer ``version``: a group whose oldest sample is more than
    ``max_staleness`` versions old is dropped (``policy="drop"``) or kept with ``meta[WEIGHT_KEY] =
    weight`` on each of its samples (``"downweight"``). Groups are judged whole: their samples share a
    prompt and the advantage baseline."""
    if policy not in ("drop", "downweight"):
        raise ValueError(f"stale policy must be drop or downweight, got {policy!r}")
    out = Admitted([])
    for g in groups:
        lag = max((sample_staleness(ro, version) for ro in g.responses), default=0)
        if lag <= max_staleness:
            out.groups.append(g)
        elif policy == "drop":
            out.dropped += len(g.responses)
        else:
            for ro in g.responses:
                ro.meta[WEIGHT_KEY] = weight
            out.downweighted += len(g.responses)
            out.groups.append(g)
    return out


# ------------------------------------------------------------------------------- accounting


@dataclass
class Counters:
    """Samples (responses) through the buffer, for the whole run; saved in checkpoints."""

    produced: int = 0
    consumed: int = 0  # trained (down-weighted ones included)
    dropped: int = 0  # stale beyond the bound, or carried surplus lost at a resume / the run's end
    downweighted: int = 0
    filtered: int = 0  # zero-variance groups (dynamic sampling) and surplus without signal
    by_version: dict[int, int] = field(
        default_factory=dict
    )  # produced samples by the version that started them

    def state_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "consumed": self.consumed,
            "dropped": self.dropped,
            "downweighted": self.downweighted,
            "filtered": self.filtered,
            "by_version": {str(k): v for k, v in sorted(self.by_version.items())},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Counters:
        return cls(
            **{k: int(state[k]) for k in ("produced", "consumed", "dropped", "downweighted", "filtered")},
            by_version={int(k): int(v) for k, v in state.get("by_version", {}).items()},
        )


@dataclass
class AsyncRound:
    """One generated round: the job ``(step, index)``, its prompts, scored groups and costs."""

    step: int
    index: int
    prompts: list[int]
    groups: list[Any]
    version: int  # the weights that started it
    seconds_generate: float = 0.0
    seconds_reward: float = 0.0
    failure_reasons: _Counter = field(default_factory=_Counter)

    @property
    def samples(self) -> int:
        return sum(len(g.responses) for g in self.groups)


# ------------------------------------------------------------------------------- the producer

Draw = Callable[[int, int], list[int]]  # (step, index) -> prompt indices (drawn from the data order)
MakeRound = Callable[[int, int, list[int], Callable[[], int]], AsyncRound]
# (step, index, prompts, between_chunks) -> the round; between_chunks() loads pending weights, returns the version


class AsyncProducer:
    """The producer thread and its bounded buffer (see the module docstring).

    ``draw(step, index)`` takes the round's prompts from the data order (called under the producer's
    lock, so a checkpoint sees the data order and the rounds it owes together); ``make_round`` generates,
    scores and shapes them; ``load_weights(state)`` loads a posted snapshot into the producer's engine.
    ``first_step``: the trainer's next step; ``total_steps``: no round is made for a step at or past it.
    ``replay``: ``{(step, index): prompts}`` owed from a checkpoint, generated again instead of drawn.
    """

    def __init__(
        self,
        draw: Draw,
        make_round: MakeRound,
        load_weights: Callable[[Any], None],
        *,
        batch_size: int,
        max_staleness: int,
        capacity: int,
        first_step: int,
        total_steps: int,
        version: int,
        replay: dict[tuple[int, int], list[int]] | None = None,
    ) -> None:
        if capacity < batch_size:
            raise ValueError(f"buffer capacity {capacity} < batch_size {batch_size}: a round cannot fit")
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.draw, self.make_round, self.load_weights = draw, make_round, load_weights
        self.batch_size, self.max_staleness, self.capacity = batch_size, max_staleness, capacity
        self.total_steps = total_steps
        self.cond = threading.Condition()
        self.version = version  # the weights the producer's engine holds
        self.trainer_step = first_step  # the step the trainer is on
        self.next_ahead = first_step  # the next step whose round 0 is not started
        self.refills: deque[tuple[int, int]] = deque()
        self.rounds: dict[tuple[int, int], AsyncRound] = {}  # the buffer
        self.in_flight: tuple[int, int, list[int]] | None = None
        self.reserved = 0  # groups of the round in flight
        self.pending: tuple[Any, int] | None = None  # (weights, version) posted, not loaded yet
        self.replay = dict(replay or {})
        self.max_depth = 0  # the most groups the buffer held (tests: never above capacity)
        self.worker_idle_s = 0.0
        self.error: BaseException | None = None
        self.stopped = False
        self.engine_lock = threading.RLock()  # the engine: one generation or weight load at a time
        self.thread = threading.Thread(target=self._run, name="archer-async-producer", daemon=True)

    def start(self) -> AsyncProducer:
        self.thread.start()
        return self

    # -------------------------------------------------------------- trainer side

    def depth(self) -> int:
        """Groups in the buffer (finished rounds not taken yet)."""
        with self.cond:
            return self._depth()

    def take(self, step: int, index: int) -> tuple[AsyncRound, float]:
        """Round ``(step, index)`` (asking for it first when it is a refill); blocks until it is made.
        Returns it and the seconds the trainer waited."""
        t0 = time.perf_counter()
        with self.cond:
            self.trainer_step = step
            known = (step, index) in self.rounds or (step, index) in self.refills
            if index > 0 and not known and not self._in_flight_is(step, index):
                self.refills.append((step, index))
            self.cond.notify_all()
            while (step, index) not in self.rounds:
                self._raise_if_failed()
                if self.stopped:
                    raise RuntimeError("async producer stopped")
                self.cond.wait(timeout=1.0)
            rnd = self.rounds.pop((step, index))
            self.cond.notify_all()
        return rnd, time.perf_counter() - t0

    def post_weights(self, weights: Any, version: int) -> None:
        """The trainer's weights after update ``version`` (a snapshot it will not modify); the producer
        loads the newest before its next round or chunk. Never blocks."""
        with self.cond:
            self.pending = (weights, version)
            self.trainer_step = max(self.trainer_step, version)
            self.cond.notify_all()

    def owed(self) -> dict[tuple[int, int], list[int]]:
        """Rounds drawn but not taken (in the buffer or being generated): ``{(step, index): prompts}``."""
        out = {k: list(r.prompts) for k, r in self.rounds.items()}
        if self.in_flight is not None:
            out[self.in_flight[:2]] = list(self.in_flight[2])
        out.update({k: list(v) for k, v in self.replay.items()})
        return out

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The producer's lock: no draw, no round registered, while held (a consistent checkpoint)."""
        with self.cond:
            yield

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=60)

    # -------------------------------------------------------------- producer side

    def between_chunks(self) -> int:
        """Load the newest posted weights, if any; the version the engine now holds."""
        with self.cond:
            pending, self.pending = self.pending, None
        if pending is not None:
            with self.engine_lock:
                self.load_weights(pending[0])
            with self.cond:
                self.version = pending[1]
                self.cond.notify_all()
        return self.version

    def _run(self) -> None:
        try:
            while True:
                self.between_chunks()
                job = self._next_job()
                if job is None:
                    return
                step, index, prompts = job
                with self.engine_lock:  # an evaluation on a shared engine waits for the round
                    rnd = self.make_round(step, index, prompts, self.between_chunks)
                with self.cond:
                    self.in_flight = None
                    self.reserved = 0
                    self.rounds[(step, index)] = rnd
                    self.max_depth = max(self.max_depth, self._depth())
                    self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the trainer, which raises it
            with self.cond:
                self.error = exc
                self.cond.notify_all()

    def _next_job(self) -> tuple[int, int, list[int]] | None:
        """Wait for a job the gate and the buffer allow; draw its prompts and mark it in flight."""
        t0 = time.perf_counter()
        with self.cond:
            while True:
                if self.stopped:
                    return None
                job = self._admissible()
                if job is not None:
                    step, index = job
                    prompts = self.replay.pop(job, None)
                    if prompts is None:
                        prompts = self.draw(step, index)
                    self.in_flight = (step, index, prompts)
                    self.reserved = self.batch_size
                    self.worker_idle_s += time.perf_counter() - t0
                    return step, index, prompts
                if self.pending is not None:  # new weights may open the gate: load them first
                    self.worker_idle_s += time.perf_counter() - t0
                    self.cond.release()
                    try:
                        self.between_chunks()
                    finally:
                        self.cond.acquire()
                    t0 = time.perf_counter()
                    continue
                self.cond.wait(timeout=1.0)

    def _admissible(self) -> tuple[int, int] | None:
        """The next job allowed now: a refill of the trainer's step first, then round 0 of the next step
        ahead, each only when ``step - version <= max_staleness`` and the buffer has room."""
        room = self.capacity - self._depth() - self.reserved
        if self.refills:
            step, _ = self.refills[0]
            if step - self.version <= self.max_staleness and room >= self.batch_size:
                return self.refills.popleft()
            return None
        s = self.next_ahead
        if s >= self.total_steps or s - self.version > self.max_staleness:
            return None
        need = (
            self.batch_size if s <= self.trainer_step else 2 * self.batch_size
        )  # keep room for the current step
        if room >= need:
            self.next_ahead += 1
            return s, 0
        return None

    def _depth(self) -> int:
        return sum(len(r.groups) for r in self.rounds.values())

    def _in_flight_is(self, step: int, index: int) -> bool:
        return self.in_flight is not None and self.in_flight[:2] == (step, index)

    def _raise_if_failed(self) -> None:
        """The producer's exception, raised again in the trainer's thread as it was (a user's reward
        function error stays that error, with the producer's traceback)."""
        if self.error is not None:
            raise self.error
