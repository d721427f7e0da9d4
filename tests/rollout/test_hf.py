"""HFEngine: exactness against transformers, log-probs, seeding, stop/EOS handling, batching."""

from __future__ import annotations

import types

import pytest
import torch

from archer.models.tiny import build_tiny_model, build_tokenizer
from archer.rollout import HFEngine, Rollout, RolloutEngine, SamplingParams
from archer.tasks.synthetic import tokenizer_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["Compute 1+2.", "Compute 12*3-4.", "Write a Python function f(x) that returns x.", "x"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(tokenizer_corpus(300, seed=0), vocab_size=400)


@pytest.fixture(scope="module")
def model(tok):
    return build_tiny_model(tok, seed=1)


def _chat(tok, text):
    return tok.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )


def _teacher_forced_logprobs(model, r: Rollout, temperature: float) -> torch.Tensor:
    ids = torch.tensor([r.prompt_ids + r.response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].double() / (temperature or 1.0)  # [T, V]
    logp = logits.log_softmax(-1)
    p = len(r.prompt_ids)
    idx = torch.arange(len(r.response_ids))
    return logp[p - 1 + idx, torch.tensor(r.response_ids)]


def test_sampling_params_validation():
    for bad in (
        {"n": 0},
        {"temperature": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"max_new_tokens": 0},
        {"stop": ("",)},
    ):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=field):
            SamplingParams(**bad)
    assert SamplingParams(stop="ab").stop == ("ab",)


def test_greedy_matches_transformers_generate_with_left_padding(tok, model):
    engine = HFEngine(model, tok, max_batch_size=3)  # 4 prompts of different lengths: padding + 2 batches
    assert isinstance(engine, RolloutEngine)
    prompts = [_chat(tok, p) for p in PROMPTS]
    out = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=12))
    assert [len(o) for o in out] == [1, 1, 1, 1]
    for i, p in enumerate(prompts):
        ids = torch.tensor([tok.encode(p, add_special_tokens=False)])
        ref = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=engine.eos_token_ids,
            pad_token_id=engine.pad_token_id,
        )
        ref_resp = ref[0, ids.shape[1] :].tolist()
        r = out[i][0]
        assert r.prompt_index == i and r.prompt_ids == ids[0].tolist()
        # HF pads finished rows; compare up to our stopping point
        assert ref_resp[: len(r.response_ids)] == r.response_ids
        assert r.truncated == (r.finish_reason == "length")
        torch.testing.assert_close(
            torch.tensor(r.logprobs, dtype=torch.float64),
            _teacher_forced_logprobs(model, r, 0.0),
            atol=1e-4,
            rtol=0,
        )


def test_sampled_logprobs_are_temperature_scaled_and_seed_reproducible(tok, model):
    engine = HFEngine(model, tok, max_batch_size=8)
    prompts = [_chat(tok, p) for p in PROMPTS[:3]]
    params = SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=50, max_new_tokens=16, seed=123)
    a = engine.generate(prompts, params)
    b = engine.generate(prompts, params)
    c = engine.generate(
        prompts, SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=50, max_new_tokens=16, seed=7)
    )
    ids = lambda out: [r.response_ids for rs in out for r in rs]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    for rs in a:
        assert len(rs) == 4
        for r in rs:
            assert len(r.logprobs) == len(r.response_ids) >= 1
            torch.testing.assert_close(
                torch.tensor(r.logprobs, dtype=torch.float64),
                _teacher_forced_logprobs(model, r, 0.7),
                atol=1e-4,
                rtol=0,
            )
    # token ids given directly give the same samples as the strings they encode
    d = engine.generate([tok.encode(p, add_special_tokens=False) for p in prompts], params)
    assert ids(d) == ids(a)


def test_top_k_one_and_tiny_top_p_are_greedy(tok, model):
    engine = HFEngine(model, tok)
    prompts = [_chat(tok, p) for p in PROMPTS]
    greedy = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=8))
    for kw in ({"top_k": 1}, {"top_p": 1e-6}):
        out = engine.generate(prompts, SamplingParams(n=3, temperature=1.3, max_new_tokens=8, seed=0, **kw))
        for g, rs in zip(greedy, out):
            assert all(r.response_ids == g[0].response_ids for r in rs)


def test_top_p_keeps_smallest_set_reaching_mass():
    from archer.rollout.hf import sample_next

    # probs 0.5, 0.3, 0.15, 0.05: top_p=0.8 keeps the first two; 0.81 keeps three
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    tokens, logp = sample_next(logits, SamplingParams(top_p=0.8), g)
    assert set(tokens.tolist()) == {0, 1}
    frac = (tokens == 0).double().mean().item()
    assert abs(frac - 0.5 / 0.8) < 0.03
    torch.testing.assert_close(logp, torch.log(torch.tensor([0.5, 0.3]))[tokens])
    tokens, _ = sample_next(logits, SamplingParams(top_p=0.81), g)
    assert set(tokens.tolist()) == {0, 1, 2}
    tokens, _ = sample_next(logits, SamplingParams(top_k=3), g)
    assert set(tokens.tolist()) == {0, 1, 2}


