"""Vector indexes: one small contract, FAISS implementations chosen by corpus size."""

from .base import VectorIndex
from .faiss_index import KINDS, FaissIndex, create_index, exact_search

__all__ = ["KINDS", "VectorIndex", "FaissIndex", "create_index", "exact_search"]
