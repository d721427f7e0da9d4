"""Hashed word n-gram index for deduplication and decontamination, linear in the corpus size.

Normalisation: Unicode lowercase (``casefold``); a word is a maximal run of letters and digits, so
punctuation, symbols, LaTeX backslashes and braces, underscores and whitespace all separate words.
``normalize_text("Find $x^2$, if x=3.") == "find x 2 if x 3"``.

Hashing, vectorised over a whole corpus with numpy (uint64 arithmetic wraps: everything is mod 2^64):

- the corpus is lowercased and joined into one UTF-8 byte buffer with ASCII separators mapped to spaces
  by ``bytes.translate`` (texts holding non-ASCII characters first go through the Unicode regex, so
  the word split is exactly :func:`words`);
- a word's hash is a polynomial in ``P`` over its bytes, read off one prefix sum for the whole buffer
  (see :func:`_segment_poly`), then scrambled by the splitmix64 finaliser;
- an n-gram's hash is the polynomial ``sum_j h(w_j) P^(n-1-j)`` of its word hashes, computed for every
  window at once; windows crossing a document boundary are dropped;
- a document shorter than ``n`` words contributes one "n-gram": its whole normalised text (the same
  polynomial over its k < n words, offset by ``k * C`` so it does not collide with n-word windows
  by construction); every document also gets a whole-text hash for exact-duplicate checks.

Hashes are deterministic across processes and machines. Distinct n-grams collide with probability
about ``n / 2^64`` per pair, negligible at these sizes. Polynomial hashes mod 2^64 can be forced to
collide by adversarial (Thue-Morse) byte strings; natural text does not do that.

The corpus is processed in chunks of about ``CHUNK_BYTES`` so memory stays bounded (~40 bytes per
input byte of a chunk). An :class:`NgramIndex` keeps the sorted unique hashes of a reference corpus;
a lookup is a bitmap probe and, for the few candidates, a binary search: building is O(W log W) in the
reference words, querying O(W) plus O(hits log U).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_N = 9
CHUNK_BYTES = 1 << 20  # ~1 MiB of text per chunk keeps the uint64 temporaries cache-friendly
_WORD = re.compile(r"[^\W_]+")
_NON_WORD_RUN = re.compile(r"[\W_]+")
# ASCII bytes that are not [a-z0-9] become spaces; bytes >= 128 (inside UTF-8 letters) are kept
_TABLE = bytes(b if (48 <= b <= 57 or 97 <= b <= 122 or b >= 128) else 32 for b in range(256))
_SPACE = 32
_P = 0x9E3779B97F4A7C15  # odd 64-bit multiplier of both polynomials
_P_INV = pow(_P, -1, 1 << 64)
_SHORT_OFFSET = np.uint64(0xD6E8FEB86659FD93)
_DOC_OFFSET = np.uint64(0xA0761D6478BD642F)


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (see the module docstring)."""
    return _WORD.findall(text.casefold())


def normalize_text(text: str) -> str:
    """Lowercase words separated by single spaces (see the module docstring)."""
    return " ".join(words(text))


