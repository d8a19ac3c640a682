"""Vector indexes: one small contract, FAISS implementations chosen by corpus size."""

from .base import VectorIndex
from .faiss_index import FaissIndex, create_index

__all__ = ["VectorIndex", "FaissIndex", "create_index"]
