"""Packed micro-batches (``trainer.pack_sequences``) and token-balanced micro-batches.

A packed forward (rows concatenated without padding, positions restarting per row, block-diagonal causal
attention built by transformers from the positions) must give the padded forward's per-token log-probs,
entropies and parameter gradients up to float rounding, on a tiny Qwen2; accumulating packed
micro-batches must give the one-batch gradient; a model that cannot take packed rows runs padded and
says why once.
"""

from __future__ import annotations

import copy
import math
import random
from types import SimpleNamespace

import pytest
import torch
import transformers
from helpers import tiny_model, tiny_tokenizer

import archer.rl.update as update_mod
from archer.rl.batch import fill_rows, micro_batches, pack
from archer.rl.update import TokenScorer, UpdateSettings, pack_unsupported, update_minibatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (prompt, response) lengths: a 10x spread of responses, a one-token response, two rows of one group
SHAPES = [(5, 3), (9, 30), (4, 1), (7, 12), (5, 3), (3, 22)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _model(tokenizer, dtype, attn="sdpa"):
    model = tiny_model(tokenizer, seed=3, num_layers=2).to(dtype)
    model.config._attn_implementation = attn
    return model


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    rows = [
        (
            torch.randint(3, vocab, (p,), generator=g).tolist(),
            torch.randint(3, vocab, (r,), generator=g).tolist(),
        )
        for p, r in SHAPES
    ]
    rows[4] = (rows[0][0], rows[4][1])  # rows 0 and 4 share their prompt (one group)
    batch = pack(rows, pad_id=0)
    batch["response_mask"][3, 9:12] = 0.0  # an untrained stretch inside a response (tool observation)
    batch["prompt_len"] = torch.tensor([p for p, _ in SHAPES])
    batch["group"] = torch.tensor([0, 1, 2, 3, 0, 4])
    return batch


def _score(scorer, batch, **kw):
    return scorer(
        batch["input_ids"],
        batch["attention_mask"],
        batch["response_mask"],
        temperature=0.9,
        chunk_size=7,
        **kw,
    )


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_logprobs_entropies_and_gradients_match_padded(tokenizer, dtype, attn):
    model = _model(tokenizer, dtype, attn)
    batch = _batch(len(tokenizer))
    mask = batch["response_mask"]
    adv = torch.linspace(-1.0, 1.0, len(SHAPES), dtype=dtype)[:, None]
    results = []
    for scorer in (TokenScorer(model, share_prompts=False), TokenScorer(model, pack_sequences=True)):
        model.zero_grad(set_to_none=True)
        lp, ent = _score(scorer, batch, prompt_len=batch["prompt_len"], group=batch["group"])
        ((lp * adv * mask).sum() + 0.1 * (ent * mask).sum()).backward()
        results.append((lp.detach(), ent.detach(), [p.grad.clone() for p in model.parameters()]))
    assert scorer._no_pack == ""  # the packed path ran
    # eager attention takes its softmax in float32 whatever the model's dtype: float64 is float32-exact there
    tol = TOL[torch.float32 if attn == "eager" else dtype]
    (lp_pad, ent_pad, g_pad), (lp_pack, ent_pack, g_pack) = results
    assert lp_pack.shape == lp_pad.shape and bool((lp_pack[mask == 0] == 0).all())
    torch.testing.assert_close(lp_pack, lp_pad, **tol)
    torch.testing.assert_close(ent_pack, ent_pad, **tol)
    assert sum(float(g.abs().sum()) for g in g_pad) > 0
    for a, b in zip(g_pack, g_pad):
        torch.testing.assert_close(a, b, **tol)


def test_packed_rows_do_not_see_each_other(tokenizer):
    """Changing one row's tokens leaves the other rows' packed log-probs as they were."""
    model = _model(tokenizer, torch.float64)
    batch = _batch(len(tokenizer))
    scorer = TokenScorer(model, pack_sequences=True)
    with torch.no_grad():
        before, _ = _score(scorer, batch)
        batch["input_ids"][1, :5] = (batch["input_ids"][1, :5] + 1) % len(tokenizer)
        after, _ = _score(scorer, batch)
    others = [0, 2, 3, 4, 5]
    torch.testing.assert_close(after[others], before[others], rtol=0, atol=1e-12)
    assert float((after[1] - before[1]).abs().max()) > 1e-6


def test_accumulated_packed_micro_batches_equal_the_one_batch_gradient(tokenizer):
    model = _model(tokenizer, torch.float64)
    batch = _batch(len(tokenizer))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        lp, _ = _score(TokenScorer(model, share_prompts=False), batch, with_entropy=False)
    batch["old_log_prob"] = (lp + 0.3 * torch.randn(lp.shape, generator=g, dtype=lp.dtype)) * batch[
        "response_mask"
    ]
    batch["advantages"] = torch.tensor([1.0, -0.5, 0.7, -1.2, 0.4, -0.9], dtype=lp.dtype)
    batch["rewards"] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0], dtype=lp.dtype)
    settings = UpdateSettings(loss="dapo", agg="token-mean", loss_params={}, grad_clip=1e9, pos_nll_coef=0.1)
    lengths = [p + r for p, r in SHAPES]
    micro = micro_batches(lengths, token_budget=40, packed=True)
    assert len(micro) > 2

    def delta(scorer_kw, parts):
        m = copy.deepcopy(model)
        before = [p.detach().clone() for p in m.parameters()]
        opt = torch.optim.SGD(m.parameters(), lr=1.0)  # parameter change = -gradient
        metrics = update_minibatch(TokenScorer(m, **scorer_kw), opt, batch, parts, settings)
        return [b - p.detach() for b, p in zip(before, m.parameters())], metrics

    one, m_one = delta({"share_prompts": False}, [list(range(len(SHAPES)))])
    packed, m_packed = delta({"pack_sequences": True}, micro)
    assert any(float(d.abs().max()) > 1e-6 for d in one)
    for a, b in zip(packed, one):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert m_packed["loss"] == pytest.approx(m_one["loss"], rel=1e-9)


