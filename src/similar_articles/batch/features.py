"""A build's text features, cached by content hash like the vectors: each article's
hashed term counts (for the lexical fingerprints) and its copy sketch, in their own
typed tables of the cache file, so an unchanged article is never tokenised or
shingled twice (~0.5 and ~0.3 ms an article)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from ..articles import Article
from ..features import copies, lexical
from ..features.lexical import Fingerprints, LexicalModel

# What a cached row was made with: rows of another scheme are not reused.
TERM_SCHEME = f"hashing|{lexical.N_FEATURES}|{lexical.TEXT_CHARS}|english"
SKETCH_SCHEME = f"v{copies.SCHEME}|{copies.SLOTS}"


class FeatureCache:
    """Term counts (int32 term ids, float32 counts) and copy sketches (uint32 hashes,
    the distinct shingle count) by content hash, beside the embeddings in one SQLite
    file. Committed per chunk, like the embeddings: a killed build loses one chunk."""

    def __init__(self, path: str | Path):
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS term_counts (scheme TEXT NOT NULL, content_hash TEXT NOT NULL, "
                         "term_ids BLOB NOT NULL, counts BLOB NOT NULL, PRIMARY KEY (scheme, content_hash))")
        self._db.execute("CREATE TABLE IF NOT EXISTS copy_sketches (scheme TEXT NOT NULL, content_hash TEXT NOT NULL, "
                         "sketch BLOB NOT NULL, shingles INTEGER NOT NULL, PRIMARY KEY (scheme, content_hash))")
        # Versions before 0.2 kept these as float32 "vectors" under made-up model ids in
        # the embeddings table: drop them (they are recomputed into these tables once).
        has_embeddings = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embeddings'").fetchone()
        if has_embeddings:
            for prefix in ("terms|", "copies|"):
                self._db.execute("DELETE FROM embeddings WHERE model_id >= ? AND model_id < ?",
                                 (prefix, prefix[:-1] + "}"))
        self._db.commit()

    def _rows(self, table: str, columns: str, scheme: str, hashes: Sequence[str]) -> dict[str, tuple]:
        found: dict[str, tuple] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
            part = wanted[start:start + 500]
            found.update((row[0], row[1:]) for row in self._db.execute(
                f"SELECT content_hash, {columns} FROM {table} WHERE scheme = ? AND "
                f"content_hash IN ({','.join('?' * len(part))})", [scheme, *part]))
        return found

    def term_counts(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Cached counts by hash; a damaged row (torn write, edited file) is left out, so
        it is counted again and replaced."""
        found = {}
        for h, (ids, counts) in self._rows("term_counts", "term_ids, counts", TERM_SCHEME, hashes).items():
            if _whole(ids, 4) and _whole(counts, 4) and len(ids) == len(counts):
                ids, counts = np.frombuffer(ids, np.int32), np.frombuffer(counts, np.float32)
                if ((ids >= 0) & (ids < lexical.N_FEATURES)).all() and np.isfinite(counts).all():
                    found[h] = (ids, counts)
        return found

    def put_term_counts(self, counts: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO term_counts VALUES (?, ?, ?, ?)", [
                (TERM_SCHEME, h, ids.astype(np.int32).tobytes(), c.astype(np.float32).tobytes())
                for h, (ids, c) in counts.items()])

    def sketches(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int]]:
        return {h: (np.frombuffer(sketch, np.uint32), shingles)
                for h, (sketch, shingles) in self._rows("copy_sketches", "sketch, shingles", SKETCH_SCHEME,
                                                        hashes).items()
                if _whole(sketch, 4) and len(sketch) == 4 * copies.SLOTS and isinstance(shingles, int)}

    def put_sketches(self, sketches: dict[str, tuple[np.ndarray, int]]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO copy_sketches VALUES (?, ?, ?, ?)", [
                (SKETCH_SCHEME, h, row.astype(np.uint32).tobytes(), int(count))
                for h, (row, count) in sketches.items()])

    def close(self) -> None:
        self._db.close()


def _whole(blob: object, item_bytes: int) -> bool:
    return isinstance(blob, bytes) and len(blob) % item_bytes == 0


class LexicalPass:
    """Fingerprints need the IDF of the whole archive before any article's top terms can
    be picked, so they take two passes. Pass one (:meth:`add`, per chunk): term counts
    from the cache or the tokenizer, document frequencies summed. Pass two
    (:meth:`fingerprints`): IDF, then every article's fingerprint from the cached
    counts, the same as ``LexicalModel.fit`` over all texts at once."""

    def __init__(self, cache: FeatureCache):
        self.cache = cache
        self.df = np.zeros(lexical.N_FEATURES, dtype=np.int64)
        self.hashes: list[str] = []
        self.tokenised = 0

    def add(self, articles: Sequence[Article]) -> None:
        hashes = [a.content_hash for a in articles]
        counts = self.cache.term_counts(hashes)
        missing = {h: a for h, a in zip(hashes, articles) if h not in counts}
        if missing:
            matrix = lexical.term_counts([a.text for a in missing.values()])
            fresh = {h: (matrix.indices[matrix.indptr[i]:matrix.indptr[i + 1]],
                         matrix.data[matrix.indptr[i]:matrix.indptr[i + 1]])
                     for i, h in enumerate(missing)}
            self.cache.put_term_counts(fresh)
            counts.update(fresh)
            self.tokenised += len(fresh)
        self.df += np.bincount(np.concatenate([counts[h][0] for h in hashes]).astype(np.int64),
                               minlength=lexical.N_FEATURES)
        self.hashes.extend(hashes)

    def fingerprints(self, block: int = 4096) -> tuple[LexicalModel, Fingerprints]:
        from scipy.sparse import csr_matrix

        model = LexicalModel.from_document_frequencies(self.df, len(self.hashes))
        parts = []
        for start in range(0, len(self.hashes), block):
            hashes = self.hashes[start:start + block]
            counts = self.cache.term_counts(hashes)
            rows = [counts[h] for h in hashes]
            indptr = np.concatenate([[0], np.cumsum([len(ids) for ids, _ in rows])])
            matrix = csr_matrix((np.concatenate([c for _, c in rows]), np.concatenate([i for i, _ in rows]), indptr),
                                shape=(len(rows), lexical.N_FEATURES))
            parts.append(model.fingerprints(matrix))
        return model, Fingerprints(np.concatenate([p.ids for p in parts]), np.concatenate([p.weights for p in parts]))


def sketches_of(cache: FeatureCache, articles: Sequence[Article]) -> tuple[np.ndarray, np.ndarray]:
    """The copy sketches and shingle counts of ``articles``, from the cache or computed
    (and then cached)."""
    hashes = [a.content_hash for a in articles]
    cached = cache.sketches(hashes)
    missing = {h: a for h, a in zip(hashes, articles) if h not in cached}
    if missing:
        rows, counts = copies.sketches([copies.copy_text(a.body, a.title) for a in missing.values()])
        fresh = {h: (row, int(count)) for h, row, count in zip(missing, rows, counts)}
        cache.put_sketches(fresh)
        cached.update(fresh)
    return (np.stack([cached[h][0] for h in hashes]).astype(np.uint32),
            np.array([cached[h][1] for h in hashes], dtype=np.int32))
