"""Reward shaping: DAPO's soft overlong punishment and Klear's format penalties.

- Overlong (DAPO, Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
  eq. 13): with ``L_max`` and buffer ``L_buf``, a response of length ``|y|`` gets ``0`` when
  ``|y| <= L_max - L_buf``, ``((L_max - L_buf) - |y|) / L_buf`` inside the buffer (linear from 0 to
  -1) and ``-1`` beyond ``L_max``. It is added to the task reward.
- Format (Klear-Reasoner, Su et al. 2025): a response without ``</think>`` loses 0.5, one without
  ``<think>`` loses 2 (both configurable); added to the task reward by recipes that use it.
"""

from __future__ import annotations

from typing import Any


def _check(max_len: int, buffer_len: int) -> None:
    if max_len <= 0:
        raise ValueError(f"overlong max_len must be > 0, got {max_len}")
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"overlong buffer_len must be in (0, max_len={max_len}], got {buffer_len}")


def overlong_penalty(length: int, max_len: int, buffer_len: int) -> float:
    """DAPO soft overlong punishment for one response of ``length`` tokens (a value in [-1, 0])."""
    _check(max_len, buffer_len)
    start = max_len - buffer_len
    if length <= start:
        return 0.0
    if length <= max_len:
        return (start - length) / buffer_len
    return -1.0


def overlong_penalty_batch(lengths: Any, max_len: int, buffer_len: int) -> Any:
    """Vectorised :func:`overlong_penalty`: a torch tensor or numpy array of lengths ``[B]`` -> ``[B]``
    float penalties of the same kind (lists give a list)."""
    _check(max_len, buffer_len)
    start = max_len - buffer_len
    if isinstance(lengths, (list, tuple)):
        return [overlong_penalty(int(n), max_len, buffer_len) for n in lengths]
    if type(lengths).__module__.startswith("torch"):
        x = lengths if lengths.is_floating_point() else lengths.float()
        return ((start - x) / buffer_len).clamp(min=-1.0, max=0.0)  # [B]
    import numpy as np

    x = np.asarray(lengths, dtype=np.float64)
    return np.clip((start - x) / buffer_len, -1.0, 0.0)  # [B]


def format_penalty(response: str, missing_close: float = -0.5, missing_open: float = -2.0) -> float:
    """Klear's format penalty: ``missing_open`` without ``<think>``, else ``missing_close`` without
    ``</think>``, else 0."""
    if "<think>" not in response:
        return missing_open
    if "</think>" not in response:
        return missing_close
    return 0.0
