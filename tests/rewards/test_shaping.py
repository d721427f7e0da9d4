"""DAPO overlong shaping and Klear format penalties against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archer.rewards.shaping import format_penalty, overlong_penalty, overlong_penalty_batch

# L_max = 100, L_buf = 20: 0 up to 80, linear (80 - |y|) / 20 in (80, 100], -1 beyond
CASES = [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (99, -0.95), (100, -1.0), (101, -1.0), (10**6, -1.0)]


@pytest.mark.parametrize("length,expected", CASES)
def test_overlong_penalty_hand_values(length, expected):
    assert overlong_penalty(length, 100, 20) == pytest.approx(expected, abs=1e-12)


def test_overlong_batch_matches_scalar_for_torch_numpy_and_lists():
    lengths = [n for n, _ in CASES]
    want = [e for _, e in CASES]
    t = overlong_penalty_batch(torch.tensor(lengths), 100, 20)
    assert t.dtype.is_floating_point and torch.allclose(t.double(), torch.tensor(want, dtype=torch.float64))
    assert np.allclose(overlong_penalty_batch(np.array(lengths), 100, 20), want)
    assert overlong_penalty_batch(lengths, 100, 20) == pytest.approx(want)


def test_overlong_validation():
    with pytest.raises(ValueError, match="buffer_len"):
        overlong_penalty(10, 100, 0)
    with pytest.raises(ValueError, match="buffer_len"):
        overlong_penalty(10, 100, 101)
    with pytest.raises(ValueError, match="max_len"):
        overlong_penalty(10, 0, 1)
    assert overlong_penalty(5, 10, 10) == pytest.approx(-0.5)  # buffer = whole budget


def test_format_penalty():
    assert format_penalty("<think>a</think>b") == 0.0
    assert format_penalty("<think>a") == -0.5
    assert format_penalty("a</think>b") == -2.0
    assert format_penalty("plain", missing_open=-1.0) == -1.0
