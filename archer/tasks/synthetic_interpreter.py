"""A bundled task where the code interpreter matters: products of numbers too large for a tiny model
to multiply token by token, which a one-line program answers.

``Compute 4821*917.`` -> a tool-using solution (R1-Code-Interpreter / ToRA format)::

    ```python
    print(4821*917)
    ```
    ```output
    4420857
    ```
    \\boxed{4420857}

The model only has to copy the operands into the program and the program's output into the box; the
observation is written by the sandbox during tool rollouts (``rollout.tools=[python]``) and is masked
from the loss, in SFT as in RL. Demonstrations write it in the run's ``rollout.tool_format``
(:mod:`archer.data.observations`; the ``output`` block above is the default), so SFT teaches the
format RL shows.

Imperfect demonstrations (``noise``): a share of the SFT solutions is wrong in one of two ways, so
that RL has something to fix: ``guess`` answers without the tool (a product with some digits changed;
a tiny model cannot multiply these numbers), ``typo`` calls the tool on a mistyped operand and boxes
that program's (true) output. Both are wrong, and the fix is the same: call the tool, copy exactly.

Splits are disjoint by construction (the problem text's hash picks its split, as in
:mod:`archer.tasks.synthetic`). Limits: one operation per problem; the numbers' sizes come from
``min_digits`` / ``max_digits`` (``data.generator``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any

from archer.data.observations import TOOL_FORMATS
from archer.data.schema import Problem
from archer.tasks.draw import check_fractions, draw_unique
from archer.tasks.registry import Task, config_generator, register_task

F = "`" * 3
NOISE_KINDS = ("guess", "typo")


@dataclass(frozen=True)
class InterpreterTaskConfig:
    """Operand sizes in digits (each operand draws its own), the operations, the held-out share."""

    min_digits: int = 3
    max_digits: int = 4
    ops: tuple[str, ...] = ("*",)
    test_fraction: float = 0.2
    validation_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits <= 12:
            raise ValueError(
                f"need 1 <= min_digits <= max_digits <= 12, got {self.min_digits}, {self.max_digits}"
            )
        if not self.ops or any(op not in ("+", "-", "*") for op in self.ops):
            raise ValueError(f"ops must be a non-empty subset of +, -, *; got {self.ops!r}")
        check_fractions(self.test_fraction, self.validation_fraction, "synthetic_interpreter")


def task_config(config: dict[str, Any] | InterpreterTaskConfig | None) -> InterpreterTaskConfig:
    """An :class:`InterpreterTaskConfig` from ``data.generator`` keys (unknown keys are an error)."""
    if isinstance(config, InterpreterTaskConfig):
        return config
    opts = dict(config or {})
    known = {f.name for f in fields(InterpreterTaskConfig)}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"unknown synthetic_interpreter option {unknown[0]!r}; known: {sorted(known)}")
    if "ops" in opts:
        opts["ops"] = tuple(opts["ops"])
    return InterpreterTaskConfig(**opts)


def _number(rng: random.Random, cfg: InterpreterTaskConfig) -> int:
    digits = rng.randint(cfg.min_digits, cfg.max_digits)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _value(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def interpreter_problems(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    config: dict[str, Any] | InterpreterTaskConfig | None = None,
    unique: bool = True,
) -> list[Problem]:
    """``n`` problems of ``split`` (deterministic in ``seed``); ``unique`` drops repeated texts."""
    cfg = task_config(config)

    def draw(rng: random.Random) -> tuple[str, tuple[int, str, int]]:
        a, op, b = _number(rng, cfg), rng.choice(cfg.ops), _number(rng, cfg)
        return f"Compute {a}{op}{b}.", (a, op, b)

    drawn = draw_unique(
        n,
        split=split,
        key=f"synthetic_interpreter:{seed}",
        test_fraction=cfg.test_fraction,
        validation_fraction=cfg.validation_fraction,
        unique=unique,
        draw=draw,
        hint="; lower n or raise max_digits",
    )
    return [
        Problem(
            id=f"synth-interp-{split}-{seed}-{i}",
            prompt=text,
            kind="math",
            answer=str(_value(a, op, b)),
            data_source="synthetic_interpreter",
            meta={"a": a, "op": op, "b": b, "split": split},
        )
        for i, (text, (a, op, b)) in enumerate(drawn)
    ]


def tool_solution(a: int, op: str, b: int, tool_format: str = "output_block") -> str:
    """The demonstration: the program, its output as the sandbox's observation in ``tool_format``
    (what the program prints, ``VALUE\\n``), the boxed answer."""
    value = _value(a, op, b)
    observation = TOOL_FORMATS[tool_format](f"{value}\n")
    return f"{F}python\nprint({a}{op}{b})\n{F}\n{observation}\\boxed{{{value}}}"


def _perturb(value: int, rng: random.Random) -> int:
    digits = list(str(abs(value)))
    for _ in range(rng.randint(1, 2)):
        k = rng.randrange(len(digits))
        digits[k] = str((int(digits[k]) + rng.randint(1, 9)) % 10)
    if digits[0] == "0" and len(digits) > 1:
        digits[0] = "1"
    out = int("".join(digits))
    return -out if value < 0 else out


def noisy_solution(problem: Problem, kind: str, rng: random.Random, tool_format: str = "output_block") -> str:
    """A wrong demonstration of ``kind`` (``guess``: no tool, wrong digits; ``typo``: a mistyped operand)."""
    m = problem.meta
    a, op, b = int(m["a"]), str(m["op"]), int(m["b"])
    value = _value(a, op, b)
    if kind == "guess":
        guess = _perturb(value, rng)
        return f"\\boxed{{{guess if guess != value else value + 1}}}"
    if kind == "typo":
        typo = _perturb(a, rng)
        typo = typo if typo != a else a + 1
        return tool_solution(typo, op, b, tool_format)
    raise ValueError(f"unknown noise kind {kind!r}; known: {NOISE_KINDS}")


def interpreter_sft_examples(
    problems: list[Problem], *, noise: float = 0.0, seed: int = 0, tool_format: str = "output_block"
) -> list[dict[str, Any]]:
    """Chat-format SFT rows; with probability ``noise`` a demonstration is wrong (half ``guess``, half
    ``typo``). Observations are written in ``tool_format`` (``rollout.tool_format``)."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    rng = random.Random(f"synthetic_interpreter_sft:{seed}")
    rows = []
    for p in problems:
        kind = rng.choice(NOISE_KINDS) if rng.random() < noise else None
        m = p.meta
        response = (
            tool_solution(m["a"], m["op"], m["b"], tool_format)
            if kind is None
            else noisy_solution(p, kind, rng, tool_format)
        )
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": p.prompt},
                    {"role": "assistant", "content": response},
                ],
                "meta": {"id": p.id, "noisy": kind is not None, "noise_kind": kind},
            }
        )
    return rows


def interpreter_tokenizer_corpus(
    n: int = 2000, *, seed: int = 0, config: Any = None, tool_format: str = "output_block"
) -> list[str]:
    """Texts to train a tiny tokenizer on: prompts and tool-using solutions with the chat markup."""
    texts = []
    for p in interpreter_problems(n, split="train", seed=seed, config=config, unique=False):
        m = p.meta
        texts.append(
            f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n"
            f"{tool_solution(m['a'], m['op'], m['b'], tool_format)}<|im_end|>\n"
        )
    return texts


register_task(
    Task(
        name="synthetic_interpreter",
        description="big products a one-line program answers (tool rollouts)",
        recipe="tiny_interpreter",
        problems=config_generator(interpreter_problems),
        sft_rows=lambda problems, *, noise, seed, options, tool_format: interpreter_sft_examples(
            problems, noise=noise, seed=seed, tool_format=tool_format
        ),
        tokenizer_corpus=lambda n, *, seed, options, tool_format: interpreter_tokenizer_corpus(
            n, seed=seed, config=options, tool_format=tool_format
        ),
        tools=True,
    )
)
