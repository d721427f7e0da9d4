"""Config: recipes load and validate, dotted overrides, and errors that name the field."""

from __future__ import annotations

import pytest

from archer.config import (
    Config,
    apply_overrides,
    config_from_dict,
    load_config,
    recipe_names,
)
from archer.errors import ConfigError


def test_bundled_recipes_exist():
    names = recipe_names()
    for required in (
        "tiny_math",
        "tiny_code",
        "archer2_aspo_math",
        "archer2_aspo_code",
        "archer_dtc_code",
        "dapo",
        "grpo",
        "klear_gppo",
        "skywork_or1",
    ):
        assert required in names


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_loads_and_validates(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert cfg.recipe == name
    # round trip through the dict form gives the same config
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_published_settings_of_seed_recipes():
    aspo = load_config("archer2_aspo_math")
    assert (aspo.algo.loss, aspo.optim.lr, aspo.rollout.n) == ("aspo", 1e-6, 16)
    assert (aspo.trainer.ppo_epochs, aspo.trainer.mini_batches) == (3, 4)
    assert aspo.algo.loss_params["dual_clip_c"] == 3.0
    assert aspo.algo.loss_params["high_entropy_clip_high"] == 0.4
    dapo = load_config("dapo")
    assert dapo.algo.loss_params == {"clip_low": 0.2, "clip_high": 0.28, "dual_clip_c": 10.0, "kl_coef": 0.0}
    assert dapo.rollout.dynamic_sampling and dapo.algo.overlong_buffer == 4096
    dtc = load_config("archer_dtc_code")
    assert dtc.algo.loss_params["high_entropy_clip_high"] == 0.5
    assert load_config("skywork_or1").algo.entropy_target == 0.2
    assert load_config("klear_gppo").algo.pos_nll_coef == 0.1


@pytest.mark.parametrize("recipe", ["archer2_aspo_math", "archer2_aspo_code", "archer_dtc_code"])
def test_archer_recipes_follow_the_released_scripts(recipe):
    """Released: AdamW wd 0.1 with 10 warm-up steps; ASPO runs 3x4 mini-batches with a 16-token overlong
    buffer, seq-mean-token-mean and per-response KL; DTC code 3 epochs x 2 mini-batches."""
    cfg = load_config(recipe)
    assert (cfg.optim.weight_decay, cfg.optim.warmup_steps, cfg.optim.lr) == (0.1, 10, 1e-6)
    if recipe.startswith("archer2"):
        assert (cfg.trainer.ppo_epochs, cfg.trainer.mini_batches, cfg.algo.overlong_buffer) == (3, 4, 16)
        assert cfg.algo.agg == "seq-mean-token-mean" and cfg.algo.loss_params["kl_norm"] == "response"
    else:
        assert (cfg.trainer.ppo_epochs, cfg.trainer.mini_batches) == (3, 2)


def test_klear_math_recipe_lr_and_beta_low():
    cfg = load_config("klear_gppo")
    assert cfg.optim.lr == 1e-6 and cfg.algo.loss_params["beta_low"] == 0.25


def test_default_is_tiny_math():
    assert load_config().recipe == "tiny_math"


def test_overrides_parse_yaml_values():
    cfg = load_config(
        "tiny_math",
        [
            "algo.loss=dapo",
            "optim.lr=1e-5",
            "rollout.length_stages=[[0, 8], [5, 16]]",
            "eval.ks=[1, 2]",
            "eval.n=2",
            "data.remove_solved_threshold=null",
            "algo.loss_params={clip_high: 0.3}",
        ],
    )
    assert cfg.algo.loss == "dapo"
    assert cfg.optim.lr == pytest.approx(1e-5)
    assert cfg.rollout.length_stages == [[0, 8], [5, 16]]
    assert cfg.eval.ks == [1, 2]
    assert cfg.algo.loss_params == {"clip_high": 0.3}


def test_apply_overrides_does_not_mutate_input():
    data = {"optim": {"lr": 1.0}}
    out = apply_overrides(data, ["optim.lr=2.0"])
    assert data["optim"]["lr"] == 1.0 and out["optim"]["lr"] == 2.0


@pytest.mark.parametrize(
    "override, field, words",
    [
        ("algo.loss=ppo2", "algo.loss", ["aspo", "dapo", "gspo", "ppo"]),
        ("algo.advantage=foo", "algo.advantage", ["grpo", "rloo"]),
        ("algo.agg=mean", "algo.agg", ["token-mean"]),
        ("trainer.stepz=3", "trainer.stepz", ["unknown key", "steps"]),
        ("rollout.n=abc", "rollout.n", ["integer"]),
        ("rollout.n=0", "rollout.n", [">= 1"]),
        ("optim.lr=-1", "optim.lr", ["> 0"]),
        ("optim.betas=[0.9]", "optim.betas", []),
        ("rollout.top_p=1.5", "rollout.top_p", []),
        ("eval.ks=[1, 99]", "eval.ks[1]", []),
        ("logging.plots=maybe", "logging.plots", ["true/false"]),
        ("resources.backend=slurm", "resources.backend", ["local", "ray"]),
        ("rollout.length_stages=[[5, 8], [2, 16]]", "rollout.length_stages[1]", ["increasing"]),
        ("algo.loss_params={clip_hi: 0.3}", "algo.loss_params", ["clip_hi", "clip_high"]),
        ("nosection.x=1", "nosection", ["unknown key"]),
        ("model.hidden_size=30", "model.num_heads", ["divide"]),
    ],
)
def test_errors_name_the_field(override, field, words):
    with pytest.raises(ConfigError) as info:
        load_config("tiny_math", [override])
    msg = str(info.value)
    assert msg.startswith(field), msg
    for w in words:
        assert w in msg, msg


def test_bad_override_syntax_and_unknown_recipe():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config("tiny_math", ["algo.loss"])
    with pytest.raises(ConfigError, match="tiny_math"):  # the error lists the bundled recipes
        load_config("no_such_recipe")


def test_recipe_from_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("algo: {loss: gppo}\ntrainer: {steps: 3}\n")
    cfg = load_config(str(path))
    assert cfg.algo.loss == "gppo" and cfg.trainer.steps == 3 and cfg.recipe == "mine"
    path.write_text("algo: {los: gppo}\n")
    with pytest.raises(ConfigError, match=r"^algo\.los"):
        load_config(str(path))


def test_numeric_strings_and_int_floats():
    cfg = config_from_dict({"optim": {"lr": "3e-4"}, "trainer": {"steps": 4.0}})
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.trainer.steps == 4
    with pytest.raises(ConfigError, match=r"^trainer\.steps"):
        config_from_dict({"trainer": {"steps": 4.5}})
    with pytest.raises(ConfigError, match=r"^trainer\.steps"):
        config_from_dict({"trainer": {"steps": True}})


def test_yaml_alias_bomb_recipe_and_override_are_refused_fast(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefg", "bcdefgh"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")  # ~400 bytes, 10^8 nodes once expanded
    with pytest.raises(ConfigError, match="bomb.yaml.*expands"):  # refused before anything is expanded
        load_config(str(bomb))
    with pytest.raises(ConfigError, match="override data.generator"):
        load_config("tiny_math", ["data.generator={" + ", ".join(levels) + "}"])


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e999"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ConfigError, match="optim.lr: must be a finite number"):
        load_config("tiny_math", [f"optim.lr={value}"])


def test_loss_aggregation_has_one_home_the_loss_registry():
    """algo.agg unset takes the loss's own default (GSPO is sequence-level), so a recipe that names only
    the loss trains the paper's objective; an explicit algo.agg still wins."""
    from archer.algo.losses import POLICY_LOSSES
    from archer.config import config_from_dict

    for loss in POLICY_LOSSES:
        cfg = config_from_dict({"algo": {"loss": loss}})
        assert cfg.algo.agg == POLICY_LOSSES[loss].resolve(loss, {})["agg"], loss
    assert config_from_dict({"algo": {"loss": "gspo"}}).algo.agg == "seq-mean-token-mean"
    assert config_from_dict({"algo": {"loss": "gspo", "agg": "token-mean"}}).algo.agg == "token-mean"


def test_nccl_section_loads_and_has_one_home(tmp_path):
    from archer.config import config_from_dict
    from archer.distributed.nccl import load_nccl_config

    cfg = config_from_dict({"nccl": {"socket_ifname": "eth0", "ib_disable": True}})
    assert cfg.nccl.to_env() == {"NCCL_SOCKET_IFNAME": "eth0", "NCCL_IB_DISABLE": "1"}
    with pytest.raises(ConfigError, match="nccl"):
        config_from_dict({"nccl": {"debug": "LOUD"}})
    for old in ({"resources": {"nccl": {}}}, {"cluster": {"nccl": {}}}):
        with pytest.raises(ConfigError, match="moved to nccl"):
            config_from_dict(old)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("resources:\n  nccl: {debug: WARN}\n")
    with pytest.raises(ValueError, match="top-level nccl"):
        load_nccl_config(recipe)
    recipe.write_text("nccl: {debug: WARN}\n")
    assert load_nccl_config(recipe).to_env() == {"NCCL_DEBUG": "WARN"}


def test_settings_that_moved_name_their_one_home():
    from archer.config import config_from_dict

    for section, key, home in (
        ("eval", "num_problems", "data.num_eval"),
        ("logging", "tensorboard", "logging.sinks"),
        ("logging", "log_samples", "metrics.jsonl"),
    ):
        with pytest.raises(ConfigError, match=f"{section}.{key}: moved to {home}"):
            config_from_dict({section: {key: 1}})


def test_every_setting_has_help_text_and_explain_round_trips():
    """Each field carries its help (the string below it); --explain prints the config as YAML with the
    help as comments, and that YAML loads back to the same config."""
    import yaml

    from archer.config import explain, field_help

    helps = field_help()
    assert len(helps) > 100
    assert not [k for k, v in helps.items() if len(v) < 8], "settings without help text"
    cfg = load_config("tiny_math")
    text = explain(cfg)
    assert "# AdamW learning rate." in text and "\n  lr: 0.003" in text or "lr:" in text
    assert yaml.safe_load(text) == cfg.to_dict()


def test_print_config_shows_the_loss_parameters_in_force(capsys):
    from archer.cli.train import main

    assert main(["tiny_math", "algo.loss=gspo", "algo.agg=null", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "agg: seq-mean-token-mean" in out
    assert "# algo.loss_params in force (gspo's registry defaults where unset):" in out
    assert "clip_low: 0.0003" in out and "clip_high: 0.0004" in out
    assert main(["tiny_math", "--print-config", "--explain"]) == 0
    assert "# Prompts per step." in capsys.readouterr().out
