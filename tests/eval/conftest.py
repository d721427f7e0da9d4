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

    from archer.data.formats import BUNDLED_DIR
    from archer.models.tiny import build_tiny_model, build_tokenizer

    root = BUNDLED_DIR / "math" / "math500.jsonl"
    texts = [json.loads(line)["problem"] for line in root.read_text().splitlines()[:50]]
    texts += ["def f(x):\n    return x + 1\n", "Please reason step by step \\boxed{}"] * 5
    tok = build_tokenizer(texts, vocab_size=320)
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=0)
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
