"""Bundled verifiable tasks for the CPU demo and the tests: integer arithmetic and tiny functions.

Math: two- or three-operand integer expressions (``7+3*4``) and small linear equations
(``3x+4=19``), each with a unique integer answer. The worked solution writes one step per operation
and ends in ``\\boxed{answer}``, so it is scored by ``archer.rewards.math.score.score_math``. Difficulty is a
:class:`MathTaskConfig` (or a preset name from ``MATH_LEVELS``).

Code: functions of ``x`` described in words with an example, tested by asserts on four inputs
(HumanEval style, ``entry_point`` ``f``). Families (``code_problems(families=...)``): four one-line ones
by default (``return 3*x+1``, ``return x*x+2``, ``return 7-2*x``, ``return x if x > 4 else 7``) and,
opt-in, ``poly`` (``return x*x+3*x+1``) and the two-branch ``clamp`` (``if x < 4: return 4`` then
``return x+9``). A wrong constant fails every test of the one-line families except ``cond``/``clamp``,
where the branch it sits in decides: the partial credit a soft reward sees.

Splits are disjoint by construction: a problem's text is hashed, and the bucket decides whether it
belongs to ``train`` or ``test`` (the generator rejects problems of the other split), so the same
text never appears in both, whatever the seeds.

Imperfect demonstrations (``noise``): with probability ``noise`` an SFT solution makes one arithmetic
slip (a step result off by 1-3, propagated to the boxed answer; or a wrong constant in code). SFT on
such data leaves the model sampling wrong answers some of the time, which a verifiable reward can
then remove: the gap the RL demo closes.

Limits: answers are integers; the language is a fixed template (no paraphrases).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from archer.data.schema import Problem
from archer.errors import ConfigError
from archer.tasks.draw import check_fractions, check_split, draw_unique
from archer.tasks.registry import Task, register_task


@dataclass(frozen=True)
class MathTaskConfig:
    """Difficulty of the arithmetic task.

    min_operands/max_operands: numbers in an expression (2-4). max_value: operands are drawn from
    0..max_value (multiplication operands from 0..mul_max_value, to keep products short).
    ops: operators to draw from (subset of ``+ - *``). linear_fraction: share of problems that are a
    linear equation ``a*x+b=c`` with integer solution ``x`` in 0..max_value.
    test_fraction: share of the text-hash space that belongs to the ``test`` split; validation_fraction:
    the share after it that is the ``validation`` split (taken from ``train``; 0: none).
    """

    min_operands: int = 2
    max_operands: int = 3
    max_value: int = 20
    mul_max_value: int = 9
    ops: tuple[str, ...] = ("+", "-", "*")
    linear_fraction: float = 0.0
    test_fraction: float = 0.2
    validation_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 2 <= self.min_operands <= self.max_operands <= 4:
            raise ValueError("MathTaskConfig: need 2 <= min_operands <= max_operands <= 4")
        if self.max_value < 1 or self.mul_max_value < 1:
            raise ValueError("MathTaskConfig: max_value and mul_max_value must be >= 1")
        bad = [o for o in self.ops if o not in ("+", "-", "*")]
        if bad or not self.ops:
            raise ValueError(f"MathTaskConfig: ops must be a non-empty subset of + - *, got {self.ops}")
        if not 0.0 <= self.linear_fraction <= 1.0:
            raise ValueError("MathTaskConfig: linear_fraction must be in [0, 1]")
        check_fractions(self.test_fraction, self.validation_fraction, "MathTaskConfig")


MATH_LEVELS: dict[str, MathTaskConfig] = {
    "easy": MathTaskConfig(min_operands=2, max_operands=2, max_value=30, ops=("+", "-")),
    "medium": MathTaskConfig(min_operands=2, max_operands=3, max_value=20, ops=("+", "-", "*")),
    "hard": MathTaskConfig(
        min_operands=3, max_operands=4, max_value=50, ops=("+", "-", "*"), linear_fraction=0.3
    ),
}


def math_config(level: str | MathTaskConfig | None) -> MathTaskConfig:
    if level is None:
        return MATH_LEVELS["medium"]
    if isinstance(level, MathTaskConfig):
        return level
    if level not in MATH_LEVELS:
        raise KeyError(f"unknown math level {level!r}; known: {sorted(MATH_LEVELS)}")
    return MATH_LEVELS[level]


# ---------------------------------------------------------------------------------------- math


def _arith_steps(
    nums: list[int], ops: list[str], slip: tuple[int, int] | None = None
) -> list[tuple[str, int]]:
    """Evaluate with precedence (``*`` first, then left to right); one ``(text, value)`` per operation.

    ``slip=(step, delta)`` adds ``delta`` to the result of that step; later steps use the wrong value.
    """
    nums, ops = list(nums), list(ops)
    steps: list[tuple[str, int]] = []
    for pass_ops in (("*",), ("+", "-")):
        i = 0
        while i < len(ops):
            if ops[i] not in pass_ops:
                i += 1
                continue
            a, b, op = nums[i], nums[i + 1], ops[i]
            value = a * b if op == "*" else a + b if op == "+" else a - b
            if slip is not None and slip[0] == len(steps):
                value += slip[1]
            steps.append((f"{a}{op}{b}={value}", value))
            nums[i : i + 2] = [value]
            del ops[i]
    return steps


def _linear_steps(a: int, b: int, c: int, slip: tuple[int, int] | None = None) -> list[tuple[str, int]]:
    """``a*x+b=c``: ``a*x=c-b``, then ``x=(c-b)/a``; a slip makes the first step wrong."""
    rhs = c - b + (slip[1] if slip and slip[0] == 0 else 0)
    # integer division of a wrong right-hand side keeps the answer an integer, as a sloppy solver would
    x = rhs // a if slip and slip[0] == 0 else (c - b) // a
    if slip and slip[0] == 1:
        x += slip[1]
    return [(f"{a}x={c}-{b}={rhs}", rhs), (f"x={rhs}/{a}={x}", x)]


def _steps_for(meta: dict[str, Any], slip: tuple[int, int] | None = None) -> list[tuple[str, int]]:
    if meta["family"] == "arith":
        return _arith_steps(meta["nums"], meta["ops"], slip)
    if meta["family"] == "linear":
        return _linear_steps(meta["a"], meta["b"], meta["c"], slip)
    raise KeyError(f"unknown synthetic math family {meta['family']!r}; known: ['arith', 'linear']")


def _draw_math(rng: random.Random, cfg: MathTaskConfig) -> tuple[str, dict[str, Any]]:
    if rng.random() < cfg.linear_fraction:
        a, x, b = rng.randint(2, 9), rng.randint(0, cfg.max_value), rng.randint(0, cfg.max_value)
        c = a * x + b
        return f"Solve for x: {a}x+{b}={c}.", {"family": "linear", "a": a, "b": b, "c": c}
    k = rng.randint(cfg.min_operands, cfg.max_operands)
    ops = [rng.choice(cfg.ops) for _ in range(k - 1)]
    nums = []
    for i in range(k):
        touches_mul = (i > 0 and ops[i - 1] == "*") or (i < k - 1 and ops[i] == "*")
        nums.append(rng.randint(0, cfg.mul_max_value if touches_mul else cfg.max_value))
    expr = "".join(f"{n}{o}" for n, o in zip(nums, ops)) + str(nums[-1])
    return f"Compute {expr}.", {"family": "arith", "nums": nums, "ops": ops}


def math_problems(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    level: str | MathTaskConfig | None = None,
    unique: bool = True,
) -> list[Problem]:
    """``n`` arithmetic problems of ``split`` (deterministic in ``seed``); ``unique`` drops repeated texts."""
    cfg = math_config(level)
    drawn = draw_unique(
        n,
        split=split,
        key=f"synthetic_math:{seed}",
        test_fraction=cfg.test_fraction,
        validation_fraction=cfg.validation_fraction,
        unique=unique,
        draw=lambda rng: _draw_math(rng, cfg),
        hint=" at this difficulty; lower n or raise max_value",
    )
    return [
        Problem(
            id=f"synth-math-{split}-{seed}-{i}",
            prompt=text,
            kind="math",
            answer=str(_steps_for(meta)[-1][1]),
            data_source="synthetic_math",
            meta=dict(meta, split=split),
        )
        for i, (text, meta) in enumerate(drawn)
    ]


def math_solution(problem: Problem, slip: tuple[int, int] | None = None) -> str:
    """The short worked solution: one step per operation, then ``\\boxed{answer}``."""
    steps = _steps_for(problem.meta, slip)
    return ", ".join(text for text, _ in steps) + f". \\boxed{{{steps[-1][1]}}}"


def _sft_rows(problems: list[Problem], solve, noise: float, seed: int) -> list[dict[str, Any]]:
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    rng = random.Random(f"synthetic_sft:{seed}")
    rows = []
    for p in problems:
        noisy = rng.random() < noise
        response = solve(p, rng if noisy else None)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": p.prompt},
                    {"role": "assistant", "content": response},
                ],
                "meta": {"id": p.id, "noisy": noisy},
            }
        )
    return rows


def math_sft_examples(problems: list[Problem], *, noise: float = 0.0, seed: int = 0) -> list[dict[str, Any]]:
    """Chat-format SFT rows ``{"messages": [user, assistant], "meta": {...}}`` for math ``problems``.

    With probability ``noise`` a solution slips once (a step off by +-1..3, propagated to the box).
    """

    def solve(p: Problem, rng: random.Random | None) -> str:
        if rng is None:
            return math_solution(p)
        n_steps = len(_steps_for(p.meta))
        slip = (rng.randrange(n_steps), rng.choice([-3, -2, -1, 1, 2, 3]))
        return math_solution(p, slip)

    return _sft_rows(problems, solve, noise, seed)


# ---------------------------------------------------------------------------------------- code


def _code_body(meta: dict[str, Any]) -> list[str]:
    """The lines of ``f``'s body (without the 4-space indent of the function)."""
    a, b = meta["a"], meta["b"]
    return {
        "linear": [f"return {a}*x+{b}"],
        "square": [f"return x*x+{b}"],
        "affine_neg": [f"return {b}-{a}*x"],
        "cond": [f"return x if x > {a} else {b}"],
        "poly": [f"return x*x+{a}*x+{b}"],
        "clamp": [f"if x < {a}:", f"    return {a}", f"return x+{b}"],
    }[meta["family"]]


