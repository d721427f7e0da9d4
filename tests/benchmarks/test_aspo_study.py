"""benchmarks/aspo_study.py (issue 13): the smoke run end to end, and its statistics and verdict rules by hand."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _toy_common as common  # noqa: E402
import aspo_study as study  # noqa: E402

from archer.tasks.synthetic_paths import paths_problems  # noqa: E402


def test_mean_ci_by_hand():
    m, lo, hi = common.mean_ci([1.0, 2.0, 3.0])  # sd 1, t(2) = 4.303, half = 4.303 / sqrt(3)
    assert (
        m == 2.0
        and lo == pytest.approx(2 - 4.303 / math.sqrt(3))
        and hi == pytest.approx(2 + 4.303 / math.sqrt(3))
    )
    assert math.isnan(common.mean_ci([5.0])[1]) and common.mean_ci([5.0])[0] == 5.0
    m, lo, hi = common.mean_ci([0.1] * 40)  # beyond the table: normal quantile, zero spread
    assert (m, lo, hi) == pytest.approx((0.1, 0.1, 0.1))


def test_distinct_correct_paths_counts_paths_not_answers():
    p, q = paths_problems(2, seed=0)
    p.meta["nums"], p.answer = [3, 8, 5], "16"
    q.meta["nums"], q.answer = [1, 2, 4], "7"
    scored = [
        (r, p)
        for r in (
            "3+8=11, 11+5=16. \\boxed{16}",
            "3+8=11, 11+5=16. \\boxed{16}",  # same path twice
            "5+3=8, 8+8=16. \\boxed{16}",
            "3+8=12, 12+4=16. \\boxed{16}",
        )
    ]  # right box, wrong work
    scored += [("1+2=3, 3+4=7. \\boxed{7}", q), ("1+2=4, 4+4=8. \\boxed{8}", q)]
    assert study.distinct_correct_paths(scored) == pytest.approx((2 + 1) / 2)
    assert math.isnan(study.distinct_correct_paths([]))


def test_control_gap_by_hand():
    assert study.control_gap({"delta": {"GRPO": [0.01, -0.02], "ASPO": [0.01, -0.0201]}}) == pytest.approx(
        0.0001 / 0.02
    )
    assert study.control_gap({"delta": {"GRPO": [0.0], "ASPO": [0.0]}}) == 0.0
    assert study.control_gap({"delta": {"GRPO": [0.0], "ASPO": [1e-3]}}) == math.inf


def _res(entropies: list[float], avg: float) -> dict:
    """A variant's results whose primary measure (operand-choice entropy) is ``entropies``; the all-token
    entropy is deliberately different, so a verdict read from the wrong measure fails the tests."""
    return {
        "tail": {"entropy_choice": entropies, "entropy": [0.2] * len(entropies), "paths": [0.1] * len(entropies)},
        "final": {"avg_at_k": [avg] * len(entropies)},
    }


def _prb(diffs: list[float]) -> dict:
    return {"batches": len(diffs), "paired": {"ASPO": common.mean_ci(diffs), "GRPO": (0.0, 0.0, 0.0)}}


@pytest.mark.parametrize(
    "aspo_tail, word",
    [
        ([0.60, 0.62, 0.61], "EFFECT."),  # +0.11 nats, tight: the interval excludes 0
        (
            [0.501, 0.511, 0.499],
            "NO EFFECT LARGER THAN THE MARGIN.",
        ),  # +0.0003 [-0.0016, +0.0023] inside +/-0.05
        ([0.50, 0.60, 0.44], "INCONCLUSIVE (underpowered"),  # contains 0 and reaches past the margin
    ],
)
def test_verdict_is_one_of_the_three_outcomes_on_the_declared_primary(aspo_tail, word):
    results = {"ASPO": _res(aspo_tail, 0.5), "GRPO": _res([0.5, 0.51, 0.50], 0.3)}
    text = study.verdict(results, _prb([0.01, 0.012, 0.011, 0.009]))
    assert f"(rules fixed in advance): {word}" in text
    # the probe and the accuracy are secondary: reported, never the verdict word
    assert "Secondary measures (not the verdict): all-token entropy" in text
    assert "per-update entropy change" in text
    assert not any(w in text for w in ("REFUTED", "CONFIRMED", "MIXED", "REAL PER UPDATE"))


def test_verdict_with_too_little_is_inconclusive():
    results = {"ASPO": _res([0.6], 0.5), "GRPO": _res([0.5], 0.5)}
    assert "INCONCLUSIVE" in study.verdict(results, _prb([0.01, 0.02, 0.01, 0.02]))
    results = {"ASPO": _res([float("nan")] * 3, 0.5), "GRPO": _res([0.5] * 3, 0.5)}
    assert "INCONCLUSIVE" in study.verdict(results, _prb([0.01] * 4))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("aspo_quick")
    rc = study.main(["--quick", "--fresh", "--out-dir", str(out)])
    return rc, out, json.loads((out / "aspo_study.json").read_text())


def test_quick_run_writes_every_curve_and_the_plot(quick):
    rc, out, data = quick
    assert rc == 0 and (out / "aspo_study.png").stat().st_size > 10_000
    md = (out / "aspo_study.md").read_text()
    assert "| GRPO |" in md and "| ASPO-flip |" in md and "On-policy control" in md and "Verdict" in md
    assert set(data["results"]) == set(study.DEFAULT_VARIANTS)
    for r in data["results"].values():
        # every step updated (reward signal in the smoke task): entropies and ratios measured at each step
        assert len(r["entropy"]) == 2 and all(
            v is not None and v > 0 for v in r["entropy"] + r["entropy_fork"]
        )
        assert all(v is not None and v > 0 for v in r["ratio_pos"] + r["ratio_neg"])
        assert len(r["paths"]) == 2 and all(v >= 0 for v in r["paths"])
        # the role measures: entropy at the operand choices of each step's own samples, and the shares
        assert len(r["entropy_choice"]) == 2 and all(v > 0 for v in r["entropy_choice"])
        shares = r["top20_share_choice"] + r["top20_share_result"]
        assert all(0 <= v <= 1 for v in shares) and r["top20_share_choice"][0] > 0
        assert r["eval_steps"] == [0, 1, 2] and len(r["avg_at_k"]) == 3


def test_quick_probe_on_policy_control_coincides_and_off_policy_differs(quick):
    _, _, data = quick
    ctrl, prb = data["control"], data["probe"]
    assert ctrl["batches"] >= 1 and data["control_ok"] and data["control_gap"] < 1e-3
    assert data["control_grad_gap"] < 1e-3 and set(ctrl["grad_gap"]) == set(study.DEFAULT_VARIANTS)
    assert any(v != 0 for v in ctrl["delta"]["GRPO"])  # the control's update did change the entropy
    # off-policy (3 x 4) the same batches and weights give different entropy changes: the losses differ there
    assert prb["batches"] == 2
    gaps = [abs(a - g) for n in prb["delta"] for a, g in zip(prb["delta"][n], prb["delta"]["GRPO"])]
    assert max(gaps) > 1e-4
    assert "INCONCLUSIVE" in data["verdict"]  # one seed: the smoke run cannot decide anything


def test_char_roles_of_a_worked_solution():
    text = "3+8=11, 11+5=16, 16+2=18. \\boxed{18}"
    roles = study.char_roles(text, 4)
    got = {}
    for ch, r in zip(text, roles):
        got.setdefault(r, []).append(ch)
    # the first operand and the next two picked operands are choices; the last one is forced
    assert got["choice"] == ["3", "8", "5"] and got["forced"] == ["2"]
    assert got["copy"] == list("1116") and got["result"] == list("111618") and got["answer"] == list("18")
    assert set("".join(got["other"])) == set("+=,. \\boxed{}")
    # three operands: only the first and the first step's second operand are choices
    assert [c for c, r in zip("4+1=5, 5+2=7. \\boxed{7}", study.char_roles("4+1=5, 5+2=7. \\boxed{7}", 3)) if r == "choice"] == ["4", "1"]
    assert set(study.char_roles("no steps here", 4)) == {"other"}


def test_token_roles_follow_the_decoded_spans():
    from archer.models.tiny import build_tokenizer
    from archer.tasks.synthetic_paths import paths_tokenizer_corpus

    tok = build_tokenizer(paths_tokenizer_corpus(200), vocab_size=300)
    text = "3+8=11, 11+5=16, 16+2=18. \\boxed{18}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    roles = study.token_roles(ids, tok, 4)
    assert len(roles) == len(ids)
    digits = [(tok.decode([i]), r) for i, r in zip(ids, roles) if tok.decode([i]).strip().isdigit()]
    assert [d for d, r in digits if r == "choice"] == ["3", "8", "5"]
    assert [d for d, r in digits if r == "forced"] == ["2"]
    assert sum(r == "result" for r in roles) == 6


def test_gradient_gaps_see_a_doubled_gradient():
    import torch

    g = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64)
    gaps = study.gradient_gaps({"GRPO": g, "same": g.clone(), "double": 2 * g, "none": None})
    assert gaps == {"GRPO": 0.0, "same": 0.0, "double": pytest.approx(1.0)}
    assert study.gradient_gaps({}) == {}


def test_gradient_tap_records_the_first_step_gradient_whatever_the_optimizer():
    import torch

    for make, scale in ((lambda ps: torch.optim.AdamW(ps, lr=0.1), 1.0), (lambda ps: torch.optim.SGD(ps, lr=0.1), 2.0)):
        w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        opt = make([w])
        with study.GradientTap() as tap:
            for _ in range(2):  # only the first step's gradient is kept
                opt.zero_grad()
                (scale * (w**2).sum()).backward()
                opt.step()
        assert tap.first.dtype == torch.float64
        assert torch.equal(tap.first, torch.tensor([2.0, 4.0], dtype=torch.float64) * scale)
    tap = study.GradientTap()  # outside a with block nothing is recorded
    opt.zero_grad()
    (w**2).sum().backward()
    opt.step()
    assert tap.first is None
