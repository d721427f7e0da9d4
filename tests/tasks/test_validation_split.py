"""The validation split (issue 23: tune a recipe on validation, report on test): carved out of the train
region of the hash space only when a task asks for it, disjoint from train, SFT and test by construction,
and no change at all to any run that does not ask."""

from __future__ import annotations

import hashlib

import pytest

from archer.config import load_config
from archer.errors import ConfigError
from archer.tasks.draw import split_of
from archer.tasks.problems import load_problems, sft_examples, tokenizer_texts


def _old_split_of(text: str, test_fraction: float) -> str:  # the rule before the validation split existed
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


def test_without_a_validation_fraction_the_splits_are_the_old_ones():
    texts = [f"Compute {i}+{i * 7 % 13}." for i in range(3000)]
    assert [split_of(t, 0.2) for t in texts] == [_old_split_of(t, 0.2) for t in texts]
    with_val = [split_of(t, 0.2, 0.25) for t in texts]
    # test is untouched; validation comes out of train only, about its share of the hash space
    assert all(w == "test" for w, t in zip(with_val, texts) if _old_split_of(t, 0.2) == "test")
    assert 0.2 < with_val.count("validation") / len(texts) < 0.3


@pytest.mark.parametrize(
    "recipe, generator",
    [
        ("tiny_code", "{families: [affine_neg, clamp, cond, linear, poly, square], validation_fraction: 0.25}"),
        ("tiny_math", "{level: medium, validation_fraction: 0.2}"),
        ("tiny_paths", "{operands: 4, max_value: 9, validation_fraction: 0.2}"),
        ("tiny_interpreter", "{validation_fraction: 0.2}"),
    ],
)
def test_validation_problems_are_disjoint_from_train_sft_and_test(recipe, generator):
    over = [f"data.generator={generator}", "data.num_train=200", "data.num_eval=40", "model.sft_examples=300"]
    train, val = load_problems(load_config(recipe, over + ["data.eval_split=validation"]))
    _, test = load_problems(load_config(recipe, over))
    texts = lambda ps: {str(p.prompt) for p in ps}  # noqa: E731
    assert len(val) == 40 and not texts(val) & texts(train) and not texts(val) & texts(test)
    assert all(p.meta["split"] == "validation" and "-validation-" in p.id for p in val)
    # the SFT warm-up draws from train too: its prompts (the problem text in the run's template) never hold one
    sft_prompts = {r["messages"][0]["content"] for r in sft_examples(load_config(recipe, over))}
    assert not any(str(p.prompt) in s for p in val for s in sft_prompts)
    # nor does the from-scratch tokenizer's corpus
    corpus = "\n".join(tokenizer_texts(load_config(recipe, over), train))
    assert not any(str(p.prompt) in corpus for p in val)


def test_asking_for_validation_without_one_is_a_one_line_error():
    with pytest.raises(ConfigError, match="validation_fraction"):
        load_problems(load_config("tiny_math", ["data.eval_split=validation", "data.num_train=50"]))
    with pytest.raises(ConfigError, match="data.eval_split"):
        load_config("tiny_math", ["data.eval_split=dev"])
    with pytest.raises(ConfigError, match="validation_fraction"):
        load_problems(load_config("tiny_paths", ["data.generator={validation_fraction: 0.9}", "data.num_train=5"]))
