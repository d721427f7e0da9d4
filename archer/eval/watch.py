"""``archer eval watch RUN_DIR``: evaluate every complete checkpoint of a training run, once.

Contract with the trainer: a checkpoint is a directory ``RUN_DIR/checkpoints/step_NNNNNN/`` holding
a Hugging Face model and tokenizer, and a file ``COMPLETE`` written last; a directory without it is
still being written and is ignored.

Per checkpoint the watcher writes ``RUN_DIR/eval/step_NNNNNN/`` (the files of
``archer.eval.runner``: generations, results, summary) and appends the summary to
``RUN_DIR/eval/history.jsonl``. All progress lives on disk, so a restarted watcher picks up where it
stopped: generation is done when ``eval/<ckpt>/GENERATED`` exists, scoring when ``summary.json`` does.
Failures (a checkpoint that does not load, a crash mid-generation) are recorded per phase in
``RUN_DIR/eval/watch_state_<phase>.json`` and retried with exponential backoff
(``backoff_s * 2**(attempts-1)``) up to ``max_attempts``.

Phases split like the seeds' setup: ``--phase generate`` on the GPU machine and ``--phase score`` on a
CPU machine sharing the run directory (a network file system or a sync); the score watcher scores each
checkpoint whose ``GENERATED`` marker has appeared. ``--phase all`` does both in one process.
"""

from __future__ import annotations

import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from archer.atomic_json import write_json
from archer.data.schema import Problem
from archer.eval import store
from archer.eval.runner import generate_phase, score_phase

COMPLETE_MARKER = "COMPLETE"
PHASES = ("all", "generate", "score")
_STEP = re.compile(r"step_(\d+)$")


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (``COMPLETE`` present), oldest step first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        d for d in root.iterdir() if d.is_dir() and _STEP.search(d.name) and (d / COMPLETE_MARKER).exists()
    ]
    return sorted(found, key=lambda d: int(_STEP.search(d.name).group(1)))  # type: ignore[union-attr]


class Watcher:
    """One pass over the checkpoints per :meth:`step`; see the module docstring for the file layout."""

    def __init__(
        self,
        run_dir: str | Path,
        problems: Sequence[Problem],
        *,
        n: int,
        ks: Sequence[int],
        sampling: dict[str, Any] | None = None,
        phase: str = "all",
        engine_factory: Callable[[Path], tuple[Any, Any]] | None = None,
        template: str = "auto",
        batch_size: int = 16,
        reward_opts: dict[str, Any] | None = None,
        max_attempts: int = 3,
        backoff_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
    ) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.run_dir = Path(run_dir)
        self.eval_dir = self.run_dir / "eval"
        self.problems = list(problems)
        self.n, self.ks, self.sampling = n, list(ks), dict(sampling or {})
        self.phase = phase
        self.engine_factory = engine_factory
        self.template, self.batch_size = template, batch_size
        self.reward_opts = dict(reward_opts or {})
        self.max_attempts, self.backoff_s = max_attempts, backoff_s
        self.clock, self.log = clock, log

    # ------------------------------------------------------------------ state on disk

    def _state_path(self, phase: str) -> Path:
        return self.eval_dir / f"watch_state_{phase}.json"

    def state(self, phase: str) -> dict[str, Any]:
        return store.read_json(self._state_path(phase), {})

    def _record_failure(self, phase: str, name: str, exc: BaseException) -> None:
        state = self.state(phase)
        entry = state.get(name, {"attempts": 0})
        entry["attempts"] += 1
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["next_try"] = self.clock() + self.backoff_s * 2 ** (entry["attempts"] - 1)
        entry["gave_up"] = entry["attempts"] >= self.max_attempts
        state[name] = entry
        write_json(self._state_path(phase), state)
        self.log(f"[watch] {phase} {name} failed (attempt {entry['attempts']}): {entry['error']}")

    def _due(self, phase: str, name: str) -> bool:
        entry = self.state(phase).get(name)
        return entry is None or (not entry.get("gave_up") and entry.get("next_try", 0) <= self.clock())

    # ------------------------------------------------------------------ phases

    def _generate(self, ckpt: Path) -> None:

        factory = self.engine_factory
        if factory is None:
            from archer.eval.engine import load_engine

            factory = load_engine
        engine, tokenizer = factory(ckpt)
        try:
            generate_phase(
                engine,
                tokenizer,
                self.problems,
                self.eval_dir / ckpt.name,
                n=self.n,
                sampling=self.sampling,
                template=self.template,
                batch_size=self.batch_size,
                config={"model": str(ckpt)},
            )
        finally:
            del engine
            _free_accelerator_memory()

    def _score(self, name: str) -> dict[str, Any]:

        summary = score_phase(self.problems, self.eval_dir / name, ks=self.ks, reward_opts=self.reward_opts)
        match = _STEP.search(name)
        row = {
            "checkpoint": name,
            "step": int(match.group(1)) if match else None,
            "time": self.clock(),
            **{k: v for k, v in summary.items() if k != "by_source"},
        }
        store.append_jsonl(self.eval_dir / "history.jsonl", [row])
        return summary

    def step(self) -> list[str]:
        """One pass: generate and/or score every due checkpoint. Returns ``"<phase>:<ckpt>"`` done."""
        done: list[str] = []
        ckpts = {c.name: c for c in find_checkpoints(self.run_dir)}
        for name in ckpts:
            out = self.eval_dir / name
            if self.phase in ("all", "generate") and not (out / store.GENERATED_MARKER).exists():
                if not self._due("generate", name):
                    continue
                try:
                    self._generate(ckpts[name])
                    done.append(f"generate:{name}")
                except Exception as exc:  # keep watching: the failure is recorded and retried later
                    self._record_failure("generate", name, exc)
                    self.log(traceback.format_exc(limit=3))
                    continue
            if (
                self.phase in ("all", "score")
                and (out / store.GENERATED_MARKER).exists()
                and not (out / store.SUMMARY).exists()
            ):
                if not self._due("score", name):
                    continue
                try:
                    summary = self._score(name)
                    done.append(f"score:{name}")
                    self.log(
                        f"[watch] {name}: " + ", ".join(f"{k} {summary[k]:.3f}" for k in summary if "@" in k)
                    )
                except Exception as exc:
                    self._record_failure("score", name, exc)
        return done

    def run(self, once: bool = False, poll_s: float = 60.0) -> None:
        """Poll forever (or one pass with ``once``). The run directory must exist (a typo would
        otherwise be watched for ever); while it holds no complete checkpoint, that is logged once."""
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"run directory not found: {self.run_dir}")
        waiting_logged = False
        while True:
            self.step()
            if not find_checkpoints(self.run_dir) and not waiting_logged:
                self.log(
                    f"[watch] no complete checkpoint in {self.run_dir / 'checkpoints'} yet"
                    + ("" if once else f"; checking every {poll_s:g} s")
                )
                waiting_logged = True
            if once:
                return
            time.sleep(poll_s)


def _free_accelerator_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