def test_a_model_that_cannot_pack_runs_padded_and_says_why_once(tokenizer, monkeypatch):
    model = _model(tokenizer, torch.float64)
    batch = _batch(len(tokenizer))
    lines: list[str] = []
    monkeypatch.setattr(update_mod, "pack_unsupported", lambda head: "no packed attention here")
    scorer = TokenScorer(model, pack_sequences=True, log=lines.append)
    with torch.no_grad():
        lp, _ = _score(scorer, batch)
        _score(scorer, batch)
        ref, _ = _score(TokenScorer(model, share_prompts=False), batch)
    assert lines == ["trainer.pack_sequences: padded rows instead, no packed attention here"]
    torch.testing.assert_close(lp, ref, rtol=1e-10, atol=1e-12)


def test_pack_unsupported_names_the_reason(tokenizer):
    model = _model(tokenizer, torch.float32)
    head = update_mod.lm_head(model)
    assert pack_unsupported(head) is None
    assert "plain projection" in pack_unsupported(SimpleNamespace(decoder=None))
    model.config._attn_implementation = "paged|sdpa"
    assert "attention implementation 'paged|sdpa'" in pack_unsupported(head)
    model.config._attn_implementation = "sdpa"
    model.config.layer_types = ["full_attention", "linear_attention"]
    assert "linear_attention" in pack_unsupported(head)


def _first_fit_decreasing_count(lengths: list[int], budget: int) -> int:
    sums: list[int] = []
    for n in sorted(lengths, reverse=True):
        b = next((b for b, s in enumerate(sums) if s + n <= budget), None)
        if b is None:
            sums.append(n)
        else:
            sums[b] += n
    return len(sums)


