"""Every registered policy loss carries its paper's (or released code's) aggregation and clip values.

One row per loss; a change to a registry default must change this table, with its source. Where the
paper leaves a value open the row says so and names archer's choice. The registry's aggregation is
what a run gets when its recipe leaves ``algo.agg`` unset; the bundled recipes all set it (see
``tests/test_recipes_released.py``), so these defaults matter for user recipes and direct calls.
"""

from __future__ import annotations

import pytest

from archer.algo.losses import POLICY_LOSSES

SPLIT = {"entropy_quantile": 0.8, "kl_coef": 0.001, "kl_estimator": "k3", "high_entropy_kl_coef": 0.0}

# loss -> (expected defaults, source)
DEFAULTS: dict[str, tuple[dict, str]] = {
    "ppo": (
        {"agg": "token-mean", "clip_low": 0.2, "clip_high": 0.2, "dual_clip_c": None, "kl_coef": 0.0},
        "PPO, arXiv 1707.06347: eps 0.2, the clipped objective averaged over the batch's timesteps (tokens). "
        "The GRPO paper's per-response mean is selected by the grpo recipe, not this loss's default.",
    ),
    "dapo": (
        {"agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28, "dual_clip_c": None, "kl_coef": 0.0},
        "DAPO, arXiv 2503.14476: clip-higher eps_low 0.2 / eps_high 0.28, token-level loss, no KL.",
    ),
    "gspo": (
        {
            "agg": "seq-mean-token-mean",
            "clip_low": 3e-4,
            "clip_high": 4e-4,
            "dual_clip_c": None,
            "kl_coef": 0.0,
        },
        "GSPO, arXiv 2507.18071: sequence-level objective (mean over the group's responses; GSPO-token "
        "averages each response's tokens), clipping ranges 3e-4 (left) and 4e-4 (right).",
    ),
    "cispo": (
        {"agg": "token-mean", "clip_low": 1.0, "clip_high": 0.28, "kl_coef": 0.0},
        "CISPO, MiniMax-M1 arXiv 2506.13585: token-level normalisation; no lower bound on the IS weight "
        "(eps_low large: 1.0 puts the bound at 0). The paper tunes eps_high without a value archer could "
        "confirm: 0.28 (DAPO's) is archer's choice.",
    ),
    "gppo": (
        {
            "agg": "token-mean",
            "clip_low": 0.2,
            "clip_high": 0.28,
            "dual_clip_c": 10.0,
            "beta_low": 1.0,
            "beta_high": 1.0,
            "kl_coef": 0.0,
        },
        "Klear-Reasoner GPPO, arXiv 2508.07629; github.com/suu990901/KlearReasoner@5d2d0b8 "
        "recipe/dapo/perf_run_dapo_ours_math.sh (clip 0.2/0.28, clip_ratio_c 10, token-mean, no KL loss) "
        "and verl/trainer/ppo/core_algos.py compute_gppo_loss (no beta factors: both 1).",
    ),
    "dtc": (
        {
            "agg": "token-mean",
            "clip_low": 0.2,
            "clip_high": 0.2,
            "high_entropy_clip_low": 0.5,
            "high_entropy_clip_high": 0.5,
            "dual_clip_c": 10.0,
            "kl_norm": "subset",
            **SPLIT,
        },
        "Archer DTC, arXiv 2507.15778; github.com/wizard-III/ArcherCodeR@8a1785b "
        "scripts/train/run_archer_qwen2.5_1.5b_code.sh: quantile 0.8, low-entropy clip 0.2 with k3 KL "
        "0.001, high-entropy clip 0.5 with KL 0, clip_ratio_c 10, loss_agg_mode token-mean. Its one-sequence "
        "micro-batches make that seq-mean-token-mean with per-response KL in effect: the archer_dtc_code "
        "recipe selects those; the registry keeps the script's named mode (see docs/ALGORITHMS.md).",
    ),
    "aspo": (
        {
            "agg": "token-mean",
            "clip_low": 0.2,
            "clip_high": 0.2,
            "high_entropy_clip_low": 0.4,
            "high_entropy_clip_high": 0.4,
            "dual_clip_c": 3.0,
            "kl_norm": "subset",
            **SPLIT,
        },
        "Archer2.0 ASPO, arXiv 2510.06062; github.com/wizard-III/Archer2.0@b08d963 "
        "verl/workers/actor/dp_actor.py (hardcoded clips 0.2 / 0.4, dual clip 3 for both signs, quantile "
        "0.8) and scripts/train/run_archer2.0_qwen2.5_1.5b_*.sh (k3 KL 0.001, high-entropy KL 0, "
        "loss_agg_mode token-mean; effective seq-mean-token-mean as for dtc: the archer2_* recipes).",
    ),
}


def test_table_covers_the_registry():
    assert sorted(DEFAULTS) == sorted(POLICY_LOSSES)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_registry_defaults_match_the_source(name):
    expected, source = DEFAULTS[name]
    assert source
    resolved = POLICY_LOSSES[name].resolve(name, {})
    got = {k: resolved.get(k, "<absent>") for k in expected}
    assert got == expected, f"{name}: registry defaults drifted from {source}"


@pytest.mark.parametrize("loss", sorted(DEFAULTS))
def test_print_config_shows_the_registry_aggregation_and_clips(capsys, loss):
    """A recipe that names only the loss trains with the registry's aggregation and clips, and
    ``archer train --print-config`` shows them."""
    import yaml

    from archer.cli.train import main

    assert main(["tiny_math", f"algo.loss={loss}", "algo.agg=null", "--print-config"]) == 0
    out = capsys.readouterr().out
    marker = "registry defaults where unset): "
    line = next(x for x in out.splitlines() if x.startswith("# algo.loss_params in force") and marker in x)
    in_force = yaml.safe_load(line.split(marker, 1)[1])
    expected, _ = DEFAULTS[loss]
    assert yaml.safe_load(out)["algo"]["agg"] == expected["agg"]
    for key in ("clip_low", "clip_high", "high_entropy_clip_low", "high_entropy_clip_high", "dual_clip_c"):
        if key in expected:
            assert in_force[key] == expected[key], (loss, key)
