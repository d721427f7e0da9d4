"""The rollout engine protocol: sampling parameters, one sampled response, and the engine interface.

Every engine (``archer.rollout.hf.HFEngine`` on transformers, a vLLM engine later) takes prompts as
strings (already chat-templated by the caller, tokenized as-is without extra special tokens) or as
token-id lists, and returns ``n`` :class:`Rollout` per prompt, in prompt order.

Log-probs: ``Rollout.logprobs[t]`` is the log-probability of response token ``t`` under the
temperature-scaled distribution ``softmax(logits / temperature)`` *before* top-k / top-p truncation,
which is the quantity a trainer recomputes as the behaviour policy's ``old_log_prob``. With
``temperature == 0`` (greedy) it is taken under ``softmax(logits)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

FINISH_REASONS = ("eos", "stop", "length")


@dataclass
class SamplingParams:
    """How to sample.

    n: samples per prompt. temperature: 0 means greedy (argmax). top_p: nucleus mass in (0, 1]
    (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"). top_k: keep the k most
    likely tokens, 0 = all. max_new_tokens: response budget. stop: strings that end a response when
    they appear in its decoded text (cut from ``Rollout.text`` unless ``include_stop_str``).
    seed: seeds the sampler's generator (same seed, prompts and batch size -> same samples); None
    draws one from torch's global RNG.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    include_stop_str: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"SamplingParams.n must be an int >= 1, got {self.n!r}")
        if not self.temperature >= 0:
            raise ValueError(
                f"SamplingParams.temperature must be >= 0 (0 = greedy), got {self.temperature!r}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(
                f"SamplingParams.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}"
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"SamplingParams.seed must be an int or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Rollout:
    """One sampled response.

    ``response_ids`` are the generated tokens, including the EOS token when one ended the response and
    the token that completed a stop string; ``logprobs`` has one entry per response token. ``text`` is
    the decoded response with special tokens skipped, cut before a matched stop string.
    """

    prompt_index: int
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    text: str
    truncated: bool
    finish_reason: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(
                f"Rollout.finish_reason must be one of {FINISH_REASONS}, got {self.finish_reason!r}"
            )


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer and the evaluation runner need from a generation backend."""

    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Rollout]]:
        """``[num_prompts][params.n]`` rollouts, in prompt order."""
        ...

    def update_weights(self, state_dict_or_model: Any, version: int | None = None) -> None:
        """Load the trainer's current weights (a no-op when the engine shares the trainer's model) as
        weight ``version`` when the engine numbers its weights (default: its next number)."""
        ...


def shares_policy(engine: Any) -> bool:
    """True when ``engine`` samples from the trainer's own module (no weight sync needed, and with
    float32 compute its log-probs are the trainer's to float rounding). Engines declare it with a
    ``shares_policy`` attribute; the default is False (a separate copy that needs syncing)."""
    return bool(getattr(engine, "shares_policy", False))


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str] | Sequence[Sequence[int]], max_tokens: int | None = None
) -> list[list[int]]:
    """Token ids of text prompts (no special tokens added) or id prompts as given; an empty prompt, or
    one of ``max_tokens`` or more tokens, is a ``ValueError`` naming it. Shared by every engine."""
    out = []
    for i, p in enumerate(prompts):
        ids = tokenizer.encode(p, add_special_tokens=False) if isinstance(p, str) else [int(t) for t in p]
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        if max_tokens is not None and len(ids) >= max_tokens:
            raise ValueError(f"prompt {i} has {len(ids)} tokens; max_model_len is {max_tokens}")
        out.append(ids)
    return out


def resolve_seed(params: SamplingParams) -> int:
    """The request's seed: ``params.seed``, else one drawn from torch's global RNG (seeded runs repeat)."""
    import torch

    return params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
