"""Shared fixtures of the reward-model tests: a tiny causal LM folder built on the spot (no hub)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    from helpers import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="session")
def tiny_rm(tiny_lm_dir, tmp_path_factory):
    from archer.rm.train import RMTrainConfig, train_reward_model
    from archer.tasks import synthetic

    rows = [
        {"id": p.id, "prompt": p.prompt, "chosen": synthetic.code_solution(p), "rejected": "no code"}
        for p in synthetic.code_problems(8, split="train", seed=0)
    ]
    out = tmp_path_factory.mktemp("rl_rm") / "rm"
    train_reward_model(
        rows, tiny_lm_dir, out, RMTrainConfig(epochs=1, lr=1e-3, max_length=64), log=lambda _: None
    )
    return out
