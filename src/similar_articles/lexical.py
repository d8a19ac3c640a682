"""Lexical fingerprints: each article's strongest TF-IDF terms, blended with embeddings.

Embeddings know that "missile treaty" and "arms pact" mean the same; exact terms know
that two stories name the same people, places and organisations. Blending both ranks
better than either alone (see notebooks/ and README.md for the measurements).

Terms are hashed (no vocabulary to store) and each article keeps only its top terms,
so a fingerprint is a fixed ``TERMS`` ids + weights: 384 bytes an article.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

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
    """Hashed term counts of each text's first TEXT_CHARS characters, as a CSR matrix."""
    return _vectorizer().transform(t[:TEXT_CHARS] for t in texts).tocsr()


def _vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=N_FEATURES, alternate_sign=False, norm=None,
                             stop_words="english", dtype=np.float32)


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


class PoolTerms:
    """A candidate pool's fingerprints, ready for any rows of its term-overlap matrix.

    A row sorts one article's (at most 64) term ids and binary-searches every pool
    term among them: a few small vectorised passes, no pool-sized matrix, no BLAS call
    and no large table (a 4 MB lookup table indexed by term id was tried: its random
    reads cost ~160 us a row on real articles, against ~40 us for the search).
    """

    def __init__(self, prints: Fingerprints):
        self.ids = prints.ids
        self.weights = prints.weights

    def rows(self, which: np.ndarray) -> np.ndarray:
        """Cosine of the ``which`` rows against every row: shape (len(which), pool)."""
        out = np.zeros((len(which), len(self.ids)), dtype=np.float32)
        for i, row in enumerate(np.asarray(which).tolist()):
            real = self.ids[row] != PAD
            order = np.argsort(self.ids[row][real])
            keys = self.ids[row][real][order]
            if not len(keys):
                continue
            key_weights = self.weights[row][real][order].astype(np.float32)
            at = np.minimum(np.searchsorted(keys, self.ids), len(keys) - 1)
            matched = keys[at] == self.ids  # PAD (-1) is never a key
            out[i] = (np.where(matched, key_weights[at], 0.0) * self.weights).sum(axis=1)
        return out


def similarity_matrix(prints: Fingerprints) -> np.ndarray:
    """Cosine between every pair of fingerprints."""
    terms = PoolTerms(prints)
    return terms.rows(np.arange(len(prints)))
