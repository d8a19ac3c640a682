"""The contract every vector index implements: positions are rows, in insertion order."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    """Inner-product search over unit vectors, addressed by position (0, 1, 2, ...).

    An index never forgets a position: removal is the caller's tombstone mask, because
    HNSW graphs cannot delete. Positions map to article ids outside the index.
    """

    kind: str
    dim: int

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None:
        """Append rows; they take the next positions."""

    def search(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, positions) of the ``n`` nearest rows, best first; -1 pads."""

    def search_many(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Row-wise ``search`` for a batch of queries, using every core."""

    def vectors(self, positions: np.ndarray, *, all_cores: bool = False) -> np.ndarray:
        """The stored rows at ``positions`` (a copy of just those rows)."""

    def inner_products(self, queries: np.ndarray, positions: np.ndarray, *,
                       all_cores: bool = False) -> np.ndarray:
        """(B, W) cosines of ``queries`` (B, d) with the rows at ``positions`` (B, W);
        -inf where a position is negative. ``all_cores``: a large block on every core."""

    def read_rows(self, positions: np.ndarray, *, all_cores: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The rows at ``positions`` read once, as (float32 rows, where): ``where`` gives
        each position's row in them, -1 where a position is negative."""

    def products_at(self, queries: np.ndarray, rows: np.ndarray, where: np.ndarray, *,
                    all_cores: bool = False) -> np.ndarray:
        """``inner_products`` over rows from ``read_rows``: the same values, to the bit."""

    def save(self, path: Path) -> None: ...
