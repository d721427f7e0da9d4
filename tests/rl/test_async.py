"""trainer.mode=async (archer.rl.async_rollout, archer.rl.rounds, archer.rollout.partial): the bounded
buffer, the staleness bound and its policies, per-token versions across a partial-rollout interruption,
staleness 0 = the synchronous run, resume accounting, config errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import QUICK

from archer.config import load_config
from archer.errors import ConfigError
from archer.rl.async_rollout import AsyncProducer, AsyncRound, Counters, admit, sample_staleness
from archer.rollout.base import Rollout, SamplingParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = QUICK + ["eval.enabled=false", "logging.plots=false", "logging.sinks=[]", "trainer.save_every=0"]


def _ro(versions: list[int]) -> Rollout:
    return Rollout(
        0,
        [1],
        list(range(len(versions))),
        [0.0] * len(versions),
        "",
        False,
        "eos",
        {"token_versions": versions},
    )


def _group(versions: list[list[int]]) -> SimpleNamespace:
    return SimpleNamespace(responses=[_ro(v) for v in versions])


# ------------------------------------------------------------------------------- staleness


def test_staleness_is_measured_from_the_oldest_token():
    assert sample_staleness(_ro([3, 3, 4, 5]), 5) == 2
    assert sample_staleness(_ro([5, 5]), 5) == 0
    empty = _ro([])
    empty.meta["start_version"] = 2
    assert sample_staleness(empty, 5) == 3


@pytest.mark.parametrize("policy", ["drop", "downweight"])
def test_staleness_bound_drops_or_downweights_groups_older_than_k(policy):
    fresh, edge, old = _group([[7, 7], [7, 8]]), _group([[6, 8], [6]]), _group([[5, 8], [8, 8]])
    out = admit([fresh, edge, old], version=8, max_staleness=2, policy=policy, weight=0.25)
    if policy == "drop":  # a group is judged by its oldest sample: 8 - 5 = 3 > 2
        assert out.groups == [fresh, edge] and out.dropped == 2 and out.downweighted == 0
    else:
        assert out.groups == [fresh, edge, old] and out.dropped == 0 and out.downweighted == 2
        assert [ro.meta.get("advantage_weight") for g in out.groups for ro in g.responses] == [
            None,
            None,
            None,
            None,
            0.25,
            0.25,
        ]
    with pytest.raises(ValueError, match="stale policy"):
        admit([fresh], 8, 2, "keep", 0.5)


def test_sampler_logprobs_serve_as_old_only_when_every_trained_token_is_of_the_current_version():
    from archer.rl.step import fresh

    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    batch = SimpleNamespace(response_mask=mask, token_version=torch.tensor([[-1, 4, 4], [-1, 4, 3]]))
    assert fresh(batch, 4)  # the version-3 token is not trained (masked)
    batch.token_version[1, 2] = 3
    batch.response_mask[1, 2] = 1.0
    assert not fresh(batch, 4) and not fresh(batch, 5)
    assert fresh(SimpleNamespace(response_mask=mask, token_version=None), 9)  # sync rollouts carry none


def test_downweighted_sample_scales_its_advantage_only():
    from archer.rl.batch import Group, build_batch

    cfg = load_config("tiny_math", [])
    rollouts = [_ro([0, 0]) for _ in range(4)]
    groups = [
        Group(0, [1, 2], rollouts[:2], [1.0, 0.0], [True, False]),
        Group(1, [1, 2], rollouts[2:], [1.0, 0.0], [True, False]),
    ]
    plain = build_batch(cfg, groups, 0, torch.device("cpu"))
    for ro in rollouts[2:]:
        ro.meta["advantage_weight"] = 0.5
    weighted = build_batch(cfg, groups, 0, torch.device("cpu"))
    assert torch.equal(weighted.advantages[:2], plain.advantages[:2])
    assert torch.allclose(weighted.advantages[2:], 0.5 * plain.advantages[2:])
    assert weighted.token_version[0].tolist() == [-1, -1, 0, 0]  # prompt columns carry no version


# ------------------------------------------------------------------------------- the producer


def _producer(capacity, max_staleness, steps, make_seconds=0.0, batch_size=2, log=None):
    drawn = iter(range(10_000))

    def make_round(step, index, prompts, between_chunks):
        version = between_chunks()
        time.sleep(make_seconds)
        groups = [_group([[version]]) for _ in prompts]
        if log is not None:
            log.append((step, index, version))
        return AsyncRound(step, index, prompts, groups, version)

    return AsyncProducer(
        lambda s, i: [next(drawn) for _ in range(batch_size)],
        make_round,
        lambda state: None,
        batch_size=batch_size,
        max_staleness=max_staleness,
        capacity=capacity,
        first_step=0,
        total_steps=steps,
        version=0,
    )


@pytest.mark.parametrize("capacity,k", [(2, 3), (4, 1), (6, 5)])
def test_buffer_never_exceeds_capacity_and_every_round_respects_the_gate(capacity, k):
    log: list[tuple[int, int, int]] = []
    p = _producer(capacity, k, steps=12, log=log).start()
    try:
        for step in range(12):
            for index in range(2 if step % 3 == 0 else 1):  # some steps ask for a refill round
                rnd, _ = p.take(step, index)
                assert (rnd.step, rnd.index) == (step, index)
                assert step - rnd.version <= k  # every sample at most k versions old
            # a slow update: the producer runs ahead as far as the gate and the buffer let it (rounds of
            # future steps leave one round of room: at most (capacity - batch) / batch of them)
            bound = min(k, (capacity - 2) // 2, 11 - step)
            deadline = time.time() + 10
            while sum(1 for s, _ in list(p.rounds) if s > step) < bound and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(0.01)
            assert sum(1 for s, _ in list(p.rounds) if s > step) == bound  # as far, and no further
            assert p.max_depth <= capacity
            p.post_weights({}, step + 1)
        assert p.max_depth <= capacity
        assert max(s - v for s, _, v in log) == min(k, (capacity - 2) // 2)
    finally:
        p.close()


def test_staleness_zero_waits_for_the_weights_of_each_step():
    log: list[tuple[int, int, int]] = []
    p = _producer(8, 0, steps=4, log=log).start()
    try:
        for step in range(4):
            p.take(step, 0)
            time.sleep(0.02)  # the producer may not start the next step before the weights arrive
            assert (step + 1, 0) not in p.rounds and p.in_flight is None
            p.post_weights({}, step + 1)
        assert log == [(s, 0, s) for s in range(4)]
    finally:
        p.close()


def test_a_failing_producer_raises_in_the_trainer():
    def boom(step, index, prompts, between_chunks):
        raise ValueError("engine exploded")

    p = AsyncProducer(
        lambda s, i: [0],
        boom,
        lambda st: None,
        batch_size=1,
        max_staleness=1,
        capacity=2,
        first_step=0,
        total_steps=3,
        version=0,
    ).start()
    with pytest.raises(ValueError, match="engine exploded"):  # the producer's own exception
        p.take(0, 0)
    p.close()


def test_owed_rounds_and_counters_round_trip():
    c = Counters(produced=10, consumed=6, dropped=2, downweighted=1, filtered=2, by_version={0: 4, 1: 6})
    assert Counters.from_state(c.state_dict()) == c


# ------------------------------------------------------------------------------- partial rollouts


def test_partial_rollout_tokens_keep_the_version_that_sampled_them():
    """Weights change after the first chunk: its tokens carry version 0 and the old model's log-probs,
    the later tokens version 1 and the new model's (teacher-forced check of every token)."""
    from helpers import tiny_model, tiny_tokenizer

    from archer.rollout.hf import HFEngine
    from archer.rollout.partial import generate_partial

    tok = tiny_tokenizer()
    old, new = tiny_model(tok, seed=0), tiny_model(tok, seed=1)
    engine = HFEngine(tiny_model(tok, seed=0), tok, eos_token_ids=[tok.vocab_size + 100])  # never ends early
    calls = []

    def between_chunks():
        calls.append(len(calls))
        if len(calls) == 2:  # an update lands after the first chunk
            engine.update_weights(new.state_dict())
        return 0 if len(calls) == 1 else 1

    prompts = [tok.encode("Compute 1+2."), tok.encode("x")]
    out = generate_partial(
        engine, prompts, SamplingParams(n=2, max_new_tokens=10, seed=3), 4, between_chunks, tok
    )
    assert len(calls) == 3  # chunks of 4, 4, 2 tokens
    for group, p in zip(out, prompts):
        assert len(group) == 2
        for ro in group:
            assert ro.meta["token_versions"] == [0] * 4 + [1] * 6
            assert len(ro.response_ids) == 10 and ro.finish_reason == "length" and ro.prompt_ids == p
            ids = torch.tensor([p + ro.response_ids])
            for t, v in enumerate(ro.meta["token_versions"]):
                model = old if v == 0 else new
                with torch.no_grad():
                    logits = model(ids).logits[0, len(p) - 1 + t].double()
                want = logits.log_softmax(-1)[ro.response_ids[t]].item()
                assert abs(ro.logprobs[t] - want) < 1e-4, (t, v)


