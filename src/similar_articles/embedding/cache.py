"""The embedding cache: vectors already computed, by model and content hash, so an
unchanged article is never encoded twice."""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from ..articles import Article
from .vectors import Encoder

log = logging.getLogger("similar_articles")

# A row is "used" by a build that reads or writes it; rows no build used in this many
# builds are deleted by prune(): texts gone from the archive, old edits, other models.
PRUNE_AFTER_BUILDS = 7
_DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


class EmbeddingCache:
    """Vectors already computed, in an SQLite file, keyed by (model id, content hash).

    An unchanged article is never encoded twice, across builds and snapshots. SQLite's
    journal keeps the file whole if a build is killed mid-write. A file that is not an
    SQLite database is moved aside (``<name>.damaged-<time>``) and a new cache started;
    a damaged row (wrong size, NaN, all zeros) is never returned, so it is encoded again.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.damaged_rows = 0
        self.moved_aside: Path | None = None
        self.build: int | None = None
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", None) not in _DAMAGED:
                raise
            self.moved_aside = self.path.with_name(
                f"{self.path.name}.damaged-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
            os.replace(self.path, self.moved_aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            log.warning("%s is not a readable SQLite database (%s): moved it to %s and started an empty "
                        "cache (it is only a cache: this build encodes every article again)",
                        self.path, exc, self.moved_aside.name)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model_id TEXT NOT NULL, "
                "content_hash TEXT NOT NULL, vector BLOB NOT NULL, "
                "PRIMARY KEY (model_id, content_hash))")
            # Which build last used each row, in a table of its own: the embeddings table
            # keeps the layout older versions (sharing a file through --cache) write.
            db.execute("CREATE TABLE IF NOT EXISTS embedding_use (model_id TEXT NOT NULL, content_hash TEXT NOT NULL, "
                       "build INTEGER NOT NULL, PRIMARY KEY (model_id, content_hash))")
            db.execute("CREATE TABLE IF NOT EXISTS cache_builds (builds INTEGER NOT NULL)")
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def start_build(self) -> int:
        """Count one more build; rows it reads or writes are marked used by it."""
        with self._db:
            row = self._db.execute("SELECT builds FROM cache_builds").fetchone()
            self.build = (row[0] if row else 0) + 1
            self._db.execute("DELETE FROM cache_builds")
            self._db.execute("INSERT INTO cache_builds VALUES (?)", (self.build,))
            (rows,), (marked,) = (self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
                                  for table in ("embeddings", "embedding_use"))
            if rows != marked:  # rows an older version wrote count as used now
                self._db.execute("INSERT OR IGNORE INTO embedding_use SELECT model_id, content_hash, ? "
                                 "FROM embeddings", (self.build,))
        return self.build

    def prune(self, after_builds: int = PRUNE_AFTER_BUILDS) -> int:
        """Delete rows that none of the last ``after_builds`` builds used. Returns how many."""
        if self.build is None:
            raise RuntimeError("prune() needs start_build() first")
        last_kept = self.build - after_builds
        with self._db:
            pruned = self._db.execute(
                "DELETE FROM embeddings WHERE (model_id, content_hash) IN "
                "(SELECT model_id, content_hash FROM embedding_use WHERE build <= ?)", (last_kept,)).rowcount
            self._db.execute("DELETE FROM embedding_use WHERE build <= ?", (last_kept,))
        return pruned

    def get_many(self, model_id: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
            part = wanted[start:start + 500]
            rows = self._db.execute(
                f"SELECT content_hash, vector FROM embeddings WHERE model_id = ? AND "
                f"content_hash IN ({','.join('?' * len(part))})", [model_id, *part])
            for content_hash, blob in rows:
                vector = _vector(blob)
                if vector is None:
                    self.damaged_rows += 1
                else:
                    found[content_hash] = vector
        self._mark_used(model_id, found)
        return found

    def put_many(self, model_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings (model_id, content_hash, vector) VALUES (?, ?, ?)",
                [(model_id, h, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for h, v in zip(hashes, vectors)])
        self._mark_used(model_id, hashes)

    def _mark_used(self, model_id: str, hashes: Iterable[str]) -> None:
        if self.build is not None:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO embedding_use VALUES (?, ?, ?)",
                                     [(model_id, h, self.build) for h in hashes])

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def _vector(blob: bytes) -> np.ndarray | None:
    """A cached row as float32, or None if it is damaged (a torn or zeroed write)."""
    if not isinstance(blob, bytes) or not blob or len(blob) % 4:
        return None
    vector = np.frombuffer(blob, dtype=np.float32)
    return vector if np.isfinite(vector).all() and vector.any() else None


class EmbeddingPlan(NamedTuple):
    """What a chunk of articles needs: their hashes, the vectors the cache holds, and
    the articles to encode (one per distinct missing text: copies are encoded once)."""

    hashes: list[str]
    cached: dict[str, np.ndarray]
    to_encode: list[int]  # positions in the chunk


def plan_embedding(articles: Sequence[Article], encoder: Encoder, cache: EmbeddingCache | None) -> EmbeddingPlan:
    """Look the chunk up in the cache: what is there and what must be encoded."""
    hashes = [a.content_hash for a in articles]
    cached = cache.get_many(encoder.model_id, hashes) if cache is not None else {}
    if len({len(v) for v in cached.values()}) > 1 or (cached and len(cached) < len(hashes)):
        # A row of another length than the model's is damaged too: encode it again.
        cached = {h: v for h, v in cached.items() if len(v) == encoder.dim}
    first_of_hash: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h not in cached:
            first_of_hash.setdefault(h, i)
    return EmbeddingPlan(hashes, cached, list(first_of_hash.values()))


def embed_articles(articles: Sequence[Article], encoder: Encoder, *,
                   cache: EmbeddingCache | None = None, progress: bool = False
                   ) -> tuple[np.ndarray, int]:
    """Vectors for ``articles`` in order, encoding only what the cache lacks.

    Returns the matrix and how many articles were encoded (the rest came from cache).
    """
    hashes, cached, to_encode = plan_embedding(articles, encoder, cache)
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
