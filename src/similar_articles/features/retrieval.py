"""The sparse lexical retriever: articles that share rare terms with a source, whatever
the encoder thinks of them.

The dense index finds what an article is about; an inverted index over the lexical
fingerprints (each article's strongest TF-IDF terms, see lexical.py) finds the
articles that name the same people, places and organisations. The build asks both
for each article's neighbours and fuses them into one list (batch/build.py); a call
for an unseen article asks both at call time (pools.py). The score is the fingerprint
cosine, the same number the ranking blends with the embedding cosine.

The postings (term -> articles holding it, with the term's weight there) are three
arrays saved in the snapshot (artifacts.py) and memory-mapped on load: only a call for
an unseen article reads them, about 6 bytes per fingerprint term (~400 B an article).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .lexical import N_FEATURES, PAD, Fingerprints

# Terms in more than this share of the articles are left out of the postings: they
# link nearly everything (so they cannot pick candidates) and their long lists would be
# most of a query's cost. The ranking's overlap still counts them.
MAX_DOCUMENT_SHARE = 0.01
MIN_DOCUMENT_LIMIT = 50  # small archives: a term in 50 articles still picks candidates
# A build's lexical lists query each article's strongest terms only (a fingerprint's
# terms come strongest first): the product's cost grows with the postings each query
# term reads, and the weakest terms rarely change an article's top neighbours.
QUERY_TERMS = 16


class Postings(NamedTuple):
    """An inverted index over fingerprints: term t's articles are
    ``docs[offsets[t]:offsets[t + 1]]`` with weights ``weights[...]`` (same slice)."""

    offsets: np.ndarray  # int64 (N_FEATURES + 1,)
    docs: np.ndarray  # int32 (postings,)
    weights: np.ndarray  # float16 (postings,)


def build_postings(prints: Fingerprints) -> Postings:
    """The postings of ``prints``, leaving out terms held by more than
    MAX_DOCUMENT_SHARE of the articles (or MIN_DOCUMENT_LIMIT, whichever is more)."""
    n, terms = prints.ids.shape
    ids = prints.ids.reshape(-1)
    docs = np.repeat(np.arange(n, dtype=np.int32), terms)
    keep = ids != PAD
    df = np.bincount(ids[keep], minlength=N_FEATURES)
    keep &= df[np.where(keep, ids, 0)] <= max(MIN_DOCUMENT_LIMIT, MAX_DOCUMENT_SHARE * n)
    ids, docs, weights = ids[keep], docs[keep], prints.weights.reshape(-1)[keep]
    order = np.argsort(ids, kind="stable")  # within a term, articles in position order
    counts = np.bincount(ids, minlength=N_FEATURES)
    offsets = np.zeros(N_FEATURES + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Postings(offsets, docs[order], weights[order].astype(np.float16))


def search(postings: Postings, prints: Fingerprints, k: int, *, exclude: np.ndarray | None = None) -> np.ndarray:
    """int64 (B, k): for each fingerprint, the ``k`` articles with the largest
    product of its QUERY_TERMS strongest terms with theirs (as :func:`neighbours`
    ranks), best first; -1 pads. ``exclude``
    (B,): a position per row never returned (the source itself; -1 for none)."""
    out = np.full((len(prints), k), -1, dtype=np.int64)
    for row in range(len(prints)):
        ids = prints.ids[row, :QUERY_TERMS]
        valid = ids != PAD
        ids, own = ids[valid], prints.weights[row, :QUERY_TERMS][valid].astype(np.float32)
        starts, ends = postings.offsets[ids], postings.offsets[ids + 1]
        lengths = ends - starts
        if not lengths.sum():
            continue
        # Every posting of the query's terms, gathered at once.
        at = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        docs = postings.docs[at]
        products = postings.weights[at].astype(np.float32) * np.repeat(own, lengths)
        found, inverse = np.unique(docs, return_inverse=True)
        totals = np.bincount(inverse, weights=products)
        if exclude is not None and exclude[row] >= 0:
            totals[found == exclude[row]] = -np.inf
        best = _best(totals, k)
        best = best[np.isfinite(totals[best])]
        out[row, :len(best)] = found[best]
    return out


def _best(totals: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` largest ``totals``, largest first, ties by index (as a
    stable sort of them all ranks, at a fraction of its cost: ~0.7 against ~2 ms for
    an article's postings at a million)."""
    if len(totals) > k:
        cut = np.partition(totals, len(totals) - k)[len(totals) - k]
        top = np.flatnonzero(totals >= cut)
        return top[np.argsort(-totals[top], kind="stable")][:k]
    return np.argsort(-totals, kind="stable")[:k]


