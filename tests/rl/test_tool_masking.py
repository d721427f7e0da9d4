"""Tool rollouts in the trainer: observation tokens leave the loss, the ratios, KL and entropy terms,
and R1-Code-Interpreter's reward terms against hand-computed values."""

from __future__ import annotations

import copy

import pytest
import torch

from archer.config import load_config
from archer.rewards.tool_reward import format_ok, tool_metrics, tool_terms
from archer.rl.batch import Group, build_batch
from archer.rl.step import make_groups, shape_reward
from archer.rl.update import TokenScorer, UpdateSettings, update_minibatch
from archer.rollout.base import Rollout

F = "`" * 3


def _rollout(prompt, resp, mask, turns=2, end="eos", calls=None, texts=None):
    meta = {
        "loss_mask": mask,
        "turns": turns,
        "end": end,
        "tool_calls": calls if calls is not None else [{"output": "3", "status": "ok"}],
        "observation_tokens": mask.count(0),
        "turn_texts": texts if texts is not None else [f"{F}python\nprint(3)\n{F}\n", "so \\boxed{3}"],
    }
    return Rollout(0, prompt, resp, [-0.5] * len(resp), "t", end == "length", "eos", meta)


def _model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return Qwen2ForCausalLM(cfg).double()


def _groups():
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(1, 40, (4,), generator=g).tolist()
    masks = [[1, 1, 1, 0, 0, 0, 1, 1], [1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 1, 1]]
    ros = [_rollout(prompt, torch.randint(1, 40, (len(m),), generator=g).tolist(), m) for m in masks]
    return [Group(0, prompt, ros, [1.0, 0.0, 1.0, 0.0], [True, False, True, False], [{}] * 4)]


def test_response_mask_excludes_every_observation_token():
    cfg = load_config("tiny_math")
    batch = build_batch(cfg, _groups(), pad_id=0, device=torch.device("cpu"))
    for i, ro in enumerate(_groups()[0].responses):
        start = len(ro.prompt_ids)
        got = batch.response_mask[i, start : start + len(ro.response_ids)].tolist()
        assert got == [float(m) for m in ro.meta["loss_mask"]]
        assert (
            batch.response_mask[i, :start].sum() == 0
            and batch.response_mask[i, start + len(got) :].sum() == 0
        )


def _update(model, tensors, loss_name):
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    before = [p.detach().clone() for p in m.parameters()]
    s = UpdateSettings(
        loss=loss_name, agg="token-mean", loss_params={"kl_coef": 0.1}, entropy_coef=0.01, grad_clip=1e9
    )
    metrics = update_minibatch(TokenScorer(m), opt, tensors, [[0, 1, 2, 3]], s)
    return [b - p.detach() for b, p in zip(before, m.parameters())], metrics


@pytest.mark.parametrize("loss_name", ["ppo", "aspo", "gspo", "cispo"])
def test_observation_logprobs_never_reach_the_loss(loss_name):
    cfg = load_config("tiny_math")
    model = _model()
    batch = build_batch(cfg, _groups(), pad_id=0, device=torch.device("cpu"))
    mask = batch.response_mask
    with torch.no_grad():
        lp, _ = TokenScorer(model)(batch.input_ids, batch.attention_mask, mask)
    # the scorer computes nothing on observation tokens: their log-probs are exactly 0
    obs = torch.zeros_like(mask, dtype=torch.bool)  # [B, T] observation positions
    for i, ro in enumerate(_groups()[0].responses):
        start = len(ro.prompt_ids)
        for j, m in enumerate(ro.meta["loss_mask"]):
            obs[i, start + j] = m == 0
    assert obs.sum() == 9 and bool((lp[obs] == 0).all()) and bool((lp[mask != 0] != 0).all())
    g = torch.Generator().manual_seed(0)
    tensors = batch.tensors(with_rollout=False)
    tensors["old_log_prob"] = lp + 0.2 * torch.randn(lp.shape, generator=g, dtype=lp.dtype) * mask
    tensors["ref_log_prob"] = lp + 0.3 * torch.randn(lp.shape, generator=g, dtype=lp.dtype) * mask
    delta, metrics = _update(model, dict(tensors), loss_name)
    # garbage old / reference log-probs on observation tokens: the update is bit-identical
    bad = dict(tensors)
    bad["old_log_prob"] = tensors["old_log_prob"].masked_fill(obs, -40.0)
    bad["ref_log_prob"] = tensors["ref_log_prob"].masked_fill(obs, 25.0)
    delta_bad, metrics_bad = _update(model, bad, loss_name)
    assert all(torch.equal(a, b) for a, b in zip(delta, delta_bad))
    assert metrics["loss"] == metrics_bad["loss"] and any(d.abs().sum() > 0 for d in delta)
    # the control: the same perturbation on a sampled token changes the update (the test can fail)
    ctrl = dict(tensors)
    ctrl["old_log_prob"] = tensors["old_log_prob"].masked_fill(
        (mask != 0) & ~obs & (torch.rand(mask.shape, generator=g) < 0.3), -40.0
    )
    delta_ctrl, _ = _update(model, ctrl, loss_name)
    assert not all(torch.equal(a, b) for a, b in zip(delta, delta_ctrl))


