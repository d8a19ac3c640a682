"""Vector indexes: one small contract, FAISS implementations chosen by corpus size, the
layered index serving reads, and the neighbour lists a build finds once."""

from .base import BuildableIndex, VectorIndex
from .faiss_index import KINDS, FaissIndex, create_index, exact_search
from .layered import LayeredIndex

__all__ = ["KINDS", "BuildableIndex", "VectorIndex", "FaissIndex", "LayeredIndex", "create_index", "exact_search"]
