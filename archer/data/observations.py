"""How a tool's output is written into a model's context: one home for every tool-observation format.

Tool rollouts (:mod:`archer.rollout.tools`) append an observation after each program the model runs;
the SFT demonstrations of a tool task (:mod:`archer.tasks.synthetic_interpreter`) write the same
observations, and the SFT loss treats them as context through :attr:`ToolFormat.pattern`. Both read
the format from here (``rollout.tool_format``), so a demonstration never teaches a format the rollouts
do not show.

- ``output_block`` (ToRA, R1-Code-Interpreter): a fenced ``output`` block after the model's code block.
- ``chatml``: the assistant turn is closed, the output is a ``tool`` turn, a new assistant turn opens
  (needs a chat model with ``<|im_start|>`` / ``<|im_end|>``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolFormat:
    """A rendering of a tool's output (``fmt(output) -> text``) and the regex of a rendered one."""

    name: str
    render: Callable[[str], str]
    pattern: str  # matches one rendered observation inside assistant text (re.DOTALL)

    def __call__(self, output: str) -> str:
        return self.render(output)


def output_block(output: str) -> str:
    """ToRA / R1-CI observation: a fenced ``output`` block after the model's code block."""
    return f"```output\n{output.rstrip()}\n```\n"


def chatml_turn(output: str) -> str:
    """A ChatML tool turn: the assistant turn is closed, the output is a ``tool`` turn, a new assistant
    turn opens."""
    return f"<|im_end|>\n<|im_start|>tool\n{output}<|im_end|>\n<|im_start|>assistant\n"


# rollout.tool_format -> how an observation is written into the context
TOOL_FORMATS: dict[str, ToolFormat] = {
    "output_block": ToolFormat("output_block", output_block, r"```output\n.*?```\n"),
    "chatml": ToolFormat(
        "chatml", chatml_turn, r"<\|im_end\|>\n<\|im_start\|>tool\n.*?<\|im_end\|>\n<\|im_start\|>assistant\n"
    ),
}