def test_partial_rollout_finds_a_stop_string_across_a_chunk_boundary():
    from archer.rollout.partial import _extend, _Row

    tok = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: "".join(chr(97 + i) for i in ids))
    row = _Row(0, [0])
    params = SamplingParams(max_new_tokens=10, stop=("cd",))
    _extend(row, Rollout(0, [0], [0, 1, 2], [-1.0] * 3, "abc", False, "length"), 0, params, tok)
    assert row.reason is None
    _extend(row, Rollout(0, [0], [3, 4, 5], [-2.0] * 3, "def", False, "length"), 1, params, tok)
    assert row.reason == "stop" and row.ids == [0, 1, 2, 3] and row.versions == [0, 0, 0, 1]


# ------------------------------------------------------------------------------- whole runs


def _final_weights(summary):
    from safetensors.torch import load_file

    return load_file(str(Path(summary["final_checkpoint"]) / "model.safetensors"))


@pytest.mark.parametrize("producer", ["thread", "process"])
def test_staleness_zero_reproduces_the_synchronous_run(tmp_path, parity_math, producer):
    """The async machinery with K=0 trains on the same prompts, samples and log-probs as sync: every
    shared metric and the final weights are equal (bit for bit), with the producer's copy of the policy
    in a thread or in a child process over shared memory (the weight push included)."""
    from archer.rl.loop import train

    sync = train(load_config("tiny_math", RUN), run_dir=tmp_path / "sync")
    over = ["trainer.mode=async", "trainer.max_staleness=0", f"trainer.async_producer={producer}"]
    asyn = train(load_config("tiny_math", RUN + over), run_dir=tmp_path / "async")
    assert len(sync["history"]) == len(asyn["history"]) == 3
    assert any(h["filter/rounds"] > 1 for h in sync["history"])  # dynamic sampling asked for refills
    carried = 0  # the surplus of a step (discarded by sync) is carried, then dropped: one version old
    for a, b in zip(sync["history"], asyn["history"]):
        assert b["async/staleness_max"] == 0 and b["async/dropped"] == carried * 4
        carried = b["async/carried_groups"]
        for k in a:
            if not k.startswith(("time/", "sample")):
                assert a[k] == b[k], k
    wa, wb = _final_weights(sync), _final_weights(asyn)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_restores_the_buffer_accounting(tmp_path, parity_math):
    """A run saved at step 2 with rounds still owed (drawn, in the buffer or in flight) resumes: the owed
    rounds are generated again with the same prompts, none is counted twice, and the trained prompts of
    steps 3-4 equal the uninterrupted run's."""
    from archer.rl import run as rl
    from archer.rl.loop import train

    over = RUN + [
        "trainer.mode=async",
        "trainer.max_staleness=2",
        "trainer.steps=4",
        "trainer.save_every=2",
        "rollout.dynamic_sampling=false",
        "trainer.keep_last=4",
    ]
    whole = train(load_config("tiny_math", over), run_dir=tmp_path / "whole")
    # decoupled PPO: a step with stale samples recomputes the proximal log-probs (they differ from the
    # sampler's) and weights tokens by pi_prox / pi_behav (truncated IS, on by default in async mode)
    stale = [h for h in whole["history"] if h["async/staleness_max"] > 0]
    assert stale and all(h["rollout/logprob_diff_max"] > 1e-4 and "actor/tis_mean" in h for h in stale)
    state = torch.load(
        tmp_path / "whole" / "checkpoints" / "step_000002" / "trainer_state.pt", weights_only=False
    )
    owed = state["async"]["owed"]
    saved = state["async"]["counters"]
    assert saved["produced"] == saved["consumed"] + saved["dropped"] + saved["filtered"] == 2 * 16
    assert [s for s, _, _ in owed] and all(
        s >= 2 for s, _, _ in owed
    )  # rounds ahead of the trainer were owed
    # kill -9 at step 2 is the same as stopping there: the folder has the checkpoint of step 2 only
    import shutil

    shutil.copytree(tmp_path / "whole", tmp_path / "cut", ignore=shutil.ignore_patterns("step_000004"))
    runs = []
    real = rl.RLRun.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        runs.append(self)

    rl.RLRun.__init__ = spy
    try:
        resumed = train(load_config("tiny_math", over), run_dir=tmp_path / "cut", resume=True)
    finally:
        rl.RLRun.__init__ = real
    assert [h["step"] for h in resumed["history"]] == [3, 4]
    assert [h["data/prompt_hash"] for h in resumed["history"]] == [
        h["data/prompt_hash"] for h in whole["history"][2:]
    ]
    last = resumed["history"][-1]
    produced = last["async/total_produced"]
    assert produced == 4 * 16  # the owed rounds were made again and counted once: none twice, none lost
    assert (
        produced == last["async/total_consumed"] + last["async/total_filtered"] + last["async/total_dropped"]
    )
    assert sum(runs[0].rounds.counters.by_version.values()) == 4 * 16


