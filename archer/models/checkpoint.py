"""Atomic, resumable checkpoints in Hugging Face format.

Layout under ``<run>/checkpoints/``::

    step_000010/            model (save_pretrained: config.json + model.safetensors), tokenizer files,
                            trainer_state.pt (optimizer, scheduler, RNG, data order, controllers, step),
                            COMPLETE (written last)

Atomicity: everything is written into a hidden temporary folder, every file is fsync'ed, the folder is
renamed into place (atomic on one filesystem), the parent is fsync'ed, and only then is the
``COMPLETE`` marker written and fsync'ed. A reader trusts only folders with the marker, so a kill at any
moment leaves either the previous checkpoint or the new one, never a torn one. Older complete
checkpoints beyond ``keep_last`` and stale temporary folders are removed after a successful save.

``from_pretrained`` on a checkpoint folder loads the policy directly (the extra files are ignored).
Under LoRA the folder holds the adapter (``adapter_config.json``, loadable with PEFT or
``from_pretrained`` when the base path is reachable) and, with ``model.lora.save_merged``, ``merged/``.

Under ``trainer.strategy=fsdp`` a checkpoint is sharded (:func:`save_sharded_checkpoint`: every rank
writes its shard of the model and optimizer with ``torch.distributed.checkpoint``, rank 0 the config,
tokenizer and trainer state), made complete the same way (temporary folder, rename, marker); it
resumes on any world size and ``archer export CKPT --out DIR`` turns it into one Hugging Face model.

A failed write (disk full, permissions) raises :class:`CheckpointError` with one line naming the
folder; the temporary folder is removed and the previous checkpoint stays intact.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archer.distributed.checkpoint import META_FILE, load_sharded, save_sharded
from archer.models.loader import save_policy

MARKER = "COMPLETE"
SHARDED_PREFIX = "policy."  # parameter names in a sharded checkpoint: the trainer's TokenScorer.policy
STATE_FILE = "trainer_state.pt"
_STEP_RE = re.compile(r"^step_(\d+)$")


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / MARKER).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


class CheckpointError(OSError):
    """A checkpoint could not be written; the message is one line naming the folder and the cause."""


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    state: dict[str, Any],
    keep_last: int = 2,
    merged: bool = False,
) -> Path:
    """Write ``step_<step>`` atomically; ``state`` is a picklable dict (optimizer state dicts etc.)."""

    root = checkpoint_dir(run_dir)
    tmp = root / f".tmp_step_{step:06d}_{os.getpid()}"

    def write() -> None:
        save_policy(model, tokenizer, tmp, merged=merged)
        torch.save(dict(state, step=step, rng=rng_state()), tmp / STATE_FILE)

    return _commit(root, tmp, step, write, keep_last)


def _commit(
    root: Path, tmp: Path, step: int, write: Any, keep_last: int, main: bool = True, barrier: Any = None
) -> Path:
    """Run ``write`` into ``tmp`` (every rank), then on ``main`` fsync, rename to ``step_N``, mark complete."""
    final = root / f"step_{step:06d}"
    try:
        if main:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        if barrier is not None:
            barrier()
        write()
        if barrier is not None:
            barrier()
        if main:
            _fsync_tree(tmp)
            if final.exists():  # a re-save of the same step (e.g. after a resume): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(root)
            with open(final / MARKER, "w") as fh:
                fh.write(f"{step}\n")
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(final)
            _prune(root, keep_last)
    except OSError as exc:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"checkpoint step {step}: cannot write {root}: {exc.strerror or exc}; "
            "the previous checkpoint is intact"
        ) from None
    if barrier is not None:
        barrier()
    return final


def is_sharded_checkpoint(path: str | Path) -> bool:

    return (Path(path) / META_FILE).is_file()


def save_run_checkpoint(
    world: Any,
    run_dir: str | Path,
    step: int,
    model: Any,
    sharded_model: Any,
    optimizer: Any,
    tokenizer: Any,
    state: Any,
    *,
    keep_last: int,
    merged: bool,
) -> Path:
    """A run's checkpoint in the format of its world: every rank's shards under FSDP
    (:func:`save_sharded_checkpoint`, collective), else one Hugging Face checkpoint written by rank 0
    (:func:`save_checkpoint`). ``state(with_optimizer)`` gives the trainer state."""
    if world.sharded:
        return save_sharded_checkpoint(
            run_dir,
            step,
            sharded_model,
            optimizer,
            tokenizer,
            state(with_optimizer=False),
            keep_last=keep_last,
            main=world.main,
            barrier=world.barrier,
        )
    return world.on_main(
        lambda: save_checkpoint(run_dir, step, model, tokenizer, state(), keep_last=keep_last, merged=merged)
    )


def save_sharded_checkpoint(
    run_dir: str | Path,
    step: int,
    model: Any,
    optimizer: Any,
    tokenizer: Any,
    state: dict[str, Any],
    *,
    keep_last: int,
    main: bool,
    barrier: Any,
) -> Path:
    """Collective: every rank writes its shard of ``model`` (the trainer's TokenScorer) and ``optimizer``;
    rank 0 adds the Hugging Face config, the tokenizer and the trainer state, then commits atomically."""

    root = checkpoint_dir(run_dir)
    tmp = root / f".tmp_step_{step:06d}"  # one name on every rank (a shared folder)

    def write() -> None:
        save_sharded(
            tmp,
            model,
            optimizer,
            step=step,
            extra={"prefix": SHARDED_PREFIX},
            tokenizer=tokenizer if main else None,
            config=getattr(model.policy, "config", None),
        )
        if main:
            torch.save(dict(state, step=step, rng=rng_state()), tmp / STATE_FILE)

    return _commit(root, tmp, step, write, keep_last, main=main, barrier=barrier)


def load_sharded_checkpoint(path: str | Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load a sharded checkpoint (any world size) into the sharded ``model`` and ``optimizer`` in place."""

    return load_sharded(path, model, optimizer)


def _prune(root: Path, keep_last: int) -> None:
    complete = list_checkpoints(root.parent)
    for _step, path in complete[: max(0, len(complete) - keep_last)]:
        shutil.rmtree(path, ignore_errors=True)
    for p in root.iterdir():
        stale_tmp = p.name.startswith(".tmp_step_")
        torn = _STEP_RE.match(p.name) and not (p / MARKER).exists()
        if p.is_dir() and (stale_tmp or torn):
            shutil.rmtree(p, ignore_errors=True)


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """The trainer state of a complete checkpoint folder (raises if the marker is missing)."""
    path = Path(path)
    if not (path / MARKER).is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {MARKER} marker)")
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
