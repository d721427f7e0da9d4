"""Training across processes with torch.distributed: FSDP2 on GPUs and CPUs, one global normaliser.

One code path for every device: :func:`shard_model` wraps each decoder layer and then the root with
FSDP2 (``torch.distributed.fsdp.fully_shard``, Zhao et al. 2023, "PyTorch FSDP"). FSDP2 works on CPU
with the gloo backend in torch 2.13 (checked: parameters become ``DTensor`` shards, reduce-scatter runs
over gloo), so the CPU tests exercise the same code the GPU run uses. ``strategy="ddp"`` is kept as a
fallback (full replicas, gradients all-reduced after backward) for torch builds where FSDP2 is
missing or a model does not shard.

The loss normaliser is global: every aggregation's denominator (token count, sequence count,
``L_max``, the ``dtc``/``aspo`` subset sizes) belongs to the whole mini-batch, summed over every
micro-batch on every rank (ALGORITHMS.md section 1), so :func:`global_loss_normalizer` all-reduces
them before any loss is computed and hands one :class:`archer.algo.LossNormalizer` to every
micro-batch. Each rank then back-propagates ``loss * world_size``; the ``* world_size`` undoes the mean over
ranks that FSDP's reduce-scatter (and the ddp fallback) applies, so the summed gradient equals the one
of a single process holding the whole mini-batch.

Limits: process groups come from the usual torchrun environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``); no tensor or pipeline parallelism; mixed precision
is left to the caller (``fully_shard(mp_policy=...)`` via ``fsdp_kwargs``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from archer.algo.aggregation import LossNormalizer, loss_normalizer


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``world_size == 1`` and no process group for a plain single run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None


def init_distributed(backend: str | None = None, timeout_s: float = 600.0, nccl: Any = None) -> DistInfo:
    """Join the process group described by the torchrun environment (or stay single-process).

    ``backend=None`` picks ``nccl`` when CUDA is available, else ``gloo``. Without ``WORLD_SIZE`` in
    the environment (or with ``WORLD_SIZE=1``) no process group is created. ``nccl``: an
    :class:`archer.distributed.nccl.NCCLConfig` whose variables are set in this process before the
    group (and so NCCL's communicators) is created; they override inherited values.
    """
    if nccl is not None:
        os.environ.update(nccl.to_env())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size == 1 and not dist.is_initialized():
        return DistInfo(0, 1, 0, device, None)
    if not dist.is_initialized():
        from datetime import timedelta

        backend = backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.get_backend())


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks to shard one by one: HF's ``_no_split_modules`` (the decoder layers)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def _fsdp(model: nn.Module, **fsdp_kwargs: Any) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    # per-layer units first, so only one layer's full parameters exist at a time during forward
    for block in _shard_units(model):
        fully_shard(block, **fsdp_kwargs)
    fully_shard(model, **fsdp_kwargs)
    return model


def _ddp(model: nn.Module, **_: Any) -> nn.Module:
    # replicas must start identical: rank 0's parameters win
    if world_size() > 1:
        for p in model.parameters():
            dist.broadcast(p.data, src=0)
    model._archer_allreduce_grads = True  # read by sync_gradients
    return model


SHARDING: dict[str, Callable[..., nn.Module]] = {"fsdp": _fsdp, "ddp": _ddp}


def shard_model(model: nn.Module, strategy: str = "fsdp", **fsdp_kwargs: Any) -> nn.Module:
    """Shard ``model`` in place for the current process group with ``strategy`` in :data:`SHARDING`."""
    if strategy not in SHARDING:
        raise ValueError(f"unknown sharding strategy {strategy!r}; known: {sorted(SHARDING)}")
    return SHARDING[strategy](model, **fsdp_kwargs)


def all_reduce_sum(value: float | torch.Tensor, device: torch.device | None = None) -> float:
    """Sum a scalar over ranks (float64, so token counts stay exact)."""
    t = torch.as_tensor(value, dtype=torch.float64, device=device).clone().reshape(())
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def global_token_count(masks: Iterable[torch.Tensor], device: torch.device | None = None) -> float:
    """Response tokens in this rank's micro-batches, summed over every rank."""
    return all_reduce_sum(sum(float((m != 0).sum().item()) for m in masks), device)


def global_loss_normalizer(
    masks: Sequence[torch.Tensor],
    *,
    max_len: float | None = None,
    entropy_quantile: float | None = None,
    device: torch.device | None = None,
) -> LossNormalizer:
    """The mini-batch's :class:`~archer.algo.LossNormalizer` over every rank's micro-batch masks.

    Counts (tokens, sequences, ``dtc``/``aspo`` subset sizes) are summed over ranks; ``max_len`` (the
    Dr.GRPO constant, default the widest mask) is the maximum over ranks. One all-reduce of 4 numbers
    and one of 1. A rank with no rows (empty ``masks``) contributes zeros and still takes part.
    """
    if masks:
        local = loss_normalizer(list(masks), max_len=max_len, entropy_quantile=entropy_quantile)
    else:
        split = 0.0 if entropy_quantile is not None else None
        local = LossNormalizer(tokens=0.0, seqs=0.0, max_len=0.0 if max_len is None else float(max_len),
                               low_entropy_tokens=split, high_entropy_tokens=split)
    sums = torch.tensor(
        [local.tokens, local.seqs, local.low_entropy_tokens or 0.0, local.high_entropy_tokens or 0.0],
        dtype=torch.float64, device=device,
    )
    width = torch.tensor([local.max_len], dtype=torch.float64, device=device)
    if world_size() > 1:
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        dist.all_reduce(width, op=dist.ReduceOp.MAX)
    tokens, seqs, low, high = sums.tolist()
    split = local.low_entropy_tokens is not None
    return LossNormalizer(tokens=tokens, seqs=seqs, max_len=float(width.item()),
                          low_entropy_tokens=low if split else None, high_entropy_tokens=high if split else None)


def sync_gradients(model: nn.Module) -> None:
    """Average gradients over ranks for the ``ddp`` strategy (FSDP2 has already reduce-scattered)."""
    if not getattr(model, "_archer_allreduce_grads", False) or world_size() == 1:
        return
    ws = world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ws)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    loss_fn: Callable[[nn.Module, dict[str, torch.Tensor], LossNormalizer], torch.Tensor],
    *,
    mask_key: str = "response_mask",
    max_len: float | None = None,
    entropy_quantile: float | None = None,
    grad_clip: float | None = None,
) -> dict[str, float]:
    """One optimizer step over this rank's micro-batches with the mini-batch-global normaliser.

    ``loss_fn(model, micro_batch, normalizer)`` returns the micro-batch's share of the mini-batch loss,
    e.g. ``compute_policy_loss(name, ..., loss_normalizer=normalizer)[0]``; ``normalizer`` is built
    from every rank's ``micro_batch[mask_key]`` by :func:`global_loss_normalizer`. The same call in one
    process holding every rank's micro-batches gives the same update. Tensors must already be on
    the rank's device (``DistInfo.device``).
    """
    norm = global_loss_normalizer([mb[mask_key] for mb in micro_batches], max_len=max_len,
                                  entropy_quantile=entropy_quantile)
    if norm.tokens == 0:
        raise ValueError(f"no response tokens in the mini-batch (every {mask_key!r} is zero on every rank)")
    scale = float(world_size())  # undo the mean over ranks of the gradient reduction
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for mb in micro_batches:
        loss = loss_fn(model, mb, norm)
        (loss * scale).backward()
        total += float(loss.detach().item())
    sync_gradients(model)
    metrics = {"loss": all_reduce_sum(total), "tokens": norm.tokens}
    if grad_clip is not None:
        norm_value = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        metrics["grad_norm"] = float(norm_value.full_tensor() if hasattr(norm_value, "full_tensor") else norm_value)
    optimizer.step()
    return metrics


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer gathered to full tensors on CPU.

    Collective: call it on every rank. Under a process group only rank 0 receives the tensors (the
    others get an empty dict), which is what a weight sync to rollout engines or an export needs.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if world_size() == 1 and not _is_sharded(model):
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=False)
    sd = get_model_state_dict(model, options=opts)
    return {k: v.detach().cpu() for k, v in sd.items()}


def _is_sharded(model: nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in model.parameters())
