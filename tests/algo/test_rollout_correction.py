"""The rollout-correction registry against references written out by hand in float64 (plain loops over
python floats, not the implementation's tensor code): the factor of every entry, the gradient of the
corrected loss, rejected tokens' exact zero gradient, the default's bit-for-bit equality with archer
before the registry, the config errors and the metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from archer.algo import compute_policy_loss
from archer.algo.rollout_correction import (
    ROLLOUT_CORRECTIONS,
    correction_in_force,
    correction_names,
    rollout_correction,
)

# per token d = old - rollout; the last columns of rows 0, 2, 4 and 5 are padding (garbage there)
D = [
    [0.3, -0.9, 1.2, 0.3, 7.0],  # sum 0.9: sequence ratio 2.46 (just above 2)
    [0.8, 0.0, -0.4, 2.5, 1.5],  # sum 4.4: sequence ratio 81 (above 2); a token ratio of 4.5
    [0.0004, -0.0002, 0.0009, -5.0, 9.0],  # geometric mean within 1.001
    [-0.9, -0.3, 0.67, -0.1, -0.5],  # sum -1.13: sequence ratio 0.32 (below 0.5); a token ratio of 1.95
    [60.0, 0.1, -0.2, 3.0, -3.0],  # a token ratio of e^60: no overflow anywhere
    [0.004, 0.002, 0.003, 0.001, 0.5],  # geometric mean 1.0025: just outside [1/1.001, 1.001]
]
MASK = [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
OLD = [[-1.0 - 0.1 * (b + t) for t in range(5)] for b in range(len(D))]
ADV = [0.9, -1.3, 0.4, 1.1, -0.6, 0.8]
LP_DELTA = [[0.05 * math.sin(3 * b + t) for t in range(5)] for b in range(len(D))]  # |logp - old| < 0.05

# every entry with the parameters its test runs (None: the registry's defaults)
CASES = [
    ("none", None),
    ("token_tis", None),
    ("token_tis", {"cap": 1.5}),
    ("seq_tis", None),
    ("seq_tis", {"cap": 5.0}),
    ("token_mis", None),
    ("seq_mis", None),
    ("seq_mis", {"cap": 100.0}),
    ("token_rs", None),
    ("token_rs", {"lower": 0.7, "upper": 3.0}),
    ("seq_rs", None),
    ("geo_rs", None),
    ("geo_rs", {"upper": 1.5}),
    ("icepop", None),
    ("icepop", {"lower": 0.5, "upper": 2.0}),
]


def reference(name: str, params: dict | None) -> tuple[list[list[float]], list[list[bool]], list[list[bool]]]:
    """(factor, truncated, rejected) per trained token; padding gets (None, False, False)."""
    p = dict(params or {})
    cap = p.get("cap", 2.0)
    upper = p.get("upper", {"geo_rs": 1.001, "icepop": 5.0}.get(name, 2.0))
    lower = p.get("lower", 0.5 if name == "icepop" else 1.0 / upper)
    w, trunc, rej = [], [], []
    for b in range(len(D)):
        toks = [t for t in range(len(D[b])) if MASK[b][t]]
        s = sum(D[b][t] for t in toks)
        seq_ratio, geo = math.exp(s), math.exp(s / len(toks))
        wr, tr, rr = [], [], []
        for t in range(len(D[b])):
            if not MASK[b][t]:
                wr.append(None), tr.append(False), rr.append(False)
                continue
            r = math.exp(D[b][t])
            x, cut, out = 1.0, False, False
            if name == "token_tis":
                x, cut = min(r, cap), r > cap
            elif name == "seq_tis":
                x, cut = min(seq_ratio, cap), seq_ratio > cap
            elif name == "token_mis":
                out = r > cap
                x = 0.0 if out else r
            elif name == "seq_mis":
                out = seq_ratio > cap
                x = 0.0 if out else seq_ratio
            elif name in ("token_rs", "seq_rs", "geo_rs"):
                v = {"token_rs": r, "seq_rs": seq_ratio, "geo_rs": geo}[name]
                out = not lower <= v <= upper
                x = 0.0 if out else 1.0
            elif name == "icepop":
                out = not lower <= r <= upper
                x = 0.0 if out else r
            wr.append(x), tr.append(cut), rr.append(out)
        w.append(wr), trunc.append(tr), rej.append(rr)
    return w, trunc, rej


def tensors(dtype=torch.float64):
    old = torch.tensor(OLD, dtype=dtype)
    rollout = old - torch.tensor(D, dtype=dtype)
    mask = torch.tensor(MASK, dtype=torch.bool)
    return old, rollout, mask


def loss_kwargs(name: str, params: dict | None) -> dict:
    """compute_policy_loss parameters selecting the entry (token_tis's cap is tis_cap)."""
    params = dict(params or {})
    if name == "token_tis" and "cap" in params:
        return {"rollout_correction": name, "tis_cap": params["cap"]}
    return {"rollout_correction": name, "rollout_correction_params": params}


def test_registry_lists_the_family():
    assert correction_names() == sorted(
        ["none", "token_tis", "seq_tis", "token_mis", "seq_mis", "token_rs", "seq_rs", "geo_rs", "icepop"]
    )
    for spec in ROLLOUT_CORRECTIONS.values():
        assert spec.fn.__doc__  # each entry is documented


@pytest.mark.parametrize("name, params", CASES)
def test_factor_matches_hand_reference(name, params):
    old, rollout, mask = tensors()
    c = rollout_correction(name, old, rollout, mask, **(params or {}))
    want_w, want_t, want_r = reference(name, params)
    for b in range(len(D)):
        for t in range(len(D[b])):
            if MASK[b][t]:
                assert float(c.weight[b, t]) == pytest.approx(want_w[b][t], rel=1e-12, abs=1e-300), (b, t)
    assert c.truncated.tolist() == want_t
    assert c.rejected.tolist() == want_r
    assert not c.weight.requires_grad


def test_reference_data_reaches_every_branch():
    """Each rule both keeps and drops (or truncates) something, so the tests above can tell rules apart."""
    for name, params in CASES:
        if name == "none":
            continue
        w, trunc, rej = reference(name, params)
        flags = [x for row in trunc + rej for x in row]
        kept = [x for row, rr in zip(w, rej) for x, r in zip(row, rr) if x is not None and not r]
        assert any(flags) and kept, name


@pytest.mark.parametrize("name, params", CASES)
def test_gradient_of_corrected_loss_matches_hand_reference(name, params):
    """PPO inside its clip range: loss = token-mean(-A r w), d loss / d logp_t = -A r_t w_t / n."""
    old, rollout, mask = tensors()
    lp = (old + torch.tensor(LP_DELTA, dtype=torch.float64)).requires_grad_(True)
    loss, _ = compute_policy_loss(
        "ppo",
        log_prob=lp,
        old_log_prob=old,
        advantages=torch.tensor(ADV, dtype=torch.float64),
        response_mask=mask,
        rollout_log_prob=rollout,
        agg="token-mean",
        **loss_kwargs(name, params),
    )
    (grad,) = torch.autograd.grad(loss, lp)
    w, _, rej = reference(name, params)
    n = sum(map(sum, MASK))
    want_loss = 0.0
    for b in range(len(D)):
        for t in range(len(D[b])):
            if not MASK[b][t]:
                assert float(grad[b, t]) == 0.0
                continue
            r = math.exp(LP_DELTA[b][t])
            want_loss += -ADV[b] * r * w[b][t] / n
            if rej[b][t]:
                assert float(grad[b, t]) == 0.0, (b, t)  # exactly zero, not merely small
            else:
                assert float(grad[b, t]) == pytest.approx(-ADV[b] * r * w[b][t] / n, rel=1e-12), (b, t)
    assert float(loss.detach()) == pytest.approx(want_loss, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", correction_names())
def test_infinite_log_probs_give_a_finite_loss_and_gradient(name):
    old, rollout, mask = tensors()
    rollout[1, 2] = -math.inf  # the sampler gave the token no mass; the trainer does
    old[1, 0] = -math.inf  # and the other way round, in the same response (inf - inf in a sum)
    lp = (torch.tensor(OLD, dtype=torch.float64) + 0.01).requires_grad_(True)
    loss, _ = compute_policy_loss(
        "ppo",
        log_prob=lp,
        old_log_prob=old,
        advantages=torch.tensor(ADV, dtype=torch.float64),
        response_mask=mask,
        rollout_log_prob=rollout,
        rollout_correction=name,
    )
    (grad,) = torch.autograd.grad(loss, lp)
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())


def test_sequence_weight_floor_is_exp_minus_20():
    """A documented limit: the sequence ratio in a weight is clamped at exp(-20) (verl's bound)."""
    old = torch.zeros(1, 3, dtype=torch.float64)
    rollout = torch.tensor([[10.0, 10.0, 10.0]], dtype=torch.float64)  # sum of log-ratios -30
    c = rollout_correction("seq_tis", old, rollout, torch.ones(1, 3, dtype=torch.bool))
    assert c.weight.tolist() == [[math.exp(-20.0)] * 3]


# archer before the registry (commit 39f7497, token-level TIS in losses.py), recorded on CPU as float.hex
BEFORE = {
    ("aspo", torch.float32, None): (
        "0x1.50bd820000000p-2",
        [
            [
                "-0x1.8a73de0000000p-4",
                "-0x1.51309e0000000p-5",
                "0x0.0p+0",
                "-0x1.42f3520000000p-4",
                "0x0.0p+0",
            ],
            [
                "0x1.7decc00000000p-3",
                "0x1.4afc740000000p-3",
                "0x1.2f73be0000000p-4",
                "0x1.a617940000000p-3",
                "0x1.4afc780000000p-3",
            ],
            [
                "-0x1.09d4e60000000p-6",
                "-0x1.a3c6160000000p-5",
                "-0x1.ac40fa0000000p-5",
                "0x0.0p+0",
                "0x0.0p+0",
            ],
        ],
        {"tis_mean": 1.2310393651326497, "tis_clip_frac": 0.25},
    ),
    ("ppo", torch.float64, 1.5): (
        "0x1.02f5691459ed4p-2",
        [
            [
                "-0x1.b3f003566d71dp-4",
                "-0x1.721b81af8e371p-6",
                "0x0.0p+0",
                "-0x1.42f352b5cc50ap-4",
                "0x0.0p+0",
            ],
            [
                "0x1.1e7190b93292bp-3",
                "0x1.4afc75d409539p-3",
                "0x1.2f73bcffc6dcbp-4",
                "0x1.3c91b3f9fd920p-3",
                "0x1.4afc75d40953ap-3",
            ],
            [
                "-0x1.51f03042611e5p-6",
                "-0x1.65b526fa7a08ap-5",
                "-0x1.03bfc19f2bf48p-5",
                "0x0.0p+0",
                "0x0.0p+0",
            ],
        ],
        {"tis_mean": 1.1060393725542805, "tis_clip_frac": 0.25},
    ),
}


@pytest.mark.parametrize("key", list(BEFORE))
@pytest.mark.parametrize("explicit", [False, True])
def test_default_reproduces_the_loss_before_the_registry_bit_for_bit(key, explicit):
    name, dtype, cap = key
    old = torch.tensor(
        [[-1.2, -0.4, -2.5, -0.9, -3.1], [-0.7, -1.9, -0.2, -4.0, -1.1], [-2.2, -0.3, -1.5, -0.8, -0.6]],
        dtype=dtype,
    )
    rollout = old - torch.tensor(
        [[0.3, -0.9, 1.2, 0.05, -0.02], [0.8, 0.0, -0.4, 2.5, 0.1], [-0.6, 0.35, 0.2, -1.4, 0.7]], dtype=dtype
    )
    lp = (
        old
        + torch.tensor(
            [[0.05, -0.3, 0.25, 0.0, 0.1], [-0.15, 0.4, 0.02, -0.05, 0.3], [0.12, -0.08, -0.25, 0.18, 0.01]],
            dtype=dtype,
        )
    ).requires_grad_(True)
    kw = {} if cap is None else {"tis_cap": cap}
    if explicit:
        kw["rollout_correction"] = "token_tis"
    loss, metrics = compute_policy_loss(
        name,
        log_prob=lp,
        old_log_prob=old,
        advantages=torch.tensor([0.9, -1.3, 0.4], dtype=dtype),
        response_mask=torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        entropy=torch.tensor(
            [[0.5, 2.0, 1.1, 0.3, 0.0], [1.7, 0.2, 0.9, 2.4, 1.3], [0.6, 1.8, 0.4, 0.0, 0.0]], dtype=dtype
        ),
        rollout_log_prob=rollout,
        **kw,
    )
    (grad,) = torch.autograd.grad(loss, lp)
    want_loss, want_grad, want_metrics = BEFORE[key]
    assert float(loss.detach()).hex() == want_loss
    assert [[float(x).hex() for x in row] for row in grad] == want_grad
    for k, v in want_metrics.items():
        assert metrics[k] == v


def test_none_ignores_the_rollout_log_probs():
    old, rollout, mask = tensors()
    common = dict(
        log_prob=old + 0.01,
        old_log_prob=old,
        advantages=torch.tensor(ADV, dtype=torch.float64),
        response_mask=mask,
    )
    plain, m_plain = compute_policy_loss("ppo", **common)
    off, m_off = compute_policy_loss("ppo", rollout_log_prob=rollout, rollout_correction="none", **common)
    assert torch.equal(plain, off) and not any(k.startswith(("rc_", "tis_")) for k in m_off)


@pytest.mark.parametrize("name, params", CASES[1:])
def test_correction_metrics_match_hand_values(name, params):
    old, rollout, mask = tensors()
    _, metrics = compute_policy_loss(
        "ppo",
        log_prob=old,
        old_log_prob=old,
        advantages=torch.tensor(ADV, dtype=torch.float64),
        response_mask=mask,
        rollout_log_prob=rollout,
        **loss_kwargs(name, params),
    )
    w, trunc, rej = reference(name, params)
    flat = [
        (x, tr, rr) for wr, trr, rrr in zip(w, trunc, rej) for x, tr, rr in zip(wr, trr, rrr) if x is not None
    ]
    n = len(flat)
    assert metrics["rc_weight_mean"] == pytest.approx(sum(x for x, _, _ in flat) / n, rel=1e-12)
    assert metrics["rc_truncated_frac"] == pytest.approx(sum(tr for _, tr, _ in flat) / n, abs=1e-15)
    assert metrics["rc_rejected_frac"] == pytest.approx(sum(rr for _, _, rr in flat) / n, abs=1e-15)
    assert metrics["rc_seq_rejected_frac"] == pytest.approx(sum(any(r) for r in rej) / len(rej), abs=1e-15)
    if name == "token_tis":
        cap = (params or {}).get("cap", 2.0)
        assert metrics["tis_mean"] == metrics["rc_weight_mean"]
        assert metrics["tis_clip_frac"] == pytest.approx(sum(x >= cap for x, _, _ in flat) / n, abs=1e-15)


def test_mismatch_metrics_match_hand_values():
    from archer.distributed.world import World
    from archer.rl.metrics import mismatch_metrics

    old, rollout, mask = tensors()
    batch = SimpleNamespace(response_mask=mask.double(), old_log_prob=old, rollout_log_prob=rollout)
    rows = [0, 2, 3]
    d = [D[b][t] for b in rows for t in range(5) if MASK[b][t]]
    got = mismatch_metrics(batch, rows, World(torch.device("cpu")))
    assert got["rollout/logprob_diff_mean"] == pytest.approx(sum(map(abs, d)) / len(d), rel=1e-12)
    assert got["rollout/logprob_diff_max"] == pytest.approx(max(map(abs, d)), rel=1e-12)
    assert got["rollout/kl_k1"] == pytest.approx(sum(-x for x in d) / len(d), rel=1e-12)
    assert got["rollout/kl_k3"] == pytest.approx(sum(math.exp(x) - x - 1 for x in d) / len(d), rel=1e-12)
    same = mismatch_metrics(
        SimpleNamespace(response_mask=mask, old_log_prob=old, rollout_log_prob=old),
        rows,
        World(torch.device("cpu")),
    )
    assert all(v == 0.0 for v in same.values())


def test_correction_in_force_keeps_todays_rule():
    assert correction_in_force(None, None) == "none"
    assert correction_in_force(None, 2.0) == "token_tis"
    assert correction_in_force("icepop", None) == "icepop"
    assert correction_in_force("none", 2.0) == "none"


@pytest.mark.parametrize(
    "name, params, words",
    [
        ("bogus", {}, ["unknown rollout correction", "icepop", "geo_rs"]),
        ("icepop", {"cap": 2.0}, ["unknown parameter", "lower", "upper"]),
        ("seq_rs", {"lower": 3.0, "upper": 2.0}, ["lower", "upper"]),
        ("seq_tis", {"cap": 0.0}, ["cap", "> 0"]),
        ("geo_rs", {"upper": "wide"}, ["upper", "number"]),
    ],
)
def test_bad_names_and_parameters_raise(name, params, words):
    old, rollout, mask = tensors()
    with pytest.raises(ValueError) as info:
        rollout_correction(name, old, rollout, mask, **params)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        (
            ["algo.rollout_correction=bogus"],
            "algo.rollout_correction",
            ["bogus", "icepop", "seq_tis", "none"],
        ),
        (
            ["algo.rollout_correction=seq_rs", "algo.rollout_correction_params={lower: 3, upper: 2}"],
            "algo.rollout_correction_params",
            ["lower", "upper"],
        ),
        (
            ["algo.rollout_correction=icepop", "algo.rollout_correction_params={cap: 3}"],
            "algo.rollout_correction_params",
            ["cap", "lower", "upper"],
        ),
        (
            ["algo.rollout_correction_params={cap: 3}"],
            "algo.rollout_correction_params",
            ["no rollout correction"],
        ),
        (
            ["algo.rollout_correction=token_tis", "algo.rollout_correction_params={cap: 3}"],
            "algo.rollout_correction_params.cap",
            ["algo.tis_cap"],
        ),
        (["algo.loss_params={rollout_correction: icepop}"], "algo.loss_params.rollout_correction", []),
        (["algo.rollout_correction=seq_tis", "algo.tis_cap=3"], "algo.tis_cap", ["token_tis", "params"]),
        (
            ["algo.rollout_correction=geo_rs", "algo.rollout_correction_params={upper: wide}"],
            "algo.rollout_correction_params",
            ["number"],
        ),
    ],
)
def test_config_errors_name_the_field(overrides, field, words):
    from archer.config import load_config
    from archer.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config("tiny_math", overrides)
    msg = str(info.value)
    assert msg.startswith(field) and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_config_accepts_every_entry_and_its_thresholds():
    from archer.config import load_config

    for name in correction_names():
        assert load_config("tiny_math", [f"algo.rollout_correction={name}"]).algo.rollout_correction == name
    cfg = load_config(
        "tiny_math",
        ["algo.rollout_correction=icepop", "algo.rollout_correction_params={lower: 0.4, upper: 3}"],
    )
    assert cfg.algo.rollout_correction_params == {"lower": 0.4, "upper": 3}
    assert load_config("tiny_math", []).algo.rollout_correction is None  # today's rule: token_tis via tis_cap


