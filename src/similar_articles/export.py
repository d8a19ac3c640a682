"""Every indexed article's box in one file, for sites that cache boxes in their CMS:
JSONL (one line per article: {"id", "box": [...]}, dates as ISO 8601 strings) or
Parquet (one row per box item: id, rank and the item's fields, dates as UTC
timestamps). The file appears by atomic rename, whole or not at all.

Boxes come from recommend_many a batch at a time; writing them costs a good part of
the time (on this project's 2-core VM ~10 us an article for JSON lines by orjson,
~30 us for Parquet rows, against ~20 us for the boxes). orjson is used when installed
(the ``export`` extra): ~4x faster than the json module, and it reads the
Recommendation dataclasses directly.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .items import Recommendation
    from .recommender import Recommender

FORMATS = ("jsonl", "parquet")


def format_of(path: Path) -> str:
    """The format a file name asks for: Parquet for .parquet or .pq, else JSONL."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "jsonl"


def write_boxes(rec: "Recommender", out: str | os.PathLike, *, fmt: str | None = None, k: int = 2,
                now: datetime | None = None, batch_size: int = 1024, progress: bool | None = None) -> int:
    """Write the box of every live article of ``rec`` (in index order) to ``out``;
    returns how many boxes were written. ``fmt``: "jsonl" or "parquet" (default: from
    the file name); ``now``: the time the boxes are for (default: the clock when this
    starts); ``batch_size``: articles ranked and written together (memory ~ batch_size
    x 5 KB); ``progress``: a progress bar (None: when stderr is a terminal)."""
    from tqdm.auto import tqdm

    out = Path(out)
    fmt = fmt or format_of(out)
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is invalid: give a positive number")
    ids = rec.ids()
    now = now or datetime.now(timezone.utc)
    write = _ParquetRows if fmt == "parquet" else _JsonLines
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with write(staging) as put, tqdm(total=len(ids), unit="article", desc="export",
                                         disable=None if progress is None else not progress) as bar:
            for start in range(0, len(ids), batch_size):
                part = ids[start:start + batch_size]
                put(part, rec.recommend_many(part, k, now=now))
                bar.update(len(part))
        os.replace(staging, out)  # readers never see half a file
    finally:
        staging.unlink(missing_ok=True)
    return len(ids)


Put = Callable[[Sequence[str], Sequence[Sequence["Recommendation"]]], None]


class _JsonLines:
    """A context manager giving put(ids, boxes), which appends their JSON lines."""

    def __init__(self, path: Path):
        self._path = path
        try:
            import orjson
        except ImportError:
            orjson = None
        if orjson is not None:
            dumps = orjson.dumps
            self._lines: Callable[[Iterable], bytes] = lambda pairs: b"".join(
                dumps({"id": article_id, "box": box}) + b"\n" for article_id, box in pairs)
        else:  # one encoder for every line: json.dumps with options builds a new one per call
            encode = json.JSONEncoder(ensure_ascii=False).encode
            self._lines = lambda pairs: "".join(
                encode({"id": article_id, "box": [r.to_dict() for r in box]}) + "\n"
                for article_id, box in pairs).encode("utf-8")

    def __enter__(self) -> Put:
        self._file = open(self._path, "wb")
        return lambda ids, boxes: self._file.write(self._lines(zip(ids, boxes)))

    def __exit__(self, *exc) -> None:
        self._file.close()


class _ParquetRows:
    """A context manager giving put(ids, boxes), which appends one row group."""

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

    def __enter__(self) -> Put:
        return self._put

    def _put(self, ids: Sequence[str], boxes: Sequence[Sequence["Recommendation"]]) -> None:
        rows = [(article_id, rank, item) for article_id, box in zip(ids, boxes)
                for rank, item in enumerate(box, start=1)]
        items = [item for _, _, item in rows]
        self._writer.write_table(self._pa.table({  # column by column, not a dict per row
            "id": [article_id for article_id, _, _ in rows], "rank": [rank for _, rank, _ in rows],
            "item_id": [i.id for i in items], "title": [i.title for i in items], "url": [i.url for i in items],
            "published_at": [i.published_at for i in items],
            "section": [i.section for i in items], "score": [i.score for i in items],
            "similarity": [i.similarity for i in items], "reasons": [list(i.reasons) for i in items],
            "fallback": [i.fallback for i in items]}, schema=self._schema))

    def __exit__(self, *exc) -> None:
        self._writer.close()