def test_token_balanced_micro_batches_respect_the_budget_and_balance():
    rng = random.Random(0)
    unbalanced = 0
    for _ in range(300):
        lengths = [rng.randint(5, 50) for _ in range(rng.randint(1, 40))]
        budget = rng.randint(50, 400)
        for packed in (False, True):  # the packed split last: checked further below
            micro = micro_batches(lengths, budget, packed=packed)
            assert sorted(i for m in micro for i in m) == list(range(len(lengths)))
            sums = [sum(lengths[i] for i in m) for m in micro]
            assert max(sums) <= budget
        # packed: as few bins as first-fit decreasing, the lightest within one row of the heaviest (LPT;
        # FFD's bins when LPT needs more)
        assert math.ceil(sum(lengths) / budget) <= len(micro) <= _first_fit_decreasing_count(lengths, budget)
        unbalanced += len(micro) > 1 and max(sums) - min(sums) > max(lengths)
        # padded: contiguous runs of the rows sorted by length, as few as a greedy cut at the budget
        runs = micro_batches(lengths, budget)
        longest = sorted(runs, key=lambda m: (-max(lengths[i] for i in m), -min(lengths[i] for i in m)))
        for a, b in zip(longest, longest[1:]):
            assert min(lengths[i] for i in a) >= max(lengths[i] for i in b)
        assert len(runs) == _greedy_runs(sorted(lengths, reverse=True), budget)
    assert unbalanced <= 3


def _greedy_runs(lengths: list[int], budget: int) -> int:
    runs, total = 0, budget + 1
    for n in lengths:
        runs, total = (runs + 1, n) if total + n > budget else (runs, total + n)
    return runs


SMALL = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
ARCHS = {  # those of tests/models/test_any_model.py
    "llama": lambda: transformers.LlamaConfig(**SMALL, num_key_value_heads=2, tie_word_embeddings=False),
    "mistral": lambda: transformers.MistralConfig(**SMALL, num_key_value_heads=2),
    "phi": lambda: transformers.PhiConfig(**SMALL),  # untied head with a bias
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=300, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=1
    ),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(**SMALL),
    "gemma2": lambda: transformers.Gemma2Config(
        **SMALL, num_key_value_heads=2, head_dim=8
    ),  # soft-capped logits
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_packed_rows_on_other_architectures(arch):
    """Packed = padded log-probs where the model can pack (absolute or rotary positions, biases);
    Gemma-2's soft-capped logits take the full-logits path, padded, and say so."""
    from archer.models.loader import disable_dropout

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(ARCHS[arch]())
    disable_dropout(model)
    batch = _batch(300)
    lines: list[str] = []
    with torch.no_grad():
        ref, _ = _score(TokenScorer(model, share_prompts=False), batch)
        scorer = TokenScorer(model, pack_sequences=True, log=lines.append)
        lp, _ = _score(scorer, batch)
    torch.testing.assert_close(lp, ref, rtol=1e-5, atol=1e-5)
    if arch == "gemma2":
        assert scorer.packs() is False and len(lines) == 1 and "not a plain projection" in lines[0]
    else:
        assert scorer.packs() is True and lines == []


def test_sdpa_rows_fill_packed_rows_as_wide_as_the_longest_row(tokenizer):
    """sdpa takes the block-diagonal mask dense, so rows fill packed rows of the longest row's width
    (first-fit decreasing) rather than one row of every token: lengths 8 39 5 19 8 25 -> [39] [25 8 5]
    [19 8], a [3, 39] input."""
    model = _model(tokenizer, torch.float32)
    batch = _batch(len(tokenizer))
    assert fill_rows([8, 39, 5, 19, 8, 25], 39) == [[1], [5, 0, 2], [3, 4]]
    assert fill_rows([8, 39, 5], 100) == [[1, 0, 2]] and fill_rows([], 10) == []
    seen = []
    decoder = update_mod.lm_head(model).decoder
    handle = decoder.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["input_ids"].shape), with_kwargs=True
    )
    try:
        with torch.no_grad():
            _score(TokenScorer(model, pack_sequences=True), batch)
    finally:
        handle.remove()
    assert seen == [torch.Size([3, 39])]
