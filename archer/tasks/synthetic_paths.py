"""A bundled multi-path verifiable task (``data.train=synthetic_paths``): sums of several numbers.

Built for the ASPO study of issue 13 (``benchmarks/aspo_study.py``), which asks whether ASPO keeps
the policy's entropy from collapsing as Archer2.0 claims (Wang et al., "Archer2.0: ASPO", arXiv
2510.06062; the entropy-aware clipping it builds on is Archer/DTC, arXiv 2507.15778). Entropy can only
collapse where there is entropy worth keeping, so every problem has several equally correct worked
solutions: ``Compute 3+8+5+2.`` may be solved as ``3+8=11, 11+5=16, 16+2=18`` or in any other order
of the operands (a left fold over a permutation), all ending in ``\\boxed{18}``, scored by the real math
verifier (``archer.rewards.math.score``). A problem with k distinct operands has k! distinct paths.

SFT demonstrations (:func:`paths_sft_examples`) use a uniformly random order per example, so the
demonstrations' first operand carries up to ln 4 = 1.39 nats; the SFT policy of ``tiny_paths`` measured
1.16 nats on its top-20% entropy tokens at the first RL step, held-out avg@8 0.22 with pass@8 0.82, and
~31-token responses (``benchmarks/results/aspo_study_24steps/aspo_study.md``).

:func:`solution_path` reads the path back from a response (the sequence of step texts if every step is
right and the box holds the answer, else None), so a run can count distinct correct paths per problem.

Splits are disjoint by construction and by operand multiset: the hash of the sorted operands decides,
so a held-out sum is never a reordered training sum (same answer, same valid solutions).

Limits: a tiny model often reaches the right box through unfaithful steps (wrong operands copied):
the verifier counts those correct, :func:`solution_path` does not (46 vs 2 of 192 SFT samples measured),
so "distinct correct paths" is a strict, sparse measure. Only addition (no carries beyond two digits matter); the language is one fixed template; a
path is the order of the operands, so problems with repeated operands have fewer distinct paths.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from archer.data.schema import Problem
from archer.tasks.draw import check_fractions, draw_unique
from archer.tasks.registry import Task, config_generator, register_task

NAME = "synthetic_paths"


@dataclass(frozen=True)
class PathsTaskConfig:
    """operands: numbers per sum (3-6); max_value: operands drawn from 1..max_value;
    test_fraction: share of the text-hash space in the ``test`` split."""

    operands: int = 4
    max_value: int = 9
    test_fraction: float = 0.2
    validation_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 3 <= self.operands <= 6:
            raise ValueError("PathsTaskConfig: operands must be in 3..6")
        if self.max_value < 2:
            raise ValueError("PathsTaskConfig: max_value must be >= 2")
        check_fractions(self.test_fraction, self.validation_fraction, "PathsTaskConfig")


def paths_config(opts: dict[str, Any] | PathsTaskConfig | None) -> PathsTaskConfig:
    """A config from ``data.generator`` options (unknown keys are an error naming them)."""
    if isinstance(opts, PathsTaskConfig):
        return opts
    opts = {k: v for k, v in dict(opts or {}).items() if k != "noise"}
    try:
        return PathsTaskConfig(**opts)
    except TypeError as exc:
        raise ValueError(f"{exc}; known: operands, max_value, test_fraction, validation_fraction") from None


def paths_problems(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    config: dict[str, Any] | PathsTaskConfig | None = None,
    unique: bool = True,
) -> list[Problem]:
    """``n`` sum problems of ``split`` (deterministic in ``seed``); ``unique`` drops repeated texts
    (order matters in the text, so ``1+2+3`` and ``3+2+1`` are different problems)."""
    cfg = paths_config(config)

    def draw(rng: random.Random) -> tuple[str, list[int]]:
        nums = [rng.randint(1, cfg.max_value) for _ in range(cfg.operands)]
        return "Compute " + "+".join(map(str, nums)) + ".", nums

    drawn = draw_unique(
        n,
        split=split,
        key=f"{NAME}:{seed}",
        test_fraction=cfg.test_fraction,
        validation_fraction=cfg.validation_fraction,
        unique=unique,
        draw=draw,
        hint="; lower n or raise max_value",
        # the same operands in another order are the same sum (same answer, same valid solutions): the
        # split goes by the operand multiset, so no held-out problem is a reordered training problem
        split_key=lambda text, nums: "+".join(map(str, sorted(nums))),
    )
    return [
        Problem(
            id=f"synth-paths-{split}-{seed}-{i}",
            prompt=text,
            kind="math",
            answer=str(sum(nums)),
            data_source=NAME,
            meta={"nums": nums, "split": split},
        )
        for i, (text, nums) in enumerate(drawn)
    ]


def paths_solution(
    problem: Problem, order: list[int] | None = None, slip: tuple[int, int] | None = None
) -> str:
    """The worked solution adding the operands in ``order`` (indices; default left to right):
    ``a+b=s1, s1+c=s2, ... \\boxed{total}``. ``slip=(step, delta)`` makes that step off by ``delta``."""
    nums = problem.meta["nums"]
    order = list(range(len(nums))) if order is None else list(order)
    if sorted(order) != list(range(len(nums))):
        raise ValueError(f"order must be a permutation of 0..{len(nums) - 1}, got {order}")
    acc = nums[order[0]]
    steps = []
    for s, i in enumerate(order[1:]):
        value = acc + nums[i] + (slip[1] if slip is not None and slip[0] == s else 0)
        steps.append(f"{acc}+{nums[i]}={value}")
        acc = value
    return ", ".join(steps) + f". \\boxed{{{acc}}}"


_STEP = re.compile(r"(-?\d+)\+(-?\d+)=(-?\d+)")


def solution_path(response: str, problem: Problem) -> tuple[str, ...] | None:
    """The path of a correct worked solution: its step texts, in order; None unless every step is
    arithmetically right, the steps chain (each starts from the previous result), the operands used
    are exactly the problem's, and the boxed answer is the sum."""
    nums = problem.meta["nums"]
    steps = _STEP.findall(response.split("\\boxed")[0])
    box = re.search(r"\\boxed\{(-?\d+)\}", response)
    if not steps or box is None or int(box.group(1)) != sum(nums):
        return None
    used = [int(steps[0][0])]
    prev = None
    for a, b, c in steps:
        a, b, c = int(a), int(b), int(c)
        if a + b != c or (prev is not None and a != prev):
            return None
        used.append(b)
        prev = c
    if sorted(used) != sorted(nums) or prev != sum(nums):
        return None
    return tuple(f"{a}+{b}={c}" for a, b, c in steps)


