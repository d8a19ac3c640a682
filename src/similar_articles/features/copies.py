"""Near-verbatim copies: 5-word shingle containment, estimated from a small sketch.

A copy (syndicated wire copy, a trimmed or re-headlined republication, an updated
re-publication, a video page whose one sentence opens the article) shares most of its
wording with another article while its headline differs and its embedding can drift far
(cosine 0.63-0.90 on the labelled copies of NewsArticles), so neither the cosine nor the
headline rule of ``ranking.select_box`` catches it. The definition the event labels use
(data/labels/README.md) is direct: most of the shorter text's 5-word shingles appear in
the other. This module estimates that containment from a fixed-size sketch per article.

Text: the body (the title when there is none; headlines are what copies change), lower
cased, words only, without a few function words ("the", "of", ...) that sub-editors add
and drop ("police in US state" / "police in the US state"). On NewsArticles that widens
the gap between labelled copies (exact containment 0.68-1.0) and the most overlapping
independent coverage of the same event (at most 0.57; 0.69 against 0.64 with all words).

Sketch: ``SLOTS`` uint32 hashes, sorted, ``PAD`` where an article has fewer: the
``BOTTOM`` smallest shingle hashes (a uniform sample of the text whose size does not
depend on its length) plus the hashes of its first ``LEAD`` shingles (a short page that
repeats an article's opening shares its lead, which a uniform sample of a long article
almost never holds), and the number of distinct shingles. 132 bytes an article.

Estimate for a pair, A the text with fewer shingles: below t, the smaller of the two
texts' BOTTOM-th hash, both sketches hold every hash of their text, so A's hashes below
t are a uniform sample of A whose membership in B is known exactly; the share found is
the containment estimate (a binomial sample of about BOTTOM * |A| / |B| shingles). And
every hash the sketches share is a shingle the texts share, so shared / |A| is a lower
bound, exact when A is short enough to sit in its sketch whole and B's lead or sample
holds what it shares. Either reaching the threshold marks a copy.

:func:`copies_of` judges one text against a pool (a call); :func:`copies_pairwise`
judges many pairs at once with the same answer for each, and :func:`list_copy_bits`
stores a build's answers for each article's candidate list, a bit a pair.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

from .. import parallel

SHINGLE_WORDS = 5
BOTTOM = 24  # uniform sample of the text (bottom-k MinHash)
LEAD = 8  # the first shingles, by position
SLOTS = BOTTOM + LEAD
PAD = np.uint32(0xFFFF_FFFF)  # sorts last; real hashes are below it
MIN_SAMPLES = 4  # fewer sampled shingles say nothing; the lower bound still counts
SCHEME = 1  # bump when words, hashing or layout change: stored sketches stop comparing

_WORD_RE = re.compile(r"\w+")
_FUNCTION_WORDS = frozenset(
    "a an and are as at be been by for from had has have in is it its of on s said that the to "
    "was were with".split())
# Odd 64-bit multipliers, one per word position of a shingle, and a 64-bit finaliser
# (MurmurHash3's fmix64): stable across processes and machines, unlike hash().
_POSITION_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                                  0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD], dtype=np.uint64)
_FMIX = (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))


def shingle_hashes(text: str) -> np.ndarray:
    """uint32 hashes of the text's 5-word shingles, in text order (a text of 1-4 words
    is one shingle; no words, none)."""
    words = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in _WORD_RE.findall(text.lower())
                         if w not in _FUNCTION_WORDS), dtype=np.uint64)
    if not len(words):
        return np.empty(0, dtype=np.uint32)
    n = max(len(words) - SHINGLE_WORDS + 1, 1)
    mixed = np.zeros(n, dtype=np.uint64)
    for j in range(min(SHINGLE_WORDS, len(words))):
        mixed += words[j:j + n] * _POSITION_MULTIPLIERS[j]
    for multiplier in _FMIX:
        mixed ^= mixed >> np.uint64(33)
        mixed *= multiplier
    mixed ^= mixed >> np.uint64(33)
    return np.minimum(mixed >> np.uint64(32), np.uint64(PAD) - 1).astype(np.uint32)


def sketch(text: str) -> tuple[np.ndarray, int]:
    """(the text's sketch: SLOTS sorted uint32, PAD-filled; its distinct shingle count)."""
    hashes = shingle_hashes(text)
    distinct, first_at = np.unique(hashes, return_index=True)
    lead = hashes[np.sort(first_at)[:LEAD]]
    kept = np.union1d(distinct[:BOTTOM], lead)  # lead hashes past the sample sort after it
    row = np.full(SLOTS, PAD, dtype=np.uint32)
    row[:len(kept)] = kept
    return row, len(distinct)


def copy_text(body: str, title: str) -> str:
    """What copies are judged on: the body, or the title of an article without one."""
    return body if body.strip() else title


def sketches(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sketches (uint32 [n, SLOTS]) and distinct shingle counts (int32 [n]) of ``texts``
    (on every core inside ``parallel.workers()``: ~0.4 ms a news article on one)."""
    parts = parallel.map_chunks(_sketches, texts)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([rows for rows, _ in parts]), np.concatenate([counts for _, counts in parts])


def _sketches(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.full((len(texts), SLOTS), PAD, dtype=np.uint32)
    counts = np.zeros(len(texts), dtype=np.int32)
    for i, text in enumerate(texts):
        rows[i], counts[i] = sketch(text)
    return rows, counts


def copies_of(row: np.ndarray, count: int, pool: np.ndarray, pool_counts: np.ndarray,
              threshold: float, *, itself: int | None = None) -> np.ndarray:
    """Which of ``pool``'s sketched texts are copies of the one sketched in ``row``: at
    least ``threshold`` of the shorter text's shingles estimated to appear in the other
    (see the module docstring). ``itself``: the pool row that is this very text, never
    reported. One sorted search of the pool's hashes in the row's; only the few rows
    sharing enough hashes to possibly qualify are examined further.
    """
    out = np.zeros(len(pool), dtype=bool)
    real = row[:int(np.searchsorted(row, PAD))]
    if not len(real) or not len(pool):
        return out
    flat = pool.reshape(-1)
    at = np.searchsorted(real, flat)
    np.minimum(at, len(real) - 1, out=at)
    hits = np.flatnonzero(real[at] == flat)  # PAD never matches: ``real`` lacks it
    if not len(hits):
        return out
    n_shared = np.bincount(hits // SLOTS, minlength=len(pool))
    if itself is not None:
        n_shared[itself] = 0
    possible = np.flatnonzero(n_shared)
    # A copy shares at least threshold * MIN_SAMPLES sampled hashes or, by the lower
    # bound, threshold of the shorter text's shingles: every other row stops here.
    shares = n_shared[possible]
    possible = possible[(shares >= threshold * MIN_SAMPLES)
                        | (shares >= threshold * np.minimum(count, pool_counts[possible]))]
    if not len(possible):
        return out
    shared = np.zeros(flat.shape, dtype=bool)
    shared[hits] = True
    shared = shared.reshape(pool.shape)
    other, other_counts, shared = pool[possible], pool_counts[possible], shared[possible]
    # Below the smaller BOTTOM-th hash of a pair both sketches hold every hash of their
    # text (PAD: a whole text), so there sharing is known exactly.
    below = np.minimum(row[BOTTOM - 1], other[:, BOTTOM - 1])
    other_known = (other <= below[:, None]) & (other != PAD)
    sampled = np.where(count <= other_counts, np.searchsorted(real, below, side="right"),
                       other_known.sum(axis=1))
    found = (shared & other_known).sum(axis=1)
    lower_bound = n_shared[possible] / np.maximum(np.minimum(count, other_counts), 1)
    out[possible] = ((sampled >= MIN_SAMPLES) & (found >= threshold * sampled)) | (lower_bound >= threshold)
    return out


def copies_pairwise(a_rows: np.ndarray, a_counts: np.ndarray, b_rows: np.ndarray, b_counts: np.ndarray,
                    threshold: float) -> np.ndarray:
    """bool (P,): is the text sketched in ``b_rows[i]`` a copy of the one in ``a_rows[i]``
    (sketches and distinct shingle counts as :func:`sketch` makes them)? Exactly what
    :func:`copies_of` says for each pair. Each pair's two rows are sorted together: a
    sketch holds a hash once, so a hash met twice is one the texts share. ~0.5 us a
    pair; searching every pair's hashes among the others', offset by pair, took 6 times
    that.
    """
    merged = np.sort(np.concatenate([a_rows, b_rows], axis=1), axis=1)
    hashes = merged[:, 1:]
    shared = (hashes == merged[:, :-1]) & (hashes != PAD)  # PAD is no hash
    n_shared = shared.sum(axis=1)
    smaller = np.minimum(a_counts, b_counts)
    # copies_of's first cut: implied by the test but for float rounding and a threshold of 0.
    possible = (n_shared > 0) & ((n_shared >= threshold * MIN_SAMPLES) | (n_shared >= threshold * smaller))
    if not possible.any():  # most pairs share too little to be copies: the test is settled
        return possible
    # copies_of's test, pair by pair (see it and the module docstring).
    below = np.minimum(a_rows[:, BOTTOM - 1], b_rows[:, BOTTOM - 1])[:, None]
    found = (shared & (hashes <= below)).sum(axis=1)
    sampled_rows = np.where((a_counts <= b_counts)[:, None], a_rows, b_rows)  # the text with fewer shingles
    sampled = ((sampled_rows <= below) & (sampled_rows != PAD)).sum(axis=1)
    lower_bound = n_shared / np.maximum(smaller, 1)
    return possible & (((sampled >= MIN_SAMPLES) & (found >= threshold * sampled)) | (lower_bound >= threshold))


def list_copy_bits(sketch_rows: np.ndarray, counts: np.ndarray, lists: np.ndarray, threshold: float, *,
                   block: int = 256, bar=None) -> np.ndarray:
    """uint8 (n, ceil(W / 8)): bit j (little-endian within each byte, as
    ``np.unpackbits(..., bitorder="little")`` reads it) of row i set when the article at
    ``lists[i, j]`` is a copy of article i (:func:`copies_pairwise`; lists: int32
    positions, -1 for none, whose bit is never set). Any width W. ``block`` articles at
    a time: 256 keep the arrays in cache. ``bar``: an optional tqdm-like object
    advanced per article."""
    n, width = lists.shape
    out = np.zeros((n, (width + 7) // 8), dtype=np.uint8)
    for start in range(0, n, block):
        rows = lists[start:start + block]
        sources, slots = np.nonzero(rows >= 0)
        candidates, articles = rows[sources, slots], start + sources
        copy = copies_pairwise(sketch_rows[articles], counts[articles],
                               sketch_rows[candidates], counts[candidates], threshold)
        flags = np.zeros(rows.shape, dtype=bool)
        flags[sources[copy], slots[copy]] = True
        out[start:start + len(rows)] = np.packbits(flags, axis=1, bitorder="little")
        if bar is not None:
            bar.update(len(rows))
    return out


def copy_flags(bits: np.ndarray, width: int) -> np.ndarray:
    """The bool (..., width) flags that :func:`list_copy_bits` packed into ``bits``."""
    return np.unpackbits(bits, axis=-1, count=width, bitorder="little").astype(bool)
