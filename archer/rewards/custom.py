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

    reward = reward.verifier_weight * verifier_reward + sum_i weight_i * function_i

One function is ``reward.function`` with ``reward.function_weight``; several are ``reward.functions`` with
``reward.function_weights`` (TRL's ``reward_funcs`` / ``reward_weights``), each logged as
``reward/fn/<NAME>``. Defaults: weight 1, ``verifier_weight=0`` (the functions replace the verifier's
reward). Accuracy has one meaning: wherever the problem's kind has a verifier, its verdict is the
accuracy (avg@k, pass@k), whatever the weights; otherwise a verl ``"acc"`` when given, else the
functions' weighted sum ``> 0``. A function that raises, returns the wrong number of values, NaN/inf or
a non-number raises :class:`archer.errors.RewardFunctionError` (its own traceback and the offending
sample), which the scorers let through, so the run stops; ``reward.on_error=zero`` instead counts it as
reward 0 with ``info["reason"]`` and prints each distinct failure once on stderr. ``module:NAME`` is
imported with the working directory on the path. The function runs in the trainer's process (also with
``resources.backend=ray``). Loading a file executes it: the config check at load time imports it once
(and fails early, naming ``reward.function``, when the file is missing, does not import, or ``NAME`` is
not a callable).

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
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archer.data.prompts import user_message
from archer.data.schema import Problem
from archer.errors import RewardFunctionError
from archer.rewards.registry import score_responses, verifier_for, verifier_names
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
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:  # module:NAME resolves from the working directory too, for this lookup only
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise ValueError(f"cannot import module {target!r}: {_one_line(exc)}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _detect(fn: Callable[..., Any]) -> str:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return "trl"
    return "verl" if params[:1] and params[0] in _VERL_PARAMS or "solution_str" in params else "trl"


ON_ERROR = ("raise", "zero")
_CONVERSATIONAL_HINT = (
    "hint: archer passes each completion as a plain string (TRL's standard format), not TRL's "
    "conversational [{'role': 'assistant', 'content': ...}] list: use the completion itself, "
    "not completion[0]['content']"
)


def _clip(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _failure(
    name: str, what: str, responses: Sequence[str], problems: Sequence[Problem], index: int, **kw: Any
) -> RewardFunctionError:
    """The error a failing user function raises: the failure, the sample, the function's own traceback."""
    exc: BaseException | None = kw.get("exc")
    p = problems[index]
    prompt = p.prompt if isinstance(p.prompt, str) else user_message(p, "raw")
    lines = [
        f"reward function {name!r} failed: {what}",
        f"sample {index + 1} of {len(responses)} (id {p.id!r}{kw.get('note', '')}):",
        f"  prompt: {_clip(prompt)}",
        f"  answer: {_clip(p.answer)}",
        f"  completion: {_clip(responses[index])}",
    ]
    if exc is not None:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # drop archer's frame
        lines.append("".join(traceback.format_exception(type(exc), exc, tb)).rstrip())
        if isinstance(exc, (TypeError, KeyError)) and (
            "indices must be" in str(exc) or "'content'" in str(exc)
        ):
            lines.append(_CONVERSATIONAL_HINT)
    lines.append("(reward.on_error=zero counts such failures as reward 0 and goes on)")
    err = RewardFunctionError("\n".join(lines))
    err.reason = f"reward function {name!r} failed: {what}"  # type: ignore[attr-defined]
    return err


class FailureTally:
    """``reward.on_error=zero``: each distinct failure printed once on stderr, with a running count."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def zero(self, err: RewardFunctionError, n: int) -> list[tuple[float | None, dict]]:
        reason = getattr(err, "reason", str(err).splitlines()[0])
        self.counts[reason] += 1
        if self.counts[reason] == 1:
            total = sum(self.counts.values())
            print(
                f"archer: reward.on_error=zero: reward 0 for a failed reward function call "
                f"({total} failed calls so far, {len(self.counts)} distinct; each is shown once):\n{err}",
                file=sys.stderr,
                flush=True,
            )
        return [(0.0, {"reason": reason}) for _ in range(n)]


@dataclass
class RewardFunction:
    """A loaded user reward: ``values(responses, problems)`` -> one ``(value | None, info)`` each; a
    failure raises :class:`archer.errors.RewardFunctionError` (or, given a ``tally``, counts as 0)."""

    fn: Callable[..., Any]
    name: str
    signature: str  # trl | verl

    @property
    def short(self) -> str:
        return self.name.rpartition(":")[2]

    def values(
        self, responses: Sequence[str], problems: Sequence[Problem], tally: FailureTally | None = None
    ) -> list[tuple[float | None, dict]]:
        if self.signature == "verl":
            out = []
            for i, (r, p) in enumerate(zip(responses, problems)):
                try:
                    out.append(self._verl_one(i, r, p, responses, problems))
                except RewardFunctionError as err:
                    if tally is None:
                        raise
                    out.extend(tally.zero(err, 1))
            return out
        try:
            return self._trl(responses, problems)
        except RewardFunctionError as err:
            if tally is None:
                raise
            return tally.zero(err, len(responses))

    def _trl(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[tuple[float | None, dict]]:
        columns = trl_columns(problems)
        params = inspect.signature(self.fn).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            columns = {k: v for k, v in columns.items() if k in params}
        note = "; the function was called on the whole batch, the first sample is shown"  # noqa: E501
        try:
            raw = self.fn(completions=list(responses), **columns)
        except Exception as exc:
            raise _failure(self.name, _one_line(exc), responses, problems, 0, exc=exc, note=note) from None
        try:
            out = list(raw)
        except TypeError:
            what = f"returned a {type(raw).__name__}, expected a list of {len(responses)} numbers"
            raise _failure(self.name, what, responses, problems, 0, note=note) from None
        if len(out) != len(responses):
            what = f"returned {len(out)} values for {len(responses)} completions"
            raise _failure(self.name, what, responses, problems, 0, note=note)
        values = []
        for i, v in enumerate(out):
            try:
                values.append((_number(v, allow_none=True), {}))
            except (TypeError, ValueError) as exc:
                raise _failure(self.name, f"value {i + 1}: {exc}", responses, problems, i) from None
        return values

    def _verl_one(
        self,
        index: int,
        response: str,
        problem: Problem,
        responses: Sequence[str],
        problems: Sequence[Problem],
    ) -> tuple[float | None, dict]:
        extra = {"id": problem.id, "index": index, "kind": problem.kind, **problem.meta}
        try:
            out = self.fn(problem.data_source, response, problem.answer, extra)
        except Exception as exc:
            raise _failure(self.name, _one_line(exc), responses, problems, index, exc=exc) from None
        try:
            if isinstance(out, dict):
                if "score" not in out:
                    raise TypeError(f"returned a dict without 'score' (keys: {sorted(out)})")
                return _number(out["score"]), {k: v for k, v in out.items() if k != "score"}
            return _number(out), {}
        except (TypeError, ValueError) as exc:
            raise _failure(self.name, str(exc), responses, problems, index) from None


def _number(value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"expected a number, got {type(value).__name__} {_clip(value, 80)}")
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
    functions: Sequence[tuple[str, float, Sequence[tuple[float | None, dict]]]],
    verifier: Sequence[RewardResult] | None,
    *,
    verifier_weight: float,
    none_reward: float = 0.0,
    has_verifier: Sequence[bool] | None = None,
) -> list[RewardResult]:
    """``verifier_weight * verifier + sum(weight * value)`` per response over ``functions`` (each
    ``(name, weight, values)``; see the module docstring). The verdict (``correct``) is the verifier's
    wherever ``verifier`` is given and ``has_verifier`` (default: all) says one exists for the sample,
    whatever its weight; else a verl ``"acc"``; else the functions' weighted sum ``> 0``."""
    n = len(functions[0][2]) if functions else len(verifier or [])
    out = []
    for i in range(n):
        info: dict[str, Any] = {}
        reward, acc = 0.0, None
        for name, weight, values in functions:
            value, finfo = values[i]
            if value is None:
                value = none_reward
                info["function_none"] = True
            info[f"fn/{name}"] = value
            info.update({k: v for k, v in finfo.items() if k != "acc" and k not in info})
            if "acc" in finfo and acc is None:
                acc = bool(finfo["acc"])
            reward += weight * value
        if len(functions) == 1:
            info["function"] = info[f"fn/{functions[0][0]}"]
        correct = acc if acc is not None else reward > 0
        if verifier is not None:
            v = verifier[i]
            if verifier_weight > 0:
                info.update({k: val for k, val in v.info.items() if k not in info})
                info["verifier"] = v.reward
                reward += verifier_weight * v.reward
            if has_verifier is None or has_verifier[i]:
                correct = bool(v.correct)
        out.append(RewardResult(float(reward), correct, info))
    return out


def function_names(specs: Sequence[str]) -> list[str]:
    """Each function's metric name (``reward/fn/<name>``): its ``NAME``, or the whole spec when two share one."""
    shorts = [spec.rpartition(":")[2] for spec in specs]
    return [short if shorts.count(short) == 1 else spec for short, spec in zip(shorts, specs)]


def verifier_exists(problems: Sequence[Problem]) -> list[bool]:
    """Whether the verifier registry has a verifier for each problem (by kind / data_source)."""
    names = set(verifier_names())
    return [verifier_for(p) in names for p in problems]


def reward_score_fn(
    spec: str | Sequence[str],
    *,
    signature: str = "auto",
    function_weight: float | Sequence[float] = 1.0,
    verifier_weight: float = 0.0,
    none_reward: float = 0.0,
    **verifier_opts: Any,
) -> Callable[[list[str], list[Problem]], list[RewardResult]]:
    """``score_fn(responses, problems)`` for callers without a run config (``archer eval``'s
    ``score_records(score_fn=...)``): the same combination as ``reward.*`` (one spec or several, with one
    weight each), the built-in verifiers through :func:`archer.rewards.registry.score_responses` with
    ``verifier_opts``; a failing function raises :class:`archer.errors.RewardFunctionError`."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    weights = [function_weight] * len(specs) if isinstance(function_weight, (int, float)) else function_weight
    loaded = [load_reward_function(s, signature) for s in specs]
    names = function_names(specs)

    def score_fn(responses: list[str], problems: list[Problem]) -> list[RewardResult]:
        exists = verifier_exists(problems)
        verifier = score_responses(responses, problems, **verifier_opts) if any(exists) else None
        functions = [(n, w, f.values(responses, problems)) for n, w, f in zip(names, weights, loaded)]
        return combine(
            functions, verifier, verifier_weight=verifier_weight, none_reward=none_reward, has_verifier=exists
        )

    return score_fn
