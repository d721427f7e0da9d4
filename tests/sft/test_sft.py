"""SFT: exact assistant-only masking, packing == unpacked (loss and gradients), schedule, learning, CLI."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from archer.models.tiny import build_tiny_model, build_tokenizer
from archer.sft.train import (
    IGNORE,
    batch_loss,
    collate,
    lr_at,
    normalize_example,
    tokenize_example,
    train_sft,
)
from archer.tasks.synthetic import MathTaskConfig, math_problems, math_sft_examples, tokenizer_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(tokenizer_corpus(400, seed=0, level="easy"), vocab_size=400)


def _enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_assistant_only_mask_is_exact_multi_turn(tok):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Compute 1+2."},
        {"role": "assistant", "content": "1+2=3. \\boxed{3}"},
        {"role": "user", "content": "And 2*3?"},
        {"role": "assistant", "content": "\\boxed{6}"},
    ]
    ids, tgt = tokenize_example(tok, msgs, max_len=1000)
    # hand-built reference: each turn is "<|im_start|>role\n" + content + "<|im_end|>\n";
    # targets are an assistant turn's content tokens and its <|im_end|>, nothing else
    ref_ids, ref_tgt = [], []
    for m in msgs:
        head = _enc(tok, f"<|im_start|>{m['role']}\n")
        body = _enc(tok, m["content"] + "<|im_end|>")
        tail = _enc(tok, "\n")
        is_a = m["role"] == "assistant"
        ref_ids += head + body + tail
        ref_tgt += [False] * len(head) + [is_a] * len(body) + [False] * len(tail)
    assert ids == ref_ids and tgt == ref_tgt
    end = tok.convert_tokens_to_ids("<|im_end|>")
    targets = [i for i, t in zip(ids, tgt) if t]
    assert tok.decode(targets) == "1+2=3. \\boxed{3}<|im_end|>\\boxed{6}<|im_end|>"
    assert targets.count(end) == 2
    # collate shifts: label at t is the token at t+1 when that token is a target
    batch = collate([(ids, tgt)], [[0]], tok.pad_token_id, packed=False)
    labels = batch["labels"][0].tolist()
    assert labels == [ids[t + 1] if t + 1 < len(ids) and tgt[t + 1] else IGNORE for t in range(len(ids))]
    # truncation keeps the mask aligned
    ids5, tgt5 = tokenize_example(tok, msgs, max_len=5)
    assert ids5 == ids[:5] and tgt5 == tgt[:5]


def test_normalize_example_errors_and_prompt_response_rows():
    assert normalize_example({"prompt": "p", "response": "r"}) == [
        {"role": "user", "content": "p"},
        {"role": "assistant", "content": "r"},
    ]
    for row, msg in (
        ([], "JSON object"),
        ({"messages": []}, "non-empty"),
        ({"x": 1}, "messages"),
        ({"messages": [{"role": "user"}]}, "content"),
        ({"messages": [{"role": "user", "content": "q"}]}, "assistant"),
    ):
        with pytest.raises(ValueError, match=msg):
            normalize_example(row)


def test_packed_loss_and_grads_equal_unpacked(tok):
    model = build_tiny_model(tok, seed=2).double()
    rows = math_sft_examples(math_problems(6, seed=3, level="easy"))
    items = [tokenize_example(tok, r["messages"], 512) for r in rows]
    packed = collate(items, [[0, 1, 2], [3, 4, 5]], tok.pad_token_id, packed=True)
    assert "attention_mask" not in packed and packed["position_ids"][0, 0] == 0
    plain = collate(items, [[i] for i in range(6)], tok.pad_token_id, packed=False)

    def loss_and_grads(batch):
        model.zero_grad()
        loss, n = batch_loss(model, batch)
        loss.backward()
        return loss.detach(), n, [p.grad.clone() for p in model.parameters()]

    lp, n_p, gp = loss_and_grads(packed)
    lu, n_u, gu = loss_and_grads(plain)
    assert n_p == n_u == sum(sum(t[1:]) for _, t in items)
    torch.testing.assert_close(lp, lu, atol=1e-10, rtol=0)
    for a, b in zip(gp, gu):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # and the reference: per-example float64 loss summed by hand
    total, count = 0.0, 0
    for ids, tgt in items:
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        for t in range(len(ids) - 1):
            if tgt[t + 1]:
                total -= logp[t, ids[t + 1]].item()
                count += 1
    assert abs(lp.item() - total / count) < 1e-9


def test_lr_schedule_endpoints():
    assert lr_at(0, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_sft_learns_synthetic_math_and_greedy_boxes_answers(tok):
    from archer.rollout import HFEngine, SamplingParams

    model = build_tiny_model(tok, hidden_size=64, num_layers=2, seed=0)
    task = MathTaskConfig(min_operands=2, max_operands=2, max_value=9, ops=("+", "-"))  # single digits
    train = math_problems(2000, seed=0, level=task, unique=False)
    logs = []
    m = train_sft(
        model,
        tok,
        math_sft_examples(train),
        epochs=1,
        lr=3e-3,
        batch_size=4,
        max_len=256,
        max_steps=STEPS,
        warmup=10,
        seed=0,
        progress=False,
        log_fn=lambda s, x: logs.append(x["loss"]),
    )
    assert m["steps"] == STEPS and m["final_loss"] < 0.5 * m["first_loss"]
    assert logs and logs[-1] < logs[0]
    test = math_problems(32, split="test", seed=0, level=task)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False
        )
        for p in test
    ]
    out = HFEngine(model, tok, max_batch_size=64).generate(
        prompts, SamplingParams(temperature=0, max_new_tokens=32)
    )
    boxed = [re.findall(r"\\boxed\{([^{}]*)\}", rs[0].text) for rs in out]
    assert sum(bool(b) for b in boxed) >= 0.9 * len(test)
    correct = sum(bool(b) and b[-1] == p.answer for b, p in zip(boxed, test))
    assert 4 <= correct  # measured 20/32 after these 200 steps
    # held-out problems: none of them was trained on
    assert not {p.prompt for p in test} & {p.prompt for p in train}


STEPS = 200


def test_cli_tiny_end_to_end_and_malformed_rows(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from archer.cli.sft import main

    rows = math_sft_examples(math_problems(40, seed=0, level="easy"))
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"messages": r["messages"]}) for r in rows) + "\n")
    out = tmp_path / "ckpt"
    assert (
        main(
            [
                "--data",
                str(data),
                "--model",
                "tiny",
                "--out",
                str(out),
                "--max-steps",
                "3",
                "--hidden-size",
                "32",
                "--layers",
                "1",
                "--vocab-size",
                "300",
            ]
        )
        == 0
    )
    loaded = AutoModelForCausalLM.from_pretrained(out)
    t = AutoTokenizer.from_pretrained(out)
    assert loaded.config.vocab_size == len(t) and t.chat_template
    assert json.loads((out / "sft_metrics.json").read_text())["steps"] == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"messages": rows[0]["messages"]}) + "\n" + '{"messages": [{"role": "user"}]}\n'
    )
    assert main(["--data", str(bad), "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: row 2" in err and "content" in err
    bad.write_text("{not json\n")
    assert main(["--data", str(bad), "--model", "tiny"]) == 2
    assert "line 1: invalid JSON" in capsys.readouterr().err


def test_sft_cli_chat_template_option_for_a_tokenizer_without_one(tmp_path, capsys):
    """A base model without a chat template (gpt2-style) fails with a hint; --chat-template fixes it."""
    import json
    from pathlib import Path

    from archer.cli.sft import main
    from archer.models import tiny as models

    tok = models.build_tokenizer(["hello world, the answer is 3"] * 8, vocab_size=270)
    tok.chat_template = None
    models.build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1).save_pretrained(
        tmp_path / "m"
    )
    tok.save_pretrained(tmp_path / "m")
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "response": "the answer is 3"}) + "\n")
    args = [
        "--data",
        str(data),
        "--model",
        str(tmp_path / "m"),
        "--out",
        str(tmp_path / "out"),
        "--max-steps",
        "1",
    ]
    assert main(args) == 2
    assert "--chat-template" in capsys.readouterr().err
    template = Path(__file__).resolve().parents[2] / "examples" / "chatml.jinja"
    assert main(args + ["--chat-template", str(template)]) == 0
    assert (tmp_path / "out" / "config.json").is_file()
