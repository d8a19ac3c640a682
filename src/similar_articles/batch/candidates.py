"""Each article's candidate list from two retrievers, and the random pairs that
calibrate the relatedness floor.

The dense index finds each article's nearest by embedding; the lexical postings find
those sharing its strongest terms (features/retrieval.py). Their union is scored as the
ranking scores it, ``(1 - w) * cosine + w * term overlap`` (ranking.blend), and each
article keeps the ``width`` best: an article the encoder ranks 80th but which names
the same people and places now enters the pool. The list costs what it did (same width).

Reciprocal-rank fusion of the two lists was measured against this convex blend of the
scores (docs/quality.md): the blend found as many or more on both corpora and needs no
ranks at call time, so the ranking and the lists fuse the same way.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from ..features.lexical import Fingerprints, overlaps
from ..features import retrieval
from ..index import FaissIndex, neighbours
from ..index.neighbours import BLOCK
from ..ranking import blend

FLOOR_PAIRS = 2048  # random pairs kept in the manifest: a quantile to ~0.002 at q=0.99
# Random pairs stand for chance only in a broad archive: in a few dozen articles on
# one story most pairs are related, and a floor calibrated on them would call real
# neighbours chance. Smaller indexes keep min_similarity alone.
MIN_CALIBRATION_ARTICLES = 500
_FUSE_BLOCK = 512  # rows fused at a time: (512, 100, 384) float32 is ~80 MB


class FusedLists(NamedTuple):
    """Candidate lists and what a call reads with them (see :func:`candidate_block`)."""

    lists: np.ndarray  # int32 (n, width), best blended score first, -1 pads
    overlap: np.ndarray | None  # float16 (n, width): term overlap of each listed pair
    beyond: np.ndarray | None  # float16 (n,): no unlisted article has a higher cosine (None: dense lists)


class CandidateInputs:
    """What every block of candidate lists reads: the index, the fingerprints, the
    settings and, made once on first use, the lexical matrices and (exact lists) a
    float32 copy of the vectors. A build on one machine makes one; a distributed build
    ships :meth:`shared` through Ray's object store and each worker process makes one
    with :meth:`from_shared`."""

    def __init__(self, index: FaissIndex, prints: Fingerprints | None, width: int, lexical_weight: float,
                 min_similarity: float, *, exact: bool):
        self.index, self.prints, self.width = index, prints, width
        self.lexical_weight, self.min_similarity, self.exact = lexical_weight, min_similarity, exact
        self._rows: np.ndarray | None = None
        self._matrices: retrieval.LexicalQueries | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def fused(self) -> bool:
        """Whether the lexical retriever adds to the dense lists."""
        return self.prints is not None and self.lexical_weight != 0

    def exact_rows(self) -> np.ndarray | None:
        if self.exact and self._rows is None and self.width and len(self) >= 2:
            self._rows = self.index.vectors(np.arange(len(self)))
        return self._rows

    def matrices(self) -> retrieval.LexicalQueries:
        if self._matrices is None:
            self._matrices = retrieval.lexical_queries(self.prints)
        return self._matrices

    def shared(self) -> dict:
        """Numpy arrays and plain settings (the FAISS index as its bytes)."""
        return {"index": self.index.to_bytes(), "kind": self.index.kind, "config": self.index.config,
                "ids": None if self.prints is None else self.prints.ids,
                "weights": None if self.prints is None else self.prints.weights,
                "settings": (self.width, self.lexical_weight, self.min_similarity, self.exact)}

    @classmethod
    def from_shared(cls, shared: dict) -> "CandidateInputs":
        index = FaissIndex.from_bytes(shared["index"], shared["kind"], shared["config"])
        prints = None if shared["ids"] is None else Fingerprints(shared["ids"], shared["weights"])
        width, weight, floor, exact = shared["settings"]
        return cls(index, prints, width, weight, floor, exact=exact)


def fused_lists(inputs: CandidateInputs, *, bar=None) -> FusedLists:
    """Every article's candidate lists (:func:`candidate_block`), block after block on
    this machine."""
    parts = []
    for start in range(0, len(inputs), BLOCK):
        parts.append(candidate_block(inputs, start, min(start + BLOCK, len(inputs))))
        if bar is not None:
            bar.update(len(parts[-1].lists))
    return join_blocks(parts)


def join_blocks(parts: Sequence[FusedLists]) -> FusedLists:
    """The blocks of :func:`candidate_block`, in position order, as one FusedLists."""
    def joined(name):
        arrays = [getattr(p, name) for p in parts]
        return None if not arrays or arrays[0] is None else np.concatenate(arrays)
    return FusedLists(joined("lists"), joined("overlap"), joined("beyond"))


def candidate_block(inputs: CandidateInputs, start: int, stop: int) -> FusedLists:
    """The candidate lists of the articles at positions ``start:stop``: each one's
    ``width`` best of its dense and lexical neighbours by blended score, the term
    overlap of each listed pair (None without fingerprints: then the lists are the
    dense ones) and, per article, a cosine no unlisted article exceeds (the dense
    list's last cosine, or a dense neighbour's the fusion dropped): a call whose
    filters leave too few of the list searches only if something unlisted can still
    reach min_similarity. A lexical find below ``min_similarity`` takes no slot: no
    call with the index's settings could show it. Each row depends on its article
    alone, and ties go to the lower position, so any split into blocks, on one
    machine or over Ray tasks, gives the same lists."""
    index, prints, width = inputs.index, inputs.prints, inputs.width
    dense = neighbours.candidate_block(index, start, stop, width, rows=inputs.exact_rows())
    mine_all = np.arange(start, stop)
    if prints is None:
        return FusedLists(dense, None, None)
    if not inputs.fused:
        return FusedLists(dense, _pair_overlaps(prints, mine_all, dense), None)
    union = _without_repeats(np.hstack([dense, retrieval.neighbours_block(inputs.matrices(), start, stop, width)]))
    lists = np.full(dense.shape, -1, dtype=np.int32)
    overlap = np.zeros(dense.shape, dtype=np.float16)
    beyond = np.zeros(len(dense), dtype=np.float16)
    for first in range(0, len(union), _FUSE_BLOCK):
        rows = union[first:first + _FUSE_BLOCK]
        at = slice(first, first + len(rows))
        mine = mine_all[at]
        valid = rows >= 0
        cosine = np.einsum("bd,bwd->bw", index.vectors(mine).astype(np.float32),
                           index.vectors(np.maximum(rows, 0).reshape(-1)).reshape(*rows.shape, -1).astype(np.float32))
        terms = _pair_overlaps(prints, mine, rows)
        showable = valid & ((cosine >= inputs.min_similarity) | (np.arange(rows.shape[1]) < width))
        score = np.where(showable, blend(cosine, terms.astype(np.float32), inputs.lexical_weight), -np.inf)
        best = np.argsort(-score, axis=1, kind="stable")[:, :width]
        picked = np.take_along_axis(rows, best, axis=1)
        lists[at] = np.where(np.take_along_axis(showable, best, axis=1), picked, -1)
        overlap[at] = np.where(lists[at] >= 0, np.take_along_axis(terms, best, axis=1), 0)
        found = valid[:, :width]  # the dense list's members (union's first columns)
        dropped = found & ~(rows[:, :width, None] == lists[at][:, None, :]).any(axis=2)
        bound = np.maximum(np.where(found, cosine[:, :width], np.inf).min(axis=1),
                           np.where(dropped, cosine[:, :width], -np.inf).max(axis=1))
        # float16 rounded up, so the bound stays a bound; empty lists: nothing is unlisted
        beyond[at] = np.where(np.isfinite(bound), bound + 1e-3, -1.0)
    return FusedLists(lists, overlap, beyond)


def _pair_overlaps(prints: Fingerprints, sources: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float16 (B, W): the term overlap of article ``sources[b]`` with ``rows[b, w]``
    (0 where -1), exactly as a call computes it (lexical.overlaps)."""
    at = np.maximum(rows, 0)
    ids = prints.ids[at]
    ids[rows < 0] = -1
    return overlaps(prints.ids[sources], prints.weights[sources], ids, prints.weights[at]).astype(np.float16)


