"""Chunked per-token log-probabilities and entropies from last hidden states and the output embedding.

``token_logprobs(hidden, weight, labels, chunk_size=None, temperature=1.0) -> (logprobs, entropy)``
computes ``log softmax(hidden @ weight.T / temperature)[label]`` and the full-vocabulary entropy of the
same distribution, chunk by chunk over the N positions, so the [N, V] logits never exist at once: a
custom autograd Function keeps only the per-position log-sum-exp and entropy (N floats each) and
recomputes each chunk's logits in backward (the "chunked/fused linear cross-entropy" idea, e.g. Liger
Kernel, arXiv 2410.10989, and Cut Cross-Entropy, arXiv 2411.09009). Both outputs are differentiable in
``hidden`` and ``weight``.

Assumptions and limits: no bias; ``hidden`` [..., d], ``weight`` [V, d], ``labels`` [...] (int); label
-100 means "ignored": its log-prob is 0 and it gets no log-prob gradient (its entropy is still the
entropy of that position). The softmax math runs in float32 (float64 for float64 inputs); half-precision
matmuls stay in the input dtype and the weight gradient is accumulated in float32. The default chunk
keeps one chunk's float32 logits near 64 MB; forward and backward each reuse two such buffers.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
CHUNK_BYTES = 64 * 2**20


def default_chunk_size(vocab_size: int, element_size: int = 4) -> int:
    """Rows per chunk so one chunk's logits take about 64 MB."""
    return max(1, CHUNK_BYTES // max(1, vocab_size * element_size))


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_logits(
    h: torch.Tensor, weight: torch.Tensor, temperature: float, out: torch.Tensor
) -> torch.Tensor:
    """``h @ weight.T / temperature`` [c, V] written into the reusable buffer ``out`` (math dtype)."""
    if temperature != 1.0:
        h = h / temperature  # [c, d]: cheaper than dividing the [c, V] logits
    if h.dtype == out.dtype:
        return torch.mm(h, weight.T, out=out)
    return out.copy_(h @ weight.T)  # half precision matmul, softmax math in float32


def _buffers(n: int, chunk: int, vocab: int, dt: torch.dtype, device: torch.device):
    """Two [chunk, V] buffers reused by every chunk (no per-chunk allocation or page faults)."""
    rows = min(chunk, n)
    return torch.empty(rows, vocab, dtype=dt, device=device), torch.empty(
        rows, vocab, dtype=dt, device=device
    )


class _ChunkedLogprobEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size, temperature):
        n, vocab = hidden.shape[0], weight.shape[0]
        dt = _math_dtype(hidden.dtype)
        valid = labels != IGNORE_INDEX  # [N]
        safe = torch.where(valid, labels, torch.zeros_like(labels))  # [N]
        logp = torch.empty(n, dtype=dt, device=hidden.device)
        ent = torch.empty(n, dtype=dt, device=hidden.device)
        lse = torch.empty(n, dtype=dt, device=hidden.device)
        zbuf, pbuf = _buffers(n, chunk_size, vocab, dt, hidden.device)
        for s in range(0, n, chunk_size):
            e = min(n, s + chunk_size)
            c = e - s
            z = _chunk_logits(hidden[s:e], weight, temperature, zbuf[:c])  # [c, V]
            zmax = z.amax(dim=-1, keepdim=True)  # [c, 1]
            z.sub_(zmax)  # shifted logits z' <= 0
            p = torch.exp(z, out=pbuf[:c])  # [c, V] unnormalised probabilities
            total = p.sum(-1)  # [c]
            log_total = total.log()
            dot = torch.einsum("ij,ij->i", p, z)  # [c] sum_j e^z'_j z'_j, without a [c, V] temporary
            # log p_label = z'_label - log_total;  H = log_total - E_p[z']
            logp[s:e] = z.gather(1, safe[s:e, None]).squeeze(1) - log_total
            ent[s:e] = log_total - dot / total
            lse[s:e] = zmax.squeeze(1) + log_total
        del zbuf, pbuf
        logp = torch.where(valid, logp, torch.zeros((), dtype=dt, device=hidden.device))
        ctx.save_for_backward(hidden, weight, safe, valid, lse, ent)
        ctx.chunk_size = chunk_size
        ctx.temperature = temperature
        ctx.set_materialize_grads(False)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, safe, valid, lse, ent = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (g_logp is None and g_ent is None) or not (need_h or need_w):
            return None, None, None, None, None
        n, vocab, temp, chunk = hidden.shape[0], weight.shape[0], ctx.temperature, ctx.chunk_size
        dt = _math_dtype(hidden.dtype)
        low_precision = hidden.dtype != dt
        grad_h = torch.empty(hidden.shape, dtype=dt, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=dt, device=weight.device) if need_w else None
        inv_t = 1.0 / temp
        zero = torch.zeros((), dtype=dt, device=hidden.device)
        g_lp = torch.where(valid, g_logp.to(dt), zero) if g_logp is not None else torch.zeros_like(lse)
        g_h = g_ent.to(dt) if g_ent is not None else None
        zbuf, pbuf = _buffers(n, chunk, vocab, dt, hidden.device)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            c = e - s
            h = hidden[s:e]
            logp_all = _chunk_logits(h, weight, temp, zbuf[:c]).sub_(lse[s:e, None])  # [c, V] log p
            p = torch.exp(logp_all, out=pbuf[:c])  # [c, V]
            # dL/dz = g_lp (onehot - p) - g_H p (log p + H) = p (alpha + beta log p) + g_lp onehot, with
            # alpha = -(g_lp + g_H H), beta = -g_H; the 1/T of dz/dlogits is folded in.
            if g_h is not None:
                beta = -inv_t * g_h[s:e, None]  # [c, 1]
                alpha = -inv_t * (g_lp[s:e, None] + g_h[s:e, None] * ent[s:e, None])  # [c, 1]
                gz = torch.addcmul(alpha, logp_all, beta, out=logp_all).mul_(p)
            else:
                gz = p.mul_(-inv_t * g_lp[s:e, None])
            if g_logp is not None:
                gz.scatter_add_(1, safe[s:e, None], inv_t * g_lp[s:e, None])
            if need_h:
                if low_precision:
                    grad_h[s:e] = (gz.to(weight.dtype) @ weight).to(dt)
                else:
                    torch.mm(gz, weight, out=grad_h[s:e])
            if need_w:
                grad_w.addmm_(gz.T, h.to(dt))
        del zbuf, pbuf
        return (
            grad_h.to(hidden.dtype) if need_h else None,
            grad_w.to(weight.dtype) if need_w else None,
            None,
            None,
            None,
        )


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs and full-vocabulary entropies, never materialising all logits.

    Args:
        hidden: [N, d] (or [..., d]) last hidden states; weight: [V, d] output embedding (lm_head).
        labels: [N] (or [...]) target token ids; -100 = ignored (log-prob 0, no log-prob gradient).
        chunk_size: positions per chunk; None adapts to V (about 64 MB of float32 logits per chunk).
        temperature: logits are divided by it (the sampling temperature of the rollout).
    Returns:
        ``(logprobs, entropy)``, each shaped like ``labels``, float32 (float64 for float64 inputs).
    """
    if hidden.shape[-1] != weight.shape[-1] or weight.dim() != 2:
        raise ValueError(
            f"hidden [..., d] and weight [V, d] disagree: {tuple(hidden.shape)}, {tuple(weight.shape)}"
        )
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} != hidden leading shape {tuple(hidden.shape[:-1])}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer token ids, got {labels.dtype}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden dtype {hidden.dtype} != weight dtype {weight.dtype}")
    vocab = weight.shape[0]
    bad = ((labels < 0) & (labels != IGNORE_INDEX)) | (labels >= vocab)
    if bool(bad.any()):
        raise ValueError(f"labels must be in [0, {vocab}) or {IGNORE_INDEX}")
    if chunk_size is None:
        chunk_size = default_chunk_size(vocab, torch.finfo(_math_dtype(hidden.dtype)).bits // 8)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    lead = labels.shape
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_l = labels.reshape(-1).long()
    logp, ent = _ChunkedLogprobEntropy.apply(flat_h, weight, flat_l, int(chunk_size), float(temperature))
    return logp.reshape(lead), ent.reshape(lead)
