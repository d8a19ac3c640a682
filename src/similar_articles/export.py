"""Every indexed article's box, for sites that cache boxes in their CMS or serve files:
one JSONL file (a line per article: {"id", "box": [...]}, dates as ISO 8601 strings),
one Parquet file (a row per box item: id, rank and the item's fields, dates as UTC
timestamps), each appearing by atomic rename, whole or not at all; or a folder with
one JSON file a box (``write_box_files``), for a CDN or PHP to read.

Boxes come from ``recommend_many`` (the one ranking path), a batch at a time, on every
core: worker processes forked from this one share its loaded index, rank and encode
batches, and this process writes them in order. The whole file comes from one snapshot,
even if the index is republished meanwhile (Recommender.pinned).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

from . import parallel
from .boxrules import DEFAULT_K
from .changes import CHANGES_FILE, read_changes
from .config import Config
from .errors import ConfigError
from .recommender import Recommender
from .results import Recommendation

FORMATS = ("jsonl", "parquet")
EXPORT_MARK = ".similar-articles-export.json"  # in a per-article folder: what it was last made from


def format_of(path: Path) -> str:
    """The format a file name asks for: Parquet for .parquet or .pq, else JSONL."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "jsonl"


def write_boxes(rec: Recommender, out: str | os.PathLike, *, fmt: str | None = None, k: int | None = None,
                now: datetime | None = None, batch_size: int = 1024, processes: int | None = None,
                progress: bool | None = None) -> int:
    """Write the box of every live article of ``rec`` (in index order) to ``out``;
    returns how many boxes were written. ``fmt``: "jsonl" or "parquet" (default: from
    the file name); ``now``: the time the boxes are for (default: the clock when this
    starts); ``batch_size``: articles ranked and written together (memory ~ batch_size
    x 100 KB a process); ``processes``: worker processes (default: one per core; 1 keeps
    the work in this process); ``progress``: a progress bar (None: when stderr is a
    terminal)."""
    out = Path(out)
    fmt = fmt or format_of(out)
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    _check_batching(batch_size, processes)
    pinned = rec.pinned()
    ids = pinned.ids()
    writer = _ParquetRows if fmt == "parquet" else _JsonLines
    out.parent.mkdir(parents=True, exist_ok=True)
    # A staging file of its own (two exports to one path, even from one process, never
    # share one), renamed over ``out`` only when whole.
    fd, staging_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    staging = Path(staging_name)
    try:
        with writer(staging) as file:
            for encoded in _encoded(pinned, ids, file.encode, k, now, batch_size, processes, progress):
                file.put(encoded)
        os.chmod(staging, 0o644)  # mkstemp's file is private; a web server or PHP reads this one
        os.replace(staging, out)  # readers never see half a file
    finally:
        staging.unlink(missing_ok=True)
    return len(ids)


def write_box_files(rec: Recommender, folder: str | os.PathLike, *, k: int | None = None, now: datetime | None = None,
                    batch_size: int = 1024, processes: int | None = None, progress: bool | None = None,
                    changed: bool = False) -> dict[str, int]:
    """One JSON file a box, ``folder/<id>.json`` (the id percent-encoded, as PHP's
    ``rawurlencode`` does), for a CDN or PHP to read. Each file is replaced atomically,
    and only when its box changed, so a rerun touches (and a CDN purges) only those;
    files of articles no longer in the index are deleted. Returns the counts: boxes
    (ranked), written, unchanged, deleted, and changed_only (1 when only the changed
    boxes were ranked).

    changed: rank only the boxes the live updates since this folder's last export
        changed, as INDEX/changes.jsonl lists them (docs/changes.md). Every box is
        ranked instead when that cannot be known: a first export, a new snapshot,
        another k or other settings than the index's, a policy's k with ``k`` None, or
        an update or rules edit made by a process that did not track changes.
    """
    _check_batching(batch_size, processes)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = rec.root
    pinned = rec.pinned()
    state = pinned.state
    mark = {"snapshot": state.manifest.get("version"), "live_update": state.journal_seq,
            "k": DEFAULT_K if k is None else k, "settings": pinned.config.ranking.changed_from_defaults(),
            "rules": state.rules.version}
    # Changes are tracked for boxes of one size: a policy's own k makes others.
    tracked = changed and (k is not None or not any("k" in p for p in state.rules.policies.values()))
    only = _changed_since(root, folder / EXPORT_MARK, mark, state.manifest) if tracked else None
    ids = pinned.ids() if only is None else [i for i in pinned.ids() if i in only[0]]
    counts = {"boxes": len(ids), "written": 0, "unchanged": 0, "deleted": 0, "changed_only": int(only is not None)}
    for files in _encoded(pinned, ids, _box_files, k, now, batch_size, processes, progress):
        for name, data in files:
            path = folder / name
            try:
                if path.read_bytes() == data:
                    counts["unchanged"] += 1
                    continue
            except FileNotFoundError:
                pass
            _replace(path, data)
            counts["written"] += 1
    if only is None:
        wanted = {box_file_name(i) for i in ids}
        gone = [path for path in folder.glob("*.json") if path.name not in wanted and path.name != EXPORT_MARK]
    else:
        gone = [folder / box_file_name(i) for i in only[1] if i not in pinned]
    for path in gone:
        if path.exists():
            path.unlink(missing_ok=True)
            counts["deleted"] += 1
    _replace(folder / EXPORT_MARK, json.dumps(mark).encode("utf-8"))
    return counts


