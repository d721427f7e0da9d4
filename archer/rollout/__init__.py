"""Rollout engines: the protocol (``base``), the transformers engine (``hf``), the vLLM engine
(``vllm``, an optional extra), multi-turn tool use.

``from archer.rollout import SamplingParams, Rollout, RolloutEngine`` is cheap; ``HFEngine`` imports
torch on first use. :data:`ENGINES` is the registry ``rollout.engine`` names: each entry is
``"module:Class"``, imported only when built, so an optional engine costs nothing until used;
:func:`engine_problem` tells, without importing it, why a name cannot be used here (the config
validation calls it, so ``rollout.engine=...`` fails before any compute). ``auto`` (the big recipes)
is vLLM on a CUDA device when it is installed, else the HF engine. :func:`build_rollout` is what a run
uses: the configured engine in-process or on Ray rollout workers, with truncated IS turned on by default
when that engine holds its own copy of the weights, wrapped in :class:`archer.rollout.tools.ToolEngine`
when ``rollout.tools`` is set.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from archer.rollout.base import FINISH_REASONS, Rollout, RolloutEngine, SamplingParams

__all__ = [
    "AUTO",
    "ENGINES",
    "FINISH_REASONS",
    "HFEngine",
    "Rollout",
    "RolloutEngine",
    "SamplingParams",
    "build_engine",
    "build_rollout",
    "engine_options",
    "engine_problem",
    "resolve_engine",
]

# rollout.engine name -> ("module:Class", the third-party package it needs or None)
ENGINES: dict[str, tuple[str, str | None]] = {
    "hf": ("archer.rollout.hf:HFEngine", None),
    "vllm": ("archer.rollout.vllm:VLLMEngine", "vllm"),
}
# ``rollout.engine: auto`` (the big recipes): vllm on CUDA when it is installed, else hf
AUTO = "auto"


def engine_problem(name: str) -> str | None:
    """None when engine ``name`` can be built here, else a one-line reason (unknown, or not installed)."""
    if name == AUTO:
        return None  # resolved when built: vllm on CUDA when installed, else hf
    if name not in ENGINES:
        return f"unknown engine {name!r}; known: {sorted([*ENGINES, AUTO])}"
    target, needs = ENGINES[name]
    if needs is not None and importlib.util.find_spec(needs) is None:
        return f"engine {name!r} needs the {needs!r} package, which is not installed"
    if importlib.util.find_spec(target.partition(":")[0]) is None:
        return f"engine {name!r}: module {target.partition(':')[0]} not found"
    return None


def build_engine(name: str, model: Any, tokenizer: Any, **kwargs: Any) -> Any:
    """The engine registered as ``name`` over ``model`` (keyword arguments go to its constructor)."""
    name = resolve_engine(name, kwargs.get("device"))
    problem = engine_problem(name)
    if problem:
        raise ValueError(f"rollout.engine: {problem}")
    module, _, cls = ENGINES[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)(model, tokenizer, **kwargs)


def resolve_engine(name: str, device: Any = None) -> str:
    """``auto`` -> ``vllm`` on a CUDA device when vLLM is installed, else ``hf``; other names unchanged."""
    if name != AUTO:
        return name
    on_cuda = getattr(device, "type", str(device or "")).startswith("cuda")
    return "vllm" if on_cuda and engine_problem("vllm") is None else "hf"


def engine_options(name: str, cfg: Any, device: Any = None) -> dict[str, Any]:
    """Constructor keywords of engine ``name`` from a run's :class:`archer.config.Config`."""
    if name != "vllm":
        return {}
    r = cfg.rollout
    on_cuda = getattr(device, "type", str(device or "")).startswith("cuda")
    # prompt + the longest response a run asks for (length stages, evaluation), unless given
    longest = max(
        [r.max_new_tokens, *(s[1] for s in r.length_stages), getattr(cfg.eval, "max_new_tokens", None) or 0]
    ) * (r.max_turns if getattr(r, "tools", None) else 1)  # a tool rollout: up to max_turns turns
    return {
        "dtype": cfg.model.dtype if on_cuda else "float32",
        "kv_cache_bytes": r.vllm_kv_cache_bytes,
        "gpu_memory_utilization": r.vllm_gpu_memory_utilization,
        "max_model_len": r.vllm_max_model_len or cfg.data.max_prompt_tokens + longest,
        "num_threads": cfg.trainer.threads or 1,
    }


