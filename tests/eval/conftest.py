"""Fixtures for the evaluation tests: a saved tiny HF model, scripted engines, verifier stand-ins."""

from __future__ import annotations

import importlib.util

import pytest

from archer.rewards.types import RewardResult


@pytest.fixture
def code_verifier(monkeypatch):
    """The real code verifier when it is installed, else a stand-in that fails every response."""
    if importlib.util.find_spec("archer.rewards.code") is None:
        from archer.rewards import registry

        def stand_in(responses, problems, **opts):
            return [RewardResult(0.0, False, {"reason": "stand-in code verifier"}) for _ in responses]

        monkeypatch.setitem(registry._VERIFIERS, "code", stand_in)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random tiny Qwen2 + BPE tokenizer (ChatML template) saved as a Hugging Face directory."""
    import json

    from helpers import tiny_model_dir, tiny_tokenizer

    from archer.data.formats import BUNDLED_DIR

    root = BUNDLED_DIR / "math" / "math500.jsonl"
    texts = [json.loads(line)["problem"] for line in root.read_text().splitlines()[:50]]
    texts += ["def f(x):\n    return x + 1\n", "Please reason step by step \\boxed{}"] * 5
    return tiny_model_dir(tmp_path_factory.mktemp("tiny_model"), tiny_tokenizer(texts, vocab_size=320))
