"""SQL databases as a source: a query or table through SQLAlchemy, streamed in chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

from ..errors import ConfigError
from .base import CHUNK_ROWS, Row, Source, SourceError, import_optional


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
        sa = import_optional("sqlalchemy", "sqlalchemy", "to read from SQL databases")
        try:
            return sa.engine.make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            raise ConfigError("--sql-url is not a database URL; write it like "
                              "sqlite:///archive.db or postgresql+psycopg2://user:pass@host/db") from None

    def _engine_now(self):
        if self._engine is None:
            sa = import_optional("sqlalchemy", "sqlalchemy", "to read from SQL databases")
            try:
                self._engine = sa.create_engine(self.url)
            except ModuleNotFoundError as exc:
                raise SourceError(f"{self.name}: the database driver is not installed ({exc.name}); "
                                  f"install it, e.g. pip install {_DRIVER_HINTS.get(exc.name, exc.name)}") from None
            except Exception as exc:
                raise SourceError(f"{self.name}: cannot use the URL ({exc})") from None
        return self._engine

    def _statement(self, connection):
        sa = import_optional("sqlalchemy", "sqlalchemy", "to read from SQL databases")
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