class LexicalQueries(NamedTuple):
    """What :func:`neighbours_block` multiplies: each article's QUERY_TERMS strongest
    terms (rows: articles) and the postings' articles by term (rows: terms)."""

    queries: "object"  # scipy csr (n, N_FEATURES)
    transposed: "object"  # scipy csr (N_FEATURES, n)


def lexical_queries(prints: Fingerprints) -> LexicalQueries:
    """The two sparse matrices of the lexical neighbours of ``prints`` (built once a
    build, or once a Ray worker: every block multiplies the same ones)."""
    from scipy import sparse

    n = len(prints)
    postings = build_postings(prints)
    counts = np.diff(postings.offsets)
    term_of = np.repeat(np.arange(N_FEATURES, dtype=np.int64), counts)
    # articles x terms, restricted to the postings' terms
    matrix = sparse.csr_matrix((postings.weights.astype(np.float32), (postings.docs, term_of)),
                               shape=(n, N_FEATURES))
    strongest = Fingerprints(prints.ids[:, :QUERY_TERMS], prints.weights[:, :QUERY_TERMS])
    keep = (strongest.ids != PAD) & (counts[np.maximum(strongest.ids, 0)] > 0)
    rows = np.repeat(np.arange(n), strongest.ids.shape[1]).reshape(n, -1)[keep]
    queries = sparse.csr_matrix((strongest.weights[keep].astype(np.float32), (rows, strongest.ids[keep])),
                                shape=(n, N_FEATURES))
    return LexicalQueries(queries, matrix.T.tocsr())


def neighbours(prints: Fingerprints, width: int, *, block: int = 1024, bar=None) -> np.ndarray:
    """int32 (n, width): each article's ``width`` lexical nearest others (largest
    fingerprint cosine over the postings' terms), best first, -1 pads. One sparse
    matrix product per ``block`` articles (scipy, one core)."""
    n = len(prints)
    lists = np.full((n, width), -1, dtype=np.int32)
    if width == 0 or n < 2:
        return lists
    matrices = lexical_queries(prints)
    for start in range(0, n, block):
        stop = min(start + block, n)
        lists[start:stop] = neighbours_block(matrices, start, stop, width, block=block)
        if bar is not None:
            bar.update(stop - start)
    return lists


def neighbours_block(matrices: LexicalQueries, start: int, stop: int, width: int, *,
                     block: int = 1024) -> np.ndarray:
    """int32 (stop - start, width): the :func:`neighbours` of the articles at positions
    ``start:stop`` alone (each row depends on nothing but its article: any split of the
    articles into blocks gives the same lists). ``block`` rows per sparse product."""
    lists = np.full((stop - start, width), -1, dtype=np.int32)
    if width == 0 or matrices.queries.shape[0] < 2:
        return lists
    for first in range(start, stop, block):
        part = (matrices.queries[first:min(first + block, stop)] @ matrices.transposed).tocsr()
        for row in range(part.shape[0]):
            lo, hi = part.indptr[row], part.indptr[row + 1]
            cols, values = part.indices[lo:hi], part.data[lo:hi]
            mine = cols != first + row
            cols, values = cols[mine], values[mine]
            if len(cols) > width:  # the width best; ties at the cut: lower positions first
                cut = -np.partition(-values, width - 1)[width - 1]
                tied = np.flatnonzero(values == cut)
                tied = tied[np.argsort(cols[tied], kind="stable")[:width - int((values > cut).sum())]]
                top = np.concatenate([np.flatnonzero(values > cut), tied])
                cols, values = cols[top], values[top]
            order = np.lexsort((cols, -values))
            lists[first - start + row, :len(cols)] = cols[order]
    return lists
