"""Run configuration: nested dataclasses, YAML recipes, dotted ``key=value`` overrides, validation.

A run is described by one :class:`Config` with eleven sections (``model``, ``data``, ``rollout``,
``algo``, ``reward``, ``optim``, ``trainer``, ``eval``, ``resources``, ``logging``). Recipes are YAML files with the
same nesting; bundled ones live in ``archer/recipes/`` and are found by name (``tiny_math``) or by path.
Overrides use dotted names: ``algo.loss=dapo optim.lr=1e-5 rollout.length_stages=[[0,32],[20,48]]``;
the value is parsed as YAML, so numbers, booleans, lists and ``null`` work as expected.

Everything is validated at load time, before any compute starts: an unknown key, a value of the wrong
type, a value out of range or an unknown registry name (loss, advantage estimator, backend) raises
:class:`ConfigError` whose message names the dotted field and, for names, lists the valid ones.

Three modules: :mod:`~archer.config.schema` (the sections, their defaults and help texts),
:mod:`~archer.config.validate` (the checks) and :mod:`~archer.config.load` (recipes and overrides).
"""

from archer.config.load import (
    RECIPE_DIR,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
    read_yaml_file,
    recipe_names,
    recipe_path,
    save_config,
)
from archer.config.schema import (
    MOVED_KEYS,
    AlgoConfig,
    Config,
    DataConfig,
    EvalConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    ResourcesConfig,
    RewardConfig,
    RolloutConfig,
    TrainerConfig,
    explain,
    field_help,
)
from archer.config.validate import validate

__all__ = [
    "MOVED_KEYS",
    "RECIPE_DIR",
    "AlgoConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "ResourcesConfig",
    "RewardConfig",
    "RolloutConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_from_dict",
    "explain",
    "field_help",
    "load_config",
    "parse_override",
    "read_yaml_file",
    "recipe_names",
    "recipe_path",
    "save_config",
    "validate",
]
