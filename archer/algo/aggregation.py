"""Loss aggregation over a mini-batch, exact under gradient accumulation (ALGORITHMS.md section 1).

Four modes reduce a per-token loss ``L`` [B, T] with a response mask ``m`` [B, T]:

- ``token-mean`` (default; DAPO, arXiv 2503.14476): ``sum(L m) / sum(m)``.
- ``seq-mean-token-mean`` (GRPO, arXiv 2402.03300; GSPO): ``mean_i(sum_t L m / sum_t m)``.
- ``seq-mean-token-sum``: ``mean_i sum_t L m``.
- ``seq-mean-token-sum-norm`` (Dr.GRPO, arXiv 2503.20783): ``sum(L m) / (B * L_max)``.

Gradient accumulation. One optimizer step sees a mini-batch split into k micro-batches; every
normaliser above (token count, sequence count, ``L_max``) belongs to the whole mini-batch. Compute it
once with :func:`loss_normalizer` (pass all micro-batch masks) and give the same
:class:`LossNormalizer` to every micro-batch call; the sum of the k micro-batch losses then equals, value
and gradient, the loss of the single big batch. Without a normaliser, the micro-batch itself is the
mini-batch (correct for k = 1 only).

Choices: ``B`` counts the responses with at least one trained token (a fully masked row, e.g. an
overlong-filtered response, neither contributes nor dilutes); ``L_max`` defaults to the padded width of
the widest micro-batch mask (pass the recipe's maximum response length to make it a true constant).
Every denominator is clamped to at least 1, so an all-masked batch gives a zero loss, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


@dataclass(frozen=True)
class LossNormalizer:
    """Denominators of one optimizer step's mini-batch.

    Attributes:
        tokens: number of trained tokens (``sum(m)``) in the whole mini-batch.
        seqs: number of responses with at least one trained token.
        max_len: ``L_max`` of Dr.GRPO (constant response-length normaliser).
        low_entropy_tokens / high_entropy_tokens: sizes of the token subsets of the ``dtc``/``aspo``
            entropy split over the whole mini-batch; their KL sub-terms are token-means over these
            subsets. ``None`` means "use the micro-batch's own subset sizes" (exact only for k = 1).
    """

    tokens: float
    seqs: float
    max_len: float
    low_entropy_tokens: float | None = None
    high_entropy_tokens: float | None = None

    def __post_init__(self) -> None:
        for name in ("tokens", "seqs", "max_len", "low_entropy_tokens", "high_entropy_tokens"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"LossNormalizer.{name} must be >= 0, got {value!r}")


def _as_list(masks: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(masks, torch.Tensor):
        return [masks]
    return list(masks)


def high_entropy_counts_from_mask(mask: torch.Tensor, quantile: float) -> tuple[float, float]:
    """Sizes (low, high) of the per-response entropy split predicted from the mask alone.

    With ``n`` trained tokens of distinct entropies, the linear-interpolation ``quantile`` q sits at
    sorted position ``p = quantile (n - 1)`` and exactly ``n - 1 - floor(p)`` tokens lie strictly above
    it. Exact whenever no two entropies of a response tie at the quantile (the generic float32 case).
    """
    n = (mask != 0).sum(dim=-1).to(torch.float64)  # [B]
    high = torch.where(n > 0, n - 1 - torch.floor(quantile * (n - 1)), torch.zeros_like(n))
    return float((n - high).sum()), float(high.sum())


def loss_normalizer(
    masks: torch.Tensor | Sequence[torch.Tensor],
    *,
    max_len: float | None = None,
    entropies: torch.Tensor | Sequence[torch.Tensor] | None = None,
    entropy_quantile: float | None = None,
) -> LossNormalizer:
    """Build the :class:`LossNormalizer` of a mini-batch from all its micro-batch masks.

    Args:
        masks: response mask [B, T] of the whole mini-batch, or the list of its micro-batch masks
            (widths may differ).
        max_len: Dr.GRPO ``L_max``; default the widest mask width.
        entropies: optional per-token entropies matching ``masks``; when given, the ``dtc``/``aspo``
            subset sizes are counted exactly with ``entropy_quantile`` (default 0.8).
        entropy_quantile: when given without ``entropies``, the subset sizes are predicted from the
            masks (:func:`high_entropy_counts_from_mask`).
    """
    mask_list = [m != 0 for m in _as_list(masks)]
    if not mask_list:
        raise ValueError("loss_normalizer needs at least one mask")
    tokens = float(sum(int(m.sum()) for m in mask_list))
    seqs = float(sum(int(m.any(dim=-1).sum()) for m in mask_list))
    width = max(m.shape[-1] for m in mask_list)
    low = high = None
    if entropies is not None:
        from archer.algo.losses import split_by_entropy  # local: losses imports this module

        ent_list = _as_list(entropies)
        if len(ent_list) != len(mask_list):
            raise ValueError(f"got {len(ent_list)} entropy tensors for {len(mask_list)} masks")
        q = 0.8 if entropy_quantile is None else entropy_quantile
        low = high = 0.0
        for m, h in zip(mask_list, ent_list):
            is_high = split_by_entropy(h, m, q)
            high += float(is_high.sum())
            low += float((m & ~is_high).sum())
    elif entropy_quantile is not None:
        low = high = 0.0
        for m in mask_list:
            lo, hi = high_entropy_counts_from_mask(m, entropy_quantile)
            low += lo
            high += hi
    return LossNormalizer(
        tokens=tokens,
        seqs=seqs,
        max_len=float(width if max_len is None else max_len),
        low_entropy_tokens=low,
        high_entropy_tokens=high,
    )


def _token_mean(loss: torch.Tensor, mask: torch.Tensor, norm: LossNormalizer) -> torch.Tensor:
    return (loss * mask).sum() / max(norm.tokens, 1.0)


def _seq_mean_token_mean(loss: torch.Tensor, mask: torch.Tensor, norm: LossNormalizer) -> torch.Tensor:
    per_seq = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]; empty rows give 0
    return per_seq.sum() / max(norm.seqs, 1.0)


def _seq_mean_token_sum(loss: torch.Tensor, mask: torch.Tensor, norm: LossNormalizer) -> torch.Tensor:
    return (loss * mask).sum() / max(norm.seqs, 1.0)


def _seq_mean_token_sum_norm(loss: torch.Tensor, mask: torch.Tensor, norm: LossNormalizer) -> torch.Tensor:
    return (loss * mask).sum() / max(norm.seqs * norm.max_len, 1.0)


_AGGREGATORS: dict[str, Callable[[torch.Tensor, torch.Tensor, LossNormalizer], torch.Tensor]] = {
    "token-mean": _token_mean,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum": _seq_mean_token_sum,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
}


def check_agg_mode(mode: str) -> None:
    if mode not in _AGGREGATORS:
        raise ValueError(f"unknown aggregation mode {mode!r}; valid: {list(AGG_MODES)}")


def aggregate_loss(
    loss: torch.Tensor,
    response_mask: torch.Tensor,
    mode: str = "token-mean",
    normalizer: LossNormalizer | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar with ``mode``.

    Masked positions are zeroed with ``torch.where`` (not multiplied), so a NaN or inf there cannot leak
    into the value or the gradient. ``normalizer`` is the whole mini-batch's (see module docstring).
    """
    check_agg_mode(mode)
    if loss.shape != response_mask.shape:
        raise ValueError(f"loss shape {tuple(loss.shape)} != mask shape {tuple(response_mask.shape)}")
    mask_bool = response_mask != 0
    norm = normalizer if normalizer is not None else loss_normalizer(mask_bool)
    safe = torch.where(mask_bool, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    return _AGGREGATORS[mode](safe, mask_bool.to(loss.dtype), norm)