class _CopyLM(torch.nn.Module):
    """A scripted causal LM: at position p it puts all mass on ``doc[p + 1]`` (EOS past the end)."""

    def __init__(self, doc: list[int], vocab: int, eos: int) -> None:
        super().__init__()
        from transformers import Qwen2Config

        self.doc, self.vocab, self.eos = doc, vocab, eos
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = Qwen2Config(
            vocab_size=vocab,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_key_value_heads=1,
            intermediate_size=8,
        )
        self.calls = []

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True
    ):
        self.calls.append(tuple(input_ids.shape))
        nxt = torch.tensor(self.doc + [self.eos] * 1000)[position_ids + 1]  # [B, T]
        logits = torch.full((*input_ids.shape, self.vocab), -30.0)
        logits.scatter_(2, nxt[..., None], 30.0)
        return types.SimpleNamespace(logits=logits)


def test_stop_strings_eos_length_and_finished_rows_leave_the_batch(tok):
    text = "Compute 1+2. Then 1+2=3. So \\boxed{3}"
    doc = tok.encode(text, add_special_tokens=False)
    lm = _CopyLM(doc, len(tok), tok.eos_token_id)
    engine = HFEngine(lm, tok, max_batch_size=16)
    prefixes = [doc[:2], doc[:5], doc[:9]]
    out = engine.generate(prefixes, SamplingParams(temperature=0, max_new_tokens=100))
    for pre, (r,) in zip(prefixes, out):
        assert r.finish_reason == "eos" and not r.truncated
        assert r.response_ids == doc[len(pre) :] + [tok.eos_token_id]
        assert r.text == tok.decode(doc[len(pre) :])  # EOS skipped in text
    # the batch shrinks: rows of different lengths finish at different steps
    lm.calls.clear()
    engine.generate([doc[:2], doc[: len(doc) - 2]], SamplingParams(temperature=0, max_new_tokens=100))
    assert lm.calls[1][0] == 2 and lm.calls[-1][0] == 1
    # stop strings: the response ends at the first "=" or "boxed" after the prompt; text is cut before it
    out = engine.generate(prefixes, SamplingParams(temperature=0, max_new_tokens=100, stop=("=", "boxed")))
    full = tok.decode(doc)
    for pre, (r,) in zip(prefixes, out):
        assert r.finish_reason == "stop" and not r.truncated
        start = len(tok.decode(pre))
        cut = min(k for k in (full.find("=", start), full.find("boxed", start)) if k >= 0)
        assert r.text == full[start:cut]
        assert tok.decode(pre + r.response_ids).endswith(("=", "boxed")) or "=" in tok.decode(
            r.response_ids[-1:]
        )
    kept = engine.generate(
        prefixes[:1], SamplingParams(temperature=0, max_new_tokens=100, stop=("=",), include_stop_str=True)
    )
    assert kept[0][0].text.endswith("=")
    # length: truncated exactly at max_new_tokens
    out = engine.generate(prefixes, SamplingParams(temperature=0, max_new_tokens=3))
    for pre, (r,) in zip(prefixes, out):
        assert r.finish_reason == "length" and r.truncated and r.response_ids == doc[len(pre) : len(pre) + 3]


def test_n_larger_than_batch_and_prefill_once_per_prompt(tok):
    doc = tok.encode("abc def ghi", add_special_tokens=False)
    lm = _CopyLM(doc, len(tok), tok.eos_token_id)
    engine = HFEngine(lm, tok, max_batch_size=4)
    out = engine.generate([doc[:3], doc[:2]], SamplingParams(n=5, temperature=0, max_new_tokens=50))
    assert [len(o) for o in out] == [5, 5]
    assert all(r.response_ids == doc[3:] + [tok.eos_token_id] for r in out[0])
    assert all(r.response_ids == doc[2:] + [tok.eos_token_id] and r.prompt_index == 1 for r in out[1])
    # shortest prompt first; batches of 4 rows: [p1 x4], [p1 x1 + p0 x3], [p0 x2]; each distinct prompt
    # is prefilled once per batch (a call with more than one input column), then its cache is copied
    prefills = [shape for shape in lm.calls if shape[1] > 1]
    assert prefills == [(1, 2), (2, 3), (1, 3)]


def test_update_weights_and_mode_restored(tok, model):
    other = build_tiny_model(tok, seed=9)
    m = build_tiny_model(tok, seed=1)
    engine = HFEngine(m, tok)
    prompts = [_chat(tok, PROMPTS[0])]
    params = SamplingParams(temperature=0, max_new_tokens=6)
    before = engine.generate(prompts, params)[0][0].logprobs
    m.train()
    engine.update_weights(m)  # same object: no-op
    assert m.training  # generate/update restore the caller's mode
    engine.update_weights(other.state_dict())
    after = engine.generate(prompts, params)[0][0].logprobs
    assert m.training and before != after
    assert torch.equal(m.model.embed_tokens.weight, other.model.embed_tokens.weight)
    with pytest.raises(ValueError, match="empty"):
        engine.generate([""], params)
    assert engine.generate([], params) == []
