"""Hashed word n-gram index for deduplication and decontamination, linear in the corpus size.

Normalisation (:func:`normalize_text`): Unicode lowercase (``casefold``), every character that is not a
letter, digit or whitespace (punctuation, symbols, LaTeX backslashes and braces, underscores) becomes a
space, and runs of whitespace collapse to one space. ``"Find $x^2$, if x=3."`` -> ``"find x 2 if x 3"``.

Hashing: each distinct word gets a 64-bit BLAKE2b hash (computed once per word per call); the hash of a
word n-gram is the polynomial ``sum_j h(w_j) * P^(n-1-j) mod 2^64``, evaluated for every window of a
whole corpus at once with numpy (uint64 arithmetic wraps, which is the modulus), then windows that cross
a document boundary are dropped. A document shorter than ``n`` words contributes one "n-gram": its whole
normalised text (the same polynomial over its k < n words, offset by k so it never equals an n-word
window hash by construction). Collisions between distinct n-grams are possible at a rate of about
``n / 2^64`` per pair, negligible next to the sets' sizes.

An :class:`NgramIndex` stores the sorted unique hashes of a reference corpus (plus, per hash, the first
document that holds it) so a lookup is a binary search: building and querying are O(total words).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_N = 9
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACE = re.compile(r"\s+")
# odd 64-bit multiplier for the polynomial rolling hash (any large odd constant works)
_P = np.uint64(0x9E3779B97F4A7C15)
_SHORT_OFFSET = np.uint64(0xD6E8FEB86659FD93)


def normalize_text(text: str) -> str:
    """Lowercase, punctuation/symbols to spaces, whitespace collapsed (see the module docstring)."""
    return _SPACE.sub(" ", _NON_WORD.sub(" ", text.casefold())).strip()


def words(text: str) -> list[str]:
    return normalize_text(text).split()


def _word_hashes(tokens: list[str], cache: dict[str, int]) -> list[int]:
    out = []
    for w in tokens:
        h = cache.get(w)
        if h is None:
            h = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
            cache[w] = h
        out.append(h)
    return out


def _poly(values: np.ndarray) -> np.uint64:
    acc = np.uint64(0)
    with np.errstate(over="ignore"):
        for v in values:
            acc = acc * _P + v
    return acc


def corpus_ngram_hashes(texts: Sequence[str], n: int = DEFAULT_N) -> tuple[np.ndarray, np.ndarray]:
    """All n-gram hashes of ``texts``: ``(hashes uint64 [M], doc_ids int64 [M])``, windows in text order.

    Empty texts (nothing left after normalisation) contribute nothing.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cache: dict[str, int] = {}
    flat: list[int] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    short_docs: list[tuple[int, int, int]] = []  # (doc, start, k) for docs with 0 < k < n words
    for d, text in enumerate(texts):
        hs = _word_hashes(words(text), cache)
        if 0 < len(hs) < n:
            short_docs.append((d, len(flat), len(hs)))
        lengths[d] = len(hs)
        flat.extend(hs)
    w = np.asarray(flat, dtype=np.uint64)  # [N] word hashes of the whole corpus
    num_windows = max(len(w) - n + 1, 0)
    acc = np.zeros(num_windows, dtype=np.uint64)  # [N-n+1] one hash per window start
    with np.errstate(over="ignore"):
        for j in range(n):
            acc = acc * _P + w[j : j + num_windows]
    # keep windows that start and end inside one document
    doc_of_pos = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)  # [N]
    valid = np.zeros(num_windows, dtype=bool)
    if num_windows:
        pos = np.arange(num_windows)
        valid = doc_of_pos[pos] == doc_of_pos[pos + n - 1]
    hashes = [acc[valid]]
    docs = [doc_of_pos[:num_windows][valid]]
    if short_docs:
        with np.errstate(over="ignore"):
            sh = [_poly(w[s : s + k]) + np.uint64(k) * _SHORT_OFFSET for _, s, k in short_docs]
        hashes.append(np.asarray(sh, dtype=np.uint64))
        docs.append(np.asarray([d for d, _, _ in short_docs], dtype=np.int64))
    return np.concatenate(hashes), np.concatenate(docs)


def unique_pairs(hashes: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (hash, doc) pairs sorted by hash then doc."""
    order = np.lexsort((docs, hashes))
    h, d = hashes[order], docs[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
    return h[keep], d[keep]


@dataclass
class NgramIndex:
    """Sorted unique n-gram hashes of a reference corpus with the first document holding each."""

    hashes: np.ndarray  # uint64 [U], sorted, unique
    owner: np.ndarray  # int64 [U], lowest doc id holding the hash
    doc_freq: np.ndarray  # int64 [U], number of docs holding the hash
    n: int = DEFAULT_N

    @classmethod
    def build(cls, texts: Sequence[str], n: int = DEFAULT_N, max_doc_freq: int | None = None) -> NgramIndex:
        """Index ``texts``; ``max_doc_freq`` drops n-grams shared by more docs (shared boilerplate)."""
        h, d = unique_pairs(*corpus_ngram_hashes(texts, n))
        first = np.ones(len(h), dtype=bool)
        first[1:] = h[1:] != h[:-1]
        starts = np.flatnonzero(first)
        freq = np.diff(np.append(starts, len(h)))
        idx = cls(h[starts], d[starts], freq, n)
        if max_doc_freq is not None:
            keep = idx.doc_freq <= max_doc_freq
            idx = cls(idx.hashes[keep], idx.owner[keep], idx.doc_freq[keep], n)
        return idx

    def __len__(self) -> int:
        return len(self.hashes)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Owner doc of each hash, or -1 where the index does not hold it."""
        if len(self.hashes) == 0:
            return np.full(len(hashes), -1, dtype=np.int64)
        pos = np.searchsorted(self.hashes, hashes)
        pos = np.minimum(pos, len(self.hashes) - 1)
        found = self.hashes[pos] == hashes
        return np.where(found, self.owner[pos], -1)

    def match_counts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per query text: number of its distinct n-grams in the index, and one matched reference doc
        (the owner of its first matching n-gram, -1 if none)."""
        h, d = unique_pairs(*corpus_ngram_hashes(texts, self.n))
        owners = self.lookup(h)
        hit = owners >= 0
        counts = np.bincount(d[hit], minlength=len(texts))
        example = np.full(len(texts), -1, dtype=np.int64)
        # reversed assignment so the first hit (in hash order) of each doc wins
        example[d[hit][::-1]] = owners[hit][::-1]
        return counts, example


def near_duplicate_counts(texts: Sequence[str], n: int = DEFAULT_N) -> tuple[np.ndarray, np.ndarray]:
    """Per text: how many of its distinct n-grams occur in some *earlier* text, and the earliest such text.

    Linear in the corpus: after sorting the (hash, doc) pairs, each hash's first holder is the group's
    first doc; a pair is "seen before" when that first holder is an earlier doc.
    """
    h, d = unique_pairs(*corpus_ngram_hashes(texts, n))
    first = np.ones(len(h), dtype=bool)
    first[1:] = h[1:] != h[:-1]
    group_first_doc = d[first][np.cumsum(first) - 1]  # [M] first holder of each pair's hash
    earlier = group_first_doc < d
    counts = np.bincount(d[earlier], minlength=len(texts))
    example = np.full(len(texts), -1, dtype=np.int64)
    example[d[earlier][::-1]] = group_first_doc[earlier][::-1]
    return counts, example
