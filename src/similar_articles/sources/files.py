"""Files as sources: JSONL, CSV and Parquet (:class:`FileSource`, :func:`read_rows`),
the format told from the name, and paths, globs and folders expanded to files."""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..errors import ConfigError
from .base import CHUNK_ROWS, Row, RowError, Source, SourceError, import_optional

# A CSV field may hold a whole article body; Python's default limit is 128 KB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

FORMATS = ("jsonl", "csv", "parquet")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
            ".parquet": "parquet", ".pq": "parquet"}


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
    pq = import_optional("pyarrow.parquet", "pyarrow", "to read Parquet files")
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
