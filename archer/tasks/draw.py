"""The seeded draw loop every bundled task shares: distinct problems of one split, reproducibly.

A task gives a function that draws one problem's text (and whatever it needs to build the problem)
from a seeded ``random.Random``. :func:`draw_unique` keeps drawing until it has ``n`` of them whose text
hashes into the requested split, skipping repeated texts when ``unique``; the same key gives the same
sequence on every machine. Splits are disjoint by construction: a text's SHA-256 bucket decides whether
it belongs to ``train`` or ``test``, so the same text can never appear in both, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

SPLITS = ("train", "test")
TRIES_PER_PROBLEM = 200  # then give up: the generator has too few distinct texts for n
# ... or sooner: this many draws in a row gave nothing new, so the generator is exhausted (a request far
# beyond its capacity fails in about a second instead of drawing TRIES_PER_PROBLEM x n times)
EXHAUSTED_AFTER = 20_000


def split_of(text: str, test_fraction: float) -> str:
    """``test`` for the first ``test_fraction`` of the text-hash space, else ``train``."""
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


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
) -> list[tuple[str, Any]]:
    """``n`` ``(text, payload)`` pairs drawn by ``draw`` from ``random.Random(key)`` whose text is in
    ``split`` (distinct texts when ``unique``). Raises ``ValueError`` ("could not draw N distinct SPLIT
    WHAT" + ``hint``) after ``TRIES_PER_PROBLEM * n + 1000`` draws, or once :data:`EXHAUSTED_AFTER`
    draws in a row gave nothing new (the message then says how many distinct ones the generator has).

    ``split_key(text, payload)`` decides the split instead of the text when problems with different
    texts share what makes them the same problem (the operands of a sum in another order): all of
    them then fall in one split, so held-out problems are held out by that key."""
    check_split(split)
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
        if split_of(key, test_fraction) != split or (unique and text in seen):
            misses += 1
            continue
        misses = 0
        seen.add(text)
        out.append((text, payload))
    return out
