"""Tool rollouts: code execution overlapped with generation vs lock-step (``rollout.tool_overlap``).

A scripted causal LM (no learning involved: it writes a fixed document per prompt) makes every row
call the sandbox ``--turns`` times with programs that sleep a time depending on the row and the turn (0
to ``--max-sleep`` seconds, each turn's slowest program in a different row; R1-Code-Interpreter's
programs run from milliseconds to tens of seconds), then answer. The interpreter has ``--workers``
sandbox workers (default: one per row, execution decoupled from generation as in R1-CI; sleeping
programs use no CPU), started before the timing.
The same rollouts are timed with :class:`archer.rollout.tools.ToolEngine` overlapped (a row's next turn
generates as soon as its observation arrives) and lock-step (every row waits for every program of the
turn). The responses are identical (the scripted model is deterministic), only the wall time differs.
Each cell is the best of ``--repeats`` runs (the machine may be shared).

    python benchmarks/tool_overlap.py [--rows 16] [--turns 3] [--max-sleep 1.0] [--workers N] [--repeats 2]
    python benchmarks/tool_overlap.py --model runs/interp/sft_model [--rows 16] [--repeats 2]

``--model DIR``: instead, a trained model on ``tiny_interpreter``'s held-out problems (``--rows`` prompts x
8 samples at T = 1, the recipe's tool settings and the default workers): the realistic case of programs
that take milliseconds. Overlapped responses differ from lock-step ones there (the batches differ).
"""

from __future__ import annotations

import argparse
import time
import types

import torch

from archer.data.observations import output_block
from archer.models.tiny import build_tokenizer
from archer.rollout import HFEngine, SamplingParams
from archer.rollout.tools import SandboxInterpreter, ToolEngine, ToolSettings

F = "`" * 3


class ScriptedLM(torch.nn.Module):
    """At position p of a row whose first token is ``k`` it puts all mass on ``docs[k][p + 1]``."""

    def __init__(self, docs: dict[int, list[int]], vocab: int, eos: int) -> None:
        super().__init__()
        from transformers import Qwen2Config

        self.vocab, self.eos = vocab, eos
        width = max(len(d) for d in docs.values()) + 1000
        self.table = torch.full((vocab, width), eos, dtype=torch.long)
        for k, d in docs.items():
            self.table[k, : len(d)] = torch.tensor(d)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = Qwen2Config(vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=1)

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True
    ):
        first = self.first[: input_ids.shape[0]]  # [B] set by generate() below
        nxt = self.table[first[:, None], position_ids + 1]  # [B, T]
        logits = torch.full((*input_ids.shape, self.vocab), -30.0)
        logits.scatter_(2, nxt[..., None], 30.0)
        return types.SimpleNamespace(logits=logits)


class ScriptedEngine(HFEngine):
    """HFEngine over :class:`ScriptedLM`, which needs each row's first prompt token."""

    def generate(self, prompts, params):
        ids = self.encode(prompts)
        out = []
        for p in ids:  # one row at a time: the scripted model reads its row's first token
            self.model.first = torch.tensor([p[0]] * params.n)
            out.extend(super().generate([p], params))
        return out


def build(rows: int, turns: int, max_sleep: float):
    tok = build_tokenizer(
        [
            f"{F}python\nimport time\ntime.sleep(0.{i})\nprint({i})\n{F}\n{output_block(str(i))}\\boxed{{{i}}}"
            for i in range(10)
        ]
        * 20,
        vocab_size=400,
    )
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    docs, prompts = {}, []
    for r in range(rows):
        first = enc(str(r % 10))[0] if r < 10 else enc(chr(ord("a") + r - 10))[0]
        prompt = [first] + enc(f" row {r}\n")
        doc = list(prompt)
        for t in range(turns):
            sleep = max_sleep * ((r * 7 + t * 5) % rows) / max(rows - 1, 1)
            doc += enc(f"{F}python\nimport time\ntime.sleep({sleep:.3f})\nprint({t})\n{F}\n")
            doc += enc(output_block(str(t)))
        doc += enc(f"\\boxed{{{r}}}")
        docs[first] = doc
        prompts.append(prompt)
    return tok, docs, prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-sleep", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=None, help="sandbox zygotes (default: --rows)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", default=None, help="time a trained tiny_interpreter model instead")
    args = ap.parse_args()
    if args.model:
        return real_model(args)
    if args.rows > 36:
        raise SystemExit("--rows must be <= 36 (one distinct first token per row)")
    tok, docs, prompts = build(args.rows, args.turns, args.max_sleep)
    lm = ScriptedLM(docs, len(tok), tok.eos_token_id)
    params = SamplingParams(temperature=0, max_new_tokens=64)
    results = {}
    texts = {}
    for overlap in (False, True):
        settings = ToolSettings(max_turns=args.turns + 1, timeout_s=args.max_sleep + 5, overlap=overlap)
        workers = args.workers or args.rows
        interpreter = SandboxInterpreter(
            settings.timeout_s, settings.output_chars, settings.memory_mb, workers
        )
        interpreter.run(["print(0)"] * workers)  # every worker's zygote started before the timing
        engine = ToolEngine(ScriptedEngine(lm, tok), settings, interpreter)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = engine.generate(prompts, params)
            best = min(best, time.perf_counter() - t0)
        results[overlap] = best
        texts[overlap] = [r.text for g in out for r in g]
        calls = sum(len(r.meta["tool_calls"]) for g in out for r in g)
        ok = sum(c["status"] == "ok" for g in out for r in g for c in r.meta["tool_calls"])
        print(
            f"{'overlapped' if overlap else 'lock-step '}: {best:6.2f} s for {args.rows} rows x {args.turns} "
            f"tool turns ({calls} calls, {ok} ok)",
            flush=True,
        )
        engine.close()
    assert texts[True] == texts[False], "the two schedules must produce the same responses"
    print(f"speed-up of overlap: {results[False] / results[True]:.2f}x (same responses)")


def real_model(args: argparse.Namespace) -> None:
    from archer.config import load_config
    from archer.models.loader import PolicyOptions, load_policy
    from archer.rl.setup import encode_prompts
    from archer.rollout.tools import tool_settings
    from archer.tasks.problems import load_problems

    cfg = load_config("tiny_interpreter", [f"data.num_eval={args.rows}", "data.num_train=1"])
    problems = load_problems(cfg)[1]
    model, tok = load_policy(args.model, PolicyOptions())
    prompts = encode_prompts(problems, tok, cfg.data.max_prompt_tokens, cfg.data.prompt_template)
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=cfg.rollout.max_new_tokens, seed=0)
    torch.set_num_threads(1)
    for overlap in (False, True):
        settings = tool_settings(cfg.rollout)
        settings.overlap = overlap
        interpreter = SandboxInterpreter(settings.timeout_s, settings.output_chars, settings.memory_mb)
        interpreter.run(["print(0)"] * interpreter.workers)
        engine = ToolEngine(HFEngine(model, tok), settings, interpreter)
        best, stats = float("inf"), {}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = engine.generate(prompts, params)
            if time.perf_counter() - t0 < best:
                best, stats = time.perf_counter() - t0, dict(engine.last_stats)
        calls = sum(len(r.meta["tool_calls"]) for g in out for r in g)
        print(
            f"{'overlapped' if overlap else 'lock-step '}: {best:6.2f} s for {len(prompts)} prompts x 8 "
            f"({calls} calls, {stats['engine_calls']:.0f} engine calls, {stats['generate_seconds']:.2f} s "
            f"generating, {interpreter.workers} workers)",
            flush=True,
        )
        engine.close()


if __name__ == "__main__":
    main()
