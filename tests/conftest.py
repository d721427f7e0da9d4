"""Shared pytest fixtures: seeded RNG, the bundled benchmark samples, GPU skipping."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """Benchmark smoke runs write their caches and run folders to a temporary folder, not runs/ (set
    before any test module imports benchmarks/_toy_common; subprocesses inherit it)."""
    import tempfile

    os.environ.setdefault("ARCHER_BENCH_RUNS", tempfile.mkdtemp(prefix="archer-test-runs-"))


def _shared_data_dir() -> Path:
    """``ARCHER_SHARED_DATA`` when set (another copy of the samples), else the copy bundled in the
    package (``archer/data/bundled``: math/ and code/ as in ``../shared/data``)."""
    env = os.environ.get("ARCHER_SHARED_DATA")
    if env:
        return Path(env)
    from archer.data.formats import BUNDLED_DIR

    return BUNDLED_DIR


@pytest.fixture
def shared_data() -> Path:
    """The public benchmark samples (MATH-500, AIME 2024, AMC 2023, HumanEval, MBPP, LiveCodeBench,
    CodeContests), bundled in the package, so no test skips on a fresh clone."""
    path = _shared_data_dir()
    assert path.is_dir(), f"benchmark samples not found at {path}"
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module: tiny matmuls only pay thread synchronisation on a
    shared 2-core machine. Opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def parity_math(monkeypatch):
    """The math verifier replaced by :func:`helpers.parity_verifier` for this test."""
    from helpers import parity_verifier

    from archer.rewards import registry

    monkeypatch.setitem(registry._VERIFIERS, "math", parity_verifier)
    return parity_verifier
