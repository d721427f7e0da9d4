"""The trainer on any Hugging Face causal LM: seven architectures built from a config, LoRA, resume.

Each model is built from a config sized for a byte-level BPE tokenizer trained on the spot, saved with
``save_pretrained`` and given to ``archer train`` as ``model.path`` (no SFT, no evaluation). A short RL
run (2 steps) must update the weights without NaN and resume for one more step with the same
settings (gradient checkpointing, LoRA, dtype). The math verifier is swapped for a parity rule so that
random-init models get groups with reward variance.
"""

from __future__ import annotations

import pytest
import torch
from helpers import parity_verifier as parity

from archer.config import load_config
from archer.rewards import registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
transformers = pytest.importorskip("transformers")

SMALL = dict(
    vocab_size=None, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
)
ARCHS = {
    "qwen2": lambda v: transformers.Qwen2Config(**dict(SMALL, vocab_size=v), num_key_value_heads=2),
    "llama": lambda v: transformers.LlamaConfig(
        **dict(SMALL, vocab_size=v), num_key_value_heads=2, tie_word_embeddings=False
    ),
    "mistral": lambda v: transformers.MistralConfig(**dict(SMALL, vocab_size=v), num_key_value_heads=2),
    "phi": lambda v: transformers.PhiConfig(**dict(SMALL, vocab_size=v)),  # untied head with a bias
    "gpt2": lambda v: transformers.GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4),  # dropout 0.1
    "gpt_neox": lambda v: transformers.GPTNeoXConfig(**dict(SMALL, vocab_size=v)),
    "gemma2": lambda v: transformers.Gemma2Config(
        **dict(SMALL, vocab_size=v), num_key_value_heads=2, head_dim=8
    ),
}
RUN = [
    "model.sft_epochs=0",
    "data.generator={level: easy}",
    "data.num_train=16",
    "data.seed=0",
    "rollout.batch_size=2",
    "rollout.n=4",
    "rollout.max_new_tokens=6",
    "rollout.max_gen_batches=1",
    "trainer.steps=2",
    "trainer.save_every=1",
    "trainer.threads=1",
    "trainer.mini_batches=1",
    "trainer.micro_batch_tokens=256",
    "optim.lr=1e-2",
    "optim.warmup_steps=0",
    "eval.enabled=false",
    "logging.progress=false",
    "logging.plots=false",
    "logging.sinks=[]",
]


@pytest.fixture(scope="module")
def tokenizer():
    from archer.models import tiny as models
    from archer.tasks import synthetic

    return models.build_tokenizer(synthetic.tokenizer_corpus(300, seed=0), vocab_size=300)


def _save(arch: str, tokenizer, folder):
    config = ARCHS[arch](len(tokenizer))
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = None
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _run(tmp_path, model_dir, extra, steps=2, resume=False):
    from archer.rl.loop import train

    cfg = load_config("tiny_math", RUN + [f"model.path={model_dir}", f"trainer.steps={steps}"] + extra)
    return train(cfg, run_dir=tmp_path / "run", resume=resume)


def _checkpointing(model) -> bool:
    return bool(
        getattr(model, "is_activation_checkpointing", None)
        if hasattr(model, "is_activation_checkpointing")
        else model.is_gradient_checkpointing
    )


