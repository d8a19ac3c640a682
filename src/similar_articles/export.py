"""Every indexed article's box in one file, for sites that cache boxes in their CMS:
JSONL (one line per article: {"id", "box": [...]}, dates as ISO 8601 strings) or
Parquet (one row per box item: id, rank and the item's fields, dates as UTC
timestamps). The file appears by atomic rename, whole or not at all.

Boxes are ranked a batch at a time, on every core: worker processes forked from this
one (they share its loaded index) rank and encode batches, and this process writes
them in order. Both formats skip recommend_many's Recommendation objects where a box
was ranked as arrays (Recommender._ranked_blocks, items.block_columns): Parquet rows
go from numpy to Arrow in bulk (1.7x faster in one process, 1.3x on every core), JSON
lines from a dict an item (items.block_dicts), written by orjson when installed (the
``export`` extra: ~4x faster than the json module). The whole
file comes from one snapshot, even if the index is republished meanwhile
(Recommender.pinned).
"""

from __future__ import annotations

import functools
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from . import items, parallel
from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .items import Recommendation
    from .recommender import Recommender

FORMATS = ("jsonl", "parquet")


def _microseconds(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as whole microseconds, as datetime.fromtimestamp rounds them (the
    fraction to the nearest microsecond, half to even); NaN gives 0."""
    seconds = np.nan_to_num(seconds)
    whole = np.trunc(seconds)
    return whole.astype(np.int64) * 1_000_000 + np.rint((seconds - whole) * 1e6).astype(np.int64)


def format_of(path: Path) -> str:
    """The format a file name asks for: Parquet for .parquet or .pq, else JSONL."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "jsonl"


def write_boxes(rec: "Recommender", out: str | os.PathLike, *, fmt: str | None = None, k: int = 2,
                now: datetime | None = None, batch_size: int = 1024, processes: int | None = None,
                progress: bool | None = None) -> int:
    """Write the box of every live article of ``rec`` (in index order) to ``out``;
    returns how many boxes were written. ``fmt``: "jsonl" or "parquet" (default: from
    the file name); ``now``: the time the boxes are for (default: the clock when this
    starts); ``batch_size``: articles ranked and written together (memory ~ batch_size
    x 5 KB a process); ``processes``: worker processes (default: one per core; 1 keeps
    the work in this process); ``progress``: a progress bar (None: when stderr is a
    terminal)."""
    from tqdm.auto import tqdm

    out = Path(out)
    fmt = fmt or format_of(out)
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is invalid: give a positive number")
    if processes is not None and processes < 1:
        raise ConfigError(f"processes={processes} is invalid: give a positive number (1: no workers)")
    pinned = rec.pinned()
    positions = pinned._live_positions()  # ranked by position: no id lookups
    write = _ParquetRows if fmt == "parquet" else _JsonLines
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with write(staging) as writer, tqdm(total=len(positions), unit="article", desc="export",
                                            disable=None if progress is None else not progress) as bar:
            job = _Job(pinned, positions, writer.encode_boxes_of, k, now or datetime.now(timezone.utc))
            batches = [(start, min(start + batch_size, len(positions)))
                       for start in range(0, len(positions), batch_size)]
            for (start, stop), encoded in zip(batches, _encoded_batches(job, batches, processes)):
                writer.put(encoded)
                bar.update(stop - start)
        os.replace(staging, out)  # readers never see half a file
    finally:
        staging.unlink(missing_ok=True)
    return len(positions)


class _Job:
    """What ranking and encoding a batch needs; forked workers inherit it.
    ``encode_boxes_of(rec, positions, k, now, all_cores)``: the encoded boxes of the
    articles at ``positions``."""

    def __init__(self, rec: "Recommender", positions: np.ndarray, encode_boxes_of: Callable, k: int,
                 now: datetime):
        self.rec, self.positions, self.encode_boxes_of, self.k, self.now = rec, positions, encode_boxes_of, k, now

    def batch(self, start: int, stop: int, *, all_cores: bool) -> Any:
        return self.encode_boxes_of(self.rec, self.positions[start:stop], self.k, self.now, all_cores)


_job: _Job | None = None  # a worker's job, set as it starts


def _take_job(job: _Job) -> None:
    global _job
    _job = job


def _batch_on_worker(start: int, stop: int) -> Any:
    return _job.batch(start, stop, all_cores=False)  # the other cores run workers too


def _encoded_batches(job: _Job, batches: list[tuple[int, int]], processes: int | None) -> Iterator[Any]:
    """Each batch's encoded boxes, in order: from forked workers where there can be
    some, else made here."""
    if processes != 1 and len(batches) > 1:
        with parallel.forked("the export", "free memory, or export from a smaller process", _take_job, (job,),
                             processes) as pool:
            if pool is not None:
                # Held while the workers fork (at the first task), so that no thread
                # of this process is inside a call: a worker would inherit it locked.
                with job.rec._serving_lock():
                    encoded = parallel.in_order(pool, _batch_on_worker, batches, who="an export worker",
                                                here=functools.partial(job.batch, all_cores=True))
                yield from encoded
                return
    for start, stop in batches:
        yield job.batch(start, stop, all_cores=True)


def _json_value(value: Any) -> Any:
    """What the json module cannot write itself, as Recommendation.to_dict writes it:
    a Recommendation, and the datetime of an item from items.block_dicts."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, items.Recommendation):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _JsonLines:
    """A context manager for the file: encode(ids, boxes) makes their JSON lines (on
    any process), put(lines) appends them."""

    def __init__(self, path: Path):
        self._path = path
        try:
            import orjson
        except ImportError:
            orjson = None
        if orjson is not None:  # writes Recommendations, datetimes and tuples itself
            dumps = orjson.dumps
            self._lines: Callable[[Iterable], bytes] = lambda pairs: b"".join(
                dumps({"id": article_id, "box": box}) + b"\n" for article_id, box in pairs)
        else:  # one encoder for every line: json.dumps with options builds a new one per call
            encode = json.JSONEncoder(ensure_ascii=False, default=_json_value).encode
            self._lines = lambda pairs: "".join(
                encode({"id": article_id, "box": box}) + "\n" for article_id, box in pairs).encode("utf-8")

    def encode(self, ids: Sequence[str], boxes: Sequence[Sequence["Recommendation | dict"]]) -> bytes:
        """The JSON lines of ``boxes`` (of the articles ``ids``): items as
        Recommendations or as items.block_dicts makes them, written alike."""
        return self._lines(zip(ids, boxes))

    def encode_boxes_of(self, rec: "Recommender", positions: np.ndarray, k: int, now: datetime,
                        all_cores: bool) -> bytes:
        """The lines of the boxes of the articles at ``positions``, the same bytes as
        encode(their ids, recommend_many(their ids)): boxes ranked as arrays become
        dicts, not Recommendations (half a one-process JSONL export's time went to
        making those and to orjson reading their slots)."""
        make = functools.partial(items.boxes_in_order, made_by=items.block_dicts)
        blocks = rec._ranked_blocks(positions, k, make, now=now, all_cores=all_cores)
        return self.encode(rec._served.corpus.ids[positions].tolist(), [box for block in blocks for box in block])

    def put(self, lines: bytes) -> None:
        self._file.write(lines)

    def __enter__(self) -> "_JsonLines":
        self._file = open(self._path, "wb")
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


class _ParquetRows:
    """A context manager for the file: encode(ids, boxes) makes their rows as an Arrow
    table (on any process), put(table) appends it as a row group."""

    def __init__(self, path: Path):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("Parquet export needs pyarrow: pip install 'similar-articles[export]' "
                              "(or write a .jsonl file)") from None
        self._pa = pa
        # A fixed schema: a batch whose items all lack a URL or a date would otherwise
        # infer a null column and no longer match the file's first batch.
        self._schema = pa.schema([
            ("id", pa.string()), ("rank", pa.int64()), ("item_id", pa.string()), ("title", pa.string()),
            ("url", pa.string()), ("published_at", pa.timestamp("us", tz="UTC")), ("section", pa.string()),
            ("score", pa.float64()), ("similarity", pa.float64()), ("reasons", pa.list_(pa.string())),
            ("fallback", pa.bool_())])
        self._writer = pq.ParquetWriter(path, self._schema)

    def __enter__(self) -> "_ParquetRows":
        return self

    def put(self, table) -> None:
        self._writer.write_table(table)

    def encode(self, ids: Sequence[str], boxes: Sequence[Sequence["Recommendation"]]):
        """The rows of ``boxes`` (of the articles ``ids``) as a table."""
        rows = [(article_id, rank, item) for article_id, box in zip(ids, boxes)
                for rank, item in enumerate(box, start=1)]
        made = [item for _, _, item in rows]
        return self._pa.table({  # column by column, not a dict per row
            "id": [article_id for article_id, _, _ in rows], "rank": [rank for _, rank, _ in rows],
            "item_id": [i.id for i in made], "title": [i.title for i in made], "url": [i.url for i in made],
            "published_at": [i.published_at for i in made],
            "section": [i.section for i in made], "score": [i.score for i in made],
            "similarity": [i.similarity for i in made], "reasons": [list(i.reasons) for i in made],
            "fallback": [i.fallback for i in made]}, schema=self._schema)

    def encode_boxes_of(self, rec: "Recommender", positions: np.ndarray, k: int, now: datetime, all_cores: bool):
        """The rows of the boxes of the articles at ``positions``, the same as
        encode(their ids, recommend_many(their ids)): boxes ranked as arrays go from
        their columns to Arrow's without becoming Recommendation objects (~40% of a
        one-process Parquet export's time)."""
        return self._pa.concat_tables(rec._ranked_blocks(positions, k, self._block_table, now=now,
                                                         all_cores=all_cores))

    def _strings(self, column: np.ndarray):
        """A text column in Arrow: straight from numpy's StringDType where pyarrow
        reads it (~40 ns an item), else through Python strings (~250 ns)."""
        pa = self._pa
        try:
            return pa.array(column, pa.string())
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
            return pa.array(column.tolist(), pa.string())

    def _block_table(self, corpus, block: np.ndarray, ranked, now_ts: float, alone: dict[int, list]):
        pa = self._pa
        columns = items.block_columns(corpus, block, ranked, now_ts)
        flat, published = columns.positions, columns.published
        reason_codes: dict[tuple[str, ...], int] = {}  # a block repeats few distinct tuples
        codes = [reason_codes.setdefault(reasons, len(reason_codes)) for reasons in columns.reasons]
        reasons = pa.array(list(reason_codes), pa.list_(pa.string())).take(np.array(codes, dtype=np.int64))
        table = pa.table({
            "id": self._strings(corpus.ids[block[columns.rows]]), "rank": columns.ranks,
            "item_id": self._strings(corpus.ids[flat]), "title": self._strings(corpus.titles[flat]),
            "url": self._strings(corpus.urls[flat]),
            "published_at": pa.array(_microseconds(published), pa.timestamp("us", tz="UTC"),
                                     mask=np.isnan(published)),
            "section": pa.array(columns.sections, pa.string()), "score": columns.scores, "similarity": columns.similarities,
            "reasons": reasons, "fallback": np.zeros(len(flat), dtype=bool)}, schema=self._schema)
        if not alone:
            return table
        # Boxes ranked alone (the single path) join in their rows' places.
        alone_rows = sorted(alone)
        alone_table = self.encode(corpus.ids[block[alone_rows]].tolist(), [alone[row] for row in alone_rows])
        row_of = np.concatenate([columns.rows, np.repeat(alone_rows, [len(alone[row]) for row in alone_rows])])
        return pa.concat_tables([table, alone_table]).take(np.argsort(row_of, kind="stable"))

    def __exit__(self, *exc) -> None:
        self._writer.close()
