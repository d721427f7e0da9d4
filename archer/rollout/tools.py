"""Tool rollouts for any engine: the model interleaves reasoning with python it runs in the sandbox.

Papers: Chen et al. 2025, "R1-Code-Interpreter: Training LLMs to Reason with Code via Supervised and
Multi-stage Reinforcement Learning" (arXiv 2505.21668); Gou et al. 2024, "ToRA: A Tool-Integrated
Reasoning Agent" (arXiv 2309.17452).

:class:`ToolEngine` wraps any :class:`archer.rollout.base.RolloutEngine` (HF, vLLM, Ray rollout
workers) and keeps its interface, so the trainer, the run's evaluation and ``archer eval`` use tools by
wrapping their engine (``rollout.tools=[python]``). One conversation:

1. the engine generates one model turn with the stop string ``"```\\n"`` (kept in the text);
2. when the turn ends with a complete ```` ```python ```` block, the block is submitted to the
   :class:`SandboxInterpreter` (``archer.sandbox.pool``: the isolated pool, never the trainer's
   process) with ``tool_timeout_s`` of wall clock and its output cut to ``tool_output_chars``;
3. the output comes back as an observation (``rollout.tool_format``, by default ToRA/R1-CI's
   ```` ```output ```` block) appended to the context, and the model continues;
4. the conversation ends at EOS, a turn without a code block, ``max_turns`` model turns (the last
   turn's code is still run only if another turn may follow) or the token budget
   (``max_turns * max_new_tokens`` response tokens, observations included).

The returned :class:`Rollout` holds the whole response (model turns + observations) in
``response_ids`` and, in ``meta``: ``loss_mask`` (1 on sampled tokens, 0 on observation tokens, the
trainer multiplies its response mask by it, so observation tokens never enter a log-prob ratio, a KL
or entropy term or the loss normaliser), ``tool_calls`` (code, output, status, seconds per call),
``turns``, ``observation_tokens``, ``end`` (eos, stop, length, max_turns, no_code) and ``turn_texts`` (the text of
each model turn, for format checks: :mod:`archer.rewards.tool_reward`). ``logprobs`` are 0.0 on
observation tokens.

Scheduling (``rollout.tool_overlap``): ``true`` (default) submits a row's program the moment its turn
ends and lets every row whose observation has arrived generate its next turn while other rows' programs
still run; the engine is called with whichever rows are ready, so code execution overlaps generation.
The sampled tokens then depend on the timing of the programs (batch composition changes the sampler's
random stream): runs are not bit-reproducible. ``false`` is lock-step: all rows generate, all programs
run, all rows continue; reproducible for a seed. The data order is the same in both.

Limits: every turn re-prefills the conversation (the HF engine keeps no KV cache across calls; the
vLLM engine reuses it through its prefix cache, ``enable_prefix_caching``); one tool, ``python``
(stdout, or the last stderr line on an error); the program sees no earlier call's state (each call is
a fresh process, as R1-CI's stateless interpreter).
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from typing import Any

from archer.data.observations import TOOL_FORMATS
from archer.rollout.base import Rollout, SamplingParams, encode_prompts

CODE_STOP = "```\n"
_CODE_BLOCK = re.compile(r"```python\n(.*?)\n?```", re.DOTALL)
_CLOSING_BLOCK = re.compile(r"```python\n((?:(?!```).)*?)\n?```\s*$", re.DOTALL)
TOOLS = ("python",)


def last_python_block(text: str) -> str | None:
    blocks = _CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def encode_observation(tokenizer: Any, text: str) -> list[int]:
    """Token ids of tool output as *data*: never a special or added (control) token.

    A program can print the chat template's end-of-turn and a fake user turn; parsed as special
    tokens they would put real control tokens into the policy's context. The text is encoded with
    ``split_special_tokens=True`` (special-token strings become ordinary text tokens); where a
    tokenizer ignores that (older versions, added tokens that are not "special"), each remaining
    control-token string is cut after its first character before encoding, and any control id still
    left is replaced, so the result holds none whatever the tokenizer does."""
    control = set(getattr(tokenizer, "all_special_ids", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    control |= set(added)
    try:
        ids = list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))
    except TypeError:
        ids = list(tokenizer.encode(text, add_special_tokens=False))
    if not control.intersection(ids):
        return ids
    strings = sorted({str(getattr(t, "content", t)) for t in added.values()}, key=len, reverse=True)
    strings += [s for s in (getattr(tokenizer, "all_special_tokens", None) or ()) if s not in strings]
    pieces = [text]
    for special in (s for s in strings if len(s) > 1):
        pieces = [q for p in pieces for q in _cut_after_first_char(p, special)]
    ids = []
    for piece in pieces:
        try:
            ids += tokenizer.encode(piece, add_special_tokens=False, split_special_tokens=True)
        except TypeError:
            ids += tokenizer.encode(piece, add_special_tokens=False)
    filler = [i for i in tokenizer.encode("?", add_special_tokens=False) if i not in control][:1]
    return [x for i in ids for x in ([i] if i not in control else filler)]


def _cut_after_first_char(text: str, special: str) -> list[str]:
    parts = text.split(special)
    out = [parts[0]]
    for rest in parts[1:]:
        out += [special[0], special[1:] + rest]
    return [p for p in out if p]


def closing_python_block(text: str) -> str | None:
    """The code of the python block that ``text`` ends with (a turn stopped at its closing fence), else
    None (no block, or the last fence closes a block of another language)."""
    m = _CLOSING_BLOCK.search(text)
    return m.group(1) if m else None


@dataclass
class ToolSettings:
    """How tool rollouts run (the ``rollout.tool*`` settings of :class:`archer.config.RolloutConfig`)."""

    max_turns: int = 4
    timeout_s: float = 5.0
    output_chars: int = 512
    memory_mb: int = 512
    overlap: bool = True
    format: str = "output_block"
    max_total_tokens: int | None = None
    workers: int = 0  # sandbox workers running tool calls at once (0: one per CPU core)

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if not self.timeout_s > 0 or self.output_chars < 1 or self.memory_mb < 16:
            raise ValueError("timeout_s must be > 0, output_chars >= 1, memory_mb >= 16")
        if self.format not in TOOL_FORMATS:
            raise ValueError(f"unknown tool format {self.format!r}; known: {sorted(TOOL_FORMATS)}")


@dataclass
class ToolResult:
    output: str
    status: str  # ok | error | timeout | output_limit | memory | sandbox_error
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SandboxInterpreter:
    """Runs programs in the isolated sandbox without blocking the caller, one program per worker.

    :meth:`submit` returns a ``Future[ToolResult]`` at once. ``workers`` threads (default: one per CPU
    core) each own a one-zygote :class:`archer.sandbox.pool.SandboxPool` of their own (started on
    first use, separate from the reward pool) and take the next queued program as soon as their last
    one ended, so a fast program's result comes back while slow ones still run, and a program
    submitted then starts at once if a worker is free. A program that raises, loops, floods its output
    or eats memory gets its status (error, timeout, output_limit, memory), never an exception in the
    caller; a failed sandbox is ``sandbox_error`` (the worker's zygote is restarted by its pool).
    ``run(codes)`` is the blocking batch form. ``pool_factory`` (tests) builds a worker's pool.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        output_chars: int = 512,
        memory_mb: int = 512,
        workers: int = 0,
        pool_factory: Callable[[], Any] | None = None,
    ):
        import os

        self.timeout_s, self.output_chars, self.memory_mb = timeout_s, output_chars, memory_mb
        self.workers = workers or os.cpu_count() or 1
        self._factory = pool_factory
        self._queue: queue.Queue[tuple[str, Future] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._pools: list[Any] = []
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            for k in range(self.workers - len(self._threads)):
                t = threading.Thread(target=self._serve, name=f"archer-tool-{k}", daemon=True)
                t.start()
                self._threads.append(t)

    def submit(self, code: str) -> Future:
        fut: Future = Future()
        self._start()
        self._queue.put((code, fut))
        return fut

    def run(self, codes: Sequence[str]) -> list[ToolResult]:
        return [f.result() for f in [self.submit(c) for c in codes]]

    def _new_pool(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from archer.sandbox.pool import SandboxConfig, SandboxPool

        return SandboxPool(SandboxConfig(workers=1))

    def _serve(self) -> None:
        pool = None
        while True:
            item = self._queue.get()
            if item is None:
                return
            code, fut = item
            try:
                if pool is None:
                    pool = self._new_pool()
                    with self._lock:
                        self._pools.append(pool)
                self._run_one(pool, code, fut)
            except Exception as exc:  # the sandbox failed: this call reports it, the worker serves on
                if not fut.done():
                    fut.set_result(ToolResult(f"sandbox error: {exc}"[: self.output_chars], "sandbox_error"))

    def _run_one(self, pool: Any, code: str, fut: Future) -> None:
        t0 = time.monotonic()
        events: list[dict[str, Any]] = []

        def on_event(event: dict[str, Any]) -> bool:
            events.append(event)
            return False

        job = {
            "mode": "stdin",
            "program": code,
            "timeout": float(self.timeout_s),
            "memory_mb": int(self.memory_mb),
            "max_output": int(self.output_chars) * 4 + 64,
            "budget": None,
            "inputs": [""],
        }
        (error,) = pool.run([(job, None, on_event)])
        fut.set_result(self._result(events[0] if events else {}, error, time.monotonic() - t0))

    def _result(self, event: dict[str, Any], error: str | None, seconds: float) -> ToolResult:
        if error is not None or not event:
            return ToolResult(f"sandbox error: {error or 'no result'}"[: self.output_chars], "sandbox_error")
        status = str(event.get("status", "error"))
        stdout = event.get("stdout") if isinstance(event.get("stdout"), str) else ""
        if status == "ok":
            out = stdout
        elif status == "timeout":
            out = f"TimeoutError: the program ran longer than {self.timeout_s:g} s"
        elif status == "output_limit":
            out = stdout
        elif status == "memory":
            out = "MemoryError"
        else:  # the traceback's last line names the error, as an interpreter shows it
            err = event.get("stderr") if isinstance(event.get("stderr"), str) else ""
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            out = (stdout + (lines[-1] if lines else "error")).strip()
        return ToolResult(out[: self.output_chars], status, seconds)

    def close(self) -> None:
        """Stop the workers (after the programs already queued) and close their pools."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=self.timeout_s + 10)
        self._threads = []
        with self._lock:
            for pool in self._pools:
                pool.close()
            self._pools = []


@dataclass
class _Conv:
    prompt_index: int
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    observation_tokens: int = 0
    end: str = "length"
    turn_texts: list[str] = field(default_factory=list)


class ToolEngine:
    """``engine`` with python tool calls (see the module docstring); same ``generate`` signature.

    ``interpreter``: anything with ``submit(code) -> Future[ToolResult]`` (tests pass fakes); by default
    a :class:`SandboxInterpreter` with the settings' timeout, output cap and memory limit.
    """

    def __init__(self, engine: Any, settings: ToolSettings | None = None, interpreter: Any = None) -> None:
        self.engine = engine
        self.settings = settings or ToolSettings()
        s = self.settings
        self.interpreter = interpreter or SandboxInterpreter(
            s.timeout_s, s.output_chars, s.memory_mb, s.workers
        )
        self.tokenizer = engine.tokenizer
        self._format = TOOL_FORMATS[s.format]
        self.last_stats: dict[str, float] = {}

    # -- the engine interface, forwarded ------------------------------------------------------
    @property
    def shares_policy(self) -> bool:
        return bool(getattr(self.engine, "shares_policy", False))

    def update_weights(self, state_dict_or_model: Any, version: int | None = None) -> None:
        self.engine.update_weights(state_dict_or_model, version=version)

    def metrics(self) -> dict[str, Any]:
        inner = getattr(self.engine, "metrics", None)
        return dict(inner() if inner else {})

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
        close = getattr(self.interpreter, "close", None)
        if close is not None:
            close()

    def encode(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        enc = getattr(self.engine, "encode", None)
        return enc(prompts) if enc is not None else encode_prompts(self.tokenizer, prompts)

    # -- generation ---------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Rollout]]:
        s = self.settings
        budget = s.max_total_tokens or s.max_turns * params.max_new_tokens
        prompt_ids = self.encode(prompts)
        convs = [_Conv(i, list(p)) for i, p in enumerate(prompt_ids) for _ in range(params.n)]
        turn = replace(params, n=1, stop=tuple(params.stop) + (CODE_STOP,), include_stop_str=True)
        t0 = time.monotonic()
        busy = 0.0  # seconds spent inside the engine
        ready = list(range(len(convs)))
        pending: dict[Future, tuple[int, str]] = {}  # a running program -> (its row, its code)
        calls = 0
        while ready or pending:
            if ready:
                limits = [budget - len(convs[c].response_ids) for c in ready]
                seed = None if params.seed is None else params.seed + 7919 * calls
                tp = replace(turn, max_new_tokens=max(1, min(params.max_new_tokens, max(limits))), seed=seed)
                g0 = time.monotonic()
                outs = self.engine.generate([convs[c].prompt_ids + convs[c].response_ids for c in ready], tp)
                busy += time.monotonic() - g0
                calls += 1
                for c, limit, (r,) in zip(ready, limits, outs):
                    code = self._take_turn(convs[c], r, limit, params)
                    if code is not None:
                        pending[self.interpreter.submit(code)] = (c, code)
                ready = []
            if not pending:
                break
            if s.overlap:
                done = [f for f in pending if f.done()]
                if not done:
                    done = list(wait(list(pending), return_when=FIRST_COMPLETED).done)
            else:
                done = list(wait(list(pending)).done)
            for fut in sorted(done, key=lambda f: pending[f][0]):  # row order: deterministic within a batch
                c, code = pending.pop(fut)
                if self._observe(convs[c], code, fut.result(), budget):
                    ready.append(c)
        self.last_stats = {
            "seconds": time.monotonic() - t0,
            "generate_seconds": busy,
            "engine_calls": float(calls),
        }
        return self._rollouts(convs, len(prompt_ids), params.n)

    def _take_turn(self, conv: _Conv, r: Rollout, limit: int, params: SamplingParams) -> str | None:
        """Append one model turn; the code to run, or None when the conversation ends here."""
        ids, lps = list(r.response_ids[:limit]), list(r.logprobs[:limit])
        cut = len(ids) < len(r.response_ids)
        conv.response_ids += ids
        conv.loss_mask += [1] * len(ids)
        conv.logprobs += lps
        conv.turns += 1
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        conv.turn_texts.append(text)
        if cut or r.finish_reason == "length":
            conv.end = "length"
            return None
        if r.finish_reason == "eos":
            conv.end = "eos"
            return None
        if any(st in text for st in params.stop):  # a stop string of the caller ends the conversation
            conv.end = "stop"
            return None
        code = closing_python_block(text)
        if code is None:  # the fence closed something else (an output block the model wrote itself, ...)
            conv.end = "no_code"
            return None
        if conv.turns >= self.settings.max_turns:
            conv.end = "max_turns"  # no turn may follow: the call would be wasted
            return None
        return code

    def _observe(self, conv: _Conv, code: str, res: ToolResult, budget: int) -> bool:
        """Append an observation; True when the conversation continues."""
        conv.calls.append(
            {"code": code, "output": res.output, "status": res.status, "seconds": round(res.seconds, 4)}
        )
        obs = encode_observation(self.tokenizer, self._format(res.output))
        room = budget - len(conv.response_ids)
        take = obs[: max(room, 0)]
        conv.response_ids += take
        conv.loss_mask += [0] * len(take)
        conv.logprobs += [0.0] * len(take)
        conv.observation_tokens += len(take)
        if room <= len(obs):
            conv.end = "length"
            return False
        return True

    def _rollouts(self, convs: list[_Conv], num_prompts: int, n: int) -> list[list[Rollout]]:
        out: list[list[Rollout]] = [[] for _ in range(num_prompts)]
        for conv in convs:
            finish = {"eos": "eos", "stop": "stop", "length": "length"}.get(conv.end, "eos")
            out[conv.prompt_index].append(
                Rollout(
                    prompt_index=conv.prompt_index,
                    prompt_ids=conv.prompt_ids,
                    response_ids=conv.response_ids,
                    logprobs=conv.logprobs,
                    text=self.tokenizer.decode(conv.response_ids, skip_special_tokens=True),
                    truncated=conv.end == "length",
                    finish_reason=finish,
                    meta={
                        "loss_mask": conv.loss_mask,
                        "tool_calls": conv.calls,
                        "turns": conv.turns,
                        "observation_tokens": conv.observation_tokens,
                        "end": conv.end,
                        "turn_texts": conv.turn_texts,
                    },
                )
            )
        return out


@contextlib.contextmanager
def lockstep(engine: Any) -> Iterator[None]:
    """Inside: a :class:`ToolEngine` runs lock-step (reproducible for a seed), e.g. for the run's
    before/after evaluations, which must see the same random numbers; other engines are untouched."""
    if not isinstance(engine, ToolEngine) or not engine.settings.overlap:
        yield
        return
    engine.settings.overlap = False
    try:
        yield
    finally:
        engine.settings.overlap = True


def tool_settings(rollout_cfg: Any) -> ToolSettings:
    """The :class:`ToolSettings` of a :class:`archer.config.RolloutConfig`."""
    r = rollout_cfg
    return ToolSettings(
        max_turns=r.max_turns,
        timeout_s=r.tool_timeout_s,
        output_chars=r.tool_output_chars,
        memory_mb=r.tool_memory_mb,
        overlap=r.tool_overlap,
        format=r.tool_format,
        workers=r.tool_workers,
    )


def with_tools(engine: Any, rollout_cfg: Any) -> Any:
    """``engine`` wrapped in a :class:`ToolEngine` when ``rollout.tools`` names a tool, else unchanged."""
    if not rollout_cfg.tools or isinstance(engine, ToolEngine):
        return engine
    return ToolEngine(engine, tool_settings(rollout_cfg))