def test_config_errors():
    bad = {
        ("trainer.mode=fast",): "trainer.mode",
        ("trainer.mode=async", "trainer.max_staleness=-1"): "trainer.max_staleness",
        ("trainer.mode=async", "trainer.stale_policy=keep"): "trainer.stale_policy",
        ("trainer.mode=async", "trainer.stale_weight=0"): "trainer.stale_weight",
        ("trainer.mode=async", "trainer.async_buffer=3", "rollout.batch_size=4"): "trainer.async_buffer",
        ("rollout.partial=true",): "rollout.partial: needs trainer.mode=async",
        ("trainer.mode=async", "rollout.partial=true", "rollout.tools=[python]"): "rollout.partial: with",
        ("trainer.mode=async", "trainer.async_producer=fork"): "trainer.async_producer",
        ("trainer.mode=async", "resources.train_procs=2", "resources.rollout_workers=1"): "trainer.mode",
        ("trainer.mode=async", "rollout.one_step_off_policy=true"): "rollout.one_step_off_policy",
        ("trainer.mode=one_step_off",): "trainer.mode",
        ("trainer.mode=async", "rollout.partial_chunk_tokens=0"): "rollout.partial_chunk_tokens",
    }
    for overrides, field in bad.items():
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_config("tiny_math", list(overrides))
    ok = load_config("tiny_math", ["rollout.one_step_off_policy=true", "resources.rollout_workers=1"])
    assert ok.trainer.mode == "one_step_off"  # the old spelling is an alias
    assert load_config("tiny_math", []).trainer.mode == "sync"


