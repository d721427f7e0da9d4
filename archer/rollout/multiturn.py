"""Multi-turn rollouts with a code tool, in the style of R1-Code-Interpreter / ToRA.

The model writes text; when it closes a fenced python block, generation of that turn stops, the
caller's tool runs the code (e.g. ``archer.rewards.sandbox``) and its output is appended as a tool turn;
the model then continues, up to ``max_turns`` model turns or ``max_total_tokens`` response tokens.

Papers: Chen et al. 2025, "R1-Code-Interpreter: Training LLMs to Reason with Code via Supervised and
Reinforcement Learning"; Gou et al. 2024, "ToRA: A Tool-Integrated Reasoning Agent".

Loss masking: ``MultiTurnRollout.loss_mask`` is 1 on tokens the model sampled and 0 on the appended
tool-turn tokens (they are context, not actions), and ``logprobs`` is 0.0 on the latter. The trainer
multiplies its response mask by ``loss_mask``.

Assumptions and limits:

- A turn stops at the stop string ``"```\\n"`` (the closing fence followed by a newline); the tool is
  called only when the text of the turn then holds a complete python block (the last
  `````python ... ````` is run). A turn that ends any other way (EOS, length, no complete block) ends the
  conversation.
- The tool turn's text comes from ``format_tool_turn(output)``; the default is a ChatML tool turn
  (``<|im_end|>`` closes the model's turn, ``<|im_start|>tool``, the output, then a new assistant
  header). Tool output is cut to ``max_tool_chars``.
- Each turn re-prefills the whole conversation (no cache reuse across turns): simple, and turns are few.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from archer.rollout.base import SamplingParams

CODE_STOP = "```\n"
_CODE_BLOCK = re.compile(r"```python\n(.*?)\n?```", re.DOTALL)


def chatml_tool_turn(output: str) -> str:
    return f"<|im_end|>\n<|im_start|>tool\n{output}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class MultiTurnRollout:
    """One multi-turn sample; ``response_ids``, ``loss_mask`` and ``logprobs`` are aligned."""

    prompt_index: int
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    num_turns: int = 0
    finish_reason: str = "length"  # eos | stop | length | max_turns
    tool_calls: list[dict[str, str]] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


def last_python_block(text: str) -> str | None:
    blocks = _CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def generate_multiturn(
    engine,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    params: SamplingParams,
    tool: Callable[[list[str]], list[str]],
    *,
    max_turns: int = 4,
    max_total_tokens: int | None = None,
    max_tool_chars: int = 1000,
    format_tool_turn: Callable[[str], str] = chatml_tool_turn,
) -> list[list[MultiTurnRollout]]:
    """``[num_prompts][params.n]`` multi-turn rollouts; ``tool(codes) -> outputs`` runs a batch of programs.

    ``params.max_new_tokens`` bounds each model turn; ``max_total_tokens`` (default
    ``max_turns * max_new_tokens``) bounds the whole response, tool tokens included.
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    budget = max_total_tokens if max_total_tokens is not None else max_turns * params.max_new_tokens
    tokenizer = engine.tokenizer
    prompt_ids = engine.encode(prompts)
    convs = [
        MultiTurnRollout(prompt_index=i, prompt_ids=list(p))
        for i, p in enumerate(prompt_ids)
        for _ in range(params.n)
    ]
    turn_params = replace(params, n=1, stop=tuple(params.stop) + (CODE_STOP,), include_stop_str=True)
    active = list(range(len(convs)))
    for turn in range(max_turns):
        if not active:
            break
        limits = [budget - len(convs[c].response_ids) for c in active]
        turn_params = replace(
            turn_params,
            max_new_tokens=max(1, min(params.max_new_tokens, max(limits))),
            seed=None if params.seed is None else params.seed + turn,
        )
        outs = engine.generate([convs[c].prompt_ids + convs[c].response_ids for c in active], turn_params)
        calls: list[tuple[int, str]] = []
        for c, limit, (r,) in zip(active, limits, outs):
            conv = convs[c]
            ids, lps = r.response_ids[:limit], r.logprobs[:limit]
            conv.response_ids += ids
            conv.loss_mask += [1] * len(ids)
            conv.logprobs += lps
            conv.num_turns += 1
            turn_text = tokenizer.decode(ids, skip_special_tokens=True)
            code = (
                last_python_block(turn_text)
                if r.finish_reason == "stop" and len(ids) == len(r.response_ids)
                else None
            )
            if code is None:
                conv.finish_reason = r.finish_reason if len(ids) == len(r.response_ids) else "length"
                if conv.finish_reason == "stop" and any(s in turn_text for s in params.stop):
                    conv.finish_reason = "stop"
                elif conv.finish_reason == "stop":  # closed a fence without a python block: ends like EOS
                    conv.finish_reason = "eos"
                continue
            calls.append((c, code))
        active = []
        if not calls:
            break
        outputs = tool([code for _, code in calls])
        if len(outputs) != len(calls):
            raise ValueError(f"tool returned {len(outputs)} outputs for {len(calls)} programs")
        for (c, code), output in zip(calls, outputs):
            conv = convs[c]
            output = str(output)[:max_tool_chars]
            conv.tool_calls.append({"code": code, "output": output})
            tool_ids = tokenizer.encode(format_tool_turn(output), add_special_tokens=False)
            room = budget - len(conv.response_ids)
            conv.response_ids += tool_ids[:room]
            conv.loss_mask += [0] * len(tool_ids[:room])
            conv.logprobs += [0.0] * len(tool_ids[:room])
            if room <= len(tool_ids):
                conv.finish_reason = "length"
            elif turn == max_turns - 1:
                conv.finish_reason = "max_turns"
            else:
                active.append(c)
    for conv in convs:
        conv.text = tokenizer.decode(conv.response_ids, skip_special_tokens=False)
    return [convs[i * params.n : (i + 1) * params.n] for i in range(len(prompt_ids))]