def _code_value(meta: dict[str, Any], x: int) -> int:
    a, b = meta["a"], meta["b"]
    return {
        "linear": a * x + b,
        "square": x * x + b,
        "affine_neg": b - a * x,
        "cond": x if x > a else b,
        "poly": x * x + a * x + b,
        "clamp": a if x < a else x + b,
    }[meta["family"]]


_CODE_DESCRIPTIONS = {
    "linear": "returns {a} times x plus {b}",
    "square": "returns x squared plus {b}",
    "affine_neg": "returns {b} minus {a} times x",
    "cond": "returns x if x is greater than {a}, otherwise {b}",
    "poly": "returns x squared plus {a} times x plus {b}",
    "clamp": "returns {a} if x is less than {a}, otherwise x plus {b}",
}
# the original four one-line families (the default); ``poly`` and the two-branch ``clamp`` are opt-in
CODE_FAMILIES = ("affine_neg", "cond", "linear", "square")
# inputs the asserts check: around the threshold for the branching families
_BRANCHING = {"cond", "clamp"}


def code_problems(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    test_fraction: float = 0.2,
    unique: bool = True,
    families: tuple[str, ...] | list[str] = CODE_FAMILIES,
    validation_fraction: float = 0.0,
) -> list[Problem]:
    """``n`` function problems (``def f(x)``) checked by asserts on 4 inputs.

    ``families``: which of :data:`_CODE_DESCRIPTIONS` to draw from (default the four one-line ones,
    about 870 distinct texts, ~690 in train; each family adds about 280 texts).
    """
    check_split(split)
    check_fractions(test_fraction, validation_fraction, "synthetic_code")
    bad = [f for f in families if f not in _CODE_DESCRIPTIONS]
    if bad or not families:
        raise ValueError(f"unknown code families {bad or families}; known: {sorted(_CODE_DESCRIPTIONS)}")
    choices = sorted(families)

    def draw(rng: random.Random) -> tuple[str, tuple[dict[str, Any], list[int]]]:
        family = rng.choice(choices)
        meta = {"family": family, "a": rng.randint(1, 9), "b": rng.randint(0, 30)}
        a = meta["a"]
        xs = [0, a, a + 1, a + 3] if family in _BRANCHING else [0, 1, 2, 5]
        desc = _CODE_DESCRIPTIONS[family].format(**meta)
        example = f"f({xs[2]}) == {_code_value(meta, xs[2])}"
        return f"Write a Python function f(x) that {desc}. Example: {example}.", (meta, xs)

    drawn = draw_unique(
        n,
        split=split,
        key=f"synthetic_code:{seed}",
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        unique=unique,
        draw=draw,
        what="code problems",
    )
    # one test per assert (a list), so a partly right program passes some: the soft rewards' signal
    return [
        Problem(
            id=f"synth-code-{split}-{seed}-{i}",
            prompt=text,
            kind="code",
            tests={"assert": [f"assert f({x}) == {_code_value(meta, x)}" for x in xs], "entry_point": "f"},
            data_source="synthetic_code",
            meta=dict(meta, split=split),
        )
        for i, (text, (meta, xs)) in enumerate(drawn)
    ]


