"""The seeded draw loop every bundled task shares: distinct problems of one split, reproducibly.

A task gives a function that draws one problem's text (and whatever it needs to build the problem)
from a seeded ``random.Random``. :func:`draw_unique` keeps drawing until it has ``n`` of them whose text
hashes into the requested split, skipping repeated texts when ``unique``; the same key gives the same
sequence on every machine. Splits are disjoint by construction: a text's SHA-256 bucket decides whether
it belongs to ``train`` or ``test``, so the same text can never appear in both, whatever the seeds. A task
may carve a ``validation`` split out of the train region (``validation_fraction`` > 0, the slice of the
hash space right after ``test``'s): for tuning a recipe without looking at its test problems. With the
default 0 the train region, hence every existing run's data, is unchanged.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

SPLITS = ("train", "validation", "test")
TRIES_PER_PROBLEM = 200  # then give up: the generator has too few distinct texts for n
# ... or sooner: this many draws in a row gave nothing new, so the generator is exhausted (a request far
# beyond its capacity fails in about a second instead of drawing TRIES_PER_PROBLEM x n times)
EXHAUSTED_AFTER = 20_000


def split_of(text: str, test_fraction: float, validation_fraction: float = 0.0) -> str:
    """``test`` for the first ``test_fraction`` of the text-hash space, ``validation`` for the next
    ``validation_fraction``, else ``train``."""
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < test_fraction:
        return "test"
    return "validation" if bucket < test_fraction + validation_fraction else "train"


def check_fractions(test_fraction: float, validation_fraction: float, who: str) -> None:
    """``test_fraction`` in (0, 1), ``validation_fraction`` in [0, 1), their sum below 1."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"{who}: test_fraction must be in (0, 1)")
    if not 0.0 <= validation_fraction < 1.0 or test_fraction + validation_fraction >= 1.0:
        raise ValueError(f"{who}: validation_fraction must be in [0, 1) with test_fraction + validation_fraction < 1")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def draw_unique(
    n: int,
    *,
    split: str,
    key: str,
    test_fraction: float,
    unique: bool,
    draw: Callable[[random.Random], tuple[str, Any]],
    what: str = "problems",
    hint: str = "",
    split_key: Callable[[str, Any], str] | None = None,
    validation_fraction: float = 0.0,
) -> list[tuple[str, Any]]:
    """``n`` ``(text, payload)`` pairs drawn by ``draw`` from ``random.Random(key)`` whose text is in
    ``split`` (distinct texts when ``unique``). Raises ``ValueError`` ("could not draw N distinct SPLIT
    WHAT" + ``hint``) after ``TRIES_PER_PROBLEM * n + 1000`` draws, or once :data:`EXHAUSTED_AFTER`
    draws in a row gave nothing new (the message then says how many distinct ones the generator has).

    ``split_key(text, payload)`` decides the split instead of the text when problems with different
    texts share what makes them the same problem (the operands of a sum in another order): all of
    them then fall in one split, so held-out problems are held out by that key. ``validation_fraction``:
    the share of the hash space (after ``test``'s) that is the ``validation`` split, taken from ``train``."""
    check_split(split)
    if split == "validation" and validation_fraction <= 0:
        raise ValueError(
            "the validation split is empty: set data.generator.validation_fraction (e.g. 0.2) to carve one out of "
            "the train split (this changes the training problems)"
        )
    rng = random.Random(key)
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    tries = misses = 0
    while len(out) < n:
        tries += 1
        if tries > TRIES_PER_PROBLEM * n + 1000:
            raise ValueError(f"could not draw {n} distinct {split} {what}{hint}")
        if unique and misses >= EXHAUSTED_AFTER:
            raise ValueError(
                f"could not draw {n} distinct {split} {what}: the generator gave {len(out)} and then nothing "
                f"new in {EXHAUSTED_AFTER} draws{hint}"
            )
        text, payload = draw(rng)
        key = text if split_key is None else split_key(text, payload)
        if split_of(key, test_fraction, validation_fraction) != split or (unique and text in seen):
            misses += 1
            continue
        misses = 0
        seen.add(text)
        out.append((text, payload))
    return out
