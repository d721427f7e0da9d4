"""Cross-module invariant: the trainer's recomputed log-probs equal the sampler's.

If the rollout engine (left padding, KV cache, temperature) and the trainer's scoring path (right
padding, chunked ``token_logprobs``) disagree, every importance ratio of the first update is off 1 and
the on-policy gradient is silently wrong.
"""

import pytest
import torch

from archer.models.tiny import build_tiny_model, build_tokenizer
from archer.rl.batch import pack
from archer.rl.update import sequence_logprobs
from archer.rollout.base import SamplingParams
from archer.rollout.hf import HFEngine
from archer.tasks.synthetic import tokenizer_corpus


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_trainer_logprobs_match_sampler_logprobs(temperature):
    tok = build_tokenizer(tokenizer_corpus(300, seed=0, level="easy", include_code=False), vocab_size=300)
    model = build_tiny_model(tok, seed=1)
    engine = HFEngine(model, tok)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": f"What is {i}+{2 * i + 3}?"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for i in range(5)
    ]  # different lengths: exercises left padding in the engine and right padding in the trainer
    groups = engine.generate(prompts, SamplingParams(n=3, temperature=temperature, max_new_tokens=12, seed=3))
    rollouts = [r for g in groups for r in g]
    batch = pack([(r.prompt_ids, r.response_ids) for r in rollouts], tok.pad_token_id)
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, batch, temperature=temperature)
    trained = lp[batch["response_mask"] != 0]
    sampled = torch.tensor([x for r in rollouts for x in r.logprobs])
    assert trained.shape == sampled.shape
    torch.testing.assert_close(trained, sampled, atol=1e-5, rtol=0)