def code_solution(problem: Problem, wrong_constant: int = 0) -> str:
    """A fenced python block defining ``f``; ``wrong_constant`` shifts the constant (a noisy demo)."""
    meta = dict(problem.meta)
    meta["b"] = meta["b"] + wrong_constant
    body = "".join(f"    {line}\n" for line in _code_body(meta))
    return f"```python\ndef f(x):\n{body}```"


def code_sft_examples(problems: list[Problem], *, noise: float = 0.0, seed: int = 0) -> list[dict[str, Any]]:
    """Chat-format SFT rows for code ``problems``; with probability ``noise`` the constant is wrong."""

    def solve(p: Problem, rng: random.Random | None) -> str:
        return code_solution(p, 0 if rng is None else rng.choice([-2, -1, 1, 2]))

    return _sft_rows(problems, solve, noise, seed)


def code_family_names() -> list[str]:
    return sorted(_CODE_DESCRIPTIONS)


def tokenizer_corpus(
    n: int = 2000,
    *,
    seed: int = 0,
    level: str | MathTaskConfig | None = None,
    include_code: bool = True,
    code_families: tuple[str, ...] | None = None,
    code_validation_fraction: float = 0.0,
) -> list[str]:
    """Texts to train a tiny tokenizer on: the tasks' prompts and solutions with the chat markup (train split
    only: with a validation split, its problems stay out of the tokenizer's corpus too)."""
    texts = []
    for p in math_problems(n, split="train", seed=seed, level=level, unique=False):
        texts.append(
            f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n{math_solution(p)}<|im_end|>\n"
        )
    if include_code:
        families = code_families or CODE_FAMILIES
        for p in code_problems(
            max(n // 4, 1),
            split="train",
            seed=seed,
            unique=False,
            families=families,
            validation_fraction=code_validation_fraction,
        ):
            texts.append(
                f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n{code_solution(p)}<|im_end|>\n"
            )
    texts.append("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>tool\n")
    return texts


# ----------------------------------------------------------------------- registry entries


def math_level(opts: dict[str, Any]) -> str | MathTaskConfig | None:
    """``data.generator`` of the math task: ``{level: NAME}`` or explicit :class:`MathTaskConfig` fields."""
    opts = dict(opts)
    level = opts.pop("level", None)
    opts.pop("noise", None)
    if level is not None and set(opts) == {"validation_fraction"}:  # a preset with a validation split
        try:
            return replace(math_config(level), validation_fraction=opts["validation_fraction"])
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"data.generator: {exc}") from None
    if not opts:
        return level
    if level is not None:
        raise ConfigError("data.generator: give either 'level' or explicit MathTaskConfig fields, not both")
    if "ops" in opts:
        opts["ops"] = tuple(opts["ops"])
    try:
        return MathTaskConfig(**opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.generator: {exc}") from None


def code_families(opts: dict[str, Any]) -> tuple[str, ...]:
    """``data.generator.families`` of the code task (default: the four one-line families)."""
    families = tuple(opts.get("families") or CODE_FAMILIES)
    unknown = sorted(set(families) - set(code_family_names()))
    if unknown:
        raise ConfigError(f"data.generator.families: unknown {unknown}; known: {code_family_names()}")
    return families


def _math_task_problems(
    n: int, *, split: str, seed: int, options: dict[str, Any], unique: bool = True
) -> list[Problem]:
    return math_problems(n, split=split, seed=seed, level=math_level(options), unique=unique)


def _code_task_problems(
    n: int, *, split: str, seed: int, options: dict[str, Any], unique: bool = True
) -> list[Problem]:
    extra = {k: v for k, v in options.items() if k in ("test_fraction", "validation_fraction")}
    return code_problems(n, split=split, seed=seed, families=code_families(options), unique=unique, **extra)


register_task(
    Task(
        name="synthetic_math",
        description="integer arithmetic and linear equations, boxed integer answers",
        recipe="tiny_math",
        problems=_math_task_problems,
        sft_rows=lambda problems, *, noise, seed, options: math_sft_examples(
            problems, noise=noise, seed=seed
        ),
        tokenizer_corpus=lambda n, *, seed, options: tokenizer_corpus(
            n, seed=seed, level=math_level(options), include_code=False
        ),
    )
)
register_task(
    Task(
        name="synthetic_code",
        description="tiny functions of x described in words, checked by asserts",
        recipe="tiny_code",
        problems=_code_task_problems,
        sft_rows=lambda problems, *, noise, seed, options: code_sft_examples(
            problems, noise=noise, seed=seed
        ),
        tokenizer_corpus=lambda n, *, seed, options: tokenizer_corpus(
            n,
            seed=seed,
            include_code=True,
            code_families=code_families(options),
            code_validation_fraction=options.get("validation_fraction", 0.0),
        ),
    )
)
