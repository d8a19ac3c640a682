"""FAISS implementations of the vector index: exact (flat) and HNSW, chosen by size."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from ..config import IndexConfig
from ..errors import ConfigError, IndexCorruptedError

_CORES = os.cpu_count() or 1


@contextmanager
def _faiss_threads(n: int):
    """One query is fastest on one thread (OpenMP start-up costs more than it saves);
    bulk adds and batch searches want every core."""
    before = faiss.omp_get_max_threads()
    if before != n:
        faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            faiss.omp_set_num_threads(before)


class FaissIndex:
    """A FAISS index over unit vectors with inner product (= cosine)."""

    def __init__(self, index: faiss.Index, kind: str):
        self._index = index
        self.kind = kind
        self.dim = index.d

    @classmethod
    def create(cls, kind: str, dim: int, config: IndexConfig) -> "FaissIndex":
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.ef_construction
            index.hnsw.efSearch = config.ef_search
        else:
            raise ConfigError(f"index kind {kind!r} is unknown; use 'flat' or 'hnsw'")
        return cls(index, kind)

    @classmethod
    def load(cls, path: Path, kind: str, config: IndexConfig) -> "FaissIndex":
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorruptedError(f"{path}: FAISS could not read the index ({exc}); rebuild it") from None
        if kind == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = config.ef_search
        return cls(index, kind)

    def __len__(self) -> int:
        return self._index.ntotal

    def add(self, vectors: np.ndarray) -> None:
        with _faiss_threads(_CORES):
            self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        with _faiss_threads(1):
            sims, positions = self._index.search(query.reshape(1, -1), min(n, len(self)))
        return sims[0], positions[0]

    def search_many(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        with _faiss_threads(_CORES):
            return self._index.search(np.ascontiguousarray(queries, dtype=np.float32), min(n, len(self)))

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        return self._index.reconstruct_batch(np.asarray(positions, dtype=np.int64))

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))


def create_index(dim: int, n_articles: int, config: IndexConfig) -> FaissIndex:
    """The index kind the config asks for, resolving "auto" by corpus size."""
    return FaissIndex.create(config.resolve_kind(n_articles), dim, config)
