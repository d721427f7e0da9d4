"""Custom rewards for ``reward.function`` (explained in ``archer/rewards/custom.py``).

Run one (CPU, a minute or two)::

    archer train tiny_math reward.function=examples/custom_reward.py:short_and_correct \
        reward.verifier_weight=1.0 reward.function_weight=0.5 trainer.steps=2

or the verl-style one alone (it replaces the built-in verifier)::

    archer train tiny_math reward.function=examples/custom_reward.py:compute_score trainer.steps=2
"""

from __future__ import annotations

import re

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def short_and_correct(completions, answer, **kwargs):
    """TRL signature: one value per completion. A brevity bonus in [0, 1] for answers that box the right
    value; ``None`` (no opinion) when the completion boxes nothing, which archer counts as
    ``reward.none_reward`` (default 0)."""
    out = []
    for text, truth in zip(completions, answer):
        boxed = BOXED.findall(text)
        if not boxed:
            out.append(None)
        elif boxed[-1].strip() == str(truth).strip():
            out.append(max(0.0, 1.0 - len(text) / 400))
        else:
            out.append(0.0)
    return out


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """verl signature: one response at a time; a dict gives the reward (``score``) and the verdict
    (``acc``) used for accuracy and pass@k."""
    boxed = BOXED.findall(solution_str)
    correct = bool(boxed) and boxed[-1].strip() == str(ground_truth).strip()
    return {"score": 1.0 if correct else 0.0, "acc": correct}
