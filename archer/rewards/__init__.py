"""Reward verifiers: math answers (``archer.rewards.math.score``) and code in an isolated sandbox
(``archer.rewards.code``, ``archer.sandbox.pool``). Names are imported lazily so that importing
one verifier never starts the other's worker pools."""

from __future__ import annotations

import importlib
from typing import Any

from archer.rewards.registry import register_verifier, score_responses
from archer.rewards.types import RewardResult, TestReport

_LAZY = {
    "extract_answer": "archer.rewards.math.score",
    "math_equal": "archer.rewards.math.score",
    "score_math": "archer.rewards.math.score",
    "score_math_batch": "archer.rewards.math.score",
    "MathVerifierPool": "archer.rewards.math.pool",
    "extract_code": "archer.rewards.code",
    "run_tests": "archer.rewards.code",
    "run_tests_batch": "archer.rewards.code",
    "score_code": "archer.rewards.code",
    "score_code_batch": "archer.rewards.code",
    "sandbox_isolation": "archer.sandbox.pool",
    "overlong_penalty": "archer.rewards.shaping",
}

__all__ = ["RewardResult", "TestReport", "register_verifier", "score_responses", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'archer.rewards' has no attribute {name!r}")
