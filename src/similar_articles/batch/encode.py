"""A build's read and encode stages, interleaved chunk by chunk so that article bodies
never pile up: rows validated into articles, vectors from the cache (or given) and the
model for what is missing, term counts and copy sketches from their cache."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..articles import Article
from ..embedding import EmbeddingCache, Encoder, normalise_rows
from ..journal import Folded
from ..sources import ArticleReader, RowError, Source
from ..table import NEWSROOM, columns_of, newsroom_of
from .engine import Engine, LocalEngine
from .features import FeatureCache, LexicalPass, sketches_of
from .gate import NullBar
from .report import ErrorSink, Stages


class Gathered:
    """What the index needs of each article, gathered chunk by chunk (no bodies)."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {}
        self.published: list[np.ndarray] = []
        self.title_keys: list[np.ndarray] = []
        self.vectors: list = []  # arrays, or what Engine.embed returned until the engine finishes
        self.sketches: list[tuple[np.ndarray, np.ndarray]] = []
        self.newsroom: dict[str, list[np.ndarray]] = {name: [] for name in NEWSROOM}

    def add(self, articles: Sequence[Article], vectors: object, sketches: tuple[np.ndarray, np.ndarray]) -> None:
        columns, published, title_keys = columns_of(articles)
        for name, values in columns.items():
            self.columns.setdefault(name, []).extend(values)
        self.published.append(published)
        self.title_keys.append(title_keys)
        self.vectors.append(vectors)
        self.sketches.append(sketches)
        for name, values in newsroom_of(articles).items():
            self.newsroom[name].append(values if values is not None else np.full(
                len(articles), False if name == "do_not_recommend" else np.nan))

    def newsroom_arrays(self) -> dict[str, np.ndarray | None]:
        """The NEWSROOM arrays of every article gathered; None for a field none has."""
        out = {}
        for name, parts in self.newsroom.items():
            values = np.concatenate(parts) if parts else None
            empty = values is None or (not values.any() if values.dtype == bool else np.isnan(values).all())
            out[name] = None if empty else values
        return out

    def __len__(self) -> int:
        return len(self.columns.get("ids", ()))


def _vector_rows(rows: Iterable, column: str, last: list) -> Iterator:
    """Take each row's precomputed vector out of the row. ArticleReader turns exactly one
    row into one item before it asks for the next, so ``last`` (vector, row number)
    belongs to that item."""
    for number, row in rows:
        last[:] = [None if isinstance(row, RowError) else row.pop(column, None), number]
        yield number, row


def _as_vector(value: Any, dim: int | None) -> np.ndarray | str:
    """A row's vector as float32, or the reason it cannot be one."""
    if value is None:
        return "no vector in the vector column"
    try:
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        return f"the vector is not a list of numbers ({type(value).__name__})"
    if dim is not None and len(vector) != dim:
        return f"the vector has {len(vector)} numbers, earlier rows {dim}"
    if not len(vector):
        return "the vector is empty"
    if not np.isfinite(vector).all() or not vector.any():
        return "the vector has NaN, infinite or only zero values"
    return vector


def _decide_dimension(pending: list, vectors: list, rows: list, dim: list, errors: ErrorSink,
                      column: str) -> None:
    """The vector length most rows of the first chunk have decides (not the first row's:
    one odd row must not make every other row a "bad vector"); rows of any other length
    are reported and dropped from the chunk."""
    lengths = [len(v) for v in vectors]
    dim[0] = max(set(lengths), key=lengths.count) if lengths else None
    keep = [i for i, n in enumerate(lengths) if n == dim[0]]
    for i in sorted(set(range(len(lengths))) - set(keep)):
        errors.add(RowError(rows[i][0], rows[i][1], f"the vector has {lengths[i]} numbers, most rows {dim[0]}",
                            pending[i].id, column, kind="bad vector"))
    pending[:] = [pending[i] for i in keep]
    vectors[:] = [vectors[i] for i in keep]
    rows[:] = [rows[i] for i in keep]