def _mix(z: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser (Steele et al. 2014): spreads the weak low bits of a polynomial hash
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _powers(base: int, count: int, block: int = 4096) -> np.ndarray:
    """``base^0 .. base^(count-1)`` mod 2^64 (uint64 [count]) as an outer product of two short cumprods."""
    inner = np.full(block, base, dtype=np.uint64)
    inner[0] = 1
    inner = np.cumprod(inner, dtype=np.uint64)  # [block] base^0 .. base^(block-1)
    outer = np.full(count // block + 1, int(inner[-1]) * base % (1 << 64), dtype=np.uint64)
    outer[0] = 1
    outer = np.cumprod(outer, dtype=np.uint64)  # [count/block + 1] base^(block*i)
    return (outer[:, None] * inner[None, :]).ravel()[:count]


def _segment_poly(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``sum_k values[s+k] P^k`` for every segment ``[s, e)``, from one prefix sum.

    With ``H = cumsum(v_j P^j)``, ``(H[e] - H[s]) * P^-s`` is the segment's polynomial wherever it sits
    (``P`` is odd, so it is invertible mod 2^64).
    """
    length = len(values)
    prefix = np.zeros(length + 1, dtype=np.uint64)
    np.cumsum(values * _powers(_P, length), out=prefix[1:])
    return (prefix[ends] - prefix[starts]) * _powers(_P_INV, length + 1)[starts]


def _chunk_word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes (uint64 [W]) and their document index (int64 [W], local to the chunk)."""
    parts = []
    for t in texts:
        t = t.casefold()
        if not t.isascii():
            t = _NON_WORD_RUN.sub(" ", t)
        parts.append(t.encode("utf-8"))
    buf = np.frombuffer(b" ".join(parts).translate(_TABLE) + b" ", dtype=np.uint8)  # [L] trailing space
    is_word = buf != _SPACE
    edge = np.diff(is_word.astype(np.int8), prepend=np.int8(0))  # +1 at a word start, -1 after its end
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    doc_starts = np.cumsum(lens + 1) - (lens + 1)  # byte offset of each document
    doc = np.searchsorted(doc_starts, starts, side="right") - 1
    with np.errstate(over="ignore"):
        h = _mix(_segment_poly(buf.astype(np.uint64), starts, ends))
    return h, doc.astype(np.int64)


def _chunks(texts: Sequence[str]) -> list[tuple[int, int]]:
    out, lo, size = [], 0, 0
    for i, t in enumerate(texts):
        size += len(t) + 1
        if size >= CHUNK_BYTES:
            out.append((lo, i + 1))
            lo, size = i + 1, 0
    if lo < len(texts) or not out:
        out.append((lo, len(texts)))
    return out


def hash_corpus(texts: Sequence[str], n: int = DEFAULT_N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ngram_hashes uint64 [M], ngram_docs int64 [M], doc_hashes uint64 [D])`` of ``texts``.

    Windows come in text order; texts with no words have no n-grams and doc hash 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    all_h, all_d = [], []
    doc_hash = np.zeros(len(texts), dtype=np.uint64)
    for lo, hi in _chunks(texts):
        w, wdoc = _chunk_word_hashes(texts[lo:hi])  # [W]
        lengths = np.bincount(wdoc, minlength=hi - lo)  # words per document
        wstart = np.cumsum(lengths) - lengths
        num_windows = max(len(w) - n + 1, 0)
        acc = np.zeros(num_windows, dtype=np.uint64)  # [W-n+1] one hash per window start
        with np.errstate(over="ignore"):
            for j in range(n):
                acc = acc * np.uint64(_P) + w[j : j + num_windows]
            whole = _segment_poly(w, wstart, wstart + lengths)  # [D] polynomial over each doc's words
            doc_hash[lo:hi] = np.where(lengths > 0, _mix(whole + lengths.astype(np.uint64) * _DOC_OFFSET), 0)
        valid = wdoc[:num_windows] == wdoc[n - 1 :] if num_windows else np.zeros(0, dtype=bool)
        all_h.append(acc[valid])
        all_d.append(wdoc[:num_windows][valid] + lo)
        short = np.flatnonzero((lengths > 0) & (lengths < n))  # one whole-text "n-gram" each
        if len(short):
            with np.errstate(over="ignore"):
                all_h.append(whole[short] + lengths[short].astype(np.uint64) * _SHORT_OFFSET)
            all_d.append(short + lo)
    if not all_h:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), doc_hash
    return np.concatenate(all_h), np.concatenate(all_d), doc_hash


def corpus_ngram_hashes(texts: Sequence[str], n: int = DEFAULT_N) -> tuple[np.ndarray, np.ndarray]:
    """All n-gram hashes of ``texts``: ``(hashes uint64 [M], doc_ids int64 [M])``."""
    h, d, _ = hash_corpus(texts, n)
    return h, d


def unique_pairs(hashes: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (hash, doc) pairs sorted by hash then doc."""
    order = np.lexsort((docs, hashes))
    h, d = hashes[order], docs[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
    return h[keep], d[keep]


def _group_first(h: np.ndarray) -> np.ndarray:
    first = np.ones(len(h), dtype=bool)
    first[1:] = h[1:] != h[:-1]
    return first


@dataclass
class NgramIndex:
    """Sorted unique n-gram hashes of a reference corpus, the first document holding each, and the
    whole-text hashes of its documents (for exact matches)."""

    hashes: np.ndarray  # uint64 [U], sorted, unique
    owner: np.ndarray  # int64 [U], lowest doc id holding the hash
    doc_freq: np.ndarray  # int64 [U], number of docs holding the hash
    doc_hashes: np.ndarray  # uint64 [D], whole-text hash of each reference doc (0 = empty)
    n: int = DEFAULT_N

    @classmethod
    def build(cls, texts: Sequence[str], n: int = DEFAULT_N, max_doc_freq: int | None = None) -> NgramIndex:
        """Index ``texts``; ``max_doc_freq`` drops n-grams held by more docs than that (boilerplate)."""
        h, d, doc_hashes = hash_corpus(texts, n)
        h, d = unique_pairs(h, d)
        starts = np.flatnonzero(_group_first(h))
        freq = np.diff(np.append(starts, len(h)))
        keep = freq <= max_doc_freq if max_doc_freq is not None else slice(None)
        return cls(h[starts][keep], d[starts][keep], freq[keep], doc_hashes, n)

    def __len__(self) -> int:
        return len(self.hashes)

    def __post_init__(self) -> None:
        # direct-mapped bitmap on the top hash bits (~32 slots per entry): most query n-grams miss the
        # index and are rejected by one array read, only candidates pay for the binary search
        bits = int(min(max(np.ceil(np.log2(max(len(self.hashes), 1) * 32)), 16), 28))
        self._shift = np.uint64(64 - bits)
        self._bitmap = np.zeros(1 << bits, dtype=bool)
        self._bitmap[self.hashes >> self._shift] = True

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Owner doc of each hash, or -1 where the index does not hold it."""
        out = np.full(len(hashes), -1, dtype=np.int64)
        if len(self.hashes) == 0:
            return out
        cand = np.flatnonzero(self._bitmap[hashes >> self._shift])
        pos = np.minimum(np.searchsorted(self.hashes, hashes[cand]), len(self.hashes) - 1)
        out[cand] = np.where(self.hashes[pos] == hashes[cand], self.owner[pos], -1)
        return out

    def match(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query text: ``(counts, example, exact)``: the number of its distinct n-grams in the index,
        the reference doc owning its first matching n-gram (-1 if none), and the reference doc with the
        same whole normalised text (-1 if none)."""
        h, d, qdoc = hash_corpus(texts, self.n)
        owners = self.lookup(h)
        hit = owners >= 0
        hh, hd = unique_pairs(h[hit], d[hit])  # only the (few) hits need de-duplicating
        counts = np.bincount(hd, minlength=len(texts))
        example = np.full(len(texts), -1, dtype=np.int64)
        # reversed assignment so the first hit (in hash order) of each doc wins
        example[hd[::-1]] = self.lookup(hh)[::-1]
        exact = np.full(len(texts), -1, dtype=np.int64)
        ref = {int(x): i for i, x in reversed(list(enumerate(self.doc_hashes.tolist()))) if x}
        for i, x in enumerate(qdoc.tolist()):
            if x and x in ref:
                exact[i] = ref[x]
        return counts, example, exact

    def match_counts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, example)`` of :meth:`match`."""
        counts, example, _ = self.match(texts)
        return counts, example


def ngram_totals(texts: Sequence[str], n: int = DEFAULT_N) -> np.ndarray:
    """Number of distinct n-grams of each text (int64 [D]; a text shorter than ``n`` words has 1, an
    empty one 0): the denominator of the shared fraction used by ``archer.curation.filters.dedup``."""
    h, d, _ = hash_corpus(texts, n)
    _, d = unique_pairs(h, d)
    return np.bincount(d, minlength=len(texts)).astype(np.int64)


def near_duplicate_counts(
    texts: Sequence[str], n: int = DEFAULT_N
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per text: ``(counts, example, exact)``: how many of its distinct n-grams occur in some *earlier*
    text and the earliest such text (-1 if none), and the first earlier text with the same whole
    normalised text (-1 if none).

    After sorting the (hash, doc) pairs, each hash's first holder is its group's first doc; a pair is
    "seen before" when that first holder is an earlier doc.
    """
    h, d, doc_hash = hash_corpus(texts, n)
    h, d = unique_pairs(h, d)
    first = _group_first(h)
    group_first_doc = d[first][np.cumsum(first) - 1]  # [M] first holder of each pair's hash
    earlier = group_first_doc < d
    counts = np.bincount(d[earlier], minlength=len(texts))
    example = np.full(len(texts), -1, dtype=np.int64)
    example[d[earlier][::-1]] = group_first_doc[earlier][::-1]
    exact = np.full(len(texts), -1, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, x in enumerate(doc_hash.tolist()):
        if x:
            exact[i] = seen.setdefault(x, i)
    exact[exact == np.arange(len(texts))] = -1
    return counts, example, exact
