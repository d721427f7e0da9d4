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


def _gpt2_tokenizer():
    """A byte-level BPE whose only special token is ``<|endoftext|>`` (EOS), as GPT-2's: no chat template,
    and ``<|im_end|>`` is ordinary text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from archer.tasks.synthetic import tokenizer_corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(tokenizer_corpus(300, seed=0), trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A 2-layer GPT-2 (absolute positions, 128 of them) with a GPT-2-like tokenizer."""
    tokenizer = _gpt2_tokenizer()
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128
    )
    config.pad_token_id = config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    folder = tmp_path_factory.mktemp("gpt2")
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_train_refuses_prompt_plus_response_beyond_the_models_positions(gpt2_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["tiny_math", *RUN, f"model.path={gpt2_dir}", "rollout.max_new_tokens=100", "--out", str(out)]
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("archer train: config error: rollout.max_new_tokens=100: the longest prompt (")
    assert err.endswith(
        "(64 tokens) + 100 new tokens = 164 exceeds the model's limit of 128 positions (its config.json); "
        "set rollout.max_new_tokens to at most 64 or lower data.max_prompt_tokens"
    )
    assert not out.exists()  # nothing left behind: the same --out works next time


def test_eval_caps_its_default_budget_and_refuses_a_given_one_beyond_the_positions(
    gpt2_dir, tmp_path, capsys
):
    from archer.cli.main import main

    base = ["eval", "--model", str(gpt2_dir), "--data", "synthetic_math", "--limit", "2", "--n", "1"]
    assert main([*base, "--k", "1", "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert (
        "archer eval: --max-new-tokens capped to 64: the model's limit of 128 positions minus the longest "
        "prompt (64 tokens)\n"
    ) in err
    chatml = ["--chat-template", "examples/chatml.jinja", "--max-new-tokens", "8", "--k", "1"]
    assert main([*base, *chatml, "--out", str(tmp_path / "c"), "--device", "cpu"]) == 0
    assert "archer eval: note: the chat template ends a turn with '<|im_end|>', which is not a special" in (
        capsys.readouterr().err
    )
    assert main([*base, "--max-new-tokens", "600", "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "archer eval: error: --max-new-tokens 600: the longest prompt (64 tokens) + 600 new tokens = 664 "
        "exceeds the model's limit of 128 positions (its config.json); pass --max-new-tokens 64 or less"
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


def test_a_chatml_end_of_turn_the_tokenizer_cannot_emit_becomes_a_stop_string(gpt2_dir):
    from archer.data.prompts import apply_chat_template_option, end_of_turn_stop

    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
    assert end_of_turn_stop(tokenizer) == (None, None)  # no template: nothing to check
    apply_chat_template_option(tokenizer, "examples/chatml.jinja")
    eos = tokenizer.eos_token
    assert end_of_turn_stop(tokenizer) == (
        "<|im_end|>",
        f"the chat template ends a turn with '<|im_end|>', which is not a special token of this tokenizer "
        f"(its EOS is {eos!r}), so generation would never stop there: responses now stop at '<|im_end|>'",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    assert end_of_turn_stop(tokenizer) == (None, None)


def test_train_stops_at_the_templates_end_of_turn_and_hints_a_missing_template(gpt2_dir, tmp_path, capsys):
    argv = ["tiny_math", *RUN, f"model.path={gpt2_dir}", "rollout.max_new_tokens=16"]
    assert (
        train_cli.main([*argv, "data.chat_template=examples/chatml.jinja", "--out", str(tmp_path / "a")]) == 0
    )
    out = capsys.readouterr().out
    assert "note: the chat template ends a turn with '<|im_end|>', which is not a special token" in out
    assert "responses now stop at '<|im_end|>' (rollout.stop)" in out
    assert train_cli.main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert (
        f"note: {gpt2_dir} has no chat template: prompts are plain text; set data.chat_template=FILE.jinja "
        "(or the Jinja text) to use one"
    ) in capsys.readouterr().out


def test_a_truncation_rate_above_90_percent_for_3_steps_warns_once():
    from archer.rl.loop import _TruncationWatch

    said = []
    watch = _TruncationWatch(said.append)
    for rate in (0.95, 1.0, 0.5, 0.95, 1.0, 1.0, 1.0, 1.0):
        watch.see({"response/truncation_rate": rate, "rollout/max_new_tokens": 64})
    assert said == [
        "warning: over 90% of responses were cut at rollout.max_new_tokens (64) for 3 steps in a row: the "
        "model may never end its turn (check its EOS and rollout.stop against the chat template) or the "
        "budget is too small (raise rollout.max_new_tokens)"
    ]


TINY = ["tiny_math", "model.sft_epochs=0", "data.num_train=8", "rollout.batch_size=2", "rollout.n=2"]
TINY += ["eval.enabled=false", "trainer.steps=3", "rollout.engine=hf", "model.hidden_size=32"]


def _interrupt_at(monkeypatch, at: int):
    """``archer train`` whose run gets Ctrl-C right after step ``at`` is logged."""
    real = train_cli.train

    def on_step(step, _metrics):
        if step == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "train", lambda cfg, **kw: real(cfg, on_step=on_step, **kw))


def test_ctrl_c_prints_one_line_with_the_step_the_checkpoint_and_the_resume_command(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 2)
    assert train_cli.main([*TINY, "trainer.save_every=1", "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"archer train: interrupted at step 2; last checkpoint {out}/checkpoints/step_000001; "
        f"resume with: archer train --resume --out {out}"
    )
    monkeypatch.undo()
    assert train_cli.main(["--resume", "--out", str(out)]) == 0
    capsys.readouterr()
    assert train_cli.main(["--resume", "--out", str(out)]) == 0
    assert capsys.readouterr().err.strip() == (
        f"archer train: --resume: the run in {out} already finished (3 of trainer.steps=3; see its "
        f"summary.json); its last checkpoint is {out}/checkpoints/step_000003; nothing to resume"
    )


def test_a_run_interrupted_before_its_first_checkpoint_reruns_with_the_same_command(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    argv = [*TINY, "trainer.save_final=false", "--out", str(out)]
    _interrupt_at(monkeypatch, 1)
    assert train_cli.main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "archer train: interrupted at step 1, before the first checkpoint; rerun the same command to start "
        f"afresh, or resume with: archer train --resume --out {out}"
    )
    monkeypatch.undo()
    assert train_cli.main(argv) == 0
    assert (
        f"archer train: --out {out}: interrupted before its first checkpoint; starting afresh"
        in capsys.readouterr().err
    )
    assert not (out / "INTERRUPTED").exists()


def test_ctrl_c_in_any_command_is_one_line(monkeypatch, capsys):
    from archer.cli import data, main

    def interrupted(_argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "main", interrupted)
    assert main.main(["data", "x"]) == 130
    assert capsys.readouterr().err == "archer data: interrupted\n"


def test_vllm_noise_is_dropped_and_other_lines_shown_once_unless_verbose(monkeypatch):
    import io
    import logging

    from archer.distributed import quiet

    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    logger, stream = logging.getLogger("vllm"), io.StringIO()
    handler = logging.StreamHandler(stream)
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(quiet, "_FILTER", quiet._DropNoise())
    quiet.quiet_vllm()
    for _ in range(61):
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").warning(
            "%s: Failed to load weights", "RotaryEmbedding"
        )
        logger.warning("max_num_batched_tokens is smaller than max_model_len")
    logger.error("CUDA out of memory")
    assert stream.getvalue() == "max_num_batched_tokens is smaller than max_model_len\nCUDA out of memory\n"


def test_verbose_flag_keeps_every_message(monkeypatch):
    from archer.distributed import quiet

    monkeypatch.setenv(quiet.VERBOSE_ENV, "0")  # recorded, so the "1" set below is undone after the test
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "WARNING")
    assert not quiet.verbose()
    quiet.quiet_process(verbose_flag=True)
    assert quiet.verbose() and quiet.ray_logging_level() == 20
    assert train_cli._parser().parse_args(["--verbose"]).verbose
    from archer.cli.eval import build_parser

    assert build_parser().parse_args(["run", "--model", "m", "--data", "d", "--verbose"]).verbose


def test_a_lora_checkpoint_stores_its_base_model_as_an_absolute_path(tmp_path, monkeypatch):
    import json

    from archer.models.loader import PolicyOptions, load_policy, save_policy
    from tests.helpers import tiny_model_dir

    tiny_model_dir(tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    model, tokenizer = load_policy("base", PolicyOptions(lora_rank=4))  # typed relative, as model.path=base
    save_policy(model, tokenizer, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str((tmp_path / "base").resolve())
    monkeypatch.chdir("/")
    assert load_policy(tmp_path / "ckpt")[0] is not None  # loads from any folder


def test_eval_of_a_run_folder_uses_its_latest_complete_checkpoint(tmp_path, capsys, monkeypatch):
    from archer.cli.main import main

    run = tmp_path / "run"
    assert train_cli.main([*TINY, "trainer.steps=1", "--out", str(run)]) == 0
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "--model", str(run), "--data", "synthetic_math", "--limit", "1", "--n", "1", "--k", "1"]
    assert main([*argv, "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert (
        f"archer eval: --model {run} is a training run; evaluating its latest checkpoint "
        f"{run}/checkpoints/step_000001\n"
    ) in capsys.readouterr().err
    assert (tmp_path / "eval_out" / "run-step_000001" / "summary.json").is_file()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("{}\n")
    assert main(["eval", "--model", str(tmp_path / "empty"), "--data", "synthetic_math"]) == 2
    assert capsys.readouterr().err == (
        f"archer eval: error: --model {tmp_path / 'empty'}: a training run with no complete checkpoint yet "
        "(checkpoints/step_N/COMPLETE); wait for one, or pass a model folder\n"
    )


def test_train_list_keeps_a_description_whole_past_an_abbreviation():
    from archer.cli.train import _headline, _recipe_summary

    assert (
        _recipe_summary("r1_code_interpreter")[0]
        == "R1-Code-Interpreter (Chen et al. 2025, arXiv 2505.21668)"
    )
    assert _headline("Short one (e.g. this). Second sentence.") == "Short one (e.g. this)"


def test_pyproject_pins_the_antlr_runtime_instead_of_math_verifys_warning_extra():
    import tomllib
    from pathlib import Path

    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    assert "antlr4-python3-runtime==4.13.2" in deps  # what the extra pinned
    assert not [d for d in deps if d.startswith("math-verify[")]  # pip: "does not provide the extra"


def test_train_refuses_a_response_budget_beyond_the_positions_before_creating_the_run(
    gpt2_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = ["tiny_math", *RUN, f"model.path={gpt2_dir}", "rollout.max_new_tokens=600", "eval.enabled=true"]
    assert train_cli.main([*argv, "eval.max_new_tokens=4096", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "archer train: config error: eval.max_new_tokens=4096: exceeds the model's limit of 128 positions "
        "(its config.json), before any prompt; set eval.max_new_tokens below 128 minus the longest prompt\n"
    )
    assert not out.exists()
    warm = [
        "model.sft_warmup=true",
        "model.sft_epochs=1",
        "model.sft_max_len=512",
        "rollout.max_new_tokens=16",
    ]
    assert train_cli.main(["tiny_math", *RUN[1:], f"model.path={gpt2_dir}", *warm, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "archer train: config error: model.sft_max_len=512: exceeds the model's limit of 128 positions (its "
        "config.json); set model.sft_max_len to at most 128"
    )
    assert not out.exists()


def test_eval_watch_caps_its_default_budget_to_the_runs_model(gpt2_dir, tmp_path, capsys):
    import shutil

    from archer.cli.eval import _fit_watch_budget, build_parser, load_problems
    from archer.models.checkpoint import MARKER

    step = tmp_path / "run" / "checkpoints" / "step_000001"
    shutil.copytree(gpt2_dir, step)
    (step / MARKER).write_text("complete\n")
    args = build_parser().parse_args(
        ["watch", str(tmp_path / "run"), "--data", "synthetic_math", "--limit", "2"]
    )
    _fit_watch_budget(args, load_problems(args))
    assert args.max_new_tokens == 64
    assert capsys.readouterr().err == (
        "archer eval: --max-new-tokens capped to 64: the model's limit of 128 positions minus the longest "
        "prompt (64 tokens)\n"
    )
