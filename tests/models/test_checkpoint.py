"""Checkpoints: Hugging Face format, atomic (marker last, torn folders ignored), keep-last-K, state."""

from __future__ import annotations

import os

import pytest
import torch

from archer.models import checkpoint as ckpt


def _model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=30,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(cfg)


def test_save_is_loadable_by_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    path = ckpt.save_checkpoint(tmp_path, 5, model, None, {"optimizer": opt.state_dict(), "extra": [1, 2]})
    assert path.name == "step_000005" and (path / ckpt.MARKER).read_text().strip() == "5"
    loaded = AutoModelForCausalLM.from_pretrained(str(path))
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    state = ckpt.load_trainer_state(path)
    assert state["step"] == 5 and state["extra"] == [1, 2]
    opt2 = torch.optim.AdamW(loaded.parameters(), lr=0.1)
    opt2.load_state_dict(state["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_rng_state_round_trip(tmp_path):
    model = _model()
    torch.manual_seed(3)
    path = ckpt.save_checkpoint(tmp_path, 1, model, None, {})
    expected = torch.rand(4)
    torch.manual_seed(99)
    ckpt.set_rng_state(ckpt.load_trainer_state(path)["rng"])
    assert torch.equal(torch.rand(4), expected)


def test_torn_checkpoints_are_ignored_and_cleaned(tmp_path):
    model = _model()
    good = ckpt.save_checkpoint(tmp_path, 2, model, None, {})
    root = ckpt.checkpoint_dir(tmp_path)
    # a kill between rename and marker: folder complete but no COMPLETE marker
    torn = root / "step_000004"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    # a kill while writing: the hidden temporary folder
    tmp = root / ".tmp_step_000006_123"
    tmp.mkdir()
    assert ckpt.latest_checkpoint(tmp_path) == good
    with pytest.raises(FileNotFoundError, match="COMPLETE"):
        ckpt.load_trainer_state(torn)
    ckpt.save_checkpoint(tmp_path, 3, model, None, {}, keep_last=5)
    assert not torn.exists() and not tmp.exists()  # swept after the next successful save
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]


def test_keep_last_k(tmp_path):
    model = _model()
    for step in range(1, 6):
        ckpt.save_checkpoint(tmp_path, step, model, None, {}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5]
    assert sorted(os.listdir(ckpt.checkpoint_dir(tmp_path))) == ["step_000004", "step_000005"]


def test_marker_written_after_weights(tmp_path, monkeypatch):
    """If writing fails before the marker, no complete checkpoint exists."""
    model = _model()
    ckpt.save_checkpoint(tmp_path, 1, model, None, {})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 2, model, None, {})
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]


def test_disk_full_is_one_line_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    import errno

    model = _model()
    ckpt.save_checkpoint(tmp_path, 1, model, None, {})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.save_checkpoint(tmp_path, 2, model, None, {})
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message and "step 2" in message
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]
    assert sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()) == ["step_000001"]