def _changed_since(root: Path | None, mark_path: Path, mark: dict, manifest: dict) -> tuple[set, set] | None:
    """(ids to rank, ids whose files go) since the export recorded at ``mark_path``,
    or None when every box must be ranked (see write_box_files)."""
    try:
        last = json.loads(mark_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    own = Config.from_dict(manifest.get("config") or {}).ranking.changed_from_defaults()
    if root is None or mark["settings"] != own or any(last.get(key) != mark[key] for key in ("snapshot", "k", "settings")) \
            or int(last.get("rules", 0)) > mark["rules"]:  # the rules file was replaced by an older one
        return None
    return read_changes(root / CHANGES_FILE, int(last["live_update"]), mark["live_update"], mark["snapshot"], mark["k"],
                        (int(last.get("rules", 0)), mark["rules"]))


def _replace(path: Path, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def box_file_name(article_id: str) -> str:
    """The file of an article's box: its id percent-encoded (no ``/``, no ``..``)."""
    name = quote(article_id, safe="") + ".json"
    if len(name.encode()) > 255 or name.startswith("."):
        raise ConfigError(f"article id {article_id[:60]!r} cannot be a file name (too long or starting with a dot); "
                          "export a JSONL or Parquet file instead")
    return name


def _box_files(ids: Sequence[str], boxes: Sequence[Sequence[Recommendation]]) -> list[tuple[str, bytes]]:
    return [(box_file_name(i), json.dumps({"id": i, "box": [item.to_dict() for item in box]},
                                          ensure_ascii=False).encode("utf-8")) for i, box in zip(ids, boxes)]


def _check_batching(batch_size: Any, processes: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is invalid: give a positive number")
    if processes is not None and processes < 1:
        raise ConfigError(f"processes={processes} is invalid: give a positive number (1: no workers)")


def _encoded(pinned: Recommender, ids: list[str], encode: Callable, k: int, now: datetime | None,
             batch_size: int, processes: int | None, progress: bool | None):
    """Each batch's boxes as ``encode`` makes them, in index order, with a progress bar."""
    from tqdm.auto import tqdm

    with tqdm(total=len(ids), unit="article", desc="export",
              disable=None if progress is None else not progress) as bar:
        job = _Job(pinned, ids, encode, k, now or datetime.now(timezone.utc))
        batches = [(start, min(start + batch_size, len(ids))) for start in range(0, len(ids), batch_size)]
        for (start, stop), encoded in zip(batches, _encoded_batches(job, batches, processes)):
            yield encoded
            bar.update(stop - start)


class _Job:
    """What ranking and encoding a batch needs; forked workers inherit it."""

    def __init__(self, rec: Recommender, ids: list[str], encode: Callable, k: int, now: datetime):
        self.rec, self.ids, self.encode, self.k, self.now = rec, ids, encode, k, now

    def batch(self, start: int, stop: int, *, all_cores: bool = True) -> Any:
        ids = self.ids[start:stop]
        return self.encode(ids, self.rec.recommend_many(ids, k=self.k, now=self.now, all_cores=all_cores))


_job: _Job | None = None  # a worker's job, set as it starts


def _take_job(job: _Job) -> None:
    global _job
    _job = job


def _batch_on_worker(start: int, stop: int) -> Any:
    return _job.batch(start, stop, all_cores=False)  # the other cores run workers too


def _encoded_batches(job: _Job, batches: list[tuple[int, int]], processes: int | None):
    """Each batch's encoded boxes, in order: from forked workers where there can be
    some, else made here."""
    if processes != 1 and len(batches) > 1:
        with parallel.forked("the export", "free memory, or export from a smaller process", _take_job, (job,),
                             processes) as pool:
            if pool is not None:
                yield from parallel.in_order(pool, _batch_on_worker, batches, who="an export worker", here=job.batch)
                return
    for start, stop in batches:
        yield job.batch(start, stop)


class _JsonLines:
    """The JSONL file: encode(ids, boxes) makes their lines (on any process), put(lines)
    appends them. orjson (the ``export`` extra) writes them ~4x faster than json."""

    def __init__(self, path: Path):
        self._path = path
        try:
            import orjson
        except ImportError:
            orjson = None
        if orjson is not None:
            dumps = orjson.dumps
            self._lines: Callable = lambda rows: b"".join(dumps(row) + b"\n" for row in rows)
        else:  # one encoder for every line: json.dumps with options builds a new one per call
            encode = json.JSONEncoder(ensure_ascii=False).encode
            self._lines = lambda rows: "".join(encode(row) + "\n" for row in rows).encode("utf-8")

    def encode(self, ids: Sequence[str], boxes: Sequence[Sequence[Recommendation]]) -> bytes:
        return self._lines({"id": article_id, "box": [item.to_dict() for item in box]}
                           for article_id, box in zip(ids, boxes))

    def put(self, lines: bytes) -> None:
        self._file.write(lines)

    def __enter__(self) -> "_JsonLines":
        self._file = open(self._path, "wb")
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


class _ParquetRows:
    """The Parquet file: encode(ids, boxes) makes their rows as an Arrow table (on any
    process), put(table) appends it as a row group."""

    def __init__(self, path: Path):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("Parquet export needs pyarrow: pip install \"<this checkout>[export]\" "
                              "(or write a .jsonl file)") from None
        self._pa = pa
        # A fixed schema: a batch whose items all lack a URL or a date would otherwise
        # infer a null column and no longer match the file's first batch.
        self._schema = pa.schema([
            ("id", pa.string()), ("rank", pa.int64()), ("item_id", pa.string()), ("title", pa.string()),
            ("url", pa.string()), ("published_at", pa.timestamp("us", tz="UTC")), ("section", pa.string()),
            ("score", pa.float64()), ("similarity", pa.float64()), ("reasons", pa.list_(pa.string())),
            ("fallback", pa.bool_()), ("label", pa.string())])
        self._writer = pq.ParquetWriter(path, self._schema)

    def __enter__(self) -> "_ParquetRows":
        return self

    def put(self, table) -> None:
        self._writer.write_table(table)

    def encode(self, ids: Sequence[str], boxes: Sequence[Sequence[Recommendation]]):
        rows = [(article_id, rank, item) for article_id, box in zip(ids, boxes)
                for rank, item in enumerate(box, start=1)]
        items = [item for _, _, item in rows]
        def column(name: str) -> list:
            return [getattr(i, name) for i in items]

        return self._pa.table({  # column by column, not a dict per row
            "id": [article_id for article_id, _, _ in rows], "rank": [rank for _, rank, _ in rows],
            "item_id": column("id"), "title": column("title"), "url": column("url"),
            "published_at": column("published_at"), "section": column("section"), "score": column("score"),
            "similarity": column("similarity"), "reasons": [list(i.reasons) for i in items],
            "fallback": column("fallback"), "label": column("label")}, schema=self._schema)

    def __exit__(self, *exc) -> None:
        self._writer.close()
