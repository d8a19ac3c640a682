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
BLOCK = 2048  # queries per batch search: enough to keep every core busy, little memory


def build_candidate_lists(index: FaissIndex, width: int, *, exact: bool = False, bar=None) -> np.ndarray:
    """int32 [articles, width]: each article's ``width`` nearest other articles, most
    similar first (ties: lower position first), padded with -1 when the index holds
    fewer.

    exact: compare every pair (exact_search) instead of searching the index, which is
        exact already for flat kinds; costs the square of the corpus (see
        IndexConfig.exact_lists_max) and one float32 copy of the vectors.
    bar: an optional progress bar (tqdm-like ``update``) advanced per article.
    """
    n = len(index)
    rows = index.vectors(np.arange(n)) if exact and width and n >= 2 else None
    lists = np.full((n, width), NO_NEIGHBOUR, dtype=np.int32)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        lists[start:stop] = candidate_block(index, start, stop, width, rows=rows)
        if bar is not None:
            bar.update(stop - start)
    return lists


def candidate_block(index: FaissIndex, start: int, stop: int, width: int, *,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """int32 [stop - start, width]: the lists of :func:`build_candidate_lists` for the
    articles at positions ``start:stop``, on their own: a build on one machine and the
    Ray tasks of a distributed build run this same function on the same blocks.
    ``rows``: every stored row as float32 (an exact search), or None (search the index)."""
    positions = np.arange(start, stop)
    n = len(index)
    if width == 0 or n < 2:
        return np.full((len(positions), width), NO_NEIGHBOUR, dtype=np.int32)
    fetch = min(width + 1, n)  # + the article itself, dropped below
    if rows is not None:
        sims, found = exact_search(rows[start:stop], rows, fetch)
    else:
        with index.wide_search(2 * width):
            sims, found = index.search_many(index.vectors(positions), fetch)
    # Equal similarities in position order, whatever order the search met them in (its
    # threads, its blocks): every engine, every machine, the same lists.
    order = np.lexsort((found, -sims), axis=1)
    return _without_self(np.take_along_axis(found, order, axis=1), positions, width)
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
