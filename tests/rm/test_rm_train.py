"""Reward-model training on a tiny model: a separable toy set is learnt (held-out pairs above chance),
and the checkpoint reloads with transformers' AutoModelForSequenceClassification.from_pretrained."""

from __future__ import annotations

import pytest
import torch

from archer.models.reward_model import RewardModel, check_reward_model_dir, rm_input
from archer.rm.train import RMTrainConfig, train_reward_model
from archer.tasks import synthetic

BAD = "```python\ndef f(x):\n    return None\n```"


def _pairs(problems):
    return [
        {"id": p.id, "prompt": p.prompt, "chosen": synthetic.code_solution(p), "rejected": BAD}
        for p in problems
    ]


@pytest.fixture(scope="module")
def trained(tiny_lm_dir, tmp_path_factory):
    train = _pairs(synthetic.code_problems(24, split="train", seed=0))
    heldout = _pairs(synthetic.code_problems(12, split="test", seed=0))
    out = tmp_path_factory.mktemp("rm") / "rm"
    cfg = RMTrainConfig(epochs=3, lr=3e-3, batch_size=8, max_length=128, log_every=100)
    logs: list[str] = []
    metrics = train_reward_model(train, tiny_lm_dir, out, cfg, eval_rows=heldout, log=logs.append)
    return out, metrics, heldout, logs


def test_rm_learns_a_separable_toy_set_and_ranks_heldout_pairs_above_chance(trained):
    out, metrics, heldout, logs = trained
    assert metrics["heldout_pairs"] == 12
    assert metrics["heldout_accuracy"] >= 0.9
    assert metrics["history"][-1]["train_loss"] < 0.693  # below log 2, the loss of the zero-initialised head
    assert any("held-out pairwise accuracy" in line for line in logs)
    rm = RewardModel(out, batch_size=5, max_length=128)
    good = rm.score([r["prompt"] for r in heldout], [r["chosen"] for r in heldout])
    bad = rm.score([r["prompt"] for r in heldout], [r["rejected"] for r in heldout])
    assert sum(g > b for g, b in zip(good, bad)) / len(heldout) == pytest.approx(metrics["heldout_accuracy"])


def test_rm_checkpoint_reloads_with_from_pretrained_and_scores_the_same(trained):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, _, heldout, _ = trained
    cfg = check_reward_model_dir(out)
    assert cfg["architectures"] == ["Qwen2ForSequenceClassification"]
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.num_labels == 1
    text = rm_input(tok, heldout[0]["prompt"], heldout[0]["chosen"])
    with torch.no_grad():
        direct = model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert RewardModel(out).score([heldout[0]["prompt"]], [heldout[0]["chosen"]])[0] == pytest.approx(
        direct, abs=1e-5
    )


def test_lora_rm_trains_and_saves_a_merged_plain_checkpoint(tiny_lm_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    rows = _pairs(synthetic.code_problems(8, split="train", seed=1))
    cfg = RMTrainConfig(epochs=1, lr=1e-3, batch_size=4, max_length=96, lora_rank=4)
    train_reward_model(rows, tiny_lm_dir, tmp_path / "lora_rm", cfg, log=lambda _: None)
    files = {p.name for p in (tmp_path / "lora_rm").iterdir()}
    assert "adapter_config.json" not in files and "config.json" in files
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "lora_rm"))
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_not_a_reward_model_and_bad_pairs_are_one_line_errors(tiny_lm_dir, tmp_path):
    with pytest.raises(ValueError, match="not a reward model"):
        check_reward_model_dir(tiny_lm_dir)  # a causal LM
    with pytest.raises(ValueError, match="not a reward-model directory"):
        check_reward_model_dir(tmp_path / "missing")
    with pytest.raises(ValueError, match="missing"):
        train_reward_model([{"prompt": "p", "chosen": "a"}], tiny_lm_dir, tmp_path / "x", log=lambda _: None)
    assert not (tmp_path / "x").exists()
