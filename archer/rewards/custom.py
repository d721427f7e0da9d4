"""Rewards from the config: ``reward.function=PATH.py:NAME`` or ``module:NAME``, no Python inside archer.

Two signatures are accepted (``reward.signature``: ``auto`` reads the parameter names):

- **TRL** (``GRPOTrainer`` reward functions): ``fn(completions, **columns) -> list[float | None]``, called
  once per batch. ``completions`` are the response strings; the keyword columns are ``prompts`` (the
  prompt text, before any chat template), ``answer`` and its alias ``ground_truth``, ``solution`` (the
  reference answer when the dataset row has no ``solution`` of its own), ``id``, ``kind``,
  ``data_source``, ``tests`` and every key of the problem's ``meta`` (one list per column, one entry per
  completion). A function without ``**kwargs`` gets only the columns it names. ``None`` means "no
  opinion on this sample" in TRL; here it becomes ``reward.none_reward`` (default 0) and
  ``info["function_none"]`` is set, so the sample is kept (not skipped) and the choice is visible.
- **verl** (``compute_score``): ``fn(data_source, solution_str, ground_truth, extra_info) -> float |
  dict``, called once per response; ``extra_info`` is ``{"id", "index", "kind", **meta}``. A dict result
  gives its ``"score"`` and, when present, its ``"acc"`` as the correctness verdict.

Combination with the built-in verifiers (``archer.rewards.registry``, chosen by problem kind)::

    reward = reward.verifier_weight * verifier_reward + reward.function_weight * function_value

Defaults: ``function_weight=1``, ``verifier_weight=0`` (the function replaces the verifier). With
``verifier_weight > 0`` the verifier's verdict is the accuracy (avg@k, pass@k); otherwise a verl
``"acc"`` when given, else ``function_value > 0``. A function that raises gives that batch (TRL) or
that sample (verl) reward 0 with ``info["reason"]``, like a failing verifier; it never ends the run.
The function runs in the trainer's process (also with ``resources.backend=ray``). Loading a file
executes it: the config check at load time imports it once (and fails early, naming
``reward.function``, when the file is missing, does not import, or ``NAME`` is not a callable).

Runnable example (``examples/custom_reward.py`` holds both styles)::

    archer train tiny_math reward.function=examples/custom_reward.py:short_and_correct \\
        reward.verifier_weight=1.0 reward.function_weight=0.5 trainer.steps=2
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archer.data.prompts import user_message
from archer.data.schema import Problem
from archer.rewards.registry import score_responses
from archer.rewards.types import RewardResult

SIGNATURES = ("auto", "trl", "verl")
_VERL_PARAMS = ("data_source", "solution_str", "ground_truth")
_CACHE: dict[tuple[str, str], RewardFunction] = {}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _split_spec(spec: str) -> tuple[str, str]:
    target, sep, name = spec.rpartition(":")
    if not sep or not target.strip() or not name.strip():
        raise ValueError(f"{spec!r}: expected PATH.py:NAME or module:NAME")
    return target.strip(), name.strip()


def _import_target(target: str) -> Any:
    looks_like_file = target.endswith(".py") or "/" in target or "\\" in target
    if looks_like_file:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ValueError(f"file {target!r} not found")
        resolved = path.resolve()
        digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
        module_name = f"archer_user_reward_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, resolved)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {target!r} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ValueError(f"importing {target!r} failed: {_one_line(exc)}") from None
        return module
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise ValueError(f"cannot import module {target!r}: {_one_line(exc)}") from None


def _detect(fn: Callable[..., Any]) -> str:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return "trl"
    return "verl" if params[:1] and params[0] in _VERL_PARAMS or "solution_str" in params else "trl"


@dataclass
class RewardFunction:
    """A loaded user reward: ``values(responses, problems)`` -> one ``(value | None, info)`` each."""

    fn: Callable[..., Any]
    name: str
    signature: str  # trl | verl

    def values(
        self, responses: Sequence[str], problems: Sequence[Problem]
    ) -> list[tuple[float | None, dict]]:
        if self.signature == "verl":
            return [self._verl_one(i, r, p) for i, (r, p) in enumerate(zip(responses, problems))]
        return self._trl(responses, problems)

    def _trl(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[tuple[float | None, dict]]:
        columns = trl_columns(problems)
        params = inspect.signature(self.fn).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            columns = {k: v for k, v in columns.items() if k in params}
        try:
            out = list(self.fn(completions=list(responses), **columns))
            if len(out) != len(responses):
                raise RuntimeError(f"returned {len(out)} values for {len(responses)} completions")
            return [(_number(v, allow_none=True), {}) for v in out]
        except Exception as exc:
            reason = f"reward function {self.name!r} failed: {_one_line(exc)}"
            return [(0.0, {"reason": reason}) for _ in responses]

    def _verl_one(self, index: int, response: str, problem: Problem) -> tuple[float | None, dict]:
        extra = {"id": problem.id, "index": index, "kind": problem.kind, **problem.meta}
        try:
            out = self.fn(problem.data_source, response, problem.answer, extra)
            if isinstance(out, dict):
                info = {k: v for k, v in out.items() if k != "score"}
                return _number(out["score"]), info
            return _number(out), {}
        except Exception as exc:
            return 0.0, {"reason": f"reward function {self.name!r} failed: {_one_line(exc)}"}


def _number(value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"non-finite reward {number}")
    return number


def trl_columns(problems: Sequence[Problem]) -> dict[str, list[Any]]:
    """The keyword columns a TRL-style function receives (one list entry per completion)."""

    cols: dict[str, list[Any]] = {
        "prompts": [p.prompt if isinstance(p.prompt, str) else user_message(p, "raw") for p in problems],
        "answer": [p.answer for p in problems],
        "ground_truth": [p.answer for p in problems],
        "id": [p.id for p in problems],
        "kind": [p.kind for p in problems],
        "data_source": [p.data_source for p in problems],
        "tests": [p.tests for p in problems],
    }
    meta_keys = sorted({k for p in problems for k in p.meta} - set(cols) - {"completions"})
    for key in meta_keys:
        cols[key] = [p.meta.get(key) for p in problems]
    if "solution" not in cols:
        cols["solution"] = [p.answer for p in problems]
    return cols


def load_reward_function(spec: str, signature: str = "auto") -> RewardFunction:
    """Import ``PATH.py:NAME`` / ``module:NAME``; a one-line ``ValueError`` says what is wrong."""
    if signature not in SIGNATURES:
        raise ValueError(f"unknown signature {signature!r}; valid: {list(SIGNATURES)}")
    key = (spec, signature)
    if key in _CACHE:
        return _CACHE[key]
    target, name = _split_spec(spec)
    module = _import_target(target)
    fn = getattr(module, name, None)
    if fn is None:
        raise ValueError(f"{target!r} has no attribute {name!r}")
    if not callable(fn):
        raise ValueError(f"{target}:{name} is a {type(fn).__name__}, not a callable")
    kind = _detect(fn) if signature == "auto" else signature
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if params:
        has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if kind == "trl" and "completions" not in params and not has_var_kw:
            raise ValueError(
                f"{target}:{name} takes no 'completions' argument (TRL signature: "
                "fn(completions, **kwargs)); for verl's compute_score set reward.signature=verl"
            )
        positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        has_var_pos = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values())
        if kind == "verl" and len(positional) < 3 and not has_var_pos:
            raise ValueError(
                f"{target}:{name} takes {len(positional)} positional arguments; verl's signature "
                "is compute_score(data_source, solution_str, ground_truth, extra_info)"
            )
    loaded = RewardFunction(fn, f"{target}:{name}", kind)
    _CACHE[key] = loaded
    return loaded


def combine(
    function_values: Sequence[tuple[float | None, dict]],
    verifier: Sequence[RewardResult] | None,
    *,
    function_weight: float,
    verifier_weight: float,
    none_reward: float = 0.0,
) -> list[RewardResult]:
    """``verifier_weight * verifier + function_weight * function`` per response (see the module docstring)."""
    out = []
    for i, (value, finfo) in enumerate(function_values):
        info: dict[str, Any] = {}
        if value is None:
            value = none_reward
            info["function_none"] = True
        info["function"] = value
        info.update({k: v for k, v in finfo.items() if k != "acc"})
        reward = function_weight * value
        if verifier is not None and verifier_weight > 0:
            v = verifier[i]
            info.update({k: val for k, val in v.info.items() if k not in info})
            info["verifier"] = v.reward
            reward += verifier_weight * v.reward
            correct = bool(v.correct)
        elif "acc" in finfo:
            correct = bool(finfo["acc"])
        else:
            correct = value > 0
        out.append(RewardResult(float(reward), correct, info))
    return out


def reward_score_fn(
    spec: str,
    *,
    signature: str = "auto",
    function_weight: float = 1.0,
    verifier_weight: float = 0.0,
    none_reward: float = 0.0,
    **verifier_opts: Any,
) -> Callable[[list[str], list[Problem]], list[RewardResult]]:
    """``score_fn(responses, problems)`` for callers without a run config (``archer eval``'s
    ``score_records(score_fn=...)``): the same combination as ``reward.*``, the built-in verifiers
    through :func:`archer.rewards.registry.score_responses` with ``verifier_opts``."""
    function = load_reward_function(spec, signature)

    def score_fn(responses: list[str], problems: list[Problem]) -> list[RewardResult]:

        verifier = score_responses(responses, problems, **verifier_opts) if verifier_weight > 0 else None
        return combine(
            function.values(responses, problems),
            verifier,
            function_weight=function_weight,
            verifier_weight=verifier_weight,
            none_reward=none_reward,
        )

    return score_fn
