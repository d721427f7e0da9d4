"""model.sft_warmup (a given model.path is not re-warmed unless asked) and data.chat_template (file or
inline Jinja, validated at load, applied to the run's tokenizer)."""

from __future__ import annotations

import pytest

from archer.config import load_config
from archer.data.prompts import apply_chat_template_option, build_prompt, no_chat_template_hint
from archer.data.schema import Problem
from archer.errors import ConfigError
from archer.rl.setup import apply_tokenizer_options, sft_configured

TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ([], True),  # tiny_math: from scratch + sft_epochs -> warm-up
        (["model.path=/some/sft_model"], False),  # auto: a given model is taken as trained
        (["model.path=/some/sft_model", "model.sft_warmup=true"], True),
        (["model.sft_warmup=false"], False),
        (["model.sft_epochs=0"], False),
    ],
)
def test_sft_warmup_decision(overrides, expected):
    cfg = load_config("tiny_math", overrides)
    assert sft_configured(cfg) is expected


def test_sft_warmup_values_validated():
    assert load_config("tiny_math", ["model.sft_warmup=auto"]).model.sft_warmup == "auto"
    assert load_config("tiny_math", ["model.sft_warmup='true'"]).model.sft_warmup is True
    with pytest.raises(
        ConfigError, match="^model.sft_warmup: unknown value 'sometimes'; valid: auto, true, false"
    ):
        load_config("tiny_math", ["model.sft_warmup=sometimes"])
    with pytest.raises(ConfigError, match="^model.sft_warmup: true needs model.sft_epochs > 0"):
        load_config("tiny_math", ["model.sft_warmup=true", "model.sft_epochs=0"])


def test_prepare_initial_policy_skips_warmup_for_given_model(tmp_path):
    from archer.rl.setup import prepare_initial_policy

    cfg = load_config("tiny_math", [f"model.path={tmp_path}"])
    said = []
    assert prepare_initial_policy(cfg, tmp_path, [], None, None, said.append) == {}
    assert not (tmp_path / "sft_model").exists()
    assert "no SFT warm-up" in said[0] and "model.sft_warmup=true" in said[0]


class _Tok:
    """The two attributes build_prompt uses of a Hugging Face tokenizer, with a real Jinja render."""

    name_or_path = "gpt2"
    chat_template = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        import jinja2

        return jinja2.Template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt
        )


def test_chat_template_file_and_inline(tmp_path):
    problem = Problem(id="p", prompt="What is 2+2?", kind="math", answer="4")
    tok = _Tok()
    assert build_prompt(problem, tok, "raw") == "What is 2+2?"
    assert "data.chat_template" in no_chat_template_hint(tok)
    path = tmp_path / "t.jinja"
    path.write_text(TEMPLATE)
    apply_chat_template_option(tok, str(path))
    assert build_prompt(problem, tok, "raw") == "[user] What is 2+2?\n[assistant] "
    assert no_chat_template_hint(tok) is None
    tok2 = apply_chat_template_option(_Tok(), TEMPLATE)  # inline Jinja text
    assert tok2.chat_template == TEMPLATE
    assert apply_chat_template_option(tok2, None).chat_template == TEMPLATE  # None keeps the tokenizer's


def test_chat_template_config_validation(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(TEMPLATE)
    cfg = load_config("tiny_math", [f"data.chat_template={path}"])
    tok = apply_tokenizer_options(cfg, _Tok())
    assert tok.chat_template == TEMPLATE
    with pytest.raises(ConfigError, match="^data.chat_template: file .*missing.jinja' not found"):
        load_config("tiny_math", [f"data.chat_template={tmp_path}/missing.jinja"])
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m }}")
    with pytest.raises(ConfigError, match="^data.chat_template: Jinja syntax error"):
        load_config("tiny_math", [f"data.chat_template={bad}"])
    with pytest.raises(ConfigError, match="^data.chat_template: 'chatml' is neither a template file"):
        load_config("tiny_math", ["data.chat_template=chatml"])


def test_bundled_chatml_example_renders():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "chatml.jinja"
    tok = apply_chat_template_option(_Tok(), str(example))
    out = build_prompt(Problem(id="p", prompt="Hi", kind="math", answer="1"), tok, "raw")
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_run_with_config_reward_chat_template_and_prompt_samples(tmp_path):
    """A real (tiny, CPU) run: the TRL-style function scores every response (reward = 1 for every
    completion, so reward/mean is exactly 1), the chat template shapes the prompts, and the logged
    sample carries the prompt text, not only the problem id."""
    from archer.rl.loop import train

    fn = tmp_path / "always_one.py"
    fn.write_text("def reward(completions, **kw):\n    return [1.0 for _ in completions]\n")
    template = tmp_path / "t.jinja"
    template.write_text(TEMPLATE)
    cfg = load_config(
        "tiny_math",
        [
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_layers=1",
            "model.num_heads=2",
            "model.sft_epochs=0",
            "data.generator={level: easy}",
            "data.num_train=8",
            "data.num_eval=2",
            "rollout.batch_size=2",
            "rollout.n=2",
            "rollout.max_new_tokens=4",
            "trainer.steps=2",
            "trainer.threads=1",
            "trainer.save_every=0",
            "trainer.save_final=false",
            "eval.enabled=false",
            "logging.progress=false",
            "logging.plots=false",
            "logging.sinks=[]",
            f"reward.function={fn}:reward",
            f"data.chat_template={template}",
            "rollout.dynamic_sampling=false",
            "algo.filter_zero_variance=false",
        ],
    )
    summary = train(cfg, run_dir=tmp_path / "run")  # the run builds its scorer from reward.*
    steps = [h for h in summary["history"] if "reward/mean" in h]
    assert [h["reward/mean"] for h in steps] == [1.0, 1.0]
    sample = steps[0]["sample"]
    assert sample["id"] and sample["id"] != sample["prompt"]
    assert sample["prompt"].startswith("[user] ") and sample["prompt"].endswith("[assistant] ")
