"""Algorithm library: policy losses, loss aggregation, advantages, regularisers, chunked log-probs.

Formulas and defaults: ``docs/ALGORITHMS.md`` sections 1-4. Public entry points:

- :func:`compute_policy_loss` (registry :data:`POLICY_LOSSES`) with :func:`loss_normalizer` for exact
  gradient accumulation;
- :func:`compute_advantages` (registry :data:`ADVANTAGE_ESTIMATORS`);
- regularisers: :func:`kl_penalty`, :func:`kl_reward_penalty`, :func:`entropy_bonus`,
  :class:`AdaptiveEntropyController`, :func:`positive_nll_loss`, :func:`truncated_is_weights`;
- :func:`rollout_correction` (registry :data:`ROLLOUT_CORRECTIONS`): the rollout-engine corrections
  (token/sequence TIS and MIS, token/sequence/geometric rejection, IcePop), ALGORITHMS.md section 3b;
- :func:`token_logprobs` (log-probs and entropies without materialising the [N, V] logits).
"""

from archer.algo.advantages import ADVANTAGE_ESTIMATORS, advantage_names, compute_advantages
from archer.algo.aggregation import AGG_MODES, LossNormalizer, aggregate_loss, loss_normalizer
from archer.algo.logprobs import default_chunk_size, token_logprobs
from archer.algo.losses import POLICY_LOSSES, compute_policy_loss, policy_loss_names, split_by_entropy
from archer.algo.regularizers import (
    KL_ESTIMATORS,
    AdaptiveEntropyController,
    entropy_bonus,
    kl_penalty,
    kl_reward_penalty,
    positive_nll_loss,
    truncated_is_weights,
)
from archer.algo.rollout_correction import ROLLOUT_CORRECTIONS, correction_names, rollout_correction

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "ROLLOUT_CORRECTIONS",
    "AdaptiveEntropyController",
    "LossNormalizer",
    "advantage_names",
    "aggregate_loss",
    "compute_advantages",
    "compute_policy_loss",
    "correction_names",
    "default_chunk_size",
    "entropy_bonus",
    "kl_penalty",
    "kl_reward_penalty",
    "loss_normalizer",
    "policy_loss_names",
    "positive_nll_loss",
    "rollout_correction",
    "split_by_entropy",
    "token_logprobs",
    "truncated_is_weights",
]
