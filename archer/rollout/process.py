"""An HF engine in its own process, over weights in shared memory: sampling beside training on CPU.

Why: Python runs one thread at a time (the GIL). A producer thread that generates with a tiny model
spends most of its time in Python dispatching small kernels, and so does the trainer beside it: in one
process the two take turns on that lock. (On the 2-core machine the process producer measured 0.97x
sync steps/min against the thread's 0.92x, a gain not shown beyond the 3-seed noise:
``benchmarks/async_rl.py``, BENCHMARKS.md.) :class:`ProcessEngine` runs the HF engine (:class:`archer.rollout.hf.
HFEngine`) in a child process with its own interpreter, so generation and the update really overlap.
AReaL (Fu et al. 2025, arXiv 2505.24298, section 4) and verl's fully-async trainer separate rollout
and training the same way, with rollout servers on their own devices.

How:

- The child is started with ``spawn`` (a fresh interpreter: no copy of the parent's threads or locks;
  the parent's ``__main__`` is not imported there, so a script without a main guard, or one read from
  standard input, works) and receives the model through ``torch.multiprocessing``: its parameters and buffers are moved to
  shared memory first, so parent and child hold **the same storage** and no weight is copied at start.
- :meth:`update_weights` copies the new weights into that storage in place (one ``memcpy`` per tensor,
  in the parent). Calls are synchronous and serialised by one lock: a generation runs in the child
  only inside :meth:`generate`, and the parent writes weights only outside it, so the child never
  samples from half-written weights.
- The child sets its own torch thread count (``num_threads``) and computes in ``dtype`` (autocast, as
  the trainer's ``model.dtype``). It is not pinned to a core (the OS places it).
- Requests and rollouts travel over a pipe (pickled token ids and floats, small beside the model).

Failures are one-line errors in the parent: an exception in the child comes back as a
``RuntimeError`` naming it (the child's traceback follows on the next lines); a child that died (killed,
out of memory) is a ``RuntimeError`` with its exit code, found within a second; a child whose parent died
sees the pipe close and exits.

Limits: CPU models only (a GPU engine runs its kernels outside the GIL already; use a thread); the model
class must be importable by the child (any transformers architecture, or a module on the path, not one
defined in the user's main script); the
child starts a new interpreter and imports torch and transformers (a few seconds, once per run).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
import types
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from archer.rollout.base import Rollout, SamplingParams, encode_prompts

START_TIMEOUT_S = 300.0  # the child imports torch and transformers, then reports ready
_POLL_S = 1.0  # how often a waiting parent checks that the child is still alive


class ProcessEngine:
    """:class:`archer.rollout.hf.HFEngine` in a child process over ``model``'s weights, which this
    engine moves to shared memory (see the module docstring). ``model`` becomes the engine's own: the
    caller gives a copy of its policy and pushes new weights with :meth:`update_weights`.

    ``num_threads``: torch threads in the child; ``dtype``: compute precision (``model.dtype``); ``max_batch_size``: as the HF engine's."""

    shares_policy = False  # its own copy, synced by update_weights

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        num_threads: int = 1,
        dtype: str = "float32",
        max_batch_size: int = 64,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        device = next(model.parameters()).device
        if device.type != "cpu":
            raise ValueError(f"ProcessEngine runs CPU models; this one is on {device}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        import torch.multiprocessing as tmp

        self.tokenizer = tokenizer
        self.model = model.share_memory()  # parent and child: the same storage
        # every state-dict tensor by name (tied weights: one storage under two names); persistent
        # buffers a push may leave out (the weights of a model are what it must carry)
        self._tensors = dict(self.model.state_dict(keep_vars=True))
        self._buffers = {name for name, _ in self.model.named_buffers()}
        self._lock = threading.Lock()
        self._closed = False
        ctx = tmp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        options = {
            "num_threads": num_threads,
            "dtype": dtype,
            "max_batch_size": max_batch_size,
        }
        self.proc = ctx.Process(
            target=_serve,
            args=(child_conn, self.model, tokenizer, options),
            name="archer-rollout",
            daemon=True,
        )
        with _main_hidden():
            self.proc.start()
        child_conn.close()
        self.pid = self.proc.pid
        self._wait("start", start_timeout_s)

    # ------------------------------------------------------------------------------------ API

    def encode(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts)

    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Rollout]]:
        """``[num_prompts][params.n]`` rollouts in prompt order, generated in the child."""
        ids = self.encode(prompts)
        with self._lock:
            self._send(("generate", ids, params), "generate")
            return self._wait("generate", None)

    def update_weights(self, state_dict_or_model: Any, version: int | None = None) -> None:
        """Copy new weights into the shared storage (in the parent; the child is idle meanwhile);
        ``version`` is accepted for the engine interface (this engine does not number its weights)."""
        state = (
            state_dict_or_model.state_dict()
            if isinstance(state_dict_or_model, torch.nn.Module)
            else state_dict_or_model
        )
        with self._lock:
            self._check_alive("update_weights")
            missing = [k for k in self._tensors if k not in state and k not in self._buffers]
            if missing:
                raise KeyError(f"update_weights: {len(missing)} weights missing, e.g. {missing[0]!r}")
            with torch.no_grad():
                for name, target in self._tensors.items():
                    if name in state:
                        target.copy_(state[name])

    def close(self) -> None:
        """Stop the child (asked first, then terminated)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc.is_alive():
                self._conn.send(("close",))
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
        self._conn.close()

    def __del__(self) -> None:  # a run that forgets close() leaves no process behind
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ------------------------------------------------------------------------------ internals

    def _send(self, message: tuple, what: str) -> None:
        self._check_alive(what)
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"rollout process (pid {self.pid}): cannot send a request ({exc})") from exc

    def _wait(self, what: str, timeout_s: float | None) -> Any:
        """The child's answer to the last request; its error or death as a ``RuntimeError``."""
        waited = 0.0
        while not self._conn.poll(_POLL_S):
            waited += _POLL_S
            self._check_alive(what)
            if timeout_s is not None and waited >= timeout_s:
                self.close()
                raise RuntimeError(
                    f"rollout process (pid {self.pid}): no answer to {what} in {timeout_s:.0f} s"
                )
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.proc.join(timeout=5)  # a closed pipe: the child is exiting; report how it ended
            self._check_alive(what)
            raise RuntimeError(f"rollout process (pid {self.pid}): the pipe closed during {what}") from exc
        if kind == "error":
            first, _, rest = payload.partition("\n")
            raise RuntimeError(f"rollout process (pid {self.pid}) failed in {what}: {first}\n{rest}")
        return payload

    def _check_alive(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"rollout process: {what} after close()")
        if not self.proc.is_alive():
            code = self.proc.exitcode
            self._closed = True
            raise RuntimeError(f"rollout process (pid {self.pid}) died during {what} (exit code {code})")


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start a spawned child without the parent's ``__main__``. ``spawn`` normally re-imports the
    parent's main script in the child, which runs a user's script again when it has no ``if __name__ ==
    "__main__":`` guard (a second training run in the child), and fails when the script came from
    standard input. The child here needs only archer and the model's classes, so for the moment of the
    start ``__main__`` is a bare module: the child imports nothing of the user's."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _serve(conn: Any, model: torch.nn.Module, tokenizer: Any, options: dict[str, Any]) -> None:
    """The child: build the HF engine over the shared model, answer requests until asked to close or
    until the parent's end of the pipe closes."""
    try:
        torch.set_num_threads(options["num_threads"])
        from archer.models.loader import autocast
        from archer.rollout.hf import HFEngine

        engine = HFEngine(model, tokenizer, max_batch_size=options["max_batch_size"], num_threads=None)
        precision = options["dtype"]
        conn.send(("ok", os.getpid()))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", _describe()))
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message[0] == "close":
            return
        try:
            _, ids, params = message
            with autocast("cpu", precision), torch.no_grad():
                out = engine.generate(ids, params)
            conn.send(("ok", out))
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", _describe()))


def _describe() -> str:
    """``Type: message`` on the first line, the traceback after it."""
    exc = sys.exc_info()[1]
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
