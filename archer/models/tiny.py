"""Tiny models built on the spot: a byte-level BPE tokenizer and a random-init Qwen2 causal LM.

archer runs offline (no model hub), so the CPU demo, the tests and the benchmarks train a small
tokenizer on the task text with the ``tokenizers`` library and build a Qwen2 model from a config.

Assumptions and limits:

- The tokenizer is byte-level BPE (GPT-2 / Qwen style): every string round-trips exactly
  (``decode(encode(x)) == x``), including LaTeX, newlines and indentation. Digits are split one per
  token (as in Qwen2 and LLaMA) so that arithmetic is learnable by a tiny model.
- Special tokens: ``<|endoftext|>`` (pad, and the document end), ``<|im_start|>``, ``<|im_end|>``.
  As in Qwen2-Instruct, ``eos_token`` is ``<|im_end|>`` (the end of an assistant turn, so generation
  stops there) and ``pad_token`` is ``<|endoftext|>``; the model's generation config lists both as EOS.
- The chat template is ChatML; ``apply_chat_template(messages, add_generation_prompt=True)`` ends with
  ``<|im_start|>assistant\\n``.
- Training is deterministic: the same texts and vocab size give the same tokenizer; the same seed
  gives the same model weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    *,
    min_frequency: int = 2,
    split_digits: bool = True,
    model_max_length: int = 4096,
):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    ``vocab_size`` includes the 256 byte symbols and the 3 special tokens, so it must be at least 259.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (bytes + specials), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.padding_side = "left"  # generation pads on the left; the SFT collator builds its own batches
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(
    tokenizer,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    tie_word_embeddings: bool = True,
    rope_theta: float = 10000.0,
    seed: int = 0,
):
    """A random-init float32 ``Qwen2ForCausalLM`` sized for ``tokenizer`` (its full length, specials included).

    Weights depend only on ``seed`` (a local generator state, the global RNG is restored afterwards).
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
    eos_ids = sorted({tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")})
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        rope_theta=rope_theta,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    finally:
        torch.random.set_rng_state(rng_state)
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def count_parameters(model) -> int:
    """Unique trainable parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
