"""Sharded checkpoints: each rank writes its own shard, any world size reads them back.

Format (one directory per checkpoint)::

    ckpt/
      .metadata           torch.distributed.checkpoint (DCP) index: every tensor's global shape and
                          which file holds which slice
      __<rank>_0.distcp   one file per rank: that rank's shards of {"model": ..., "optim": ...}
      archer_ckpt.json    step, world size at save time, free-form ``extra`` (trainer state)
      config.json         the Hugging Face model config (so ``archer export`` can rebuild the model)
      tokenizer files     when a tokenizer is given

Saving and loading go through DCP's ``get_state_dict`` / ``set_state_dict``, which speak fully
qualified parameter names (no FSDP wrapper prefixes), so a checkpoint saved by 2 FSDP2 ranks loads
into 1 plain process, into 4 ranks, or into a DDP replica: DCP reshards on read. Without a process
group, DCP runs in single-process mode.

Limits: the optimizer must be created (it need not have stepped) before :func:`load_sharded`; every
rank must see the same directory (a shared file system) when saving and loading.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

META_FILE = "archer_ckpt.json"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier() -> None:
    if _world_size() > 1:
        dist.barrier()


def save_sharded(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    tokenizer: Any = None,
    config: Any = None,
) -> Path:
    """Write this rank's shard of model (and optimizer) state under ``path`` (collective).

    ``config``: the Hugging Face config to store (default ``model.config``); ``extra["prefix"]`` names
    the prefix of the Hugging Face parameter names inside ``model`` (a wrapper), for ``archer export``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = {"model": get_model_state_dict(model)}
    else:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():
        # DCP warns on every single-process save; a world size of 1 is a supported case here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(path), no_dist=_world_size() == 1)
    if _rank() == 0:
        config = config if config is not None else getattr(model, "config", None)
        if config is not None and hasattr(config, "save_pretrained"):
            config.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        meta = {
            "step": step,
            "world_size": _world_size(),
            "has_optimizer": optimizer is not None,
            "extra": extra or {},
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2))
    _barrier()
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint's ``archer_ckpt.json`` (step, world size at save time, extra)."""
    file = Path(path) / META_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not an archer sharded checkpoint (no {META_FILE})")
    return json.loads(file.read_text())


def load_sharded(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load a checkpoint written by any world size into ``model`` (and ``optimizer``) in place.

    Returns the metadata (``step``, ``world_size`` at save time, ``extra``). Collective under a
    process group.
    """
    meta = read_meta(path)
    if optimizer is not None and not meta.get("has_optimizer", False):
        raise ValueError(f"{path} holds no optimizer state; load it with optimizer=None")
    no_dist = _world_size() == 1  # single process: say so, rather than let DCP warn that it guessed
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        state = {"model": get_model_state_dict(model)}
        _dcp_load(state, path, no_dist)
        set_model_state_dict(model, state["model"])
    else:
        # get_state_dict gives tensors of the right (sharded) layout, creating optimizer state if needed
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        _dcp_load(state, path, no_dist)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return meta


def load_full_model_state(path: str | Path, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read the full (unsharded) model tensors named in ``template`` in one process, on CPU.

    ``template`` maps names to tensors of the right shape and dtype (e.g. a freshly built model's
    ``state_dict()``); it is filled in place and returned. Used by ``archer export``.
    """
    state = {"model": template}
    _dcp_load(state, path, True)  # one reader, even inside a process group
    return state["model"]


def _dcp_load(state: dict[str, Any], path: str | Path, no_dist: bool) -> None:
    with warnings.catch_warnings():
        # DCP warns on every single-process load, even when asked for one explicitly
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(path), no_dist=no_dist)
