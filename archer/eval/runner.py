"""Evaluation runner: generate n samples per problem, score them, report avg@k and pass@k.

Two phases that can run apart (generation on a GPU machine, scoring on a CPU one), both resumable:

1. :func:`generate_phase` appends one line per problem to ``OUT/generations.jsonl`` as soon as its
   samples exist (``id``, ``prompt``, ``responses``, ``finish_reasons``, ``num_tokens``); a restart
   skips problems already there and writes ``OUT/GENERATED`` when all are done.
2. :func:`score_phase` scores every generated problem not yet in ``OUT/results.jsonl`` with
   ``archer.rewards.registry.score_responses`` and appends one line per problem (every sample with
   its correctness, reward and reason; a code sample also with its ``verdict``: pass, wrong, timeout,
   error, memory, output_limit, sandbox_error or no_code, and the per-test verdicts in ``info``), then
   writes ``OUT/summary.json`` (avg@k / pass@k for every requested ``k <= n`` with ``avg_se``, and
   the verdict mix of code samples, overall and per ``data_source``).

:func:`evaluate` is the in-process API the trainer calls (before/after training): it runs both phases
in memory (or in ``out_dir`` when given) and returns the metrics with per-problem records.

Limits: a problem is the unit of resumption (a crash loses at most the problems of the current
batch); the sampling seed of a batch is ``seed + index of its first problem``, so resuming with a
different ``batch_size`` samples differently (still from the same distribution).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from archer.atomic_json import write_json
from archer.data.prompts import build_prompt
from archer.data.schema import Problem
from archer.eval import store
from archer.eval.metrics import aggregate, per_problem_metrics
from archer.rewards.code import CODE_OUTCOMES, code_outcome, is_code_info
from archer.rewards.registry import score_responses
from archer.rollout.base import SamplingParams


def _check_unique(problems: Sequence[Problem]) -> None:
    seen: set[str] = set()
    dups = sorted({p.id for p in problems if p.id in seen or seen.add(p.id)})  # type: ignore[func-returns-value]
    if dups:
        raise ValueError(f"problem ids must be unique for evaluation; duplicated: {dups[:10]}")


def _sampling_params(n: int, sampling: dict[str, Any] | None):

    return SamplingParams(n=n, **(sampling or {}))


def generate_records(
    engine: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    params: Any,
    *,
    template: str = "auto",
    batch_size: int = 16,
    start_index: int = 0,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Sample ``params.n`` responses per problem in batches of ``batch_size`` prompts."""
    records: list[dict[str, Any]] = []
    for lo in range(0, len(problems), batch_size):
        chunk = problems[lo : lo + batch_size]
        prompts = [build_prompt(p, tokenizer, template) for p in chunk]
        seed = None if params.seed is None else params.seed + start_index + lo
        rollouts = engine.generate(prompts, _replace(params, seed=seed))
        batch = []
        for p, prompt, samples in zip(chunk, prompts, rollouts):
            batch.append(
                {
                    "id": p.id,
                    "prompt": prompt,
                    "responses": [r.text for r in samples],
                    "finish_reasons": [r.finish_reason for r in samples],
                    "num_tokens": [len(r.response_ids) for r in samples],
                }
            )
            if any("turn_texts" in (r.meta or {}) for r in samples):  # a tool rollout (rollout.tools)
                batch[-1]["tool_calls"] = [len(r.meta.get("tool_calls", [])) for r in samples]
        records.extend(batch)
        if on_batch is not None:
            on_batch(batch)
    return records