def read_and_encode(sources: Sequence[Source], encoder: Encoder, cache: EmbeddingCache | None,
                    features: FeatureCache, terms: LexicalPass, stages: Stages, errors: ErrorSink, *,
                    vector_column: str | None, chunk_rows: int, vectors: np.ndarray | None = None,
                    folded: Folded | None = None, engine: Engine | None = None) -> tuple[Gathered, int, int]:
    """Stream every source, chunk by chunk: validate, then vectors from the cache (or
    the rows' ``vector_column``, or ``vectors``: one checked row per article, in order)
    and the model for what is missing, term counts and copy sketches. ``folded`` live
    updates win over the sources: their removed ids are skipped, and their added
    articles the sources lack come last, with their journaled vectors. Returns what
    was gathered, rows read and articles encoded. ``engine`` reads the sources and
    encodes (default: this process, chunk by chunk; see engine.py)."""
    engine = engine or LocalEngine()
    reader, table = ArticleReader(), Gathered()
    given = iter(vectors) if vectors is not None else None
    encoded = 0
    read_bar = stages.bar("read", "rows")
    encode_bar = stages.bar("encode", "articles", position=1)
    pending: list[Article] = []
    pending_vectors: list[np.ndarray] = []
    pending_rows: list[tuple[str, int]] = []  # (source, row) of each pending vector
    dim: list[int | None] = [None]
    encode_seconds = 0.0
    chunks = [0]
    started = time.perf_counter()

    def flush() -> None:
        nonlocal encoded, encode_seconds
        if vector_column is not None and dim[0] is None:
            _decide_dimension(pending, pending_vectors, pending_rows, dim, errors, vector_column)
        if not pending:
            return
        t0 = time.perf_counter()
        chunks[0] += 1
        if vector_column is not None or given is not None:
            vectors, fresh = normalise_rows(np.vstack(pending_vectors)), 0
        else:
            vectors, fresh = engine.embed(pending, encoder, cache)
        encoded += fresh
        terms.add(pending)
        table.add(pending, vectors, sketches_of(features, pending))
        encode_bar.update(len(pending))
        encode_bar.set_postfix_str(f"{encoded} encoded, {len(table) - encoded} reused")
        pending.clear()
        pending_vectors.clear()
        pending_rows.clear()
        encode_seconds += max(time.perf_counter() - t0, 1e-9)

    try:
        for source in sources:
            last: list = [None, 0]
            rows = engine.rows(source)
            if vector_column is not None:
                rows = _vector_rows(rows, vector_column, last)
            for item in reader.articles(source.name, rows):
                read_bar.update(1)
                if isinstance(item, RowError):
                    errors.add(item)
                    continue
                if folded is not None and item.id in folded.removed:
                    continue
                if vector_column is not None:
                    vector = _as_vector(last[0], dim[0])
                    if isinstance(vector, str):
                        errors.add(RowError(source.name, last[1], vector, item.id,
                                            vector_column, kind="bad vector"))
                        continue
                    pending_vectors.append(vector)
                    pending_rows.append((source.name, last[1]))
                elif given is not None:
                    pending_vectors.append(next(given))
                pending.append(item)
                if len(pending) >= chunk_rows:
                    flush()
        for article, vector in (folded.added.values() if folded is not None else ()):
            if article.id not in reader.first_seen:
                pending.append(article)
                if vector_column is not None or given is not None:
                    pending_vectors.append(vector)
                if len(pending) >= chunk_rows:
                    flush()
        flush()
    finally:
        read_bar.close()
        encode_bar.close()
    t0 = time.perf_counter()
    deferred = any(not isinstance(chunk, np.ndarray) for chunk in table.vectors)
    finish_bar = stages.bar(f"encode on {engine.name}", "articles", total=encoded) if deferred else NullBar()
    try:
        engine.finish(encoder, cache, finish_bar)  # what the engine deferred (Ray: the actor pool)
        table.vectors = [engine.vectors(chunk, cache) for chunk in table.vectors]
    finally:
        finish_bar.close()
    encode_seconds += time.perf_counter() - t0
    stages.add("read", time.perf_counter() - started - encode_seconds)
    stages.add("encode", encode_seconds)
    return table, reader.rows_read, encoded


