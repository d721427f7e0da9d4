"""The process world of a training run: one object the RL loop talks to, with no distributed branches.

:class:`World` is the single-process world: every collective is the identity (``gather`` returns the
local list, ``sum`` the value, ``on_main`` runs the function), so the loop reads the same with one
process or many. :class:`ProcessWorld` is the same interface over a ``torch.distributed`` process
group (gloo on CPU, NCCL on CUDA), in one of two data-parallel strategies (:data:`STRATEGIES`):

- ``ddp``: every rank holds a full replica; gradients are summed over ranks after the backward pass
  (one flat all-reduce per dtype), so every rank takes the single-process step (Li et al. 2020,
  "PyTorch Distributed", VLDB).
- ``fsdp``: parameters, gradients and optimizer state are sharded with FSDP2 (``fully_shard`` on each
  decoder layer and on the root; Zhao et al. 2023, "PyTorch FSDP"); gradients arrive reduce-scattered
  as a sum (divide factor 1). Generation needs the full weights: :meth:`ProcessWorld.full_weights`
  all-gathers them for the duration of a rollout or an evaluation and reshards after.

Both strategies share everything else: each rank generates and scores its slice ``[rank::size]`` of
the global prompt batch; :meth:`gather` hands every rank all groups in the global order, so dynamic
sampling, advantages and metrics are global; the loss normaliser is all-reduced before any loss is
computed (:meth:`normalizer`), so the summed gradient equals that of one process holding the whole
mini-batch; the NaN/inf skip is agreed by all ranks (:meth:`any`). Under ``fsdp`` every forward and
backward is collective, so ranks run the same number of micro-batches (:meth:`max_int` agrees on it;
a rank short of rows runs a zero-weight dummy row).

Limits: one device per process; no tensor or pipeline parallelism; objects gathered between ranks are
pickled (``all_gather_object``), fine for rollout batches of moderate size.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from archer.algo.aggregation import LossNormalizer, loss_normalizer
from archer.distributed.health import Health

STRATEGIES = ("ddp", "fsdp")


class World:
    """One process: every collective is the identity."""

    rank = 0
    size = 1
    strategy = "none"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.health: Health | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def monitor(self, run_dir: Any, timeout_s: float | None) -> None:
        """Write this rank's heartbeat under ``run_dir`` (:mod:`archer.distributed.health`); one process
        has no watchdog (nothing waits on it), a process world's ranks get one with ``timeout_s``."""
        self.health = Health(run_dir, self.rank, None)

    def mark(self, stage: str, step: int | None = None) -> None:
        """This rank entered ``stage`` (the heartbeat and the watchdog read it)."""
        if self.health is not None:
            self.health.mark(stage, step)

    def _op(self, name: str) -> contextlib.AbstractContextManager:
        """Around a collective: the watchdog's report names it."""
        return self.health.collective(name) if self.health is not None else contextlib.nullcontext()

    @property
    def sharded(self) -> bool:
        return False

    def barrier(self) -> None:
        pass

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return obj

    def gather(self, local: list[Any]) -> list[Any]:
        """Every rank's slice ``[rank::size]`` of a list put back in the global order."""
        return local

    def mine(self, items: Sequence[Any]) -> list[Any]:
        """This rank's slice of ``items``."""
        return list(items[self.rank :: self.size])

    def sum(self, value: float) -> float:
        return float(value)

    def max_int(self, value: int) -> int:
        return int(value)

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only; the others wait and receive its (picklable) result."""
        return fn()

    def main_only(self, fn: Callable[[], Any], default: Any = None) -> Any:
        """``fn()`` on rank 0, ``default`` elsewhere; nothing is sent between ranks (no collective)."""
        return fn() if self.main else default

    def print(self, text: str) -> None:
        """A line on the terminal, from rank 0 only."""
        if self.main:
            print(text, flush=True)

    def precision(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        """The compute-precision context of a forward: autocast to ``dtype`` (None: float32, no-op)."""
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def even_out(self, parts: list[list[int]]) -> list[list[int]]:
        """Collective work items padded so every rank runs as many (an empty item = a dummy row)."""
        return parts

    def replicas(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """Whether the data-parallel replicas are bitwise equal (None with one process)."""
        return None

    def local(self, obj: Any) -> Any:
        """``obj`` where it can serve every rank: an object in memory reaches no other process, so a
        process world returns None and each rank loads its own copy instead."""
        return obj

    def normalizer(
        self, masks: Sequence[torch.Tensor], *, max_len: float | None, entropy_quantile: float | None
    ) -> LossNormalizer:
        """The mini-batch's loss normaliser over every rank's micro-batch masks."""
        return loss_normalizer(list(masks), max_len=max_len, entropy_quantile=entropy_quantile)

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        """Make every rank's gradients the global (summed) ones."""

    def merge_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """Per-key sums over ranks (key sets may differ)."""
        return dict(sums)

    def max_float(self, value: float) -> float:
        return float(value)

    def shard(self, model: torch.nn.Module, mp_dtype: torch.dtype | None = None) -> torch.nn.Module:
        """Prepare ``model`` for this world's strategy (identity here)."""
        return model

    @contextlib.contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        """Full (unsharded) parameters for generation inside the block."""
        yield

    def close(self) -> None:
        if self.health is not None:
            self.health.close()