def _weights(folder):
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_each_architecture_trains_and_resumes(arch, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    model_dir = _save(arch, tokenizer, tmp_path / "base")
    extra = ["model.gradient_checkpointing=true"]
    summary = _run(tmp_path, model_dir, extra)
    steps = summary["history"]
    assert [h["step"] for h in steps] == [1, 2]
    trained = [h for h in steps if "actor/grad_norm" in h]
    assert trained, "no step had reward variance"
    assert all(h["update/skipped_nonfinite"] == 0 for h in trained)
    # on-policy first mini-batch with dropout off: the trainer's ratio is exactly the sampler's
    assert trained[0]["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    before, after = _weights(model_dir), _weights(tmp_path / "run" / "checkpoints" / "step_000002")
    assert max((after[k] - before[k]).abs().max().item() for k in after) > 1e-4
    resumed = _run(tmp_path, model_dir, extra, steps=3, resume=True)
    assert [h["step"] for h in resumed["history"]] == [3]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft's own call below
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_lora_trains_adapters_only_with_the_base_as_reference(arch, tokenizer, tmp_path, monkeypatch):
    import peft

    from archer.models.loader import PolicyOptions, load_policy
    from archer.rl.update import TokenScorer

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    model_dir = _save(arch, tokenizer, tmp_path / "base")
    extra = [
        "model.lora.rank=4",
        "model.lora.alpha=8",
        "model.lora.save_merged=true",
        "model.gradient_checkpointing=true",
    ]
    summary = _run(tmp_path, model_dir, extra)
    assert any("actor/grad_norm" in h for h in summary["history"])
    final = tmp_path / "run" / "checkpoints" / "step_000002"
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    # the adapter moved, the base did not
    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    lora = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(model_dir), final)
    assert any(v.abs().max() > 0 for k, v in lora.state_dict().items() if "lora_B" in k)
    merged = transformers.AutoModelForCausalLM.from_pretrained(final / "merged")
    ids = torch.tensor([tokenizer("Compute 1+2.")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, lora(ids).logits, atol=1e-4)
        assert not torch.allclose(merged(ids).logits, base(ids).logits, atol=1e-4)
        # the KL reference (adapters disabled) is exactly the base model
        with lora.disable_adapter():
            ref = TokenScorer(lora)(ids, torch.ones_like(ids), torch.ones_like(ids), with_entropy=False)[0]
        want = TokenScorer(base)(ids, torch.ones_like(ids), torch.ones_like(ids), with_entropy=False)[0]
    assert torch.allclose(ref, want, atol=1e-6)
    # resume keeps LoRA and gradient checkpointing (one loader for both paths)
    model, _ = load_policy(model_dir, PolicyOptions(lora_rank=4, gradient_checkpointing=True), adapter=final)
    assert isinstance(model, peft.PeftModel) and _checkpointing(model.get_base_model())
    resumed = _run(tmp_path, model_dir, extra, steps=3, resume=True)
    assert [h["step"] for h in resumed["history"]] == [3]


def test_bfloat16_run_trains_without_nan_and_keeps_float32_weights(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    model_dir = _save("qwen2", tokenizer, tmp_path / "base")
    summary = _run(tmp_path, model_dir, ["model.dtype=bfloat16"])
    trained = [h for h in summary["history"] if "actor/grad_norm" in h]
    assert trained and all(h["update/skipped_nonfinite"] == 0 for h in trained)
    assert all(torch.isfinite(torch.tensor(h["actor/loss"])) for h in trained)
    weights = _weights(tmp_path / "run" / "checkpoints" / "step_000002")
    assert {v.dtype for v in weights.values()} == {torch.float32}


def test_resume_keeps_gradient_checkpointing(tmp_path):
    from archer.models.loader import PolicyOptions, load_policy

    from_scratch = tmp_path / "m"
    from archer.models import tiny as models

    tok = models.build_tokenizer(["Compute 1+2. \\boxed{3}"] * 4, vocab_size=270)
    models.build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1).save_pretrained(
        from_scratch
    )
    tok.save_pretrained(from_scratch)
    model, _ = load_policy(from_scratch, PolicyOptions(gradient_checkpointing=True))
    assert _checkpointing(model)
    plain, _ = load_policy(from_scratch, PolicyOptions())
    assert not _checkpointing(plain)


def test_garbage_weights_and_missing_cuda_are_one_line_errors(tmp_path, tokenizer):
    from archer.errors import ConfigError
    from archer.models.loader import load_policy, resolve_device

    folder = _save("qwen2", tokenizer, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ConfigError, match="cannot load the model weights") as err:
        load_policy(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not a Hugging Face model directory"):
        load_policy(tmp_path / "missing")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_on_policy_rollout_logprobs_equal_the_recomputed_ones_and_are_reused(
    tokenizer, tmp_path, monkeypatch
):
    """With the HF engine on the float32 policy, the trainer's recomputed old log-probs equal the
    sampler's (so reusing them, the default, saves a forward without changing the update)."""
    from archer.rl import step

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    model_dir = _save("qwen2", tokenizer, tmp_path / "base")
    calls = []
    original = step.logprobs
    monkeypatch.setattr(step, "logprobs", lambda *a: calls.append(1) or original(*a))
    extra = ["algo.loss_params={kl_coef: 0.0}", "trainer.save_every=0", "trainer.save_final=false"]
    recomputed = _run(tmp_path / "a", model_dir, extra + ["trainer.reuse_rollout_logprobs=false"])
    trained = [h for h in recomputed["history"] if "actor/grad_norm" in h]
    assert trained and len(calls) == len(trained)
    assert all(h["rollout/logprob_diff_max"] < 1e-4 for h in trained)
    calls.clear()
    reused = _run(tmp_path / "b", model_dir, extra)
    trained_b = [h for h in reused["history"] if "actor/grad_norm" in h]
    assert trained_b and calls == []  # no recomputation forward
    assert all(h["rollout/logprob_diff_max"] == 0.0 for h in trained_b)
    for a, b in zip(trained, trained_b):  # the same data, the same update up to float rounding
        assert a["data/prompt_hash"] == b["data/prompt_hash"]
        assert b["actor/loss"] == pytest.approx(a["actor/loss"], abs=1e-4)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_shared_prompt_forward_equals_the_padded_one_with_gradients(arch, tokenizer):
    """Each distinct prompt run once and its KV cache shared by its group's rows: the same log-probs,
    entropies and parameter gradients as the padded forward of every row (float32 rounding)."""
    from archer.rl.batch import pack
    from archer.rl.update import TokenScorer

    config = ARCHS[arch](len(tokenizer))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    from archer.models.loader import disable_dropout

    disable_dropout(model)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 250, (n,), generator=g).tolist() for n in (5, 9, 7)]  # ragged
    rows, group = [], []
    for gi, p in enumerate(prompts):
        for _ in range(3):
            rows.append(
                (
                    p,
                    torch.randint(
                        1, 250, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g
                    ).tolist(),
                )
            )
            group.append(gi)
    batch = pack(rows, tokenizer.pad_token_id)
    batch["response_mask"][4, len(rows[4][0])] = 0.0  # an untrained token inside a response
    order = torch.tensor([3, 0, 7, 1, 8, 2, 4, 6, 5])  # groups interleaved in the micro-batch
    batch = {k: v[order] for k, v in batch.items()}
    prompt_len = torch.tensor([len(rows[i][0]) for i in order.tolist()])
    group_t = torch.tensor([group[i] for i in order.tolist()])
    scorer = TokenScorer(model).train()
    results = []
    for shared in (False, True):
        model.zero_grad()
        kw = {"prompt_len": prompt_len, "group": group_t} if shared else {}
        lp, ent = scorer(
            batch["input_ids"], batch["attention_mask"], batch["response_mask"], temperature=0.7, **kw
        )
        (lp.sum() + 0.1 * ent.sum()).backward()
        results.append(
            (
                lp.detach(),
                ent.detach(),
                {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
            )
        )
    (lp0, ent0, g0), (lp1, ent1, g1) = results
    assert torch.allclose(lp0, lp1, atol=2e-5) and torch.allclose(ent0, ent1, atol=2e-5)
    assert (lp1 != 0).sum() == (batch["response_mask"] != 0).sum()  # every trained token, nothing else
    assert g0.keys() == g1.keys()
    for k in g0:
        assert torch.allclose(g0[k], g1[k], atol=1e-4, rtol=1e-3), k


def test_a_fresh_run_never_inherits_an_earlier_runs_initial_policy(tokenizer, tmp_path, monkeypatch):
    """Reusing --out without --resume must not train (or take the KL reference) from a stale sft_model."""
    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    stale = _save("llama", tokenizer, tmp_path / "run" / "sft_model")  # an earlier run's model, another arch
    model_dir = _save("qwen2", tokenizer, tmp_path / "base")
    _run(tmp_path, model_dir, ["trainer.steps=1"], steps=1)
    assert not stale.exists()
    trained = transformers.AutoConfig.from_pretrained(tmp_path / "run" / "checkpoints" / "step_000001")
    assert trained.model_type == "qwen2"


def test_a_model_given_to_train_is_trained_in_place(tokenizer, tmp_path, monkeypatch):
    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    model_dir = _save("qwen2", tokenizer, tmp_path / "base")
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = load_config("tiny_math", RUN + ["trainer.save_every=0"])
    summary = train(cfg, run_dir=tmp_path / "run", model=model, tokenizer=tokenizer)
    assert any("actor/grad_norm" in h for h in summary["history"])
    assert max((model.state_dict()[k] - v).abs().max().item() for k, v in before.items()) > 1e-4
    saved = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "run" / "checkpoints" / "step_000002"
    )
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in model.state_dict().items())
