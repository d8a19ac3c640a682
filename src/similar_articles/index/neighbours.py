"""Candidate lists: each indexed article's nearest neighbours, found once at build time.

A box for an indexed article ranks the same ~50 nearest articles on every call; at
100k articles finding them (an HNSW search) is most of the call. Searching for every
article at once, on every core, when the snapshot is built takes that work off the
serving path: a call then reads one row of positions and recomputes their exact
cosines from the stored vectors, which is cheap and keeps scores exact.

Articles added between rebuilds are not in any list; the recommender scores them
directly against the source (they are few), and their own boxes use a live search.
"""

from __future__ import annotations

import numpy as np

from .faiss_index import FaissIndex, exact_search

NO_NEIGHBOUR = -1
_BLOCK = 2048  # queries per batch search: enough to keep every core busy, little memory


def build_candidate_lists(index: FaissIndex, width: int, *, exact: bool = False, bar=None) -> np.ndarray:
    """int32 [articles, width]: each article's ``width`` nearest other articles, most
    similar first, padded with -1 when the index holds fewer.

    exact: compare every pair (exact_search) instead of searching the index, which is
        exact already for flat kinds; costs the square of the corpus (see
        IndexConfig.exact_lists_max) and one float32 copy of the vectors.
    bar: an optional progress bar (tqdm-like ``update``) advanced per article.
    """
    n = len(index)
    lists = np.full((n, width), NO_NEIGHBOUR, dtype=np.int32)
    if width == 0 or n < 2:
        return lists
    fetch = min(width + 1, n)  # + the article itself, dropped below
    rows = index.vectors(np.arange(n)) if exact else None
    for start in range(0, n, _BLOCK):
        positions = np.arange(start, min(start + _BLOCK, n))
        if rows is not None:
            _, found = exact_search(rows[start:start + _BLOCK], rows, fetch)
        else:
            with index.wide_search(2 * width):
                _, found = index.search_many(index.vectors(positions), fetch)
        lists[positions] = _without_self(found, positions, width)
        if bar is not None:
            bar.update(len(positions))
    return lists


def _without_self(found: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """Drop each row's own position (usually first; an exact copy may come first
    instead) and missing results, keeping the order and ``width`` neighbours."""
    keep = (found != positions[:, None]) & (found >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]  # kept ones first, in order
    rows = np.take_along_axis(found, order, axis=1)
    rows[~np.take_along_axis(keep, order, axis=1)] = NO_NEIGHBOUR
    if rows.shape[1] < width:
        rows = np.hstack([rows, np.full((len(rows), width - rows.shape[1]), NO_NEIGHBOUR)])
    return rows.astype(np.int32)
