"""The row contract every source shares: ``(row_number, row)`` pairs, :class:`RowError`
for a row that cannot be read, :class:`SourceError` for a source that cannot be read at
all, the ``--map`` column mapping, the :class:`Source` base class, and the validation of
rows into Articles (:class:`ArticleReader`, :func:`collect_articles`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..articles import FIELD_ALIASES, Article
from ..errors import ConfigError, InvalidArticleError, SimilarArticlesError

CHUNK_ROWS = 1000

Row = tuple[int, "dict | RowError"]
# RowError kinds of rows a reader could not parse at all (as opposed to rows read but
# invalid as articles): the build's gate limits their share (max_unreadable_share).
UNREADABLE_KINDS = frozenset({"unclosed quote", "not valid CSV", "not valid JSON", "not UTF-8",
                              "not a JSON object", "too many fields", "row too large"})


@dataclass(frozen=True)
class RowError:
    """A row skipped, with where it was and why. ``kind`` groups reasons in summaries."""

    source: str
    row: int
    reason: str
    id: str | None = None
    field: str | None = None
    kind: str | None = None

    def __str__(self) -> str:
        ident = f" (id {self.id!r})" if self.id else ""
        return f"{self.source}, row {self.row}{ident}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary_key(self) -> str:
        """A short label shared by rows skipped for the same reason."""
        if self.kind:
            return self.kind
        return f"invalid {self.field}" if self.field else "invalid row"


class SourceError(SimilarArticlesError):
    """A source cannot be read at all (missing file, unknown format, database error)."""


# ------------------------------------------------------------------ column mapping
def parse_mapping(items: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["body=article_text", ...]`` or ``{"body": "article_text"}`` -> field -> column.

    The field is one of the canonical article fields; the column is the source's name.
    """
    if not items:
        return {}
    pairs = list(items.items()) if isinstance(items, Mapping) else []
    if not isinstance(items, Mapping):
        for item in items:
            field, sep, column = str(item).partition("=")
            if not sep or not field.strip() or not column.strip():
                raise ConfigError(f"--map {item!r} is invalid: write FIELD=COLUMN, e.g. body=article_text")
            pairs.append((field.strip(), column.strip()))
    mapping: dict[str, str] = {}
    for field, column in pairs:
        if field not in FIELD_ALIASES:
            raise ConfigError(f"--map {field}={column}: {field!r} is not an article field; "
                              f"map one of {', '.join(FIELD_ALIASES)}")
        if field in mapping:
            raise ConfigError(f"--map names the field {field!r} twice; give one column per field")
        mapping[field] = column
    return mapping


class Source:
    """A stream of article rows. Subclasses implement :meth:`_rows` and may override
    :meth:`check` to fail fast (before hours of encoding) when the source is unreadable.

    mapping: canonical field -> source column (``{"body": "article_text"}``).
    """

    name: str = "rows"

    def __init__(self, *, mapping: Mapping[str, str] | None = None):
        self.mapping = parse_mapping(mapping)

    def check(self) -> None:
        """Raise SourceError now if the source cannot be read at all."""

    def rows(self) -> Iterator[Row]:
        return self.mapped(self._rows())

    def mapped(self, rows: Iterable[Row]) -> Iterator[Row]:
        """``rows`` with the ``mapping`` applied: what :meth:`rows` yields, for rows read
        by someone else (the Ray engine reads file shards with Ray Data)."""
        mapping = self.mapping
        for number, row in rows:
            if mapping and not isinstance(row, RowError):
                for field, column in mapping.items():
                    if column in row:
                        row[field] = row.pop(column)
            yield number, row

    def _rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def _check_columns(self, columns: Sequence[str], *, sample: str | None = None) -> None:
        """A mapped column the source does not have is a usage error, said at once."""
        missing = [f"{field}={column}" for field, column in self.mapping.items() if column not in columns]
        if missing:
            found_in = f" (in {sample})" if sample else ""
            raise SourceError(f"{self.name}: no column for --map {', '.join(missing)}; its columns{found_in} "
                              f"are {', '.join(map(str, columns))}; fix the column name")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# ------------------------------------------------------------------ optional libraries
def import_optional(module: str, package: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SourceError(f"{package} is needed {purpose}: pip install {package} "
                          "(or pip install 'similar-articles[batch]')") from None


# ------------------------------------------------------------------ rows -> Articles
class ArticleReader:
    """Validates rows from many sources into Articles, in order, across all sources.

    Bad rows and repeated ids become RowErrors (the first row with an id wins), so a
    caller can stream: it only ever holds one Article at a time.
    """

    def __init__(self) -> None:
        self.first_seen: dict[str, tuple[str, int]] = {}
        self.rows_read = 0

    def articles(self, source: str, rows: Iterable[Row]) -> Iterator[Article | RowError]:
        for number, row in rows:
            self.rows_read += 1
            if isinstance(row, RowError):
                yield row
                continue
            try:
                article = Article.from_row(row, row_number=number, source=source)
            except InvalidArticleError as exc:
                yield RowError(source, number, exc.reason, exc.article_id, exc.field)
                continue
            first = self.first_seen.get(article.id)
            if first is not None:
                where = f"row {first[1]}" if first[0] == source else f"{first[0]}, row {first[1]}"
                yield RowError(source, number, f"duplicate id (first at {where}); kept the first",
                               article.id, "id", kind="duplicate id")
                continue
            self.first_seen[article.id] = (source, number)
            yield article


def collect_articles(rows: Iterable[Row], *, source: str) -> tuple[list[Article], list[RowError]]:
    """Validate rows into Articles; bad rows and repeated ids become RowErrors.

    The first row with an id wins; a later one with the same id is reported.
    """
    articles: list[Article] = []
    errors: list[RowError] = []
    for item in ArticleReader().articles(source, rows):
        (errors if isinstance(item, RowError) else articles).append(item)
    return articles, errors
