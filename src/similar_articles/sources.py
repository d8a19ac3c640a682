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

import csv
import glob
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .articles import FIELD_ALIASES, Article
from .errors import ConfigError, InvalidArticleError, SimilarArticlesError

# A CSV field may hold a whole article body; Python's default limit is 128 KB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

FORMATS = ("jsonl", "csv", "parquet")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
            ".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 1000

Row = tuple[int, "dict | RowError"]


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
        mapping = self.mapping
        for number, row in self._rows():
            if mapping and not isinstance(row, RowError):
                for field, column in mapping.items():
                    if column in row:
                        row[field] = row.pop(column)
            yield number, row

    def _rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def _check_columns(self, columns: Sequence[str]) -> None:
        """A mapped column the source does not have is a usage error, said at once."""
        missing = [f"{field}={column}" for field, column in self.mapping.items() if column not in columns]
        if missing:
            raise SourceError(f"{self.name}: no column for --map {', '.join(missing)}; "
                              f"its columns are {', '.join(map(str, columns))}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# ------------------------------------------------------------------ files
def detect_format(path: Path) -> str:
    for suffix in reversed([s.lower() for s in path.suffixes]):
        if suffix in SUFFIXES:
            return SUFFIXES[suffix]
    raise SourceError(f"{path}: cannot tell the format from the name; use a .jsonl, .csv or "
                      f".parquet file or pass the format explicitly ({', '.join(FORMATS)})")


class FileSource(Source):
    """One JSONL, CSV or Parquet file; the format comes from the name unless given."""

    def __init__(self, path: str | os.PathLike, *, fmt: str | None = None,
                 mapping: Mapping[str, str] | None = None, batch_rows: int = CHUNK_ROWS):
        super().__init__(mapping=mapping)
        self.path = Path(path)
        self.name = str(self.path)
        if fmt is not None and fmt not in FORMATS:
            raise ConfigError(f"format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.batch_rows = batch_rows

    def check(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such file")
        fmt = self.fmt or detect_format(self.path)
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"{self.path}: not readable (permission denied)")
        if fmt == "parquet":
            self._check_columns(_parquet_file(self.path).schema_arrow.names)
        elif fmt == "csv" and self.mapping:
            with open(self.path, encoding="utf-8-sig", errors="replace", newline="") as f:
                self._check_columns(next(csv.reader(f), []))

    def _rows(self) -> Iterator[Row]:
        self.check()
        fmt = self.fmt or detect_format(self.path)
        reader = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": self._read_parquet}[fmt]
        yield from reader(self.path)

    def _read_parquet(self, path: Path) -> Iterator[Row]:
        number = 0
        try:
            for batch in _parquet_file(path).iter_batches(batch_size=self.batch_rows):
                for row in batch.to_pylist():
                    number += 1
                    yield number, row
        except SourceError:
            raise
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise SourceError(f"{path}: cannot read Parquet after row {number} ({exc})") from None


def read_rows(path: str | os.PathLike, *, fmt: str | None = None) -> Iterator[Row]:
    """Yield ``(row_number, row)`` from a JSONL, CSV or Parquet file (row numbers start at 1)."""
    return FileSource(path, fmt=fmt).rows()


def _read_jsonl(path: Path) -> Iterator[Row]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield number, RowError(str(path), number, f"not valid UTF-8 (byte offset {exc.start} "
                                       "in the line); re-encode the file as UTF-8", kind="not UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield number, RowError(str(path), number, f"not valid JSON ({exc.msg} at column {exc.colno})",
                                       kind="not valid JSON")
                continue
            if not isinstance(row, dict):
                yield number, RowError(str(path), number, f"expected a JSON object, got {type(row).__name__}",
                                       kind="not a JSON object")
                continue
            yield number, row


def _read_csv(path: Path) -> Iterator[Row]:
    # surrogateescape keeps undecodable bytes visible per field instead of failing the file.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        for number, row in enumerate(reader, start=1):
            bad = [k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                yield number, RowError(str(path), number, "not valid UTF-8; re-encode the file as UTF-8",
                                       id=row.get("id"), field=bad[0], kind="not UTF-8")
                continue
            if None in row:
                yield number, RowError(str(path), number, "more fields than the header names",
                                       kind="too many fields")
                continue
            yield number, {k: v for k, v in row.items() if v != ""}


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parquet_file(path: Path):
    pq = _import("pyarrow.parquet", "pyarrow", "to read Parquet files")
    try:
        # pre_buffer=False: with it, the reader keeps every column chunk it has read
        # until the file is closed (364 MB after 100k rows with a vector column).
        return pq.ParquetFile(path, pre_buffer=False)
    except Exception as exc:
        raise SourceError(f"{path}: not a readable Parquet file ({exc})") from None


def expand_paths(patterns: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by paths, glob patterns (``exports/*.parquet``) or folders (every
    .jsonl, .csv and .parquet file inside), sorted within each pattern. A pattern that
    matches nothing is an error: a nightly job must not quietly index half its archive."""
    found: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        path = Path(text)
        if glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise SourceError(f"{text}: the pattern matches no files")
            found.extend(matches)
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not matches:
                raise SourceError(f"{path}: the folder holds no .jsonl, .csv or .parquet files")
            found.extend(matches)
        else:
            found.append(path)
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------ in memory
class DataFrameSource(Source):
    """A pandas DataFrame, read in slices; NaN and NaT become missing values."""

    def __init__(self, frame, *, name: str = "dataframe", mapping: Mapping[str, str] | None = None,
                 chunk_rows: int = CHUNK_ROWS):
        super().__init__(mapping=mapping)
        self.frame, self.name, self.chunk_rows = frame, name, chunk_rows

    def check(self) -> None:
        self._check_columns([str(c) for c in self.frame.columns])

    def _rows(self) -> Iterator[Row]:
        self.check()
        frame = self.frame
        number = 0
        for start in range(0, len(frame), self.chunk_rows):
            part = frame.iloc[start:start + self.chunk_rows]
            part = part.astype(object).where(part.notna(), None)  # NaT would pass as a datetime
            for row in part.to_dict("records"):
                number += 1
                yield number, {str(k): v for k, v in row.items()}


class RowsSource(Source):
    """Dicts (or Articles) already in memory, e.g. from an API client."""

    def __init__(self, rows: Iterable[Mapping[str, Any] | Article], *, name: str = "rows",
                 mapping: Mapping[str, str] | None = None):
        super().__init__(mapping=mapping)
        self._items, self.name = rows, name

    def _rows(self) -> Iterator[Row]:
        for number, row in enumerate(self._items, start=1):
            if isinstance(row, Article):
                row = {**row.to_metadata(), "body": row.body, "tags": list(row.tags)}
            yield number, dict(row) if isinstance(row, Mapping) else row


# ------------------------------------------------------------------ SQL
class SqlSource(Source):
    """Rows of a SQL query or table through SQLAlchemy, streamed in chunks.

    url: any SQLAlchemy URL, e.g. ``sqlite:///archive.db``,
        ``postgresql+psycopg2://user:pass@host/db``, ``mysql+pymysql://user:pass@host/db``.
    query / table: exactly one; a table may be qualified (``schema.table``).
    chunk_rows: rows fetched per round trip; the driver keeps at most about this many.
    """

    def __init__(self, url: str, *, query: str | None = None, table: str | None = None,
                 mapping: Mapping[str, str] | None = None, chunk_rows: int = CHUNK_ROWS):
        super().__init__(mapping=mapping)
        if (query is None) == (table is None):
            raise ConfigError("a SQL source needs exactly one of --query and --table")
        self.url, self.query, self.table, self.chunk_rows = url, query, table, chunk_rows
        self._engine = None
        self.name = f"sql:{self._safe_url()} " + (f"table {table}" if table else "query")

    def _safe_url(self) -> str:
        sa = _import("sqlalchemy", "sqlalchemy", "to read from SQL databases")
        try:
            return sa.engine.make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            raise ConfigError("--sql-url is not a database URL; write it like "
                              "sqlite:///archive.db or postgresql+psycopg2://user:pass@host/db") from None

    def _engine_now(self):
        if self._engine is None:
            sa = _import("sqlalchemy", "sqlalchemy", "to read from SQL databases")
            try:
                self._engine = sa.create_engine(self.url)
            except ModuleNotFoundError as exc:
                raise SourceError(f"{self.name}: the database driver is not installed ({exc.name}); "
                                  f"install it, e.g. pip install {_DRIVER_HINTS.get(exc.name, exc.name)}") from None
            except Exception as exc:
                raise SourceError(f"{self.name}: cannot use the URL ({exc})") from None
        return self._engine

    def _statement(self, connection):
        sa = _import("sqlalchemy", "sqlalchemy", "to read from SQL databases")
        if self.query is not None:
            return sa.text(self.query)
        schema, _, name = self.table.rpartition(".")
        try:
            table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=connection)
        except sa.exc.NoSuchTableError:
            raise SourceError(f"{self.name}: no table {self.table!r} in the database") from None
        self._check_columns([c.name for c in table.columns])
        return sa.select(table)

    def check(self) -> None:
        with self._connect() as connection:
            if self.table is not None:
                self._statement(connection)

    def _connect(self):
        engine = self._engine_now()
        database = engine.url.database
        if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:" \
                and not database.startswith("file:") and not Path(database).is_file():
            # SQLite would create an empty file and then find no table in it.
            raise SourceError(f"{self.name}: no such database file {database}")
        try:
            return engine.connect()
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{self.name}: cannot connect ({_first_line(exc)})") from None

    def _rows(self) -> Iterator[Row]:
        number = 0
        with self._connect() as connection:
            try:
                # yield_per streams: a server-side cursor on PostgreSQL and MySQL,
                # fetchmany() elsewhere, so only about chunk_rows rows are in memory.
                result = connection.execution_options(yield_per=self.chunk_rows).execute(
                    self._statement(connection))
                self._check_columns(list(result.keys()))
                for part in result.mappings().partitions():
                    for row in part:
                        number += 1
                        yield number, dict(row)
            except SourceError:
                raise
            except Exception as exc:
                where = f"after row {number}" if number else "running the query"
                raise SourceError(f"{self.name}: failed {where} ({_first_line(exc)})") from None
        self.close()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


_DRIVER_HINTS = {"psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'", "pymysql": "pymysql",
                 "MySQLdb": "mysqlclient", "cx_Oracle": "oracledb", "pyodbc": "pyodbc"}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _import(module: str, package: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SourceError(f"{package} is needed {purpose}: pip install {package} "
                          "(or pip install 'similar-articles[batch]')") from None


# ------------------------------------------------------------------ any of the above
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
