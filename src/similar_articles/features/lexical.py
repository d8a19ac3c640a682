"""Lexical fingerprints: each article's strongest TF-IDF terms, blended with embeddings.

Embeddings know that "missile treaty" and "arms pact" mean the same; exact terms know
that two stories name the same people, places and organisations. Blending both ranks
better than either alone (see notebooks/ and README.md for the measurements).

Terms are hashed (no vocabulary to store) and each article keeps only its top terms,
so a fingerprint is a fixed ``TERMS`` ids + weights: 384 bytes an article.

The overlap (cosine) of two fingerprints: :func:`overlaps` (rounded to float16, so a
value a call computes equals one a build stored with :func:`list_overlaps`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import parallel

N_FEATURES = 2**20  # hash buckets; collisions among an article's 32 terms are rare
# Terms kept per article. Pipeline precision@2 on BBC News (2,088 articles): 32 terms
# 0.949, 64 terms 0.952, 128 terms 0.955, all terms 0.956; 64 is the memory sweet spot.
TERMS = 64
TEXT_CHARS = 5_000  # the lead and a bit more, like the encoder sees
PAD = -1


@dataclass(frozen=True)
class Fingerprints:
    """Top-term ids (PAD where an article has fewer terms) and their L2-normalised weights."""

    ids: np.ndarray  # int32 [n, TERMS]
    weights: np.ndarray  # float16 [n, TERMS]

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions: np.ndarray) -> "Fingerprints":
        return Fingerprints(self.ids[positions], self.weights[positions])

    def extend(self, other: "Fingerprints") -> "Fingerprints":
        return Fingerprints(np.concatenate([self.ids, other.ids]),
                            np.concatenate([self.weights, other.weights]))


def term_counts(texts: Sequence[str]):
    """Hashed term counts of each text's first TEXT_CHARS characters, as a CSR matrix
    (on every core inside ``parallel.workers()``: ~0.5 ms a text on one)."""
    parts = parallel.map_chunks(_term_counts, [t[:TEXT_CHARS] for t in texts])
    if len(parts) == 1:
        return parts[0]
    from scipy.sparse import vstack

    return vstack(parts, format="csr")


def _term_counts(texts: Sequence[str]):
    analyze, hasher = _hashing()
    return hasher.transform(analyze(t) for t in texts).tocsr()


@functools.lru_cache(maxsize=None)
def _hashing():
    """(analyzer, hasher) of the HashingVectorizer below, built once a process: its
    transform rebuilds the analyzer and re-checks the stop words on every call (0.3-0.5
    ms, about what analysing a 5,000-character text costs; a call analyses one unseen
    article). With norm=None and binary=False the hasher's output is exactly what that
    transform returns."""
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(n_features=N_FEATURES, alternate_sign=False, norm=None,
                                   stop_words="english", dtype=np.float32)
    hasher = FeatureHasher(n_features=N_FEATURES, input_type="string", alternate_sign=False,
                           dtype=np.float32)
    return vectorizer.build_analyzer(), hasher


class LexicalModel:
    """Inverse document frequencies over hashed terms; turns texts into fingerprints."""

    def __init__(self, idf: np.ndarray):
        # float16 (2 MB, not 4, for 2**20 buckets: 20 bytes an article at 100k): IDF
        # lies in [1, 15], where float16 is exact to 0.05%, far below what a 64-term
        # fingerprint (itself float16) resolves.
        self.idf = np.asarray(idf, dtype=np.float16)

    @classmethod
    def from_document_frequencies(cls, df: np.ndarray, n_documents: int) -> "LexicalModel":
        """The model for ``n_documents`` whose term document frequencies are ``df``
        (lets a streamed build sum frequencies chunk by chunk)."""
        n = max(n_documents, 1)
        idf = np.log((1 + n) / (1 + df)).astype(np.float32) + 1.0
        idf[df < 2] = 0.0  # a term in one article cannot link two articles
        return cls(idf)

    @classmethod
    def fit(cls, texts: Sequence[str]) -> tuple["LexicalModel", Fingerprints]:
        """Learn IDF from ``texts`` and return the model with their fingerprints."""
        counts = term_counts(texts)
        model = cls.from_document_frequencies(np.bincount(counts.indices, minlength=N_FEATURES), len(texts))
        return model, model.fingerprints(counts)

    def transform(self, texts: Sequence[str]) -> Fingerprints:
        return self.fingerprints(term_counts(texts))

    def fingerprints(self, counts) -> Fingerprints:
        """Fingerprints from a CSR matrix of hashed term counts (see :func:`term_counts`)."""
        n = counts.shape[0]
        ids = np.full((n, TERMS), PAD, dtype=np.int32)
        weights = np.zeros((n, TERMS), dtype=np.float32)
        for row in range(n):
            start, end = counts.indptr[row], counts.indptr[row + 1]
            terms = counts.indices[start:end]
            # sublinear tf-idf
            values = (1.0 + np.log(counts.data[start:end])) * self.idf[terms].astype(np.float32)
            keep = np.argsort(-values, kind="stable")[:TERMS]
            keep = keep[values[keep] > 0]
            norm = np.linalg.norm(values[keep])
            if norm > 0:
                ids[row, :len(keep)] = terms[keep]
                weights[row, :len(keep)] = values[keep] / norm
        return Fingerprints(ids, weights.astype(np.float16))


_SLOTS = 4096  # a source row's table (see overlaps): 4 KB, which 64 terms fill to 1.6%


def overlaps(source_ids: np.ndarray, source_weights: np.ndarray, candidate_ids: np.ndarray,
             candidate_weights: np.ndarray) -> np.ndarray:
    """Cosine of each source fingerprint (ids, weights: (B, T), PAD for no term) with
    each of its W candidates ((B, W, T)): float32 (B, W), :class:`PoolTerms`' value to
    float16 precision. Rounded to float16 (and back) so that a value a call computes
    equals the one a build computed and stored as float16: a pair's value is the same
    whatever B and whatever else is in the batch.

    Each source row gets a table of ``_SLOTS`` bytes, indexed by the low bits of a term
    id (ids are hashes: their low bits are uniform), holding the term's position; every
    candidate term reads its slot and only those finding a term there (the shared ones
    and ~1.5% more) are checked and summed. ~30 us a source row at W=50 in blocks of a
    few hundred (list_overlaps); a single row costs ~60 us, mostly numpy's per-call
    overhead. A sorted search of the candidate terms (as tests/test_lexical.py's reference does) took 2-5 times
    as long.
    """
    n, terms = source_ids.shape
    width = candidate_ids.shape[1]
    index = np.int32 if (n + 1) * _SLOTS < 2**31 else np.int64  # int32 passes are ~10% faster
    starts = np.arange(0, n * _SLOTS, _SLOTS, dtype=index)[:, None]  # each row's table
    table = _term_slots(source_ids, starts)
    slots = (candidate_ids & (_SLOTS - 1)).astype(index, copy=False)  # PAD (-1): the last slot
    slots += starts[:, :, None]
    found = table.take(slots.reshape(-1))
    at = np.flatnonzero(found != 0)  # 4x faster than on the bytes themselves
    hit, candidate, pair = found[at], candidate_ids.reshape(-1)[at], at // terms
    source = pair // width * terms + hit - 1  # flat position of the source term in the slot
    crowded = np.flatnonzero(hit > terms)
    if len(crowded):  # a slot two source terms share: look for the term in the whole row
        row = pair[crowded] // width
        same = source_ids[row] == candidate[crowded, None]
        source[crowded] = row * terms + same.argmax(axis=1)  # not there: 0, which the check rejects
    # The whole-row search can pair a PAD candidate with a source PAD: no term.
    shared = (source_ids.reshape(-1)[source] == candidate) & (candidate != PAD)
    # float16 weights multiply exactly in float32; bincount sums in float64, in the
    # candidate's term order whatever the batch.
    products = np.multiply(source_weights.reshape(-1)[source[shared]],
                           candidate_weights.reshape(-1)[at[shared]], dtype=np.float32)
    sums = np.bincount(pair[shared], weights=products, minlength=n * width)
    return sums.reshape(n, width).astype(np.float16).astype(np.float32)


def _term_slots(ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The rows' tables, row i's ``_SLOTS`` from ``starts[i]``: 1 + the position of the
    term whose id's low bits are the slot, 0 for none, T + 1 for a slot two terms share."""
    n, terms = ids.shape
    slots = (ids & (_SLOTS - 1)) + starts
    # PAD is no term: its entries go one past the tables. Left in a row's last slot they
    # would share it, sending every candidate PAD (which reads it) to the whole-row search.
    slots[ids == PAD] = n * _SLOTS
    table = np.zeros(n * _SLOTS + 1, dtype=np.min_scalar_type(terms + 1))
    marks = np.arange(1, terms + 1, dtype=table.dtype)
    table[slots] = marks  # of terms sharing a slot, one write wins ...
    table[slots[table[slots] != marks]] = terms + 1  # ... and the others mark it shared
    return table


def list_overlaps(prints: Fingerprints, lists: np.ndarray, *, block: int = 256, bar=None) -> np.ndarray:
    """float16 (n, W): the :func:`overlaps` of article i with the articles at
    ``lists[i]`` (int32 positions in ``prints``; -1, no neighbour: 0.0). ``block``
    articles at a time: ~10 MB at W=50 for 256, whose arrays stay in cache (4096 is
    1.5x slower). ``bar``: an optional tqdm-like object advanced per article."""
    n, width = lists.shape
    out = np.zeros((n, width), dtype=np.float16)
    for start in range(0, n, block):
        rows = lists[start:start + block]
        listed = np.maximum(rows, 0)
        ids = prints.ids[listed]
        ids[rows < 0] = PAD
        out[start:start + len(rows)] = overlaps(prints.ids[start:start + len(rows)],
                                                prints.weights[start:start + len(rows)],
                                                ids, prints.weights[listed])
        if bar is not None:
            bar.update(len(rows))
    return out