def _without_repeats(rows: np.ndarray) -> np.ndarray:
    """Each row with later repeats of a position (found by both retrievers) set to -1."""
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    repeat = np.zeros(rows.shape, dtype=bool)
    repeat[:, 1:] = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    out = rows.copy()
    np.put_along_axis(out, order, np.where(repeat, -1, ordered), axis=1)
    return out


def random_pairs(index: FaissIndex, prints: Fingerprints | None, *, seed: int = 0) -> dict[str, list[float]]:
    """The embedding cosine and term overlap of FLOOR_PAIRS random pairs of distinct
    articles: what "unrelated" scores in this archive. The relatedness floor is a
    quantile of their blended score (ServingState.relatedness_floor), so a floor means
    the same share of chance pairs on any archive and any blend weight. Empty below
    MIN_CALIBRATION_ARTICLES articles."""
    n = len(index)
    if n < MIN_CALIBRATION_ARTICLES:
        return {"cosine": [], "overlap": []}
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, FLOOR_PAIRS)
    b = (a + rng.integers(1, n, FLOOR_PAIRS)) % n  # never a itself
    cosine = np.einsum("bd,bd->b", index.vectors(a).astype(np.float32), index.vectors(b).astype(np.float32))
    terms = np.zeros(FLOOR_PAIRS, np.float32) if prints is None else \
        _pair_overlaps(prints, a, b[:, None])[:, 0].astype(np.float32)
    return {"cosine": [round(float(v), 4) for v in cosine], "overlap": [round(float(v), 4) for v in terms]}
