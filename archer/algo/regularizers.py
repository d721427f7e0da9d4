"""Regularisers of the policy loss (ALGORITHMS.md section 3).

- KL estimators k1/k2/k3 (Schulman, "Approximating KL divergence", 2020), as a loss term or as a
  per-token reward penalty. With ``d = ref - logp``: ``k1 = -d``, ``k2 = d^2 / 2``,
  ``k3 = exp(d) - d - 1`` (``d`` clamped to [-20, 20], result to [-10, 10]).
- Fixed entropy bonus ``L -= alpha * agg(H)``.
- Skywork-OR1 adaptive entropy control (arXiv 2505.22312): :class:`AdaptiveEntropyController`.
- Klear-Reasoner positive-sample NLL (arXiv 2508.07629): :func:`positive_nll_loss`.
- Truncated importance sampling between the rollout engine and the trainer (Yao et al., "Your efficient
  RL framework secretly brings you off-policy RL training", 2025): :func:`truncated_is_weights`.

All functions take [B, T] tensors and a response mask (bool or 0/1 float); they compute in float32 at
least.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from archer.algo.aggregation import LossNormalizer, aggregate_loss


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Cast to float32, or keep float64."""
    return x if x.dtype == torch.float64 else x.float()


def _kl_k1(d: torch.Tensor) -> torch.Tensor:
    return -d


def _kl_k2(d: torch.Tensor) -> torch.Tensor:
    return 0.5 * d.square()


def _kl_k3(d: torch.Tensor) -> torch.Tensor:
    d = d.clamp(-20.0, 20.0)
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "k1": _kl_k1,
    "k2": _kl_k2,
    "k3": _kl_k3,
}


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate [B, T]; differentiable in ``log_prob``."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; valid: {sorted(KL_ESTIMATORS)}")
    d = _wide(ref_log_prob) - _wide(log_prob)  # [B, T]
    return KL_ESTIMATORS[estimator](d)


def kl_reward_penalty(
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> torch.Tensor:
    """KL as a reward penalty (``kl_in_reward``): ``-kl_coef * kl`` per trained token [B, T], detached.

    Add it to token-level rewards, or ``.sum(-1)`` it for an outcome reward per response.
    """
    kl = kl_penalty(old_log_prob.detach(), ref_log_prob.detach(), estimator)
    return torch.where(response_mask != 0, -kl_coef * kl, torch.zeros_like(kl))


def entropy_bonus(
    entropy: torch.Tensor,
    response_mask: torch.Tensor,
    coef: float,
    agg: str = "token-mean",
    normalizer: LossNormalizer | None = None,
) -> torch.Tensor:
    """The term to add to the loss for an entropy bonus: ``-coef * agg(H)`` (a scalar)."""
    return -coef * aggregate_loss(_wide(entropy), response_mask, agg, normalizer)


@dataclass
class AdaptiveEntropyController:
    """Skywork-OR1 adaptive entropy control (arXiv 2505.22312, section 3.2).

    After each step, measure ``e = -mean(old_log_prob over m)`` (the sampled tokens' mean surprisal, an
    entropy estimate) and call :meth:`update`: ``c <- clip(c + delta if e < target else c - delta,
    [0, c_max])``. The bonus coefficient :attr:`alpha` is ``c`` while ``e < target`` and 0 otherwise.
    """

    target: float = 0.2
    delta: float = 1e-4
    c_max: float = 0.005
    coef: float = 0.0
    active: bool = False

    def __post_init__(self) -> None:
        if not self.target >= 0:
            raise ValueError(f"AdaptiveEntropyController.target must be >= 0, got {self.target!r}")
        if not self.delta >= 0:
            raise ValueError(f"AdaptiveEntropyController.delta must be >= 0, got {self.delta!r}")
        if not self.c_max >= 0:
            raise ValueError(f"AdaptiveEntropyController.c_max must be >= 0, got {self.c_max!r}")
        if not 0 <= self.coef <= self.c_max:
            raise ValueError(f"AdaptiveEntropyController.coef must be in [0, c_max], got {self.coef!r}")

    @staticmethod
    def measure(old_log_prob: torch.Tensor, response_mask: torch.Tensor) -> float:
        """``e = -mean(old_log_prob)`` over trained tokens (0 for an empty mask)."""
        m = response_mask != 0
        n = int(m.sum())
        if n == 0:
            return 0.0
        return float(-(_wide(old_log_prob.detach())[m]).double().mean())

    def update(self, entropy: float) -> float:
        """Apply one step of the rule with the measured entropy ``e``; return the new :attr:`alpha`."""
        below = entropy < self.target
        step = self.delta if below else -self.delta
        self.coef = min(max(self.coef + step, 0.0), self.c_max)
        self.active = below
        return self.alpha

    @property
    def alpha(self) -> float:
        return self.coef if self.active else 0.0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - set(asdict(self))
        if unknown:
            raise KeyError(f"unknown AdaptiveEntropyController state keys {sorted(unknown)}")
        for key, value in state.items():
            setattr(self, key, value)
        self.__post_init__()


def positive_nll_loss(
    log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    rewards: torch.Tensor,
    *,
    coef: float = 0.1,
    max_reward: float | None = None,
    total_tokens: float | None = None,
) -> torch.Tensor:
    """Klear-Reasoner positive-sample NLL: ``coef * token-mean(-logp)`` over correct responses.

    Args:
        log_prob: [B, T] current log-probs. response_mask: [B, T]. rewards: [B] response rewards.
        max_reward: reward that marks a correct response; default the batch maximum. Pass the recipe's
            value (e.g. 1.0) under gradient accumulation so every micro-batch uses the same rule.
        total_tokens: trained tokens of correct responses over the whole mini-batch (the token-mean's
            denominator under accumulation); default this batch's count.
    """
    rewards = rewards.reshape(-1)
    if rewards.shape[0] != log_prob.shape[0]:
        raise ValueError(f"rewards has {rewards.shape[0]} entries for {log_prob.shape[0]} responses")
    best = float(rewards.max()) if max_reward is None else max_reward
    positive = (rewards >= best).unsqueeze(-1) & (response_mask != 0)  # [B, T]
    count = float(positive.sum()) if total_tokens is None else total_tokens
    nll = torch.where(positive, -_wide(log_prob), torch.zeros((), device=log_prob.device))
    return coef * nll.sum() / max(count, 1.0)


def truncated_is_weights(
    old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, cap: float = 2.0
) -> torch.Tensor:
    """Per-token truncated IS weight ``min(exp(old - rollout), cap)`` [B, T], detached."""
    if not cap > 0:
        raise ValueError(f"tis_cap must be > 0, got {cap!r}")
    diff = (_wide(old_log_prob) - _wide(rollout_log_prob)).detach().clamp(-20.0, 20.0)
    return torch.exp(diff).clamp(max=cap)