class ProcessWorld(World):
    """A rank of a ``torch.distributed`` process group (see the module docstring)."""

    def __init__(self, device: torch.device, strategy: str, owns_group: bool) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; known: {list(STRATEGIES)}")
        super().__init__(device)
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.strategy = strategy
        self.owns_group = owns_group

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    def monitor(self, run_dir: Any, timeout_s: float | None) -> None:
        self.health = Health(run_dir, self.rank, timeout_s)

    def barrier(self) -> None:
        with self._op("barrier"):
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        box = [obj if self.main else None]
        with self._op("broadcast"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, local: list[Any]) -> list[Any]:
        parts: list[Any] = [None] * self.size
        with self._op("all_gather"):
            dist.all_gather_object(parts, local)
        total = sum(len(p) for p in parts)
        return [parts[j % self.size][j // self.size] for j in range(total)]

    def _reduce(self, values: list[float], op: Any, dtype: torch.dtype = torch.float64) -> list[float]:
        t = torch.tensor(values, dtype=dtype, device=self.device)
        with self._op("all_reduce"):
            dist.all_reduce(t, op=op)
        return t.tolist()

    def sum(self, value: float) -> float:
        return float(self._reduce([float(value)], dist.ReduceOp.SUM)[0])

    def max_int(self, value: int) -> int:
        return int(self._reduce([float(value)], dist.ReduceOp.MAX)[0])

    def max_float(self, value: float) -> float:
        return float(self._reduce([float(value)], dist.ReduceOp.MAX)[0])

    def any(self, flag: bool) -> bool:
        return self._reduce([1.0 if flag else 0.0], dist.ReduceOp.MAX)[0] > 0

    def on_main(self, fn: Callable[[], Any]) -> Any:
        return self.broadcast(fn() if self.main else None)

    def precision(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        # FSDP2 casts by itself (its mixed-precision policy); ddp replicas autocast like one process
        return contextlib.nullcontext() if self.sharded else super().precision(dtype)

    def even_out(self, parts: list[list[int]]) -> list[list[int]]:
        if not self.sharded:
            return parts
        return parts + [[]] * (self.max_int(len(parts)) - len(parts))

    def local(self, obj: Any) -> Any:
        return None

    def replicas(self, model: torch.nn.Module) -> dict[str, Any]:
        digests = self.gather([replica_digest(model)])
        return {
            "world_size": self.size,
            "strategy": self.strategy,
            "replica_digests": digests,
            "replicas_identical": len(set(digests)) == 1,
        }

    def normalizer(
        self, masks: Sequence[torch.Tensor], *, max_len: float | None, entropy_quantile: float | None
    ) -> LossNormalizer:
        split = entropy_quantile is not None
        if masks:
            local = loss_normalizer(list(masks), max_len=max_len, entropy_quantile=entropy_quantile)
        else:  # a rank without rows contributes zeros and still takes part
            local = LossNormalizer(
                tokens=0.0,
                seqs=0.0,
                max_len=0.0 if max_len is None else float(max_len),
                low_entropy_tokens=0.0 if split else None,
                high_entropy_tokens=0.0 if split else None,
            )
        tokens, seqs, low, high = self._reduce(
            [local.tokens, local.seqs, local.low_entropy_tokens or 0.0, local.high_entropy_tokens or 0.0],
            dist.ReduceOp.SUM,
        )
        width = self.max_float(local.max_len)
        return LossNormalizer(
            tokens=tokens,
            seqs=seqs,
            max_len=width,
            low_entropy_tokens=low if split else None,
            high_entropy_tokens=high if split else None,
        )

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        if self.sharded:
            return  # FSDP2 reduce-scattered them during backward (as sums, see shard())
        with self._op("all_reduce(gradients)"):
            _allreduce_grads(model)

    def merge_sums(self, sums: dict[str, float]) -> dict[str, float]:
        parts: list[Any] = [None] * self.size
        with self._op("all_gather(sums)"):
            dist.all_gather_object(parts, sums)
        out: dict[str, float] = {}
        for part in parts:
            for k, v in part.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def shard(self, model: torch.nn.Module, mp_dtype: torch.dtype | None = None) -> torch.nn.Module:
        if not self.sharded:
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)  # replicas start equal: rank 0's weights win
            return model
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        kwargs: dict[str, Any] = {}
        if mp_dtype is not None and mp_dtype != torch.float32:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=torch.float32)
        names = set()
        for m in model.modules():
            names.update(getattr(m, "_no_split_modules", None) or [])
        for block in [m for m in model.modules() if type(m).__name__ in names]:
            fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)
        # make ``model`` the FSDP root now: generation calls inner modules before any root forward
        model._get_fsdp_state()._lazy_init()
        for m in model.modules():
            if isinstance(m, FSDPModule):
                m.set_gradient_divide_factor(1.0)  # summed gradients: each rank's loss is its share
                m.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
        return model

    @contextlib.contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)] if self.sharded else []
        for m in units:  # gather once; forwards inside the block then run collective-free
            m.set_reshard_after_forward(False, recurse=False)
        with torch.no_grad(), self._op("all_gather(full weights)"):
            for m in units:
                m.unshard()
        try:
            yield
        finally:
            for m in units:
                m.reshard()
                m.set_reshard_after_forward(True, recurse=False)

    def close(self) -> None:
        super().close()
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _allreduce_grads(model: torch.nn.Module) -> None:
    """Sum gradients over ranks, one flat buffer per dtype.

    A parameter with a gradient on some rank gets one on every rank (zeros where it had none); one
    without a gradient anywhere stays ``None``, as in a single process, so AdamW skips it the same way.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=device)  # [P]
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in live:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])  # [sum numel]
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def join_world(
    device: torch.device, strategy: str, backend: str = "auto", timeout_s: float = 3600.0, nccl: Any = None
) -> World:
    """The world of this process: a :class:`ProcessWorld` when the environment describes a process group
    (``WORLD_SIZE`` > 1, as torchrun and :mod:`archer.distributed.launch` set it), else a :class:`World`.

    ``nccl``: an :class:`archer.distributed.nccl.NCCLConfig` whose variables are set in this process
    first (overriding inherited ones), so NCCL's communicators see them.
    """
    if nccl is not None:
        os.environ.update(nccl.to_env())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized():
        return World(device)
    created = not dist.is_initialized()
    if created:
        from datetime import timedelta

        name = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(
            name,
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            timeout=timedelta(seconds=timeout_s),
        )
    return ProcessWorld(device, strategy, created)


def replica_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's local bytes: equal digests mean bitwise-equal replicas (ddp)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        local = p.to_local() if hasattr(p, "to_local") else p
        h.update(name.encode())
        h.update(local.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
