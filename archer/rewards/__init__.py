"""Reward verifiers: math answers (``archer.rewards.math``) and code in an isolated sandbox
(``archer.rewards.code``, ``archer.rewards.sandbox``). Names are imported lazily so that importing
one verifier never starts the other's worker pools."""

from __future__ import annotations

import importlib
from typing import Any

from archer.rewards.registry import register_verifier, score_responses
from archer.rewards.types import RewardResult, TestReport

_LAZY = {
    "extract_answer": "archer.rewards.math",
    "math_equal": "archer.rewards.math",
    "score_math": "archer.rewards.math",
    "score_math_batch": "archer.rewards.math",
    "MathVerifierPool": "archer.rewards.math_pool",
    "extract_code": "archer.rewards.code",
    "run_tests": "archer.rewards.code",
    "run_tests_batch": "archer.rewards.code",
    "score_code": "archer.rewards.code",
    "score_code_batch": "archer.rewards.code",
    "sandbox_isolation": "archer.rewards.sandbox",
    "overlong_penalty": "archer.rewards.shaping",
}

__all__ = ["RewardResult", "TestReport", "register_verifier", "score_responses", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'archer.rewards' has no attribute {name!r}")