def _replace(params: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(params, **changes)


def generate_phase(
    engine: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    out_dir: str | Path,
    *,
    n: int,
    sampling: dict[str, Any] | None = None,
    template: str = "auto",
    batch_size: int = 16,
    config: dict[str, Any] | None = None,
    on_batch: Callable[[list[dict[str, Any]], int, int], None] | None = None,
) -> Path:
    """Generate what is missing in ``out_dir/generations.jsonl``; returns that path.

    ``sampling`` holds :class:`~archer.rollout.base.SamplingParams` fields other than ``n``. A resumed
    directory must have been started with the same ``n`` (else an error: mixing n would bias pass@k).
    ``on_batch(records, done, total)`` is called after each batch is written (``done`` counts the
    problems generated so far, earlier runs included): the CLI's progress line and live scoring.
    """
    _check_unique(problems)
    out = Path(out_dir)
    params = _sampling_params(n, sampling)
    cfg = store.read_json(out / store.CONFIG, {})
    if cfg.get("n") not in (None, n):
        raise ValueError(f"{out} was generated with n={cfg['n']}, not n={n}; use a new --out directory")
    write_json(
        out / store.CONFIG,
        {**cfg, **(config or {}), "n": n, "sampling": asdict(params), "template": template},
    )
    done = {r["id"] for r in store.read_jsonl(out / store.GENERATIONS) if len(r.get("responses", [])) == n}
    todo = [p for p in problems if p.id not in done]
    if todo:
        (out / store.GENERATED_MARKER).unlink(missing_ok=True)
        first = {p.id: i for i, p in enumerate(problems)}
        count = [len(problems) - len(todo)]

        def written(batch: list[dict[str, Any]]) -> None:
            store.append_jsonl(out / store.GENERATIONS, batch)
            count[0] += len(batch)
            if on_batch is not None:
                on_batch(batch, count[0], len(problems))

        # batch seeds count from the first missing problem's dataset position
        generate_records(
            engine,
            tokenizer,
            todo,
            params,
            template=template,
            batch_size=batch_size,
            start_index=first[todo[0].id],
            on_batch=written,
        )
    (out / store.GENERATED_MARKER).write_text("complete\n")
    return out / store.GENERATIONS


def score_records(
    generations: Sequence[dict[str, Any]],
    problems_by_id: dict[str, Problem],
    *,
    score_fn: Callable[[list[str], list[Problem]], list[Any]] | None = None,
    **reward_opts: Any,
) -> list[dict[str, Any]]:
    """Score each generation record's responses; one result row per problem.

    ``score_fn(responses, problems) -> results`` replaces the in-process verifiers (the trainer passes
    its scorer: local pools or Ray actors); by default ``archer.rewards.registry.score_responses``.
    """

    if score_fn is None:

        def score_fn(responses: list[str], problems: list[Problem]) -> list[Any]:
            return score_responses(responses, problems, **reward_opts)

    flat_resp, flat_prob, owner = [], [], []
    for gi, g in enumerate(generations):
        p = problems_by_id[g["id"]]
        flat_resp.extend(g["responses"])
        flat_prob.extend([p] * len(g["responses"]))
        owner.extend([gi] * len(g["responses"]))
    scored = score_fn(flat_resp, flat_prob) if flat_resp else []
    rows = []
    pos = 0
    for g in generations:
        p = problems_by_id[g["id"]]
        samples = []
        for j, _ in enumerate(g["responses"]):
            res = scored[pos]
            pos += 1
            info = dict(res.info or {})
            verdict = code_outcome(info) if is_code_info(info) else None
            reason = info.pop("reason", None) or ("correct" if res.correct else "incorrect")
            samples.append(
                {
                    "index": j,
                    "correct": bool(res.correct),
                    "reward": float(res.reward),
                    "reason": reason,
                    "verdict": verdict,
                    "finish_reason": (g.get("finish_reasons") or [None] * (j + 1))[j],
                    "num_tokens": (g.get("num_tokens") or [None] * (j + 1))[j],
                    "info": info,
                    **({"tool_calls": g["tool_calls"][j]} if "tool_calls" in g else {}),
                }
            )
        correct = [s["correct"] for s in samples]
        rows.append(
            {
                "id": p.id,
                "data_source": p.data_source,
                "kind": p.kind,
                "n": len(samples),
                "num_correct": sum(correct),
                "samples": samples,
            }
        )
    return rows


def _aggregate_rows(rows: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """:func:`aggregate` of result rows, plus ``verdicts`` (the fraction of code samples with each
    outcome of ``archer.rewards.code.CODE_OUTCOMES``) when the rows hold code samples."""
    out = aggregate([[s["correct"] for s in r["samples"]] for r in rows], ks)
    verdicts = Counter(s["verdict"] for r in rows for s in r["samples"] if s.get("verdict"))
    total = sum(verdicts.values())
    if total:
        out["verdicts"] = {v: verdicts[v] / total for v in CODE_OUTCOMES if verdicts[v]}
    return out


def summarize(results: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """avg@k / pass@k overall and per data source, plus response-length and truncation stats."""
    summary = _aggregate_rows(results, ks)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_source.setdefault(r.get("data_source", "unknown"), []).append(r)
    if len(by_source) > 1:
        summary["by_source"] = {src: _aggregate_rows(rows, ks) for src, rows in sorted(by_source.items())}
    samples = [s for r in results for s in r["samples"]]
    if samples:
        tokens = [s["num_tokens"] for s in samples if s.get("num_tokens") is not None]
        summary["mean_response_tokens"] = sum(tokens) / len(tokens) if tokens else None
        summary["truncated_fraction"] = sum(s.get("finish_reason") == "length" for s in samples) / len(
            samples
        )
        calls = [s["tool_calls"] for s in samples if "tool_calls" in s]
        if calls:  # tool rollouts: how often the tool was used
            summary["tool_use_rate"] = sum(c > 0 for c in calls) / len(calls)
            summary["tool_calls_per_response"] = sum(calls) / len(calls)
    return summary


def score_phase(
    problems: Sequence[Problem],
    out_dir: str | Path,
    *,
    ks: Sequence[int],
    batch_size: int = 32,
    reward_opts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score generations not yet in ``results.jsonl``, then write and return ``summary.json``.

    Only problems of ``problems`` count (a generations file may hold more); problems without
    generations are reported as ``missing`` in the summary.
    """
    _check_unique(problems)
    out = Path(out_dir)
    by_id = {p.id: p for p in problems}
    gens = [g for g in store.read_jsonl(out / store.GENERATIONS) if g.get("id") in by_id]
    latest = {g["id"]: g for g in gens}  # a regenerated problem: its last record wins
    scored = {r["id"] for r in store.read_jsonl(out / store.RESULTS)}
    todo = [g for pid, g in latest.items() if pid not in scored]
    for lo in range(0, len(todo), batch_size):
        rows = score_records(todo[lo : lo + batch_size], by_id, **(reward_opts or {}))
        store.append_jsonl(out / store.RESULTS, rows)
    results = {r["id"]: r for r in store.read_jsonl(out / store.RESULTS) if r["id"] in by_id}
    ordered = [results[p.id] for p in problems if p.id in results]
    summary = summarize(ordered, ks)
    missing = [p.id for p in problems if p.id not in results]
    summary["missing"] = len(missing)
    if missing:
        summary["missing_ids"] = missing[:20]
    write_json(out / store.SUMMARY, summary)
    return summary


def evaluate(
    engine: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    n: int = 4,
    ks: Sequence[int] = (1,),
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: int = 0,
    max_new_tokens: int = 256,
    seed: int | None = 0,
    template: str = "auto",
    batch_size: int = 16,
    out_dir: str | Path | None = None,
    reward_opts: dict[str, Any] | None = None,
    score_fn: Callable[[list[str], list[Problem]], list[Any]] | None = None,
    stop: Sequence[str] = (),
) -> dict[str, Any]:
    """Generate ``n`` samples per problem with ``engine`` and score them (``score_fn``: see
    :func:`score_records`; in memory only).

    Returns ``{"avg@k": .., "pass@k": .. for every k in ks with k <= n, "num_problems", ...,
    "records": [per-problem rows with "responses" and "samples"]}``. With ``out_dir`` the files of
    :func:`generate_phase` / :func:`score_phase` are written (and resumed) there. ``stop``: strings
    that end a response (the run's ``rollout.stop``, e.g. a chat template's end of turn).
    """
    sampling = {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "stop": tuple(stop),
    }
    if out_dir is not None:
        generate_phase(
            engine,
            tokenizer,
            problems,
            out_dir,
            n=n,
            sampling=sampling,
            template=template,
            batch_size=batch_size,
        )
        summary = score_phase(problems, out_dir, ks=ks, reward_opts=reward_opts)
        gens = {g["id"]: g for g in store.read_jsonl(Path(out_dir) / store.GENERATIONS)}
        results = {r["id"]: r for r in store.read_jsonl(Path(out_dir) / store.RESULTS)}
        records = [
            dict(results[p.id], responses=gens[p.id]["responses"]) for p in problems if p.id in results
        ]
        return {**summary, "records": records}
    _check_unique(problems)
    params = _sampling_params(n, sampling)
    gens = generate_records(engine, tokenizer, problems, params, template=template, batch_size=batch_size)
    rows = score_records(gens, {p.id: p for p in problems}, score_fn=score_fn, **(reward_opts or {}))
    for row, g in zip(rows, gens):
        row["responses"] = g["responses"]
    return {**summarize(rows, ks), "records": rows}


def measure_pass_rates(
    engine: Any, tokenizer: Any, problems: Sequence[Problem], **kwargs: Any
) -> list[float]:
    """Fraction of correct samples per problem (for the difficulty filter); kwargs as :func:`evaluate`."""
    out = evaluate(engine, tokenizer, problems, **kwargs)
    return [r["num_correct"] / r["n"] for r in out["records"]]


def per_problem_table(results: Sequence[dict[str, Any]], ks: Sequence[int]) -> list[dict[str, Any]]:
    """avg@k / pass@k of each problem (for inspection)."""
    return [{"id": r["id"], **per_problem_metrics([s["correct"] for s in r["samples"]], ks)} for r in results]
