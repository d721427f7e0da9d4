"""What the config implies for one step: response budget, sampling seeds, LR schedule, reference model.

Pure functions of the config (and the step), shared by the run's state (:mod:`archer.rl.run`), the
stages (:mod:`archer.rl.step`) and the loop, so each rule has one home.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from archer.algo.losses import POLICY_LOSSES
from archer.config import Config
from archer.data.curriculum import Curriculum, length_stages
from archer.rollout.base import SamplingParams


def max_new_tokens_at(cfg: Config, step: int) -> int:
    """The length curriculum: the last stage whose start step is <= ``step`` (default max_new_tokens);
    ``rollout.length_stages`` is one instance of :mod:`archer.data.curriculum`."""

    return (
        Curriculum(length_stages(cfg.rollout.length_stages), cfg.rollout.max_new_tokens)
        .at(step)
        .max_new_tokens
    )


def response_budget(cfg: Config, max_new: int) -> int:
    """Response tokens a rollout may hold: ``max_new`` per turn, times ``rollout.max_turns`` for a tool
    rollout (observations included); the length DAPO's overlong shaping and a constant loss normaliser
    measure against."""
    return max_new * (cfg.rollout.max_turns if cfg.rollout.tools else 1)


def needs_reference(cfg: Config) -> bool:
    """A reference model is needed only when a KL coefficient of the loss (registry default or
    ``algo.loss_params``) is > 0."""

    a = cfg.algo
    params = POLICY_LOSSES[a.loss].resolve(a.loss, dict(a.loss_params))
    return params["kl_coef"] > 0 or params.get("high_entropy_kl_coef", 0.0) > 0


def lr_lambda(cfg: Config) -> Callable[[int], float]:
    """Linear warm-up, then constant / cosine / linear decay to ``min_lr_ratio``."""
    o, total = cfg.optim, max(cfg.trainer.steps, 1)

    def fn(step: int) -> float:
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        shape = (
            0.5 * (1 + torch.cos(torch.tensor(frac * torch.pi)).item())
            if o.schedule == "cosine"
            else 1 - frac
        )
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return fn


def sampling_params(cfg: Config, step: int, round_index: int, rank: int, max_new: int) -> Any:
    """The rollout sampling settings of one round (a distinct seed per step, round and rank)."""

    r = cfg.rollout
    seed = cfg.trainer.seed * 1_000_003 + step * 101 + round_index + (rank << 40)
    return SamplingParams(
        n=r.n,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        max_new_tokens=max_new,
        stop=tuple(r.stop),
        seed=seed,
    )
