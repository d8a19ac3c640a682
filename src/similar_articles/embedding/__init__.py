"""Article text -> unit vectors: the encoder contract, the sentence-transformers and
ONNX encoders, and the embedding cache keyed by model and content hash."""

from .cache import EmbeddingCache, EmbeddingPlan, embed_articles, plan_embedding
from .encoders import SentenceTransformerEncoder
from .vectors import PACKAGED_MODELS, Encoder, RememberedVectors, given_vectors, normalise_rows, resolve_model_path

__all__ = ["Encoder", "EmbeddingCache", "EmbeddingPlan", "PACKAGED_MODELS", "SentenceTransformerEncoder", "embed_articles",
           "given_vectors", "normalise_rows", "plan_embedding", "RememberedVectors", "resolve_model_path"]