def test_r1ci_reward_terms_by_hand():
    good = {
        "turn_texts": [f"{F}python\nprint(3)\n{F}\n", "so \\boxed{3}"],
        "end": "eos",
        "turns": 2,
        "tool_calls": [{"output": "3", "status": "ok"}],
    }
    assert format_ok(good) and tool_terms(good, "math", 0.1, 0.1, 6) == pytest.approx(0.1)
    no_answer = dict(good, turn_texts=[good["turn_texts"][0], "so 3"])
    fake = dict(good, turn_texts=[f"{F}python\nprint(3)\n{F}\n{F}output\n3\n{F}\n\\boxed{{3}}"])
    syntax = dict(good, tool_calls=[{"output": "SyntaxError: invalid syntax", "status": "error"}])
    cut = dict(good, end="length")
    for bad in (no_answer, fake, syntax, cut):
        assert not format_ok(bad) and tool_terms(bad, "math", 0.1, 0.1, 6) == pytest.approx(-0.1)
    long = dict(good, turns=7)  # beyond 6 turns: -0.1, format still right: +0.1
    assert tool_terms(long, "math", 0.1, 0.1, 6) == pytest.approx(0.0)
    assert tool_terms(dict(long, end="max_turns"), "math", 0.1, 0.1, 6) == pytest.approx(-0.2)
    assert tool_terms(dict(good, turns=6), "math", 0.1, 0.1, 6) == pytest.approx(0.1)  # 6 is allowed
    assert tool_terms({}, "math", 0.1, 0.1, 6) == 0.0  # a plain rollout: no tool terms
    code = dict(good, turn_texts=["x", f"{F}python\ndef f(): pass\n{F}"])
    assert format_ok(code, "code") and not format_ok(code, "math")
    # through the trainer's shaping: correct + format right = 1.1; wrong + format wrong + too long = -0.2
    cfg = load_config("tiny_math", ["reward.tool_format_weight=0.1", "reward.tool_turn_penalty=0.1"])
    assert shape_reward(cfg, 1.0, 10, 32, good, "math") == pytest.approx(1.1)
    assert shape_reward(cfg, 0.0, 10, 32, dict(cut, turns=8), "math") == pytest.approx(-0.2)
    assert shape_reward(load_config("tiny_math"), 1.0, 10, 32, cut, "math") == 1.0  # weights 0: off


def test_tool_metrics_and_groups():
    class R:
        def __init__(self, reward):
            self.reward, self.correct, self.info = reward, reward > 0, {}

    ros = [
        _rollout(
            [1],
            [2, 3, 4],
            [1, 0, 1],
            calls=[{"output": "3", "status": "ok"}, {"output": "E", "status": "error"}],
        ),
        _rollout([1], [2, 3], [1, 1], turns=1, calls=[], texts=["\\boxed{3}"]),
    ]
    m = tool_metrics(ros)
    assert m["tool/calls_per_response"] == 1.0 and m["tool/use_rate"] == 0.5
    assert m["tool/error_rate"] == 0.5 and m["tool/turns_mean"] == 1.5
    assert m["tool/observation_tokens_mean"] == 0.5 and tool_metrics([]) == {}
    cfg = load_config("tiny_math", ["reward.tool_format_weight=0.1"])
    groups, _ = make_groups(cfg, [0], [(ros, [R(1.0), R(0.0)])], 32, ["math"])
    assert groups[0].rewards == pytest.approx([1.1, 0.1])


@pytest.mark.slow
def test_a_tool_run_trains_logs_tool_metrics_and_evaluates_with_tools(tmp_path, monkeypatch):
    from helpers import TOOL_QUICK
    from helpers import parity_verifier as parity

    from archer.rewards import registry
    from archer.rl.loop import train

    monkeypatch.setitem(registry._VERIFIERS, "math", parity)
    out = train(load_config("tiny_interpreter", TOOL_QUICK), run_dir=tmp_path / "run")
    assert out["steps"] == 2
    for row in out["history"]:
        for key in ("tool/calls_per_response", "tool/use_rate", "tool/error_rate", "tool/turns_mean"):
            assert key in row, key
        assert row["tool/turns_mean"] >= 1 and "tool/observation_tokens_mean" in row
    assert "tool_use_rate" in out["before"] and "tool_use_rate" in out["after"]
    assert "tool_use_rate" in out["improvement"]


def test_response_budget_of_a_tool_rollout_spans_its_turns():
    from archer.rl.settings import response_budget

    assert response_budget(load_config("tiny_interpreter"), 32) == 32 * 3  # max_turns 3
    assert response_budget(load_config("tiny_math"), 32) == 32