def test_producer_thread_stops_with_the_run():
    p = _producer(4, 1, steps=100).start()
    p.take(0, 0)
    p.close()
    assert not p.thread.is_alive()
    assert not [t for t in threading.enumerate() if t is p.thread]


def test_an_engine_with_its_own_weights_is_shared_with_evaluation_at_the_newest_weights(
    tmp_path, parity_math, monkeypatch
):
    """vLLM / Ray workers stand-in (an HF engine over its own copy, ``shares_policy = False``): the
    producer generates with it, and the evaluation after the last step first loads the final weights."""
    import copy

    import archer.rollout as rollout
    from archer.rl.loop import train
    from archer.rollout.hf import HFEngine

    class OwnWeights(HFEngine):
        shares_policy = False

    engines = []

    def build(cfg, model, tokenizer, **kw):
        engines.append(OwnWeights(copy.deepcopy(model), tokenizer))
        return engines[-1], cfg

    monkeypatch.setattr(rollout, "build_rollout", build)
    over = RUN + [
        "trainer.mode=async",
        "trainer.max_staleness=1",
        "eval.enabled=true",
        "rollout.dynamic_sampling=false",
    ]
    out = train(load_config("tiny_math", over), run_dir=tmp_path)
    assert max(h["async/staleness_max"] for h in out["history"]) <= 1
    assert out["after"]  # evaluated through the shared engine
    from safetensors.torch import load_file

    final = load_file(str(Path(out["final_checkpoint"]) / "model.safetensors"))
    held = engines[0].model.state_dict()
    assert all(torch.equal(held[k], final[k]) for k in final)  # the evaluation measured the trained policy


