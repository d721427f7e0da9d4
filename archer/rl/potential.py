"""Improvement potential of each training prompt, for ``data.curriculum=potential`` (R1-Code-Interpreter).

R1-CI (Chen et al. 2025, arXiv 2505.21668) samples every training prompt with several agent setups and
reads the spread of right and wrong answers: a prompt every setup always solves, or always fails,
gives GRPO no signal; one that is solved sometimes is where RL gains. archer's formula (its own; the
paper publishes none): with ``p`` the pass rate over all samples of all modes (modes get equal samples,
so ``p`` is the mean of the modes' pass rates),

    potential = 4 * p * (1 - p)

the reward variance of a GRPO group drawn from that prompt, scaled to [0, 1] (1 at p = 1/2, 0 at p = 0
or 1). Modes: the run's rollout at each ``data.potential_temperatures`` and, for a tool run, the same
engine without tools at the first temperature; ``data.potential_samples`` samples per prompt and mode.

Or the potential comes from ``data.potential_file``: JSONL rows ``{"id": ..., "potential": x}`` or
``{"id": ..., "pass_rates": [p_1, ...]}`` (potential computed as above), one per training problem id.
The values are saved as ``<run>/potential.json`` and a resumed run reads them back, so its stages and
data order are those of the first start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archer.rollout.base import SamplingParams


def potential_of(pass_rates: Sequence[float]) -> float:
    """``4 p (1 - p)`` with ``p`` the mean of the modes' pass rates (0.0 for no rates)."""
    if not pass_rates:
        return 0.0
    p = sum(float(r) for r in pass_rates) / len(pass_rates)
    return 4.0 * p * (1.0 - p)


def read_potential_file(path: str | Path, problems: Sequence[Any]) -> list[float]:
    """One potential per problem, in problem order; a missing id or a bad row is a one-line ValueError."""
    by_id: dict[str, float] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"data.potential_file {str(path)!r}: cannot read: {exc.strerror or exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            value = float(row["potential"]) if "potential" in row else potential_of(row["pass_rates"])
            by_id[str(row["id"])] = value
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"data.potential_file {str(path)!r} line {n}: {exc!r}") from None
    missing = [p.id for p in problems if str(p.id) not in by_id]
    if missing:
        raise ValueError(f"data.potential_file {str(path)!r}: no potential for problem {missing[0]!r}")
    return [by_id[str(p.id)] for p in problems]


def sampling_modes(engine: Any, temperatures: Sequence[float]) -> list[tuple[str, Any, float]]:
    """(name, engine, temperature) of each mode: the run's engine at each temperature, plus the engine
    without tools (a :class:`archer.rollout.tools.ToolEngine`'s inner engine) at the first one."""
    modes = [(f"T={t:g}", engine, float(t)) for t in temperatures]
    inner = getattr(engine, "engine", None)
    if inner is not None and hasattr(engine, "interpreter"):
        modes.append((f"no tools T={temperatures[0]:g}", inner, float(temperatures[0])))
    return modes


def compute_potentials(
    engine: Any,
    prompt_ids: Sequence[Sequence[int]],
    problems: Sequence[Any],
    score: Any,
    *,
    temperatures: Sequence[float],
    samples: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 64,
) -> tuple[list[float], dict[str, list[float]]]:
    """(potential per prompt, pass rates per mode). ``score(responses, problems) -> results`` with a
    ``.correct`` each (the run's verifier scorer)."""

    rates: dict[str, list[float]] = {}
    for m, (name, eng, temperature) in enumerate(sampling_modes(engine, temperatures)):
        per_prompt: list[float] = []
        for start in range(0, len(prompt_ids), batch_size):
            ids = [list(p) for p in prompt_ids[start : start + batch_size]]
            params = SamplingParams(
                n=samples,
                temperature=temperature,
                max_new_tokens=max_new_tokens,
                seed=seed + 1009 * m + start,
            )
            outs = eng.generate(ids, params)
            probs = [problems[start + i] for i, group in enumerate(outs) for _ in group]
            results = score([ro.text for group in outs for ro in group], probs)
            for i in range(len(outs)):
                per_prompt.append(
                    sum(bool(r.correct) for r in results[i * samples : (i + 1) * samples]) / samples
                )
        rates[name] = per_prompt
    potentials = [potential_of([rates[name][i] for name in rates]) for i in range(len(prompt_ids))]
    return potentials, rates
