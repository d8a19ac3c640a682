"""The embedding cache: vectors already computed, by model and content hash, so an
unchanged article is never encoded twice."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..articles import Article
from .vectors import Encoder

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
