"""Bradley-Terry loss for reward models (Bradley & Terry 1952; as used by AceCoder, arXiv:2502.01718).

The model gives a scalar ``r(x, y)``; the probability that ``y_c`` is preferred to ``y_r`` is
``sigmoid(r_c - r_r)`` and the loss is its negative log-likelihood, averaged over pairs::

    L = mean_i  -log sigmoid(r_c[i] - r_r[i])      dL/dr_c[i] = -(1 - sigmoid(d_i)) / P

computed with ``logsigmoid`` (finite for any margin). Only differences of scores are learnt: the scale
and offset of ``r`` are free, so a score is meaningful relative to other scores of the same model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_chosen - r_rejected)`` over pairs; both tensors ``[P]``."""
    if r_chosen.shape != r_rejected.shape or r_chosen.dim() != 1 or r_chosen.numel() == 0:
        raise ValueError(
            f"need two non-empty [P] tensors of one shape, got {tuple(r_chosen.shape)} and {tuple(r_rejected.shape)}"
        )
    return -F.logsigmoid(r_chosen - r_rejected).mean()  # [] scalar


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of pairs ranked right (``r_chosen > r_rejected``; a tie counts as wrong)."""
    if r_chosen.numel() == 0:
        return 0.0
    return float((r_chosen > r_rejected).float().mean())
