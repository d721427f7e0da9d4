"""Rollout engines on Ray actors, with versioned weight sync from the trainer.

Each :class:`RolloutWorker` actor builds one engine (anything with the
:class:`archer.rollout.base.RolloutEngine` methods, e.g. ``HFEngine``) from a picklable factory and
holds it for the run; it gets a GPU (``num_gpus``) when the cluster has them. :class:`RayRolloutPool`
splits a batch of prompts across the actors and returns the rollouts in prompt order, exactly as one
engine would (``prompt_index`` is the index in the whole batch).

Weight sync and versions. After each optimizer step the trainer calls
``pool.update_weights(state_dict)``: the state dict is moved to CPU and put in the Ray object store
once (``ray.put``), every actor fetches it from there (zero-copy on its node) and loads it, and the
pool's version goes up by one. Every rollout carries ``meta["weight_version"]``, the version of the
weights that generated it, so a trainer can measure staleness (:func:`staleness`) or refuse rollouts
older than it allows (:func:`check_fresh`): a generation that was already running when the weights
changed keeps the old number. Actors run one call at a time, so an update waits for the generation
in progress and the version of a rollout is always the one its tokens were sampled with. Versions
are strictly increasing per actor; an older or repeated version is refused.

Two transports (``weight_sync``, the run's ``rollout.weight_sync``): ``object_store`` puts the state dict
in Ray's object store once and every actor fetches it; ``collective`` broadcasts it in buckets over a
group of this process and the actors (gloo on CPU, NCCL when the actors have GPUs;
:mod:`archer.distributed.weight_sync`); ``auto`` (the run default) uses the group when it forms and the
object store otherwise, and drops to the object store for the rest of the run if a broadcast fails
(one line says why). Both give the engines bit-identical weights.

Timing: :meth:`RayRolloutPool.update_weights` returns ``load_s`` (slowest actor's fetch or receive, plus
its load), ``total_s``, ``collective`` (1 or 0) and ``put_s`` (object store: serialise into it) or
``send_s`` and ``buckets`` (collective); they are logged as ``rollout/weight_sync_*`` every step.
``benchmarks/reward_scaling.py`` compares the two on CPU.

Starting weights. ``initial_weights`` (a module or state dict) is loaded into every actor as version 0
before the first generation, so the actors' engines can start from a config alone:
:func:`worker_engine_factory` builds, in each actor, any registered engine (``hf``, ``vllm``) from the
policy's config and tokenizer (no weights travel in the factory). This is how ``archer train`` runs
rollouts on ``resources.rollout_workers=N`` actors (``archer.rollout.build_rollout``): the pool is the
run's engine, ``shares_policy`` is False, so the trainer pushes its weights after every update and the
pool's version equals the trainer's ``policy_version``.

Worker faults. A rollout actor that dies (kill -9, OOM, its node lost) is replaced in place: the
pool starts a new actor in its slot (same factory, same placement), loads the weights of the pool's
current version into it (the pool keeps a reference to the last pushed state dict in the object store
for this), and the dead actor's shards, the one being collected and any other in flight on it, are
generated again there with the same prompts and sampling parameters. Each prompt's rollouts come back
exactly once, in prompt order; with the same weights and seed they equal what the dead actor would have
returned. A weight push that finds an actor dead replaces it the same way (the replacement loads the
version being pushed). At most ``max_replacements`` replacements per ``collect`` or push (default: two
per worker); past that the call raises, and the run fails like a raising rank. ``replacements`` and
``regenerated_prompts`` count them (``rollout/worker_replacements`` in the step metrics).

Placement: ``resources`` (custom Ray resources each actor asks for, e.g. a node label from
``resources.placement``, :mod:`archer.distributed.placement`) pins the actors to the nodes advertising
them; each actor registers its node in the run's ``health`` folder when ``ARCHER_RUN_DIR`` is set.

Limits: the factory must be picklable by Ray (a module-level function or a closure); ``seed`` in the
sampling parameters gives each actor ``seed + worker_index``, so samples differ from one engine's.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from archer.distributed._ray import actor_died_errors, ensure_ray
from archer.distributed.placement import describe, record_worker_error, register_worker
from archer.distributed.weight_sync import DEFAULT_BUCKET_MB, DEFAULT_TIMEOUT_S
from archer.distributed.weight_sync import TRANSPORTS as WEIGHT_SYNC
from archer.rollout import build_engine
from archer.rollout.base import Rollout, SamplingParams

VERSION_KEY = "weight_version"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class StaleRolloutError(RuntimeError):
    """Rollouts generated by weights older than the trainer allows."""


class RolloutWorker:
    """The actor body: one engine and the version of the weights it holds."""

    def __init__(self, engine_factory: Callable[[], Any], version: int = 0) -> None:
        self.where = register_worker("rollout")
        self.engine = engine_factory()
        self.version = version

    def __repr__(self) -> str:  # Ray's prefix of this actor's log lines
        return describe("rollout worker", self.where)

    def locate(self) -> dict[str, Any]:
        """Where this actor runs (node id and IP, pid)."""
        return dict(self.where)

    def generate(self, prompts: Sequence[Any], params: SamplingParams) -> list[list[Rollout]]:
        version = self.version
        out = self.engine.generate(list(prompts), params)
        for group in out:
            for rollout in group:
                rollout.meta[VERSION_KEY] = version
        return out

    def update_weights(self, state_dict: dict[str, Any], version: int, again: bool = False) -> float:
        """Load ``state_dict`` as weight ``version``; returns the seconds the load took. ``again``: the
        version may equal the one held (a push that failed half-way over the collective group is redone
        through the object store; a worker that had received it loads the same weights once more)."""
        if version < self.version or (version == self.version and not again):
            raise ValueError(f"weight version must increase: holding {self.version}, got {version}")
        start = time.perf_counter()
        self.engine.update_weights(state_dict)
        self.version = version
        return time.perf_counter() - start

    def join_weight_group(
        self, address: tuple[str, int], rank: int, size: int, backend: str, timeout_s: float
    ) -> None:
        """Become member ``rank`` of the trainer's weight-sync group (returns once every member joined)."""
        from archer.distributed.weight_sync import WeightGroup

        self.close_weight_group()
        self._group = WeightGroup(address, rank, size, backend, timeout_s)

    def receive_weights(self, specs: list[Any], version: int, bucket_mb: float) -> float:
        """Receive weight ``version`` over the group and load it; returns the seconds receive + load took."""
        if version <= self.version:
            raise ValueError(f"weight version must increase: holding {self.version}, got {version}")
        start = time.perf_counter()
        self.engine.update_weights(self._group.receive(specs, bucket_mb))
        self.version = version
        return time.perf_counter() - start

    def close_weight_group(self) -> None:
        group = getattr(self, "_group", None)
        if group is not None:
            group.close()
        self._group = None

    def get_version(self) -> int:
        return self.version

    def engine_version(self) -> int | None:
        """The engine's own weight counter when it keeps one (``VLLMEngine.version``), else None."""
        return getattr(self.engine, "version", None)

    def close(self) -> None:
        self.close_weight_group()
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()


