"""The index a serving state reads: a loaded FAISS index that is never changed again,
plus the vectors of articles added since, searched exactly. Adding makes a new one, so
a call in flight keeps reading the rows it started with (FAISS's own add would move the
buffer under a concurrent search)."""

from __future__ import annotations

import numpy as np

from .base import VectorIndex, gathered_rows

MAX_ANSWERS = 4096  # the base's answers kept (~2 kB each at 384 dimensions)


class LayeredIndex:
    """``base`` (positions 0..n-1) and ``added`` float32 rows (positions n..); the
    VectorIndex contract over both. Exact search over the added rows costs ~d
    multiply-adds each: a few thousand added between builds cost well under a ms.

    The base never changes, so its answer to a query is kept (the latest MAX_ANSWERS,
    shared with the indexes made from this one): an added article's box, ranked again,
    reads no graph (~1.5 ms an HNSW search at a million)."""

    def __init__(self, base: VectorIndex, added: np.ndarray | None = None, answers: dict | None = None):
        self.base = base
        self._answers = {} if answers is None else answers
        self.dim = base.dim
        self.kind = base.kind
        self.added = np.zeros((0, base.dim), np.float32) if added is None else added
        self._n = len(base)

    def with_rows(self, vectors: np.ndarray) -> "LayeredIndex":
        return LayeredIndex(self.base, np.vstack([self.added, np.asarray(vectors, dtype=np.float32)]), self._answers)

    def __len__(self) -> int:
        return self._n + len(self.added)

    def search_many(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        sims, positions = self._base_search(queries, n)
        if not len(self.added):
            return sims, positions
        extra = self.added_products(queries)
        sims = np.hstack([sims, extra])
        positions = np.hstack([positions, np.broadcast_to(np.arange(self._n, len(self), dtype=np.int64),
                                                          extra.shape)])
        sims = np.where(positions >= 0, sims, -np.inf)
        top = np.argsort(-sims, axis=1, kind="stable")[:, :min(n, len(self))]
        return np.take_along_axis(sims, top, 1), np.take_along_axis(positions, top, 1)

    def added_products(self, queries: np.ndarray) -> np.ndarray:
        """(B, added) inner products of ``queries`` with every row added since the
        base, in position order: one matrix product (~d multiply-adds a row)."""
        return np.asarray(queries, dtype=np.float32) @ self.added.T

    def _base_search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The base's search_many, each query's answer kept. A kept answer serves any
        narrower search as its first ``n`` (every kind's search is then the same: HNSW
        explores ef_search >= n either way)."""
        keys = [query.tobytes() for query in queries]
        got = [self._answers.get(key) for key in keys]
        missing = [i for i, answer in enumerate(got) if answer is None or answer[0] < n]
        if missing:
            sims, positions = self.base.search_many(queries[missing], n)
            if len(self._answers) + len(missing) > MAX_ANSWERS:
                self._answers.clear()
            for row, i in enumerate(missing):
                got[i] = self._answers[keys[i]] = (n, sims[row].copy(), positions[row].copy())
        if not got:
            return self.base.search_many(queries, n)
        return np.stack([s[:n] for _, s, _ in got]), np.stack([p[:n] for _, _, p in got])

    def vectors(self, positions: np.ndarray, *, all_cores: bool = False) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if not len(self.added):
            return self.base.vectors(positions, all_cores=all_cores)
        out = np.empty((len(positions), self.dim), np.float32)
        mine = positions >= self._n
        out[~mine] = self.base.vectors(positions[~mine], all_cores=all_cores)
        out[mine] = self.added[positions[mine] - self._n]
        return out

    def read_rows(self, positions: np.ndarray, *, all_cores: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if not len(self.added):
            return self.base.read_rows(positions, all_cores=all_cores)
        return gathered_rows(self, positions, all_cores=all_cores)

    def products_at(self, queries: np.ndarray, rows: np.ndarray, where: np.ndarray, *,
                    all_cores: bool = False) -> np.ndarray:
        return self.base.products_at(queries, rows, where, all_cores=all_cores)

    def inner_products(self, queries: np.ndarray, positions: np.ndarray, *, all_cores: bool = False) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64).reshape(len(queries), -1)
        return self.products_at(queries, *self.read_rows(positions, all_cores=all_cores), all_cores=all_cores)