def test_partial_rollouts_in_a_run_continue_across_a_weight_update(tmp_path, parity_math, monkeypatch):
    """A weight update lands while a round is being generated (arranged below, no timing luck): its
    responses continue with the new weights, and the trained batch records both versions along a row
    (non-decreasing, the oldest one setting the staleness)."""
    from archer.rl import step as st
    from archer.rl.rounds import AsyncRounds

    # made deterministic: step 0's update waits until round (1, 0) is being generated (with version 0),
    # and that round's second chunk waits until the update's weights (version 1) are posted
    sources = []
    real_make = AsyncRounds._make_round

    def make(self, step, index, prompts, between_chunks):
        sources.append(self)
        calls = []

        def gated():
            calls.append(1)
            if (step, index) == (1, 0) and len(calls) == 3:  # 1: the round's start, 2: chunk 0, 3: chunk 1
                deadline = time.time() + 30
                while self.producer.pending is None and self.producer.version < 1 and time.time() < deadline:
                    time.sleep(0.005)
            return between_chunks()

        return real_make(self, step, index, prompts, gated)

    monkeypatch.setattr(AsyncRounds, "_make_round", make)
    real_update = st.update

    def update(run, *a, **kw):
        if run.step == 0:
            deadline = time.time() + 30
            p = run.rounds.producer
            while (
                not (p.in_flight and p.in_flight[:2] == (1, 0))
                and (1, 0) not in p.rounds
                and time.time() < deadline
            ):
                time.sleep(0.005)
        return real_update(run, *a, **kw)

    monkeypatch.setattr(st, "update", update)
    batches = []
    real_build = st.build_batch

    def spy(*a, **kw):
        batches.append(real_build(*a, **kw))
        return batches[-1]

    monkeypatch.setattr(st, "build_batch", spy)
    over = RUN + [
        "trainer.mode=async",
        "trainer.max_staleness=1",
        "rollout.partial=true",
        "rollout.partial_chunk_tokens=2",
        "rollout.dynamic_sampling=false",
        "algo.filter_zero_variance=false",
        "trainer.steps=4",
    ]
    from archer.rl.loop import train

    out = train(load_config("tiny_math", over), run_dir=tmp_path)
    assert sum(h["async/interrupted"] for h in out["history"]) > 0
    mixed = 0
    for b, h in zip(batches, out["history"]):
        for row, mask in zip(b.token_version, b.response_mask):
            v = row[mask != 0].tolist()
            assert v == sorted(v)  # a response's later tokens never come from older weights
            mixed += len(set(v)) > 1
        step = h["step"] - 1
        assert h["async/staleness_max"] == step - int(b.token_version[b.response_mask != 0].min())
    assert mixed > 0


def test_downweight_policy_trains_the_carried_stale_groups_and_counts_them(tmp_path, parity_math):
    """K=0 with stale_policy=downweight: a step's carried surplus (one version old) is trained at the next
    step with its advantages scaled instead of dropped; counted, and seen in the staleness histogram."""
    from archer.rl.loop import train

    over = RUN + ["trainer.mode=async", "trainer.max_staleness=0", "trainer.stale_policy=downweight"]
    hist = train(load_config("tiny_math", over), run_dir=tmp_path)["history"]
    carried = 0
    for h in hist:
        assert h["async/dropped"] == 0
        assert h["async/downweighted"] == min(carried, 4) * 4 == h.get("async/staleness_1", 0)
        carried = h["async/carried_groups"]
    assert sum(h["async/downweighted"] for h in hist) > 0
    last = hist[-1]
    assert last["async/total_produced"] == (
        last["async/total_consumed"]
        + last["async/total_filtered"]
        + last["async/total_dropped"]
        + carried * 4
    )


