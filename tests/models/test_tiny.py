"""Tiny tokenizer and model: exact round trips, chat template, determinism, save/load."""

from __future__ import annotations

import torch

from archer.models.tiny import build_tiny_model, build_tokenizer, count_parameters
from archer.tasks.synthetic import tokenizer_corpus

TEXTS = [
    "Compute 12+7*3. 7*3=21, 12+21=33. \\boxed{33}",
    "```python\ndef f(x):\n    if x > 3:\n\treturn x*3+1\n    return -x\n```",
    "Solve $\\frac{1}{2}x^2 = 8$; \\boxed{\\pm 4}  trailing  spaces  \n\n",
]


def _tok():
    return build_tokenizer(tokenizer_corpus(300, seed=0), vocab_size=400)


def test_roundtrip_digits_latex_code_unicode():
    tok = _tok()
    for text in TEXTS + ["héllo ∑ 中文 \r\n", "0123456789 -42 3.14159", ""]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    # digits are one token each, so a tiny model can learn column arithmetic
    assert tok.convert_ids_to_tokens(tok.encode("1234", add_special_tokens=False)) == ["1", "2", "3", "4"]


def test_special_tokens_and_chat_template():
    tok = _tok()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    msgs = [{"role": "user", "content": "Compute 1+2."}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nCompute 1+2.<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.decode(ids) == text


def test_tokenizer_deterministic_and_save_load(tmp_path):
    from transformers import AutoTokenizer

    a, b = _tok(), _tok()
    assert a.get_vocab() == b.get_vocab()
    a.save_pretrained(tmp_path)
    c = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert c.encode(text, add_special_tokens=False) == a.encode(text, add_special_tokens=False)
    assert c.chat_template == a.chat_template and c.eos_token == a.eos_token


def test_tiny_model_shapes_determinism_and_save_load(tmp_path):
    from transformers import AutoModelForCausalLM

    tok = _tok()
    m1 = build_tiny_model(tok, seed=3)
    m2 = build_tiny_model(tok, seed=3)
    m3 = build_tiny_model(tok, seed=4)
    assert type(m1).__name__ == "Qwen2ForCausalLM" and m1.dtype == torch.float32
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert not torch.equal(m1.model.embed_tokens.weight, m3.model.embed_tokens.weight)
    assert m1.lm_head.weight.data_ptr() == m1.model.embed_tokens.weight.data_ptr()  # tied
    assert m1.config.vocab_size == len(tok)
    assert count_parameters(m1) < 500_000
    ids = torch.tensor([tok.encode("Compute 1+2.", add_special_tokens=False)])
    logits = m1(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    m1.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(ids).logits, logits)
    assert tok.eos_token_id in m1.generation_config.eos_token_id
