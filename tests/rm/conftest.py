"""Shared fixtures of the reward-model tests: a tiny causal LM folder built on the spot (no hub)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    from archer import models
    from archer.data import synthetic

    tok = models.build_tokenizer(synthetic.tokenizer_corpus(300, seed=0), vocab_size=300)
    model = models.build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=0)
    folder = tmp_path_factory.mktemp("tiny_lm")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