# entry -> (registry defaults, source); a change to a default must change this table, with its source
DEFAULTS = {
    "none": ({}, "no correction"),
    "token_tis": ({"cap": 2.0}, "Yao et al. 2025 (TIS), C = 2; verl decoupled_token_is threshold 2.0"),
    "seq_tis": ({"cap": 2.0}, "verl RolloutCorrectionConfig rollout_is_threshold 2.0 (decoupled_seq_is)"),
    "token_mis": ({"cap": 2.0}, "archer's choice: MIS (Liu, Li et al. 2025) at the token TIS cap 2"),
    "seq_mis": (
        {"cap": 2.0},
        "verl decoupled_seq_is_rs rs_threshold 2.0 (upper side: MIS drops above the cap)",
    ),
    "token_rs": ({"lower": None, "upper": 2.0}, "verl rollout_rs threshold 2.0, lower 1/upper"),
    "seq_rs": ({"lower": None, "upper": 2.0}, "verl rollout_rs threshold 2.0, lower 1/upper"),
    "geo_rs": ({"lower": None, "upper": 1.001}, "verl decoupled_geo_rs rs_threshold 1.001, lower 1/upper"),
    "icepop": ({"lower": 0.5, "upper": 5.0}, "OpenRLHF icepop vllm_is_truncated_threshold [0.5, 5.0]"),
}


@pytest.mark.parametrize("name", correction_names())
def test_registry_defaults_and_their_sources(name):
    want, source = DEFAULTS[name]
    assert ROLLOUT_CORRECTIONS[name].defaults == want, source


@pytest.mark.parametrize(
    "overrides, shares, want",
    [
        ([], False, 2.0),  # an engine with its own weights: token-level TIS on, as before
        ([], True, None),  # the HF engine samples with the trainer's weights: nothing to correct
        (["algo.tis_cap=3"], False, None),  # set by the user: kept
        (["rollout.default_tis_cap=null"], False, None),
        (["algo.rollout_correction=token_tis"], False, 2.0),
        (["algo.rollout_correction=icepop"], False, None),  # a named entry has its own thresholds
    ],
)
def test_default_tis_cap_is_filled_only_for_token_tis(overrides, shares, want):
    from archer.config import load_config
    from archer.rollout import default_tis_cap

    assert default_tis_cap(load_config("tiny_math", overrides), shares) == want
