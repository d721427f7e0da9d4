"""Issue 24: a model's limits (positions, end of turn) are checked before any compute, an interrupt is
one line, and the messages a user sees are exact."""

from __future__ import annotations

import pytest
import transformers

from archer.cli import train as train_cli

RUN = [
    "model.sft_epochs=0",
    "data.num_train=8",
    "rollout.batch_size=2",
    "rollout.n=2",
    "trainer.steps=1",
    "eval.enabled=false",
    "rollout.engine=hf",
]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A 2-layer GPT-2 (absolute positions, 128 of them) with the bundled tasks' tokenizer."""
    from tests.helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128
    )
    config.pad_token_id = config.eos_token_id = tokenizer.eos_token_id
    folder = tmp_path_factory.mktemp("gpt2")
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_train_refuses_prompt_plus_response_beyond_the_models_positions(gpt2_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["tiny_math", *RUN, f"model.path={gpt2_dir}", "rollout.max_new_tokens=600", "--out", str(out)]
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("archer train: config error: rollout.max_new_tokens=600: the longest prompt (")
    assert err.endswith(
        "(72 tokens) + 600 new tokens = 672 exceeds the model's limit of 128 positions (its config.json); "
        "set rollout.max_new_tokens to at most 56 or lower data.max_prompt_tokens"
    )
    assert not out.exists()  # nothing left behind: the same --out works next time


def test_eval_caps_its_default_budget_and_refuses_a_given_one_beyond_the_positions(
    gpt2_dir, tmp_path, capsys
):
    from archer.cli.main import main

    base = ["eval", "--model", str(gpt2_dir), "--data", "synthetic_math", "--limit", "2", "--n", "1"]
    assert main([*base, "--k", "1", "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "archer eval: --max-new-tokens capped to 56: the model's limit of 128 positions minus the " in err
    assert main([*base, "--max-new-tokens", "600", "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "archer eval: error: --max-new-tokens 600: the longest prompt (72 tokens) + 600 new tokens = 672 "
        "exceeds the model's limit of 128 positions (its config.json); pass --max-new-tokens 56 or less"
    )


def test_sft_caps_its_default_length_and_refuses_a_given_one_beyond_the_positions(gpt2_dir, tmp_path, capsys):
    from archer.cli import sft

    data = tmp_path / "chat.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}\n'
    )
    base = ["--data", str(data), "--model", str(gpt2_dir), "--chat-template", "examples/chatml.jinja"]
    assert sft.main([*base, "--max-len", "2048", "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.strip() == (
        "archer sft: --max-len 2048 exceeds the model's limit of 128 positions (its config.json); "
        "pass --max-len 128 or less"
    )
    assert sft.main([*base, "--max-steps", "1", "--out", str(tmp_path / "m")]) == 0
    assert "archer sft: --max-len 512 capped to 128, the model's positions" in capsys.readouterr().err
