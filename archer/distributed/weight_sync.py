"""Trainer -> rollout-worker weight sync over a collective group (gloo on CPU, NCCL on GPU), bucketed.

The object-store path of :class:`archer.rollout.ray_pool.RayRolloutPool` serialises the whole state
dict into Ray's object store and every worker deserialises it from there. Peers that train at scale
broadcast instead (verl's checkpoint engine, OpenRLHF's and NeMo-RL's NCCL groups between the trainer
and vLLM workers). This module is that path: the trainer process (rank 0) and the ``N`` rollout workers
(ranks ``1..N``) form a group of their own, apart from any ``torch.distributed`` default group the
trainer's ranks use, and each update is a series of ``broadcast`` calls from rank 0.

- **The group**: rank 0 hosts a ``TCPStore`` on a free port of its node; every member builds a
  ``ProcessGroupGloo`` (``ProcessGroupNCCL`` on CUDA) over a prefix of that store. No default process
  group is touched, so a trainer rank that is also in a DDP/FSDP group can host one.
- **Layout**: the sender describes the state dict once per update as :class:`TensorSpec` rows (name,
  shape, dtype; a few KB, sent as the Ray call's argument); :func:`plan_buckets` cuts them into
  buckets of at most ``bucket_mb`` of one dtype (a tensor larger than a bucket is a bucket of its own).
- **Transfer**: per bucket the sender flattens its tensors into one buffer and broadcasts it; each
  receiver broadcasts into a buffer of the same size and unflattens it into views. The receiver hands
  the resulting state dict to the engine's ``update_weights`` (which copies it into the engine's own
  parameters), exactly as the object-store path does, so both give the engine bit-identical weights.

Failures: every collective has the group's ``timeout_s``; a member that dies or never joins turns a
send into an exception naming the operation and the bucket, not a hang. The pool then falls back to the
object store (its documented fallback) and logs why.

Limits: the NCCL path needs every member on a GPU and is not exercised on this project's CPU machines
(``benchmarks/gpu_smoke.py`` runs it when a GPU is lent); receivers build a full state dict in host or
device memory before the engine copies it (no streaming into the engine's parameters bucket by bucket);
a group has a fixed membership, so replacing a worker means building a new group.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_BUCKET_MB = 64.0
DEFAULT_TIMEOUT_S = 600.0
BACKENDS = ("gloo", "nccl")
TRANSPORTS = ("auto", "collective", "object_store")
"""``rollout.weight_sync``: ``collective`` (this module; an error when the group cannot form),
``object_store`` (Ray's object store, :class:`archer.rollout.ray_pool.RayRolloutPool`'s fallback) or
``auto`` (the group when it forms, else the object store)."""
_PREFIX = "archer-weight-sync"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the state dict as the receivers need to rebuild it."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # e.g. "float32": torch dtypes are not always picklable across versions

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.torch_dtype).element_size()


def specs_of(state_dict: Mapping[str, torch.Tensor]) -> list[TensorSpec]:
    """The layout of ``state_dict`` (tensors only; anything else is refused)."""
    out = []
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"weight sync sends tensors only; {name!r} is a {type(t).__name__}")
        out.append(TensorSpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")))
    return out


def plan_buckets(specs: Sequence[TensorSpec], bucket_mb: float = DEFAULT_BUCKET_MB) -> list[list[int]]:
    """Indices of ``specs`` grouped into buckets: consecutive tensors of one dtype, at most
    ``bucket_mb`` MiB each (a larger tensor is a bucket of its own). Every index appears once, in order."""
    if bucket_mb <= 0:
        raise ValueError(f"bucket_mb must be > 0, got {bucket_mb}")
    limit = bucket_mb * 2**20
    buckets: list[list[int]] = []
    size = 0.0
    for i, spec in enumerate(specs):
        if buckets and specs[buckets[-1][-1]].dtype == spec.dtype and size + spec.nbytes <= limit:
            buckets[-1].append(i)
            size += spec.nbytes
        else:
            buckets.append([i])
            size = spec.nbytes
    return buckets


class WeightGroup:
    """One member of a weight-sync group: rank 0 sends, ranks ``1..size-1`` receive.

    Rank 0 first opens the store (:meth:`reserve`, on a port the OS picks), tells the members its
    address, then builds its member with ``_store=``; the others build ``WeightGroup(address, rank, size,
    backend)`` in their own processes. Every constructor returns when all members have joined (or raises
    after ``timeout_s``).
    """

    def __init__(
        self,
        address: tuple[str, int],
        rank: int,
        size: int,
        backend: str = "gloo",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        _store: Any = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"weight-sync backend must be one of {BACKENDS}, got {backend!r}")
        if size < 2 or not 0 <= rank < size:
            raise ValueError(
                f"weight-sync group needs size >= 2 and 0 <= rank < size, got rank {rank} of {size}"
            )
        self.address, self.rank, self.size, self.backend = address, rank, size, backend
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        )
        store = _store or dist.TCPStore(address[0], address[1], size, False, timeout=self.timeout)
        prefixed = dist.PrefixStore(_PREFIX, store)
        if backend == "gloo":
            self._pg = dist.ProcessGroupGloo(prefixed, rank, size, self.timeout)
        else:  # pragma: no cover - needs GPUs
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = self.timeout
            self._pg = dist.ProcessGroupNCCL(prefixed, rank, size, opts)
        self._store = store  # rank 0's store must outlive the group
        self._barrier()  # every member has joined: the first broadcast cannot wait on a late joiner

    @staticmethod
    def reserve(host: str, size: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        """Rank 0's store, opened before the members are told its port (pass it as ``_store``)."""
        return dist.TCPStore(
            host, 0, size, True, timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False
        )

    def _barrier(self) -> None:
        t = torch.zeros(1, device=self.device)
        self._pg.allreduce([t]).wait(self.timeout)

    def _broadcast(self, buf: torch.Tensor, what: str) -> None:
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        try:
            self._pg.broadcast([buf], opts).wait(self.timeout)
        except Exception as exc:  # noqa: BLE001 - gloo/NCCL raise several types; name the operation
            raise RuntimeError(
                f"weight sync ({self.backend}, rank {self.rank} of {self.size}): broadcast of {what} failed: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc

    def send(
        self, state_dict: Mapping[str, torch.Tensor], bucket_mb: float = DEFAULT_BUCKET_MB
    ) -> dict[str, float]:
        """Rank 0: broadcast ``state_dict`` bucket by bucket (the receivers must be in :meth:`receive`
        with the same specs and ``bucket_mb``). Returns ``{"send_s", "bytes", "buckets"}``."""
        if self.rank != 0:
            raise RuntimeError("only rank 0 sends")
        start = time.perf_counter()
        tensors = list(state_dict.values())
        specs = specs_of(state_dict)
        buckets = plan_buckets(specs, bucket_mb)
        sent = 0
        for b, idx in enumerate(buckets):
            dtype = specs[idx[0]].torch_dtype
            flat = torch.cat(
                [tensors[i].detach().reshape(-1).to(device=self.device, dtype=dtype) for i in idx]
            )
            self._broadcast(
                flat, f"bucket {b + 1}/{len(buckets)} ({flat.numel() * flat.element_size()} bytes)"
            )
            sent += flat.numel() * flat.element_size()
        return {"send_s": time.perf_counter() - start, "bytes": float(sent), "buckets": float(len(buckets))}

    def receive(
        self, specs: Sequence[TensorSpec], bucket_mb: float = DEFAULT_BUCKET_MB
    ) -> dict[str, torch.Tensor]:
        """Ranks ``1..``: the state dict rank 0 is sending, as views into one buffer per bucket."""
        if self.rank == 0:
            raise RuntimeError("rank 0 sends; it does not receive")
        out: dict[str, torch.Tensor] = {}
        buckets = plan_buckets(specs, bucket_mb)
        for b, idx in enumerate(buckets):
            total = sum(specs[i].numel for i in idx)
            flat = torch.empty(total, dtype=specs[idx[0]].torch_dtype, device=self.device)
            self._broadcast(flat, f"bucket {b + 1}/{len(buckets)}")
            offset = 0
            for i in idx:
                spec = specs[i]
                out[spec.name] = flat[offset : offset + spec.numel].view(spec.shape)
                offset += spec.numel
        return out

    def close(self) -> None:
        pg, self._pg = getattr(self, "_pg", None), None
        if pg is not None:
            try:
                pg.shutdown()
            except Exception:  # noqa: BLE001 - a group whose peer died may refuse a clean shutdown
                pass
        self._store = None
