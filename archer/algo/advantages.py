"""Outcome advantage estimators over groups of responses (ALGORITHMS.md section 4).

``compute_advantages(name, rewards)`` takes rewards [num_prompts, group_size] (one group of
``group_size`` responses per prompt) and returns advantages of the same shape, float32 (float64 for
float64 rewards):

- ``grpo`` (DeepSeekMath, arXiv 2402.03300): ``(R - mean_g) / (std_g + 1e-6)``, unbiased std.
- ``dr_grpo`` (Dr.GRPO, arXiv 2503.20783): ``R - mean_g``.
- ``rloo`` (Ahmadian et al., arXiv 2402.14740): ``R - mean of the other G-1 rewards``.
- ``reinforce_pp`` (REINFORCE++ with group baseline, arXiv 2501.03262): ``R - mean_g``, divided by
  the unbiased std of those centred values over the whole batch (+1e-6).

Groups of one response, and groups whose rewards are all equal, get advantage exactly 0. Non-finite
rewards are an error (a verifier that fails must give a number, see ``archer.rewards``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EPS = 1e-6


def _centred(r: torch.Tensor) -> torch.Tensor:
    return r - r.mean(dim=-1, keepdim=True)  # [P, G]


def _grpo(r: torch.Tensor) -> torch.Tensor:
    return _centred(r) / (r.std(dim=-1, keepdim=True, unbiased=True) + EPS)


def _dr_grpo(r: torch.Tensor) -> torch.Tensor:
    return _centred(r)


def _rloo(r: torch.Tensor) -> torch.Tensor:
    g = r.shape[-1]
    # R - (sum - R) / (G - 1) = G / (G - 1) * (R - mean)
    return _centred(r) * (g / (g - 1))


def _reinforce_pp(r: torch.Tensor) -> torch.Tensor:
    centred = _centred(r)  # [P, G]
    spread = centred.std(unbiased=True) if centred.numel() > 1 else centred.new_zeros(())
    return centred / (spread + EPS)


ADVANTAGE_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "grpo": _grpo,
    "dr_grpo": _dr_grpo,
    "rloo": _rloo,
    "reinforce_pp": _reinforce_pp,
}


def advantage_names() -> list[str]:
    return sorted(ADVANTAGE_ESTIMATORS)


def compute_advantages(name: str, rewards: torch.Tensor) -> torch.Tensor:
    """Advantages [num_prompts, group_size] of ``rewards`` [num_prompts, group_size] (see module doc)."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {advantage_names()}")
    rewards = torch.as_tensor(rewards)
    if rewards.dim() != 2:
        raise ValueError(
            f"rewards must be [num_prompts, group_size], got shape {tuple(rewards.shape)}; "
            "reshape flat rewards with .view(num_prompts, group_size)"
        )
    dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r = rewards.detach().to(torch.float64)  # float64 so equal rewards centre to exactly 0
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf")
    if r.numel() == 0 or r.shape[-1] == 1:
        return torch.zeros(rewards.shape, dtype=dtype, device=rewards.device)
    adv = ADVANTAGE_ESTIMATORS[name](r)
    flat = (r == r[:, :1]).all(dim=-1, keepdim=True)  # [P, 1] zero-variance groups
    adv = torch.where(flat, torch.zeros((), dtype=adv.dtype, device=adv.device), adv)
    return adv.to(dtype)