def build_rollout(
    cfg: Any, model: Any, tokenizer: Any, *, device: Any = None, log: Any = None
) -> tuple[Any, Any]:
    """The rollout engine a run's config asks for, and the config the run should use with it.

    ``rollout.engine`` (``auto`` resolved for ``device``) over ``model``, in this process, or with
    ``resources.rollout_workers=N`` a :class:`archer.rollout.ray_pool.RayRolloutPool` of N Ray
    actors each holding one such engine, started from ``model``'s weights (version 0). When the engine
    holds its own copy of the weights (vLLM, or rollout workers), ``algo.tis_cap`` is unset and
    ``algo.rollout_correction`` is unset or ``token_tis``, the returned config has ``algo.tis_cap =
    rollout.default_tis_cap`` (token-level truncated IS on by default).
    """
    import dataclasses

    from archer.rollout.base import shares_policy

    name = resolve_engine(cfg.rollout.engine, device)
    workers = getattr(cfg.resources, "rollout_workers", 0)
    if workers:
        from archer.distributed.placement import label_resources
        from archer.rollout.ray_pool import RayRolloutPool, worker_engine_factory

        r = cfg.resources
        engine: Any = RayRolloutPool(
            worker_engine_factory(
                name,
                model,
                tokenizer,
                engine_options(name, cfg, "cuda")
                if _cluster_has_gpu(r.address)
                else engine_options(name, cfg, "cpu"),
            ),
            workers,
            cpus_per_worker=r.rollout_cpus_per_worker,
            address=r.address,
            initial_weights=model,
            weight_sync=cfg.rollout.weight_sync,
            bucket_mb=cfg.rollout.weight_sync_bucket_mb,
            sync_timeout_s=r.watchdog_s or r.dist_timeout_s,
            log=log,
            resources=label_resources(r.placement, "rollout"),
        )
    else:
        engine = build_engine(name, model, tokenizer, device=device, **engine_options(name, cfg, device))
    if cfg.rollout.tools:  # multi-turn with the sandbox interpreter, over whichever engine was built
        from archer.rollout.tools import with_tools

        engine = with_tools(engine, cfg.rollout)
    cap = default_tis_cap(cfg, shares_policy(engine))
    if cap is not None:
        cfg = dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, tis_cap=cap))
        if log is not None:
            log(
                f"rollout: engine {name!r}{f' on {workers} Ray workers' if workers else ''} holds its own "
                f"weights; truncated IS on (algo.tis_cap={cap}, from rollout.default_tis_cap)"
            )
    return engine, cfg


def default_tis_cap(cfg: Any, engine_shares_policy: bool) -> float | None:
    """The ``algo.tis_cap`` a run gets from ``rollout.default_tis_cap``: only when the engine holds its own
    weights, the cap is unset and ``algo.rollout_correction`` is unset or ``token_tis`` (another named
    correction has its own thresholds); else None (the config stays as it is)."""
    chosen = getattr(cfg.algo, "rollout_correction", None)
    if engine_shares_policy or cfg.algo.tis_cap is not None or chosen not in (None, "token_tis"):
        return None
    return cfg.rollout.default_tis_cap


def _cluster_has_gpu(address: Any) -> bool:
    from archer.distributed._ray import ensure_ray

    return ensure_ray(address).cluster_resources().get("GPU", 0) > 0


def __getattr__(name: str) -> Any:
    if name == "HFEngine":
        from archer.rollout.hf import HFEngine

        return HFEngine
    raise AttributeError(f"module 'archer.rollout' has no attribute {name!r}")