def test_async_with_tool_rollouts_trains_on_conversations_run_in_the_producers_own_sandbox(
    tmp_path, monkeypatch
):
    """trainer.mode=async with rollout.tools: the producer's copy of the policy is wrapped in its own
    tool engine (its own sandbox pool, closed with the run); rows carry their observation mask and
    versions, and the step logs the tool metrics as sync does."""
    from helpers import TOOL_QUICK, parity_verifier

    from archer.rewards import registry
    from archer.rl import rounds
    from archer.rl.loop import train
    from archer.rollout.tools import ToolEngine

    monkeypatch.setitem(registry._VERIFIERS, "math", parity_verifier)
    made = []
    real = rounds.AsyncRounds.__init__

    def spy(self, run):
        real(self, run)
        made.append(self)

    monkeypatch.setattr(rounds.AsyncRounds, "__init__", spy)
    over = TOOL_QUICK + ["trainer.mode=async", "trainer.max_staleness=1"]
    out = train(load_config("tiny_interpreter", over), run_dir=tmp_path / "run")
    assert out["steps"] == 2
    producer_engine = made[0].engine
    assert isinstance(producer_engine, ToolEngine) and made[0].samples_like_policy
    assert producer_engine.interpreter is not made[0].run.engine.interpreter
    for row in out["history"]:
        assert row["tool/turns_mean"] >= 1 and "tool/use_rate" in row
        assert row["async/staleness_max"] <= 1
    assert "tool_use_rate" in out["after"]
    assert not producer_engine.engine.proc.is_alive()  # the producer's child process was closed


def test_auto_producer_falls_back_to_a_thread_when_the_child_cannot_start(
    tmp_path, parity_math, monkeypatch, capfd
):
    """trainer.async_producer=auto: a producer process that cannot start (e.g. a model class defined in
    the user's main script, which the child cannot import) leaves one log line and a thread producer;
    trainer.async_producer=process raises the child's error."""
    from archer.rl import rounds
    from archer.rl.loop import train

    def broken(run, twin):
        raise RuntimeError(
            "rollout process (pid 1) failed in start: AttributeError: Can't get attribute 'Mine'"
        )

    monkeypatch.setitem(rounds.PRODUCER_ENGINES, "process", broken)
    over = RUN + ["trainer.mode=async", "trainer.steps=1"]
    out = train(load_config("tiny_math", over), run_dir=tmp_path / "auto")
    assert out["steps"] == 1
    printed = capfd.readouterr().out
    assert "trainer.async_producer=auto: rollout process (pid 1) failed in start" in printed
    assert "using a thread instead" in printed and "copy of the policy in a thread" in printed
    with pytest.raises(RuntimeError, match="Can't get attribute 'Mine'"):
        train(
            load_config("tiny_math", over + ["trainer.async_producer=process"]), run_dir=tmp_path / "explicit"
        )


def test_async_dynamic_sampling_accounts_every_drawn_sample(tmp_path, parity_math, monkeypatch):
    """A K=1 run with dynamic sampling (refill rounds): at every step end produced = consumed + dropped
    + filtered + carried (samples), and every round drawn from the data order was produced, except those
    still in the producer's buffer when the run ended (none lost, none counted twice)."""
    from archer.rl import run as rl
    from archer.rl.loop import train

    draws, runs = [], []
    real = rl.RLRun.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        runs.append(self)
        sampler_next = self.sampler.next

        def counted(*args, **kwargs):
            draws.append(1)
            return sampler_next(*args, **kwargs)

        self.sampler.next = counted

    monkeypatch.setattr(rl.RLRun, "__init__", spy)
    cfg = load_config("tiny_math", RUN + ["trainer.mode=async", "trainer.max_staleness=1", "trainer.steps=4"])
    out = train(cfg, run_dir=tmp_path)
    n = cfg.rollout.n
    assert any(h["filter/rounds"] > 1 for h in out["history"])  # refills were asked for
    for h in out["history"]:
        pending = h["async/carried_groups"] * n
        assert h["async/total_produced"] == (
            h["async/total_consumed"] + h["async/total_dropped"] + h["async/total_filtered"] + pending
        ), h["step"]
        assert h["async/staleness_max"] <= 1
    producer = runs[0].rounds.producer  # closed: what it made after the last step is in its buffer
    unread = sum(r.samples for r in producer.rounds.values())
    assert producer.in_flight is None
    assert len(draws) * cfg.rollout.batch_size * n == out["history"][-1]["async/total_produced"] + unread


