"""Chunked token log-probs and entropies against a float64 naive computation, values and gradients."""

from __future__ import annotations

import pytest
import torch

from archer.algo import default_chunk_size, token_logprobs


def naive64(hidden, weight, labels, temperature=1.0):
    z = (hidden.double() @ weight.double().T) / temperature  # [N, V]
    logsm = torch.log_softmax(z, dim=-1)
    valid = labels != -100
    lp = logsm.gather(1, labels.clamp(min=0)[:, None]).squeeze(1) * valid
    ent = -(logsm.exp() * logsm).sum(-1)
    return lp, ent


def make(n, d, v, seed, dtype=torch.float32, ignore=()):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen, dtype=torch.float64) * 1.5
    weight = torch.randn(v, d, generator=gen, dtype=torch.float64) / d**0.5
    labels = torch.randint(0, v, (n,), generator=gen)
    for i in ignore:
        labels[i] = -100
    a = torch.randn(n, generator=gen, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    return hidden.to(dtype), weight.to(dtype), labels, a, b


def grads(fn, hidden, weight, labels, a, b, use_lp=True, use_ent=True, **kw):
    h = hidden.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    lp, ent = fn(h, w, labels, **kw)
    loss = 0
    if use_lp:
        loss = loss + (a.to(lp.dtype) * lp).sum()
    if use_ent:
        loss = loss + (b.to(ent.dtype) * ent).sum()
    gh, gw = torch.autograd.grad(loss, (h, w))
    return lp, ent, gh, gw


def assert_close64(got, want):
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("n", "d", "v", "chunk", "temperature"),
    [
        (37, 16, 101, 8, 1.0),
        (53, 24, 257, 10, 0.7),
        (29, 8, 64, None, 1.3),
        (5, 12, 33, 64, 1.0),
        (7, 4, 9, 1, 0.9),
    ],
)
def test_matches_float64_naive_values_and_grads(n, d, v, chunk, temperature):
    hidden, weight, labels, a, b = make(n, d, v, seed=n, ignore=(0, n // 2))
    want = grads(naive64, hidden.double(), weight.double(), labels, a, b, temperature=temperature)
    got = grads(token_logprobs, hidden, weight, labels, a, b, chunk_size=chunk, temperature=temperature)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    for g, w in zip(got, want):
        assert_close64(g, w)
    assert got[0][0].item() == 0.0  # ignored label


@pytest.mark.parametrize(("use_lp", "use_ent"), [(True, False), (False, True)])
def test_gradient_through_one_output_only(use_lp, use_ent):
    hidden, weight, labels, a, b = make(31, 12, 97, seed=3)
    want = grads(naive64, hidden.double(), weight.double(), labels, a, b, use_lp, use_ent)
    got = grads(token_logprobs, hidden, weight, labels, a, b, use_lp, use_ent, chunk_size=7)
    for g, w in zip(got[2:], want[2:]):
        assert_close64(g, w)


def test_float64_inputs_are_exact_and_stay_float64():
    hidden, weight, labels, a, b = make(19, 8, 50, seed=4, dtype=torch.float64)
    want = grads(naive64, hidden, weight, labels, a, b, temperature=0.8)
    got = grads(token_logprobs, hidden, weight, labels, a, b, chunk_size=6, temperature=0.8)
    for g, w in zip(got, want):
        assert g.dtype == torch.float64
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_bfloat16_inputs_close_to_float32_result():
    hidden, weight, labels, a, b = make(23, 16, 80, seed=5)
    ref = grads(naive64, hidden.bfloat16().double(), weight.bfloat16().double(), labels, a, b)
    got = grads(token_logprobs, hidden.bfloat16(), weight.bfloat16(), labels, a, b, chunk_size=5)
    assert got[0].dtype == torch.float32 and got[2].dtype == torch.bfloat16
    torch.testing.assert_close(got[0].double(), ref[0], rtol=0.05, atol=0.05)
    torch.testing.assert_close(got[1].double(), ref[1], rtol=0.05, atol=0.05)
    torch.testing.assert_close(got[3].double(), ref[3], rtol=0.05, atol=0.05)


def test_batched_leading_dims_and_empty_input():
    hidden, weight, labels, *_ = make(12, 8, 40, seed=6)
    lp, ent = token_logprobs(hidden.view(3, 4, 8), weight, labels.view(3, 4), chunk_size=5)
    lp_flat, ent_flat = token_logprobs(hidden, weight, labels, chunk_size=5)
    assert lp.shape == (3, 4) and torch.equal(lp.flatten(), lp_flat) and torch.equal(ent.flatten(), ent_flat)
    lp0, ent0 = token_logprobs(hidden[:0], weight, labels[:0])
    assert lp0.shape == (0,) and ent0.shape == (0,)


def test_never_saves_full_logits_for_backward():
    n, v = 64, 300
    hidden, weight, labels, *_ = make(n, 8, v, seed=7)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp, ent = token_logprobs(
            hidden.requires_grad_(True), weight.requires_grad_(True), labels, chunk_size=16
        )
    assert sizes and max(sizes) < n * v / 4
    (lp.sum() + ent.sum()).backward()


def test_bad_arguments_raise():
    hidden, weight, labels, *_ = make(4, 8, 10, seed=8)
    with pytest.raises(ValueError, match="labels must be in"):
        token_logprobs(hidden, weight, torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="labels must be in"):
        token_logprobs(hidden, weight, torch.tensor([0, -1, 3, 2]))
    with pytest.raises(ValueError, match="integer"):
        token_logprobs(hidden, weight, labels.float())
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(hidden, weight, labels, temperature=0.0)
    with pytest.raises(ValueError, match="disagree"):
        token_logprobs(hidden, weight[:, :4], labels)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(hidden, weight, labels, chunk_size=0)


def test_default_chunk_targets_64mb_of_float32_logits():
    assert default_chunk_size(65536) == 256
    assert (
        default_chunk_size(151936) * 151936 * 4 <= 64 * 2**20 < (default_chunk_size(151936) + 1) * 151936 * 4
    )
    assert default_chunk_size(10**9) == 1
