"""Files as sources: JSONL, CSV and Parquet (:class:`FileSource`, :func:`read_rows`),
the format told from the name, and paths, globs and folders expanded to files."""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..articles import MAX_BODY_CHARS
from ..errors import ConfigError
from .base import CHUNK_ROWS, Row, RowError, Source, SourceError, import_optional

# A row over this is refused with a row error: only the first MAX_BODY_CHARS of a body
# are used, and reading a 50 MB row cost ~760 MB of memory. A CSV field may hold a whole
# article body; Python's default limit is 128 KB.
MAX_ROW_BYTES = 8 * 2**20
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")  # where a line ends at a \r with no \n after it
JSONL_KEYS_SAMPLE = 1000  # rows read to check --map columns of a JSONL file
csv.field_size_limit(MAX_ROW_BYTES)

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
        elif fmt == "jsonl" and self.mapping:
            self._check_jsonl_keys()

    def _check_jsonl_keys(self) -> None:
        """JSONL has no header: a mapped column that none of the first rows has is
        taken for a typo (rows may leave out a field, but not all of the first ones)."""
        keys: dict[str, None] = {}
        with open(self.path, "rb") as f:
            for number, (_, row) in zip(range(JSONL_KEYS_SAMPLE), _read_jsonl(self.path, f)):
                if isinstance(row, dict):
                    keys.update(dict.fromkeys(row))
        if keys:
            self._check_columns(list(keys), sample=f"the first {JSONL_KEYS_SAMPLE} rows")

    @property
    def format(self) -> str:
        """The file's format: the one given, else told from the name."""
        return self.fmt or detect_format(self.path)

    def _rows(self) -> Iterator[Row]:
        self.check()
        fmt = self.format
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


def _read_jsonl(path: Path, file=None) -> Iterator[Row]:
    with open(path, "rb") if file is None else contextlib.nullcontext(file) as f:
        for number, raw in enumerate(f, start=1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # editors on Windows write one
            if raw.strip():
                yield number, jsonl_row(path, number, raw)


def jsonl_row(path: str | os.PathLike, number: int, raw: bytes) -> "dict | RowError":
    """Line ``number`` of a JSONL file (not blank) as a row, or the RowError saying why
    it is not one: what every reader of JSONL lines (this module's, the Ray engine's)
    makes of a line."""
    if len(raw) > MAX_ROW_BYTES:
        return _too_large(Path(path), number, len(raw))
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return RowError(str(path), number, f"not valid UTF-8 (byte offset {exc.start} "
                        "in the line); re-encode the file as UTF-8", kind="not UTF-8")
    except json.JSONDecodeError as exc:
        return RowError(str(path), number, f"not valid JSON ({exc.msg} at column {exc.colno})",
                        kind="not valid JSON")
    except RecursionError:
        return RowError(str(path), number, "JSON nested too deeply to read; an article row "
                        "is one flat object", kind="not valid JSON")
    if not isinstance(row, dict):
        return RowError(str(path), number, f"expected a JSON object, got {type(row).__name__}",
                        kind="not a JSON object")
    return row


def _too_large(path: Path, number: int, size: int) -> RowError:
    return RowError(str(path), number, f"the row is {size / 2**20:.1f} MB, over the {MAX_ROW_BYTES // 2**20} MB "
                    f"a row may hold (only the first {MAX_BODY_CHARS:,} characters of a body are used); "
                    "cut the body before exporting", kind="row too large")


def _read_csv(path: Path) -> Iterator[Row]:
    """CSV records with the physical lines they span. A quote left open swallows every
    later line into one field (or until some later quote closes it); such a record is
    reported with the line where it started and the lines after it are read again, so
    one bad quote costs one row, not the rest of the file."""
    with open(path, "rb") as f:
        lines = _Lines(f)
        try:
            header = next(csv.reader(lines), None)
        except csv.Error as exc:
            raise SourceError(f"{path}: line 1, the header, is not valid CSV ({exc}); fix it") from None
        if header is None:
            return
        number, records = 0, csv.reader(lines, strict=True)  # each next() starts a fresh record
        while True:
            start, offset = lines.number + 1, lines.offset
            try:
                values = next(records, None)
            except csv.Error as exc:
                values, problem = None, str(exc)
            else:
                if values is None:
                    return
                if not values:
                    continue  # a blank line
                problem = None if len(values) == len(header) or lines.number == start else "wrong field count"
            number += 1
            if problem is not None:
                yield number, (_too_large(path, number, lines.offset - offset) if "field limit" in problem
                               else _broken_record(path, number, start, lines.number, problem))
                lines.restart(start, offset)  # read again from the line after the record's first
                continue
            yield number, _csv_row(path, number, dict(zip(header, values)), len(values) - len(header))


def _broken_record(path: Path, number: int, start: int, end: int, problem: str) -> RowError:
    if end > start:
        return RowError(str(path), number, f"a quote opened on line {start} is not closed where the field "
                        f"ends: lines {start}-{end} were read as one record; lines after {start} are read "
                        "again. Close the quote (a quote inside a quoted field is written twice: \"\")",
                        kind="unclosed quote")
    return RowError(str(path), number, f"line {start} is not valid CSV ({problem}); quote a field that "
                    "holds quotes and write quotes inside it twice", kind="not valid CSV")


def _csv_row(path: Path, number: int, row: dict, extra: int) -> "dict | RowError":
    bad = [k for k, v in row.items() if _has_surrogates(v) or _has_surrogates(k)]
    if bad:
        return RowError(str(path), number, "not valid UTF-8; re-encode the file as UTF-8",
                        id=row.get("id"), field=bad[0], kind="not UTF-8")
    if extra > 0:
        return RowError(str(path), number, "more fields than the header names", kind="too many fields")
    return {k: v for k, v in row.items() if v != ""}


class _Lines:
    """A binary file's lines as text for :mod:`csv`, counted, and able to go back to a
    line. Lines end at \\n, \\r\\n or a lone \\r, as in universal-newline mode. Undecodable
    bytes are kept (surrogateescape) so each row reports its own."""

    def __init__(self, file) -> None:
        self.file, self.number, self.offset = file, 0, 0
        self.queue: list[bytes] = []
        self.bom = True

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        if self.queue:
            line = self.queue.pop(0)
        else:
            line = self.file.readline()
            if not line:
                raise StopIteration
            if self.bom:
                self.bom = False
                if line.startswith(codecs.BOM_UTF8):
                    line, self.offset = line[len(codecs.BOM_UTF8):], self.offset + len(codecs.BOM_UTF8)
            if b"\r" in line.rstrip(b"\r\n"):
                line, *self.queue = [piece for piece in _LONE_CR.split(line) if piece]
        self.number += 1
        self.offset += len(line)
        return line.decode("utf-8", errors="surrogateescape")

    def restart(self, start: int, offset: int) -> None:
        """Continue after line ``start``, which begins at byte ``offset``."""
        self.file.seek(offset)
        self.queue, self.number, self.offset = [], start - 1, offset
        next(self)


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
