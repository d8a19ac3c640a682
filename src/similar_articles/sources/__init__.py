"""Where article rows come from: files (JSONL, CSV, Parquet), pandas DataFrames and SQL
databases, read as a stream with row-level error reports.

Every source yields ``(row_number, row_dict)``; a row that cannot even be read (broken
JSON, bytes that are not UTF-8) is yielded as a :class:`RowError` in its place, so a bad
row never costs its good neighbours. A source that cannot be read at all (missing file,
unreachable database, unknown table) raises :class:`SourceError` instead.

Sources stream: Parquet in record batches, SQL through a server-side cursor in chunks,
DataFrames in slices, so an archive of a million rows is never held as Python objects.
Optional libraries (pyarrow, pandas, SQLAlchemy) are imported only when used.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..articles import Article
from ..errors import ConfigError
from .base import (CHUNK_ROWS, UNREADABLE_KINDS, ArticleReader, Row, RowError, Source, SourceError, collect_articles,
                   parse_mapping)
from .files import FORMATS, SUFFIXES, FileSource, detect_format, expand_paths, jsonl_row, read_rows
from .memory import DataFrameSource, RowsSource
from .sql import SqlSource

__all__ = [
    "CHUNK_ROWS", "UNREADABLE_KINDS", "FORMATS", "SUFFIXES", "Row", "RowError", "SourceError", "Source", "parse_mapping",
    "ArticleReader", "collect_articles", "FileSource", "detect_format", "expand_paths", "jsonl_row", "read_rows",
    "DataFrameSource", "RowsSource", "SqlSource", "as_sources",
]


def as_sources(spec: Any, *, fmt: str | None = None, mapping: Mapping[str, str] | None = None) -> list[Source]:
    """Sources from what a caller has at hand: a Source, a path, a glob, a folder, a
    DataFrame, a list of dict rows, or a list mixing these."""
    if isinstance(spec, Source):
        return [spec]
    if isinstance(spec, (str, os.PathLike)):
        return [FileSource(p, fmt=fmt, mapping=mapping) for p in expand_paths([spec])]
    if _is_dataframe(spec):
        return [DataFrameSource(spec, mapping=mapping)]
    if isinstance(spec, Mapping):
        raise ConfigError("sources must be paths, Source objects, a DataFrame or a list of rows, "
                          "not a single row; wrap it in a list")
    items = list(spec)
    if items and all(isinstance(i, (Mapping, Article)) for i in items):
        return [RowsSource(items, mapping=mapping)]
    sources: list[Source] = []
    for item in items:
        sources.extend(as_sources(item, fmt=fmt, mapping=mapping))
    return sources


def _is_dataframe(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "iloc")
