"""Where a step's training groups come from, by ``trainer.mode`` (registry :data:`ROUND_SOURCES`).

- ``sync`` / ``one_step_off`` (:class:`SyncRounds`): the step generates its rounds itself
  (:func:`archer.rl.step.rollout_round`) and filters them with DAPO dynamic sampling; under
  ``one_step_off`` the engine is the Ray pool's prefetching wrapper
  (:class:`archer.rollout.ray_pool.OneStepOffPolicy`), so nothing else differs here.
- ``async`` (:class:`AsyncRounds`): a producer thread (:mod:`archer.rl.async_rollout`) generates the
  rounds ahead of the trainer within ``trainer.max_staleness`` versions; the step takes them from its
  buffer, filters them the same way, carries its surplus to the next step and posts its weights after
  the update. With the HF engine the producer samples from its own copy of the policy, in a child
  process (:mod:`archer.rollout.process`) or in its thread (:data:`PRODUCER_ENGINES`,
  ``trainer.async_producer``); with tools that copy gets its own tool engine and sandbox pool.

Off-policy correction in async mode (AReaL's decoupled PPO, Fu et al. 2025, arXiv 2505.24298, eq. 5):
the behaviour policy of a sample is the mixture of versions that sampled its tokens, whose log-probs the
engine returned (``rollout_log_prob``); the proximal policy is the trainer's weights before the update,
whose log-probs are recomputed (``old_log_prob``). The PPO ratio and clip use ``pi_theta / pi_prox``
(the loss registry, unchanged) and the rollout correction weights each token by ``pi_prox / pi_behav``
(``algo.rollout_correction``; truncated IS with ``rollout.default_tis_cap`` by default, as for any engine
with its own weights; AReaL's own choice, masking tokens above a cap, is ``algo.rollout_correction=
token_mis``). The sampler's log-probs serve as the old ones only when every token of the batch is of
the trainer's version and the producer's engine is an exact float32 copy of the policy (the HF engine):
then ``pi_prox = pi_behav`` and the step is the synchronous one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
import time
from collections import Counter
from typing import Any

import torch

from archer.errors import ConfigError
from archer.rewards.types import safe_score
from archer.rl.async_rollout import (
    WEIGHT_KEY,
    AsyncProducer,
    AsyncRound,
    Counters,
    admit,
    sample_staleness,
)
from archer.rl.batch import Group, Round, collect_groups
from archer.rl.settings import response_budget, sampling_params
from archer.rl.step import make_groups, rollout_round
from archer.rollout import default_tis_cap
from archer.rollout.base import shares_policy
from archer.rollout.hf import HFEngine
from archer.rollout.partial import VERSIONS_KEY, generate_partial
from archer.rollout.process import ProcessEngine
from archer.rollout.tools import ToolEngine


class SyncRounds:
    """Generate-then-train: the step's rounds are generated when it asks (see the module docstring)."""

    def __init__(self, run: Any) -> None:
        self.samples_like_policy = shares_policy(run.engine)

    def collect(self, run: Any, max_new: int) -> tuple[list[Group], Any, list[Round]]:
        """The step's kept groups, the filter's stats and its rounds (DAPO dynamic sampling)."""
        cfg, rounds = run.cfg, []

        def one_round(i: int) -> list[Group]:
            rounds.append(rollout_round(run, i, max_new))
            return rounds[-1].groups

        groups, stats = collect_groups(
            one_round,
            cfg.rollout.batch_size,
            cfg.rollout.max_gen_batches if cfg.rollout.dynamic_sampling else 1,
            cfg.algo.filter_zero_variance,
        )
        return groups, stats, rounds

    def after_step(self, run: Any) -> None:
        pass

    def metrics(self) -> dict[str, Any]:
        return {}

    def state_dict(self, run: Any) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class AsyncRounds:
    """``trainer.mode=async``: rounds from an :class:`AsyncProducer` (see the module docstring).

    The producer's engine: with an engine that samples from the trainer's own module (the HF engine) a
    copy of the policy that the producer owns, in a child process or its thread (the trainer's engine
    stays for evaluation; with tools the copy gets its own tool engine); with an engine
    holding its own weights (vLLM, Ray rollout workers) that engine, shared with evaluation through
    :class:`_Guarded` (an evaluation waits for the round in flight and loads the newest weights first).
    Weight versions count steps: the weights after step ``s`` are version ``s + 1``, updated or not.
    """

    def __init__(self, run: Any) -> None:
        cfg = run.cfg
        self.t, self.r = cfg.trainer, cfg.rollout
        if shares_policy(run.engine):
            twin = _policy_copy(run)  # collective under FSDP; the main rank's copy, None elsewhere
            self.engine = run.world.main_only(lambda: self._producer_engine(run, twin))
            self.samples_like_policy = True  # an exact copy: fresh samples are the policy's own
        else:
            self.engine = run.engine
            run.engine = _Guarded(run.engine, self)
            self.samples_like_policy = False
        cap = default_tis_cap(cfg, False)  # the producer's engine holds its own weights
        if cap is not None:
            run.cfg = dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, tis_cap=cap))
            run.log(f"trainer.mode=async: truncated IS on (algo.tis_cap={cap}, from rollout.default_tis_cap)")
        if run.world.device.type == "cpu" and cfg.trainer.threads is None:
            run.log(
                "trainer.mode=async on CPU: torch's thread count is process-wide, so the producer and the "
                "trainer each use all of it; set trainer.threads (1 on 2 cores) to avoid oversubscription"
            )
        run.scorer = _SerialScorer(run.scorer)  # the producer scores while an evaluation may too
        self.run = run
        self.counters = Counters()
        self.carried: list[Group] = []
        self.replay: dict[tuple[int, int], list[int]] = {}
        self.producer: AsyncProducer | None = None
        self._last: dict[str, Any] = {}
        self._idle_seen = 0.0

    def _producer_engine(self, run: Any, twin: torch.nn.Module) -> Any:
        """The producer's engine over ``twin`` (the main rank's copy of the policy), where
        ``trainer.async_producer`` says; wrapped in its own tool engine for tool rollouts."""
        cfg = run.cfg
        kind = producer_kind(cfg.trainer.async_producer, run.world.device)
        try:
            engine = PRODUCER_ENGINES[kind](run, twin)
        except RuntimeError as exc:  # e.g. a model class the child cannot import
            if cfg.trainer.async_producer != "auto":
                raise
            run.log(f"trainer.async_producer=auto: {str(exc).splitlines()[0]}; using a thread instead")
            kind, engine = "thread", PRODUCER_ENGINES["thread"](run, twin)
        run.log(f"trainer.mode=async: the producer samples from a copy of the policy in a {kind}")
        if isinstance(run.engine, ToolEngine):  # tool rollouts: the producer's own sandbox pool
            engine = ToolEngine(engine, run.engine.settings)
        return engine

    # ---------------------------------------------------------------- the step's side

    def collect(self, run: Any, max_new: int) -> tuple[list[Group], Any, list[Round]]:
        producer = self._producer(run)
        c, t, cfg = run.step, self.t, run.cfg
        target = cfg.rollout.batch_size
        carried = admit(self.carried, c, t.max_staleness, t.stale_policy, t.stale_weight)
        self.carried = []
        rounds: list[Round] = []
        waited = [0.0]
        offered: list[Group] = []

        def one_round(i: int) -> list[Group]:
            # the main rank's producer made it; every rank trains on it (a broadcast, rank 0 to all)
            rnd, w = run.world.broadcast(run.world.main_only(lambda: producer.take(c, i)))
            waited[0] += w
            self._count_produced(rnd)
            with self._locked():  # the data order is the producer's too
                for g in rnd.groups:
                    run.sampler.observe(g.prompt_index, g.accuracy)
            rounds.append(
                Round(rnd.prompts, rnd.groups, rnd.seconds_generate, rnd.seconds_reward, rnd.failure_reasons)
            )
            offered.extend((carried.groups if i == 0 else []) + rnd.groups)
            return (carried.groups if i == 0 else []) + rnd.groups

        groups, stats = collect_groups(
            one_round,
            target,
            cfg.rollout.max_gen_batches if cfg.rollout.dynamic_sampling else 1,
            cfg.algo.filter_zero_variance,
        )
        signal = [g for g in offered if g.has_signal or not cfg.algo.filter_zero_variance]
        self.carried = signal[target:]
        cnt = self.counters
        kept_ids = {id(g) for g in signal}
        cnt.filtered += sum(len(g.responses) for g in offered if id(g) not in kept_ids)
        cnt.dropped += carried.dropped
        # down-weighted samples are counted when they train (a carried group may be carried again)
        downweighted = sum(
            len(g.responses) for g in groups if any(WEIGHT_KEY in ro.meta for ro in g.responses)
        )
        cnt.downweighted += downweighted
        cnt.consumed += sum(len(g.responses) for g in groups)
        lags = [sample_staleness(ro, c) for g in groups for ro in g.responses]
        idle = producer.worker_idle_s if producer is not None else 0.0
        self._last = {
            "async/trainer_idle_s": waited[0],
            "async/worker_idle_s": idle - self._idle_seen,
            "async/buffer_depth": producer.depth() if producer is not None else 0,
            "async/carried_groups": len(self.carried),
            "async/dropped": carried.dropped,
            "async/downweighted": downweighted,
            "async/staleness_mean": sum(lags) / len(lags) if lags else 0.0,
            "async/staleness_max": max(lags, default=0),
            "async/interrupted": sum(
                len(set(ro.meta.get(VERSIONS_KEY, ()))) > 1 for g in groups for ro in g.responses
            ),
            "async/producer_version": producer.version if producer is not None else c,
            **{f"async/staleness_{k}": v for k, v in sorted(Counter(lags).items())},
            **{f"async/total_{k}": v for k, v in cnt.state_dict().items() if k != "by_version"},
        }
        self._idle_seen = idle
        return groups, stats, rounds

    def after_step(self, run: Any) -> None:
        """Post the weights after step ``run.step`` (version ``run.step + 1``) to the producer (the
        full weights: a gather of the shards under FSDP, on every rank)."""
        weights = _snapshot(run)
        if weights is not None and self.producer is not None:
            self.producer.post_weights(weights, run.step + 1)

    def metrics(self) -> dict[str, Any]:
        return dict(self._last)

    def state_dict(self, run: Any) -> dict[str, Any]:
        """The data order together with the rounds it owes (drawn, not taken: generated again on resume)
        and the counters without them; carried surplus is lost at a resume and counted dropped."""
        p = self.producer
        if p is None:
            sampler, owed = run.sampler.state_dict(), dict(self.replay)
        else:
            with p.locked():
                sampler, owed = run.sampler.state_dict(), p.owed()
        counters = dataclasses.replace(self.counters, by_version=dict(self.counters.by_version))
        counters.dropped += sum(len(g.responses) for g in self.carried)
        return {
            "sampler": sampler,
            "async": {
                "counters": counters.state_dict(),
                "owed": [[s, i, prompts] for (s, i), prompts in sorted(owed.items())],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "async" not in state:
            return
        self.counters = Counters.from_state(state["async"]["counters"])
        self.replay = {(int(s), int(i)): [int(x) for x in p] for s, i, p in state["async"]["owed"]}

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
        if self.samples_like_policy:  # the producer's own copy (a child process, a sandbox pool)
            close = getattr(self.engine, "close", None)
            if close is not None:
                close()

    # ---------------------------------------------------------------- the producer's side

    def _producer(self, run: Any) -> AsyncProducer | None:
        """The producer (started at the first step), on the main rank; None on the others."""
        if self.producer is None and run.world.main:
            bs = run.cfg.rollout.batch_size
            self.producer = AsyncProducer(
                lambda step, index: run.sampler.next(bs, run.stage(step).pool),
                self._make_round,
                self.engine.update_weights,
                batch_size=bs,
                max_staleness=self.t.max_staleness,
                capacity=self.t.async_buffer or (self.t.max_staleness + 1) * bs,
                first_step=run.step,
                total_steps=run.cfg.trainer.steps,
                version=run.step,
                replay=self.replay,
            ).start()
            self.replay = {}
        return self.producer

    def _make_round(self, step: int, index: int, prompts: list[int], between_chunks: Any) -> AsyncRound:
        """Generate, score and shape one round (the producer's thread)."""
        run, cfg = self.run, self.run.cfg
        version = between_chunks()
        max_new = run.stage(step).max_new_tokens
        size = run.world.size
        t0 = time.time()
        # as the synchronous step splits a round: rank r's share prompts[r::size], with rank r's seed;
        # put back in the global prompt order (one share, the whole round, in one process)
        shares = []
        with run.precision(), torch.no_grad():
            for r in range(size):
                params = sampling_params(cfg, step, index, r, max_new)
                ids = [run.train_ids[i] for i in prompts[r::size]]
                if not ids:
                    shares.append([])
                elif self.r.partial:
                    shares.append(
                        generate_partial(
                            self.engine,
                            ids,
                            params,
                            self.r.partial_chunk_tokens,
                            between_chunks,
                            run.tokenizer,
                        )
                    )
                else:
                    shares.append(self.engine.generate(ids, params))
                    for group in shares[-1]:
                        for ro in group:
                            ro.meta[VERSIONS_KEY] = [version] * len(ro.response_ids)
        outs = [shares[j % size][j // size] for j in range(len(prompts))]
        for group in outs:
            for ro in group:
                ro.meta["start_version"] = version
        t1 = time.time()
        problems = [run.train_problems[i] for i, group in zip(prompts, outs) for _ in group]
        results = safe_score(run.scorer, [ro.text for group in outs for ro in group], problems)
        n = cfg.rollout.n
        scored = [(group, results[gi * n : (gi + 1) * n]) for gi, group in enumerate(outs)]
        kinds = [run.train_problems[i].kind for i in prompts]
        groups, reasons = make_groups(cfg, prompts, scored, response_budget(cfg, max_new), kinds)
        return AsyncRound(step, index, prompts, groups, version, t1 - t0, time.time() - t1, reasons)

    def _locked(self) -> Any:
        return self.producer.locked() if self.producer is not None else contextlib.nullcontext()

    def _count_produced(self, rnd: AsyncRound) -> None:
        self.counters.produced += rnd.samples
        self.counters.by_version[rnd.version] = self.counters.by_version.get(rnd.version, 0) + rnd.samples


class _Guarded:
    """An engine that both the producer and the evaluation use: a generation waits for the producer's
    round in flight and first loads the newest posted weights (an evaluation measures the current
    policy). Weights reach it through the producer only, once it has started (:meth:`update_weights`)."""

    shares_policy = False

    def __init__(self, engine: Any, owner: AsyncRounds) -> None:
        self.engine, self.owner = engine, owner

    def generate(self, prompts: Any, params: Any) -> Any:
        p = self.owner.producer
        if p is None:
            return self.engine.generate(prompts, params)
        with p.engine_lock:
            p.between_chunks()
            return self.engine.generate(prompts, params)

    def update_weights(self, state_dict_or_model: Any, version: int | None = None) -> None:
        """Before the producer starts (a resume's refresh: a sharded checkpoint's weights reach the policy
        after the engine was built) the engine loads them; afterwards weights come through the
        producer only (the trainer's posts), and this is a no-op."""
        if self.owner.producer is None:
            self.engine.update_weights(state_dict_or_model, version=version)

    def __getattr__(self, name: str) -> Any:  # version, metrics, tokenizer, close, ...
        return getattr(self.engine, name)


class _SerialScorer:
    """A scorer used by the producer thread and the evaluation: one ``score`` call at a time (verifier
    and sandbox pools are not promised to be thread-safe)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.lock = scorer, threading.Lock()

    def score(self, responses: list[str], problems: list[Any]) -> Any:
        with self.lock:
            return self.scorer.score(responses, problems)

    def __getattr__(self, name: str) -> Any:  # close, ...
        return getattr(self.scorer, name)


def _snapshot(run: Any) -> dict[str, torch.Tensor] | None:
    """The policy's plain weights (LoRA merged), copied (the trainer keeps updating its own), on the main
    rank; None on the others. Under FSDP every rank takes part (the shards are gathered whole)."""
    from archer.models.loader import unwrap
    from archer.rollout.vllm import full_state_dict

    state = full_state_dict(unwrap(run.model))  # a collective under FSDP: on every rank
    return {k: v.clone() for k, v in state.items()} if run.world.main else None


def _policy_copy(run: Any) -> torch.nn.Module | None:
    """The producer's own float32 copy of the policy (LoRA merged), on the main rank (None on the
    others), on the policy's device. Under FSDP it is built from the gathered full weights, a collective
    every rank takes part in."""
    from archer.models.loader import is_lora, unwrap

    model, world = run.model, run.world
    if is_lora(model) or world.sharded:
        from transformers import AutoModelForCausalLM

        state = _snapshot(run)  # collective under FSDP
        if state is None:
            return None
        base = unwrap(model)
        twin = AutoModelForCausalLM.from_config(
            base.config, dtype=torch.float32, attn_implementation=base.config._attn_implementation
        )
        twin.load_state_dict(state)
        return twin.eval().to(world.device)
    if not world.main:
        return None
    twin = copy.deepcopy(model)
    # parameters keep requires_grad like the policy's: CPU linear kernels differ in the last bit between
    # the two (measured), and a fresh sample must carry the policy's own log-probs (staleness 0 = sync)
    return twin.eval().to(next(model.parameters()).device)


def _thread_engine(run: Any, twin: torch.nn.Module) -> HFEngine:
    """An HF engine over the producer's copy, used by the producer thread; it leaves torch's thread count
    alone (process-wide: the trainer's ``trainer.threads`` holds)."""
    return HFEngine(twin, run.tokenizer, num_threads=None)


def _process_engine(run: Any, twin: torch.nn.Module) -> ProcessEngine:
    """An HF engine in a child process over the producer's copy in shared memory
    (:mod:`archer.rollout.process`), with ``trainer.threads`` torch threads (1 when unset)."""
    if run.world.device.type != "cpu":
        raise ConfigError(
            f"trainer.async_producer=process: runs CPU policies only (this one is on {run.world.device}); "
            "use thread (GPU kernels run outside Python's lock)"
        )
    cfg = run.cfg
    return ProcessEngine(twin, run.tokenizer, num_threads=cfg.trainer.threads or 1, dtype=cfg.model.dtype)


PRODUCER_ENGINES = {"thread": _thread_engine, "process": _process_engine}
"""Where the producer samples from its copy of the policy (``trainer.async_producer``)."""


def producer_kind(setting: str, device: torch.device) -> str:
    """``trainer.async_producer`` resolved: ``auto`` is a child process on CPU (a producer thread takes
    turns with the trainer on Python's lock; the measured gain on 2 cores is within noise, see
    ``benchmarks/async_rl.py``) and a thread on GPU (kernels run outside that lock)."""
    if setting != "auto":
        return setting
    return "process" if device.type == "cpu" else "thread"


ROUND_SOURCES = {"sync": SyncRounds, "one_step_off": SyncRounds, "async": AsyncRounds}