@pytest.mark.parametrize("loss", ["aspo", "cispo", "dapo", "dtc", "gppo", "gspo", "ppo"])
def test_every_loss_trains_on_stale_samples_with_the_decoupled_correction(tmp_path, parity_math, loss):
    """trainer.mode=async, K=1, each policy loss of the registry: step 2 trains on samples one version
    old (proximal log-probs recomputed, truncated IS to the behaviour policy), with finite metrics. The
    producer is a thread here (a child process costs ~3 s to start and changes nothing for the loss)."""
    import math

    from archer.rl.loop import train

    over = RUN + [
        "trainer.mode=async",
        "trainer.async_producer=thread",
        "trainer.max_staleness=1",
        "trainer.steps=2",
        "rollout.dynamic_sampling=false",
        f"algo.loss={loss}",
    ]
    out = train(load_config("tiny_math", over), run_dir=tmp_path)
    last = out["history"][-1]
    assert last["async/staleness_max"] == 1 and last["rollout/logprob_diff_max"] > 0
    assert "actor/tis_mean" in last and math.isfinite(last["actor/grad_norm"])
    assert all(math.isfinite(v) for k, v in last.items() if k.startswith("actor/") and isinstance(v, float))


def test_the_loss_list_above_is_the_whole_registry():
    from archer.algo import policy_loss_names

    assert set(policy_loss_names()) == {"aspo", "cispo", "dapo", "dtc", "gppo", "gspo", "ppo"}


def test_producer_kind_and_the_process_producer_refuses_a_gpu_policy():
    """auto: a child process on CPU, a thread on GPU; an explicit setting stands; the process producer
    is a one-line ConfigError for a policy off the CPU (its shared-memory weights are host memory)."""
    from archer.rl.rounds import PRODUCER_ENGINES, producer_kind

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert producer_kind("auto", cpu) == "process" and producer_kind("auto", gpu) == "thread"
    assert producer_kind("thread", cpu) == "thread" and producer_kind("process", gpu) == "process"
    run = SimpleNamespace(world=SimpleNamespace(device=gpu))
    with pytest.raises(ConfigError, match="trainer.async_producer=process: runs CPU policies only"):
        PRODUCER_ENGINES["process"](run, None)


def test_a_sharded_resume_gives_an_async_engine_with_its_own_weights_the_checkpoints(
    tmp_path, parity_math, monkeypatch
):
    """trainer.mode=async with an engine holding its own weights (vLLM / Ray workers stand-in): after a
    resume from a sharded checkpoint (whose weights reach the policy after the engine was built from the
    initial one) the first resumed round is sampled with the checkpoint's weights. Simulated in one
    process as in tests/rl/test_e2e.py: the checkpoint is declared sharded, its 'shards' its full
    weights."""
    import copy

    from safetensors.torch import load_file

    import archer.rollout as rollout
    from archer.models import checkpoint as ckpt
    from archer.rl.loop import train
    from archer.rollout.hf import HFEngine

    seen = []

    class OwnWeights(HFEngine):
        shares_policy = False

        def generate(self, prompts, params):
            seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
            return super().generate(prompts, params)

    def build(cfg, model, tokenizer, **kw):
        return OwnWeights(copy.deepcopy(model), tokenizer), cfg

    monkeypatch.setattr(rollout, "build_rollout", build)
    over = RUN + ["trainer.mode=async", "trainer.max_staleness=1", "rollout.dynamic_sampling=false"]
    over += ["trainer.save_every=1"]
    train(load_config("tiny_math", over + ["trainer.steps=1"]), run_dir=tmp_path)
    saved = load_file(str(tmp_path / "checkpoints" / "step_000001" / "model.safetensors"))
    initial = load_file(str(tmp_path / "sft_model" / "model.safetensors"))
    assert any(not torch.equal(saved[k], initial[k]) for k in saved)  # step 1 changed the weights

    def load_shards(last, scorer, optimizer=None):
        scorer.policy.load_state_dict(load_file(str(last / "model.safetensors")), strict=False)

    monkeypatch.setattr(ckpt, "is_sharded_checkpoint", lambda path: True)
    monkeypatch.setattr(ckpt, "load_sharded_checkpoint", load_shards)
    seen.clear()
    train(load_config("tiny_math", over + ["trainer.steps=2"]), run_dir=tmp_path, resume=True)
    first = seen[0]  # the first resumed round (the before-evaluation is reused from the first run)
    assert all(torch.equal(first[k], saved[k]) for k in saved)
