"""The contracts every vector index implements: positions are rows, in insertion order."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    """What serving reads: inner-product search over unit vectors, by position.

    An index never forgets a position: removal is the article table's live mask,
    because HNSW graphs cannot delete. Positions map to article ids outside the index.
    """

    kind: str
    dim: int

    def __len__(self) -> int: ...

    def search_many(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, positions) of each query's ``n`` nearest rows, best first; -1 pads."""

    def vectors(self, positions: np.ndarray, *, all_cores: bool = False) -> np.ndarray:
        """The rows at ``positions`` as float32."""

    def read_rows(self, positions: np.ndarray, *, all_cores: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The rows at ``positions`` (any shape) read once, as float32 ``rows`` and
        ``where``: each position's row in them, -1 where a position is negative."""

    def products_at(self, queries: np.ndarray, rows: np.ndarray, where: np.ndarray, *,
                    all_cores: bool = False) -> np.ndarray:
        """``queries[b] . rows[where[b, w]]`` as a (B, W) array, -inf where ``where`` < 0."""

    def inner_products(self, queries: np.ndarray, positions: np.ndarray, *, all_cores: bool = False) -> np.ndarray:
        """``queries[b] . row(positions[b, w])``: products_at over read_rows."""


class BuildableIndex(VectorIndex, Protocol):
    """What a build also needs: rows appended, the index written to a file."""

    def add(self, vectors: np.ndarray) -> None: ...

    def save(self, path: Path) -> None: ...


def gathered_rows(index: VectorIndex, positions: np.ndarray, *, all_cores: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``read_rows`` by gathering: a float32 copy of the rows at ``positions`` (any
    shape) and ``where``, each position's row in it (-1 where a position is negative)."""
    positions = np.asarray(positions, dtype=np.int64)
    rows = index.vectors(np.maximum(positions, 0).reshape(-1), all_cores=all_cores)
    where = np.arange(positions.size, dtype=np.int64).reshape(positions.shape)
    where[positions < 0] = -1
    return rows, where
