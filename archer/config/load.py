"""Building a config: recipes (bundled names or YAML files), dotted overrides, typed coercion.

Overrides use dotted names: ``algo.loss=dapo optim.lr=1e-5 rollout.length_stages=[[0,32],[20,48]]``; the
value is parsed as YAML, so numbers, booleans, lists and ``null`` work as expected. The type checker
understands the annotations used in :mod:`archer.config.schema` (bool, int, float, str, ``X | None``,
``list[...]``, ``dict[str, ...]`` and nested dataclasses), not arbitrary typing constructs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

from archer.config.schema import MOVED_KEYS, Config
from archer.config.validate import validate
from archer.errors import ConfigError
from archer.safe_yaml import load_yaml

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        full = f"{where}{unknown[0]}"
        if full in MOVED_KEYS:
            raise ConfigError(f"{full}: moved to {MOVED_KEYS[full]} (one home per setting)")
        raise ConfigError(f"{full}: unknown key; valid keys here: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}.{name}" if prefix else name)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a section's own checks (NCCLConfig)
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def _coerce(tp: Any, value: Any, name: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, name)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{name}: must not be null")
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string; accept numeric strings
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported field type {tp!r}")


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(recipe: str) -> Path:
    """A bundled recipe name (``tiny_math``) or a path to a YAML file."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe: file {recipe!r} not found")
        return path
    bundled = RECIPE_DIR / f"{recipe}.yaml"
    if not bundled.is_file():
        raise ConfigError(f"recipe: unknown recipe {recipe!r}; bundled: {recipe_names()}")
    return bundled


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"algo.loss=dapo"`` -> (["algo", "loss"], "dapo"); the value is read as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected dotted.key=value")
    try:
        value = load_yaml(raw, source=f"override {key.strip()}") if raw.strip() else ""
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (copying the path); unknown keys are caught by validation."""
    out = _deep_copy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for depth, k in enumerate(keys[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(keys[: depth + 1])}: is not a section, cannot set {item!r}")
            node = nxt
        node[keys[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml_file(path: str | Path, what: str) -> Any:
    """A YAML file through :func:`archer.safe_yaml.load_yaml` (alias bombs, depth and size refused fast);
    every problem is a one-line :class:`ConfigError` naming ``what`` and the file."""
    try:
        return load_yaml(Path(path).read_bytes(), source=f"{what} {str(path)!r}") or {}
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def config_from_dict(data: dict[str, Any]) -> Config:
    return validate(_from_dict(Config, data or {}, ""))


def load_config(recipe: str | None = "tiny_math", overrides: list[str] | None = None) -> Config:
    """Load a recipe (bundled name or YAML path; ``None`` = all defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if recipe is not None:
        path = recipe_path(recipe)
        data = read_yaml_file(path, "recipe")
        if not isinstance(data, dict):
            raise ConfigError(f"recipe {str(path)!r}: top level must be a mapping")
        data.setdefault("recipe", path.stem)
    data = apply_overrides(data, list(overrides or []))
    return config_from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(cfg.to_yaml())