def _build_worker_engine(name: str, config: Any, tokenizer: Any, options: dict[str, Any]) -> Any:
    """Runs in the actor: engine ``name`` on this actor's device, built from the policy's config."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "vllm":
        return build_engine(name, config, tokenizer, device=device, **options)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return build_engine(name, model.to(device), tokenizer, device=device, **options)


def worker_engine_factory(
    name: str, model: Any, tokenizer: Any, options: dict[str, Any] | None = None
) -> Callable[[], Any]:
    """A picklable factory of engine ``name`` (``hf`` or ``vllm``) for :class:`RayRolloutPool`: it carries
    the policy's config and tokenizer, not its weights; pass the weights as ``initial_weights``."""
    config = getattr(model, "config", model)
    return functools.partial(_build_worker_engine, name, config, tokenizer, dict(options or {}))


class RayRolloutPool:
    """``num_workers`` engine actors behind one ``generate`` / ``update_weights`` interface.

    ``num_gpus_per_worker=None`` gives each actor one GPU when the cluster has any, else none.
    ``initial_weights``: loaded into every actor as version 0 before the pool is returned (the actors
    then start at version -1, "no weights yet"). The pool holds its own copies of the weights
    (``shares_policy = False``): a trainer must call :meth:`update_weights` after each update.
    """

    shares_policy = False

    def __init__(
        self,
        engine_factory: Callable[[], Any],
        num_workers: int = 1,
        *,
        num_gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1.0,
        address: str | None = None,
        initial_weights: Any = None,
        weight_sync: str = "object_store",
        bucket_mb: float = DEFAULT_BUCKET_MB,
        sync_timeout_s: float = DEFAULT_TIMEOUT_S,
        log: Callable[[str], None] | None = None,
        resources: dict[str, float] | None = None,
        max_replacements: int | None = None,
    ) -> None:
        if weight_sync not in WEIGHT_SYNC:
            raise ValueError(f"weight_sync must be one of {WEIGHT_SYNC}, got {weight_sync!r}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if cpus_per_worker < 0:
            raise ValueError(f"cpus_per_worker must be >= 0, got {cpus_per_worker}")
        self._ray = ray = ensure_ray(address)
        if num_gpus_per_worker is None:
            num_gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=num_gpus_per_worker, resources=resources or {})(
            RolloutWorker
        )
        self.version = 0
        start = -1 if initial_weights is not None else self.version
        self._cls, self._factory = cls, engine_factory
        self.workers = [cls.remote(engine_factory, start) for _ in range(num_workers)]
        self.num_gpus_per_worker = num_gpus_per_worker
        self.last_sync: dict[str, float] = {}
        self.max_replacements = 2 * num_workers if max_replacements is None else max_replacements
        self.replacements = self.regenerated_prompts = 0
        self._weights: tuple[Any, int] | None = None  # (object ref, version) of the last push
        self._died = actor_died_errors(ray)
        self._finalizer = weakref.finalize(
            self, _kill_all, ray, self.workers
        )  # the live list: replacements too
        self.where = ray.get([w.locate.remote() for w in self.workers])
        self.weight_sync, self.bucket_mb, self.sync_timeout_s = weight_sync, bucket_mb, sync_timeout_s
        self._log = log or (lambda msg: print(msg, flush=True))
        self._group: Any = None
        # the collective path's last push (it keeps no object-store copy): what a replacement loads
        self._last_state: dict[str, Any] | None = None
        self.sync_backend = "object_store"
        if weight_sync != "object_store":
            self._join_group()
        if initial_weights is not None:
            self.last_sync = self._push(initial_weights, 0)

    def generate_async(self, prompts: Sequence[Any], params: SamplingParams) -> list[_Shard]:
        """Start generating; returns a handle for :meth:`collect`. Prompts are split in contiguous shards."""
        n, k = len(prompts), len(self.workers)
        bounds = [round(i * n / k) for i in range(k + 1)]
        handle = []
        for w, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
            if hi > lo:
                shard_params = params if params.seed is None else replace(params, seed=params.seed + w)
                shard = _Shard(lo, w, list(prompts[lo:hi]), shard_params, self.workers[w])
                shard.ref = shard.actor.generate.remote(shard.prompts, shard.params)
                handle.append(shard)
        return handle

    def collect(self, handle: list[_Shard]) -> list[list[Rollout]]:
        """Wait for :meth:`generate_async` and return ``[num_prompts][n]`` rollouts in prompt order; a
        shard whose actor died is generated again on its replacement (see "Worker faults")."""
        out: list[list[Rollout]] = []
        budget = [self.max_replacements]
        for shard in handle:
            while True:
                try:
                    groups = self._ray.get(shard.ref)
                    break
                except self._died as exc:
                    if self.workers[shard.worker] is shard.actor:  # not replaced yet
                        self._replace(shard.worker, exc, budget)
                    shard.actor = self.workers[shard.worker]
                    shard.ref = shard.actor.generate.remote(shard.prompts, shard.params)
                    self.regenerated_prompts += len(shard.prompts)
            for group in groups:
                for rollout in group:
                    rollout.prompt_index += shard.offset  # shard-local -> batch index
                out.append(group)
        return out

    def _replace(self, w: int, exc: BaseException, budget: list[int]) -> None:
        """A new actor in slot ``w`` holding the pool's current weights; ``budget[0]`` counts down."""
        line = f"rollout worker {w} died ({type(exc).__name__})"
        if budget[0] <= 0:
            raise RuntimeError(f"{line}; the replacement budget ({self.max_replacements} per call) is spent")
        budget[0] -= 1
        record_worker_error("rollout", int(self.where[w].get("pid", -1)), line)
        _kill_all(self._ray, [self.workers[w]])
        if self._weights is None and self._last_state is not None:
            # the collective group has fixed members: leave it, and hand the replacement the weights of the
            # last push through the object store (the trainer's tensors as they are now: the same values
            # unless an asynchronous producer generates while the trainer updates)
            if self._group is not None:
                self._drop_group(f"rollout worker {w} was replaced; a group's members are fixed")
            cpu = {k: v.detach().to("cpu") for k, v in self._last_state.items()}
            self._weights = (self._ray.put(cpu), self.version)
        actor = self._cls.remote(self._factory, -1 if self._weights is not None else self.version)
        if self._weights is not None:
            self._ray.get(actor.update_weights.remote(*self._weights))
        self.workers[w] = actor
        self.where[w] = self._ray.get(actor.locate.remote())
        self.replacements += 1

    def generate(self, prompts: Sequence[Any], params: SamplingParams) -> list[list[Rollout]]:
        return self.collect(self.generate_async(prompts, params))

    def update_weights(self, state_dict: Any, version: int | None = None) -> dict[str, float]:
        """Send the trainer's weights to every actor as ``version`` (default: the next one; it must be
        above the one held, so a resumed run's first push can continue its numbering); returns timings
        in seconds.

        ``state_dict`` may also be a module (its ``state_dict()`` is taken). Tensors are detached and
        moved to CPU first: the object store holds host memory.
        """
        if version is not None and version <= self.version:
            version = self.version + 1  # never back: the actors refuse a version they hold or passed
        self.last_sync = self._push(state_dict, self.version + 1 if version is None else version)
        return self.last_sync

    def _join_group(self) -> None:
        """Build the weight-sync group (this process rank 0, worker i rank i+1); with ``weight_sync=auto``
        a failure leaves the object store in use and says why in one line."""
        from archer.distributed.weight_sync import WeightGroup

        ray = self._ray
        backend = "nccl" if self.num_gpus_per_worker > 0 and _cuda_available() else "gloo"
        size = len(self.workers) + 1
        try:
            host = ray.util.get_node_ip_address()
            store = WeightGroup.reserve(host, size, self.sync_timeout_s)
            joins = [
                w.join_weight_group.remote((host, store.port), i + 1, size, backend, self.sync_timeout_s)
                for i, w in enumerate(self.workers)
            ]
            self._group = WeightGroup((host, store.port), 0, size, backend, self.sync_timeout_s, _store=store)
            ray.get(joins, timeout=self.sync_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure to form the group has the same answer
            self._group = None
            msg = (
                f"weight sync: could not form a {backend} group with {len(self.workers)} rollout worker(s): "
                + (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            )
            if self.weight_sync == "collective":
                raise RuntimeError(msg) from exc
            self._log(msg + "; using the Ray object store")
            return
        self.sync_backend = backend

    def _push(self, state_dict: Any, version: int) -> dict[str, float]:
        start = time.perf_counter()
        if hasattr(state_dict, "state_dict"):  # a module: plain weights (LoRA merged, tied head named)
            from archer.rollout.vllm import full_state_dict

            state_dict = full_state_dict(state_dict)
        again = False
        if self._group is not None:
            try:
                return self._push_collective(state_dict, version, start)
            except Exception as exc:  # noqa: BLE001 - fall back, as documented, and say why
                # also under weight_sync="collective": its strictness is about forming the group; a
                # worker that dies later is a fault the pool survives (it is replaced below)
                self._drop_group(f"{exc}".splitlines()[0][:300])
                again = True  # some workers may hold this version already
        cpu = {k: v.detach().to("cpu") if hasattr(v, "detach") else v for k, v in state_dict.items()}
        ref = self._ray.put(cpu)
        put_s = time.perf_counter() - start
        load_s = self._load_everywhere(ref, version, again)
        self.version = version
        return {
            "version": float(version),
            "put_s": put_s,
            "load_s": load_s,
            "total_s": time.perf_counter() - start,
            "collective": 0.0,
        }

    def _push_collective(self, state_dict: dict[str, Any], version: int, start: float) -> dict[str, float]:
        from archer.distributed.weight_sync import specs_of

        tensors = {k: v.detach() for k, v in state_dict.items()}
        self._last_state = tensors  # what a replacement actor will need (see _replace)
        specs = specs_of(tensors)
        refs = [w.receive_weights.remote(specs, version, self.bucket_mb) for w in self.workers]
        sent = self._group.send(tensors, self.bucket_mb)
        load_s = max(self._ray.get(refs, timeout=self.sync_timeout_s))
        self.version = version
        return {
            "version": float(version),
            "send_s": sent["send_s"],
            "load_s": load_s,
            "total_s": time.perf_counter() - start,
            "buckets": sent["buckets"],
            "collective": 1.0,
        }

    def _drop_group(self, why: str) -> None:
        """Leave the collective path for the rest of the run (the object store takes over)."""
        self._log(
            f"weight sync: leaving the {self.sync_backend} group ({why}); the Ray object store from now on"
        )
        group, self._group = self._group, None
        self.sync_backend = "object_store"
        group.close()
        for w in self.workers:
            try:
                w.close_weight_group.remote()
            except Exception:  # noqa: BLE001 - a dead worker has no group to close
                pass

    def _load_everywhere(self, ref: Any, version: int, again: bool = False) -> float:
        """Every actor loads the state dict at ``ref`` as ``version``; a dead one is replaced by an actor
        that loads it (see "Worker faults"). Returns the slowest load in seconds."""
        self._weights = (ref, version)  # what a replacement loads from now on
        calls = [
            (w, actor, actor.update_weights.remote(ref, version, again))
            for w, actor in enumerate(self.workers)
        ]
        budget, times = [self.max_replacements], [0.0]
        for w, actor, call in calls:
            try:
                times.append(self._ray.get(call))
            except self._died as exc:
                if self.workers[w] is actor:
                    self._replace(w, exc, budget)
        return max(times)

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """The last weight sync's timings and the pool's weight version, as step metrics."""
        out = {"rollout/weight_version": float(self.version)}
        if self.replacements:
            out["rollout/worker_replacements"] = float(self.replacements)
        out.update({f"rollout/weight_sync_{k}": v for k, v in self.last_sync.items() if k != "version"})
        if reset:
            self.last_sync = {}
        return out

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
            self._group = None
        for w in self.workers:
            try:
                self._ray.get(w.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead actor has nothing left to free
                pass
        _kill_all(self._ray, self.workers)
        self._finalizer.detach()
        self.workers = []
        self._weights = None


@dataclass
class _Shard:
    """A contiguous slice of a batch in flight on one actor (what :meth:`RayRolloutPool.collect` waits on)."""

    offset: int  # index of its first prompt in the batch
    worker: int  # the pool slot it was sent to
    prompts: list[Any]
    params: SamplingParams
    actor: Any  # the actor handle it was sent to (a replaced slot holds another)
    ref: Any = None


def _kill_all(ray: Any, workers: list[Any]) -> None:
    for w in workers:
        try:
            ray.kill(w, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone, or Ray shut down
            pass


def rollout_version(rollout: Rollout) -> int:
    """The weight version a rollout was sampled with (KeyError for a rollout from no pool)."""
    try:
        return int(rollout.meta[VERSION_KEY])
    except KeyError:
        raise KeyError(
            f"rollout has no meta[{VERSION_KEY!r}]: it did not come from a RayRolloutPool"
        ) from None


def staleness(rollouts: Sequence[Sequence[Rollout]], current_version: int) -> int:
    """How many weight updates behind ``current_version`` the oldest rollout is (0 = fresh)."""
    versions = [rollout_version(r) for group in rollouts for r in group]
    return current_version - min(versions) if versions else 0


def check_fresh(rollouts: Sequence[Sequence[Rollout]], current_version: int, max_staleness: int = 0) -> None:
    """Raise :class:`StaleRolloutError` when a rollout is more than ``max_staleness`` versions old."""
    lag = staleness(rollouts, current_version)
    if lag > max_staleness:
        raise StaleRolloutError(
            f"rollouts are {lag} weight version(s) behind the trainer (version {current_version}); "
            f"at most {max_staleness} allowed"
        )


class OneStepOffPolicy:
    """One-step-off-policy rollouts (verl's ``one_step_off_policy``, AReaL's bounded staleness 1) over a
    :class:`RayRolloutPool`: while the trainer trains on step t, the actors already generate step t+1.

    After serving a training round, the wrapper asks ``predict(params)`` what the next training round
    will request (the trainer's :meth:`archer.rl.run.RLRun.predict_next_round`: the sampler's next
    draw, with round 0 of the next step's settings; None for a request that is not a training round,
    e.g. evaluation) and starts generating it on the actors at once, with the weights they hold. The
    trainer's update and the weight push that follows run meanwhile; the push waits on the actors for
    that generation, so its rollouts carry the previous weight version. When the next request has the
    predicted prompts and settings (the seed aside: a refill round of dynamic sampling draws the same
    prompts with another seed) it is served from that generation; otherwise it is generated now.

    Staleness (versions behind the pool) is recorded per request and refused above ``max_staleness``
    (:class:`StaleRolloutError`). The trainer must recompute old log-probs (the engine does not share the
    policy) and truncated IS corrects the lag (``algo.tis_cap``, on by default for such engines). A run
    resumed from a checkpoint has no prediction in flight, so its first resumed step is on-policy: resume
    is exact up to that step, not bit-identical to an uninterrupted one-step-off run.
    """

    shares_policy = False

    def __init__(
        self, pool: RayRolloutPool, predict: Callable[[SamplingParams], Any], max_staleness: int = 1
    ) -> None:
        self.pool, self.predict, self.max_staleness = pool, predict, max_staleness
        self._pending: tuple[list[list[int]], SamplingParams, Any] | None = None
        self.hits = self.misses = self.dropped = 0
        self._staleness: list[int] = []

    @property
    def version(self) -> int:
        return self.pool.version

    def generate(self, prompts: Sequence[Any], params: SamplingParams) -> list[list[Rollout]]:
        ids = [list(p) if not isinstance(p, str) else p for p in prompts]
        out = None
        if self._pending is not None:
            want_ids, want_params, handle = self._pending
            if want_ids == ids and replace(want_params, seed=None) == replace(params, seed=None):
                out = self.pool.collect(handle)
                self._pending = None
                self.hits += 1
        if out is None:
            out = self.pool.generate(ids, params)  # queued on the actors after any generation in flight
            self.misses += 1
        lag = staleness(out, self.pool.version)
        check_fresh(out, self.pool.version, self.max_staleness)
        self._staleness.append(lag)
        nxt = self.predict(params)
        if nxt is not None:
            if self._pending is not None:
                self.dropped += 1  # its results are never read; the actors finish it and move on
            next_ids, next_params = nxt
            next_ids = [list(p) for p in next_ids]
            self._pending = (next_ids, next_params, self.pool.generate_async(next_ids, next_params))
        return out

    def update_weights(self, state_dict: Any, version: int | None = None) -> dict[str, float]:
        return self.pool.update_weights(state_dict, version)

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """Pool metrics plus ``rollout/staleness_max`` / ``_mean`` (weight versions behind, over the
        requests since the last call) and the prediction's hits, misses and dropped generations."""
        out = self.pool.metrics(reset)
        lags = self._staleness or [0]
        out.update(
            {
                "rollout/staleness_max": float(max(lags)),
                "rollout/staleness_mean": sum(lags) / len(lags),
                "rollout/prefetch_hits": float(self.hits),
                "rollout/prefetch_misses": float(self.misses),
                "rollout/prefetch_dropped": float(self.dropped),
            }
        )
        if reset:
            self._staleness = []
        return out

    def close(self) -> None:
        self._pending = None
        self.pool.close()