def paths_sft_examples(problems: list[Problem], *, noise: float = 0.0, seed: int = 0) -> list[dict[str, Any]]:
    """Chat-format SFT rows; each demonstration adds the operands in a uniformly random order. With
    probability ``noise`` one step slips by +-1..3 (propagated to the box)."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    rng = random.Random(f"{NAME}_sft:{seed}")
    rows = []
    for p in problems:
        order = list(range(len(p.meta["nums"])))
        rng.shuffle(order)
        noisy = rng.random() < noise
        slip = (rng.randrange(len(order) - 1), rng.choice([-3, -2, -1, 1, 2, 3])) if noisy else None
        response = paths_solution(p, order, slip)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": p.prompt},
                    {"role": "assistant", "content": response},
                ],
                "meta": {"id": p.id, "noisy": noisy, "order": order},
            }
        )
    return rows


def paths_tokenizer_corpus(
    n: int = 2000, *, seed: int = 0, config: dict[str, Any] | PathsTaskConfig | None = None
) -> list[str]:
    """Texts to train a tiny tokenizer on: prompts and randomly ordered solutions with the chat markup."""
    probs = paths_problems(n, split="train", seed=seed, config=config, unique=False)
    texts = [
        f"<|im_start|>user\n{r['messages'][0]['content']}<|im_end|>\n<|im_start|>assistant\n"
        f"{r['messages'][1]['content']}<|im_end|>\n"
        for r in paths_sft_examples(probs, seed=seed)
    ]
    texts.append("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>tool\n")
    return texts


register_task(
    Task(
        name=NAME,
        description="sums with several valid orders of steps (the ASPO study's diversity task)",
        recipe="tiny_paths",
        problems=config_generator(paths_problems),
        sft_rows=lambda problems, *, noise, seed, options: paths_sft_examples(
            problems, noise=noise, seed=seed
        ),
        tokenizer_corpus=lambda n, *, seed, options: paths_tokenizer_corpus(n, seed=seed, config=options),
    )
)
