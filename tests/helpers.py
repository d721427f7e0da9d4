"""Shared test helpers (importable as ``helpers``: pytest puts ``tests/`` on ``sys.path`` through the
root conftest). One home for the stub verifier, the quick-run overrides and the tiny model builders
that many tests need; fixtures built on them are in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archer.rewards.types import RewardResult

# a tiny, fast RL run of the tiny_math recipe: 1-layer model, a short SFT warm-up, 3 steps of 4 x 4
QUICK = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.sft_epochs=1",
    "model.sft_examples=32",
    "model.sft_batch_size=4",
    "model.sft_max_len=128",
    "data.generator={level: easy}",
    "data.num_train=40",
    "data.num_eval=4",
    "data.seed=0",
    "rollout.batch_size=4",
    "rollout.n=4",
    "rollout.max_new_tokens=8",
    "rollout.max_gen_batches=2",
    "trainer.steps=3",
    "trainer.save_every=2",
    "trainer.threads=1",
    "trainer.mini_batches=2",
    "trainer.micro_batch_tokens=64",
    "optim.lr=1e-2",
    "eval.n=2",
    "eval.ks=[1, 2]",
    "logging.progress=false",
]

# a 2-step tiny_interpreter run (tool rollouts: two turns, 2 s per program) on QUICK's sizes
TOOL_QUICK = [o for o in QUICK if not o.startswith("data.generator")] + [
    "model.sft_examples=64",
    "model.sft_epochs=2",
    "rollout.max_new_tokens=16",
    "rollout.max_turns=2",
    "rollout.tool_timeout_s=2",
    "trainer.steps=2",
    "logging.plots=false",
    "logging.sinks=[]",
]


def parity_verifier(responses: list[str], problems: list[Any], **_: Any) -> list[RewardResult]:
    """A stub math verifier: reward 1 for a response of even length. Any policy gets both rewards, so
    every group carries signal and a step trains, without depending on what a tiny model can solve."""
    return [RewardResult(float(len(r) % 2 == 0), len(r) % 2 == 0, {}) for r in responses]


def tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 300) -> Any:
    """A byte-level BPE tokenizer trained on the bundled tasks' texts (or ``corpus``)."""
    from archer.models.tiny import build_tokenizer
    from archer.tasks.synthetic import tokenizer_corpus

    return build_tokenizer(
        corpus if corpus is not None else tokenizer_corpus(300, seed=0), vocab_size=vocab_size
    )


def tiny_model(tokenizer: Any, seed: int = 0, **sizes: Any) -> Any:
    """A 1-layer Qwen2 (hidden 32, 2 heads, 1 KV head) unless ``sizes`` say otherwise."""
    from archer.models.tiny import build_tiny_model

    kw = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, **sizes}
    return build_tiny_model(tokenizer, seed=seed, **kw)


def tiny_model_dir(folder: Path, tokenizer: Any = None, seed: int = 0, **sizes: Any) -> Path:
    """A tiny model and its tokenizer saved as a Hugging Face folder (what ``model.path`` takes)."""
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    tiny_model(tokenizer, seed=seed, **sizes).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
