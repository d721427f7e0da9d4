"""Shared pytest fixtures: seeded RNG, the shared benchmark data folder, GPU skipping."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_data_dir() -> Path | None:
    env = os.environ.get("ARCHER_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "data", REPO / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (public benchmark samples); tests that need it skip when it is absent."""
    path = _shared_data_dir()
    if path is None:
        pytest.skip("shared/data not found (set ARCHER_SHARED_DATA)")
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
