"""Readers that turn files into article rows, reporting bad rows instead of failing.

Every reader yields ``(row_number, row_dict)``; a row that cannot even be read (broken
JSON, bytes that are not UTF-8) is yielded as a :class:`RowError` in its place, so a bad
row never costs its good neighbours.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .articles import Article
from .errors import InvalidArticleError, SimilarArticlesError

# A CSV field may hold a whole article body; Python's default limit is 128 KB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

FORMATS = ("jsonl", "csv")


@dataclass(frozen=True)
class RowError:
    """A row skipped, with where it was and why."""

    source: str
    row: int
    reason: str
    id: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        ident = f" (id {self.id!r})" if self.id else ""
        return f"{self.source}, row {self.row}{ident}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SourceError(SimilarArticlesError):
    """A source cannot be read at all (missing file, unknown format)."""


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if ".jsonl" in suffixes or ".ndjson" in suffixes or ".json" in suffixes:
        return "jsonl"
    if ".csv" in suffixes:
        return "csv"
    raise SourceError(f"{path}: cannot tell the format from the name; use a .jsonl or .csv file "
                      f"or pass the format explicitly ({', '.join(FORMATS)})")


def read_rows(path: str | os.PathLike, *, fmt: str | None = None) -> Iterator[tuple[int, dict | RowError]]:
    """Yield ``(row_number, row)`` from a JSONL or CSV file (row numbers start at 1)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        yield from _read_jsonl(path)
    elif fmt == "csv":
        yield from _read_csv(path)
    else:
        raise SourceError(f"{path}: unknown format {fmt!r}; use one of {FORMATS}")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict | RowError]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield number, RowError(str(path), number, f"not valid UTF-8 (byte offset {exc.start} "
                                       "in the line); re-encode the file as UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield number, RowError(str(path), number, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                yield number, RowError(str(path), number, f"expected a JSON object, got {type(row).__name__}")
                continue
            yield number, row


def _read_csv(path: Path) -> Iterator[tuple[int, dict | RowError]]:
    # surrogateescape keeps undecodable bytes visible per field instead of failing the file.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        for number, row in enumerate(reader, start=1):
            bad = [k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                yield number, RowError(str(path), number, "not valid UTF-8; re-encode the file as UTF-8",
                                       id=row.get("id"), field=bad[0])
                continue
            if None in row:
                yield number, RowError(str(path), number, "more fields than the header names")
                continue
            yield number, {k: v for k, v in row.items() if v != ""}


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def collect_articles(rows: Iterable[tuple[int, dict | RowError]], *, source: str
                     ) -> tuple[list[Article], list[RowError]]:
    """Validate rows into Articles; bad rows and repeated ids become RowErrors.

    The first row with an id wins; a later one with the same id is reported.
    """
    articles: list[Article] = []
    errors: list[RowError] = []
    first_row: dict[str, int] = {}
    for number, row in rows:
        if isinstance(row, RowError):
            errors.append(row)
            continue
        try:
            article = Article.from_row(row, row_number=number, source=source)
        except InvalidArticleError as exc:
            errors.append(RowError(source, number, exc.reason, exc.article_id, exc.field))
            continue
        if article.id in first_row:
            errors.append(RowError(source, number, f"duplicate id (first at row {first_row[article.id]}); "
                                   "kept the first", article.id, "id"))
            continue
        first_row[article.id] = number
        articles.append(article)
    return articles, errors
