"""Partial rollouts: generation in chunks of new tokens, with weight updates allowed between chunks.

AReaL (Fu et al. 2025, "AReaL: A Large-Scale Asynchronous Reinforcement Learning System for Language
Reasoning", arXiv 2505.24298, section 4: interruptible rollout workers) lets a weight update interrupt
generation in flight: the responses continue from where they are with the new weights, so a long
response never holds the pipeline back. :func:`generate_partial` does this over any engine that takes
token-id prompts: it asks the engine for at most ``chunk`` new tokens per call; between calls it runs
``between_chunks()``, which may load new weights and returns the version the engine now holds; the
unfinished responses continue as new prompts ``prompt + response so far`` (one sample each). Every token
keeps the version that sampled it (``meta["token_versions"]``, one int per response token) and its
log-prob under those weights (``Rollout.logprobs``): the behaviour policy of a response is a mixture of
policy versions, token by token.

Tested with the HF engine and the vLLM engine (which clears its prefix cache on a weight update, so a
continuation never reuses keys and values of the old weights). Limits (stated): each continuation prefills ``prompt + response so far`` again (no KV cache across
chunks); the sample stream differs from an unchunked generation with the same seed (chunk ``k`` uses
``seed + k``), so a partial run is not bit-identical to a non-partial one even without an update; a stop
string completed across a chunk boundary is found by decoding the response (the response is cut after
the token that completes it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from archer.rollout.base import Rollout, SamplingParams, resolve_seed

VERSIONS_KEY = "token_versions"


class _Row:
    """One response being generated: its tokens, log-probs and their versions so far."""

    def __init__(self, prompt_index: int, prompt_ids: list[int]) -> None:
        self.prompt_index, self.prompt_ids = prompt_index, prompt_ids
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.versions: list[int] = []
        self.reason: str | None = None  # set once finished: eos / stop / length


def generate_partial(
    engine: Any,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    chunk: int,
    between_chunks: Callable[[], int],
    tokenizer: Any,
) -> list[list[Rollout]]:
    """``[num_prompts][params.n]`` rollouts generated ``chunk`` new tokens at a time (see the module
    docstring). ``between_chunks()`` runs before every chunk (the first included) and returns the weight
    version the engine holds for that chunk."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    seed = resolve_seed(params)
    rows = [_Row(i, [int(t) for t in p]) for i, p in enumerate(prompts) for _ in range(params.n)]
    k = 0
    while True:
        live = [r for r in rows if r.reason is None]
        if not live:
            break
        version = between_chunks()
        budget = min(chunk, params.max_new_tokens - min(len(r.ids) for r in live))
        if k == 0:  # one prefill per prompt, n samples each
            outs = [
                ro
                for group in engine.generate([list(p) for p in prompts], _chunk(params, budget, seed))
                for ro in group
            ]
        else:
            outs = [
                group[0]
                for group in engine.generate(
                    [r.prompt_ids + r.ids for r in live], replace(_chunk(params, budget, seed + k), n=1)
                )
            ]
        for r, ro in zip(live, outs):
            _extend(r, ro, version, params, tokenizer)
        k += 1
    return _rollouts(rows, len(prompts), params, tokenizer)


def _chunk(params: SamplingParams, budget: int, seed: int) -> SamplingParams:
    return replace(params, max_new_tokens=max(1, budget), seed=seed)


def _extend(r: _Row, ro: Rollout, version: int, params: SamplingParams, tokenizer: Any) -> None:
    """Append one chunk's tokens to ``r``; mark it finished on EOS, a stop string or the budget."""
    room = params.max_new_tokens - len(r.ids)
    new_ids, new_lp = list(ro.response_ids)[:room], list(ro.logprobs)[:room]
    start = len(r.ids)
    r.ids += new_ids
    r.logprobs += new_lp
    r.versions += [version] * len(new_ids)
    if ro.finish_reason in ("eos", "stop") and len(new_ids) == len(ro.response_ids):
        r.reason = ro.finish_reason
    if params.stop and r.reason != "eos":
        cut = _stop_token(r.ids, start, params.stop, tokenizer)
        if cut is not None:  # a stop string completed inside this chunk (maybe across the boundary)
            r.ids, r.logprobs, r.versions = r.ids[:cut], r.logprobs[:cut], r.versions[:cut]
            r.reason = "stop"
    if r.reason is None and len(r.ids) >= params.max_new_tokens:
        r.reason = "length"


def _stop_token(ids: list[int], start: int, stops: Sequence[str], tokenizer: Any) -> int | None:
    """The smallest ``j > start`` such that ``ids[:j]`` decodes to a text holding a stop string."""
    if not any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in stops):
        return None
    for j in range(max(start, 1), len(ids) + 1):
        if any(s in tokenizer.decode(ids[:j], skip_special_tokens=True) for s in stops):
            return j
    return None


def _rollouts(
    rows: list[_Row], num_prompts: int, params: SamplingParams, tokenizer: Any
) -> list[list[Rollout]]:
    out: list[list[Rollout]] = [[] for _ in range(num_prompts)]
    for r in rows:
        text = tokenizer.decode(r.ids, skip_special_tokens=True)
        if r.reason == "stop":
            text = _cut_at_stop(text, params.stop, params.include_stop_str)
        out[r.prompt_index].append(
            Rollout(
                prompt_index=r.prompt_index,
                prompt_ids=list(r.prompt_ids),
                response_ids=r.ids,
                logprobs=r.logprobs,
                text=text,
                truncated=r.reason == "length",
                finish_reason=r.reason or "length",
                meta={VERSIONS_KEY: r.versions},
            )
        )
    return out


def _cut_at_stop(text: str, stops: Sequence[str], include: bool) -> str:
    from archer.rollout.hf import _cut_at_stop as cut

    return cut(text, stops, include)
