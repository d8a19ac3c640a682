"""The live-update journal: ``add`` and ``remove`` between builds, shared by every
process serving an index.

``<index>/journal.jsonl`` holds one record a line, ``<crc32> <json>``: a header line,
then records numbered by ``seq``. A writer appends under ``journal.lock`` (so writers in
several processes never interleave), fsyncs before it returns, and first cuts off a torn
tail a crashed writer left. A reader applies only complete lines whose checksum holds,
so a crash loses no acknowledged record and applies no half one.

Each snapshot's manifest says up to which ``seq`` the build folded the journal in;
a process serving it replays the records after that. Builds compact the journal to
the records some kept snapshot has not folded in (so a rollback keeps them).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .articles import Article
from .errors import SimilarArticlesError

JOURNAL_FILE = "journal.jsonl"
JOURNAL_LOCK = "journal.lock"
FORMAT = "similar-articles-journal"


class JournalError(SimilarArticlesError):
    """The journal cannot be read or written; the message says what to do."""


@dataclass(frozen=True)
class Record:
    """One live update: articles added (with their unit vectors) or ids removed."""

    seq: int
    op: str  # "add" or "remove"
    at: str
    articles: tuple[Article, ...] = ()
    vectors: np.ndarray | None = None  # float32 (len(articles), dim)
    model_id: str | None = None
    ids: tuple[str, ...] = ()


def add_record(articles: Sequence[Article], vectors: np.ndarray, model_id: str) -> dict[str, Any]:
    """The body of an add record (the seq is given when it is appended)."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    return {"op": "add", "model_id": model_id, "dim": int(vectors.shape[1]),
            "rows": [{**a.to_metadata(), "body": a.body} for a in articles],
            "vectors": base64.b64encode(vectors.tobytes()).decode("ascii")}


def remove_record(ids: Sequence[str]) -> dict[str, Any]:
    return {"op": "remove", "ids": list(ids)}


def _line(body: dict[str, Any]) -> bytes:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return f"{zlib.crc32(text.encode('utf-8')):08x} {text}\n".encode("utf-8")


def _parse(line: bytes) -> dict[str, Any] | None:
    """A complete line's body, or None when its checksum fails (a torn or damaged line)."""
    try:
        crc, text = line.rstrip(b"\n").split(b" ", 1)
        if int(crc, 16) != zlib.crc32(text):
            return None
        return json.loads(text)
    except ValueError:
        return None


def as_record(body: dict[str, Any], seq: int) -> Record:
    """A record body made by add_record/remove_record, as it reads back from the journal."""
    return _record({**body, "seq": seq, "at": _now()})


def _record(body: dict[str, Any]) -> Record:
    if body["op"] == "add":
        vectors = np.frombuffer(base64.b64decode(body["vectors"]), dtype="<f4").reshape(-1, body["dim"])
        return Record(body["seq"], "add", body["at"], tuple(Article.from_row(r) for r in body["rows"]),
                      vectors.astype(np.float32), body["model_id"])
    return Record(body["seq"], "remove", body["at"], ids=tuple(body["ids"]))


@dataclass
class Journal:
    """The journal of the index at ``root``. ``append`` takes the write lock; reading
    (``follow``) takes none: it reads complete lines only."""

    root: Path
    _inode: int | None = field(default=None, repr=False)
    _offset: int = field(default=0, repr=False)

    @property
    def path(self) -> Path:
        return self.root / JOURNAL_FILE

    # ------------------------------------------------------------------ writing
    def append(self, body: dict[str, Any]) -> int:
        """Append one record, durably; returns its seq."""
        try:
            with self._locked():
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    last = self._last_seq_and_trim(fd)
                    seq = last + 1
                    os.lseek(fd, 0, os.SEEK_END)
                    os.write(fd, _line({**body, "seq": seq, "at": _now()}))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                return seq
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path} ({exc.strerror}): the update was not "
                               "recorded; make the index folder writable and free space, then retry") from None

    def _last_seq_and_trim(self, fd: int) -> int:
        """The last complete record's seq (or the header's base), after cutting off a
        torn tail; writes a header into an empty file. Called under the lock."""
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        if not data:
            os.write(fd, _line({"format": FORMAT, "version": 1, "after": 0}))
            return 0
        bodies, good = _good_bodies(data, self.path)
        if good < len(data):
            os.ftruncate(fd, good)  # the torn tail of a crashed write: never acknowledged
        return bodies[-1].get("seq", bodies[-1].get("after", 0)) if bodies else 0

    def compact(self, after: int) -> None:
        """Keep only the records with seq > ``after`` (a new file renamed into place,
        so followers see it whole)."""
        if not self.path.exists():
            return
        with self._locked():
            data = self.path.read_bytes()
            kept = [line for _, line in _lines(data)
                    if (body := _parse(line)) is not None and body.get("seq", 0) > after]
            temporary = self.path.with_name(f".{JOURNAL_FILE}.{os.getpid()}.tmp")
            with open(temporary, "wb") as f:
                f.write(_line({"format": FORMAT, "version": 1, "after": after}))
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)

    def _locked(self):
        return FileLock(self.root / JOURNAL_LOCK)

    # ------------------------------------------------------------------ reading
    def follow(self, seq: int, *, from_start: bool = False) -> list[Record]:
        """The records after ``seq`` that this follower has not read yet (all of them
        with ``from_start``): one ``stat`` when nothing changed, a read of the new
        bytes otherwise."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        if from_start or stat.st_ino != self._inode or stat.st_size < self._offset:
            self._inode, self._offset = stat.st_ino, 0  # first read, compacted, or a torn tail cut off
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        bodies, good = _good_bodies(data, self.path)
        self._offset += good  # a line still being written (or torn) is read again next time
        return [_record(b) for b in bodies if b.get("seq", 0) > seq]


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            return  # no newline: an unfinished write
        yield start, data[start:end + 1]
        start = end + 1


def _good_bodies(data: bytes, path: Path) -> tuple[list[dict[str, Any]], int]:
    """The bodies of the complete, intact lines of ``data`` and how many bytes they
    take. A damaged last line is a torn write (the next writer cuts it off); a damaged
    line before others is corruption, and says what to do."""
    lines = list(_lines(data))
    bodies, good = [], 0
    for number, (start, line) in enumerate(lines, start=1):
        body = _parse(line)
        if body is None:
            if number == len(lines):
                break
            raise JournalError(f"{path}: a line at byte {start} is damaged (its checksum fails); run a build "
                               "to fold the journal into a new snapshot, or delete that line")
        bodies.append(body)
        good = start + len(line)
    return bodies, good


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class FileLock:
    """An exclusive ``flock`` on a lock file: one writer at a time across processes."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> "FileLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


@dataclass(frozen=True)
class Folded:
    """The net effect of a run of records, for a build to fold in: the articles added
    last (with their vectors) and not removed after, and the ids removed."""

    last_seq: int
    added: dict[str, tuple[Article, np.ndarray]]
    removed: frozenset[str]


def fold(records: Sequence[Record], after: int) -> Folded:
    added: dict[str, tuple[Article, np.ndarray]] = {}
    removed: set[str] = set()
    for record in records:
        for article, vector in zip(record.articles, record.vectors if record.vectors is not None else ()):
            added[article.id] = (article, vector)
            removed.discard(article.id)
        for article_id in record.ids:
            added.pop(article_id, None)
            removed.add(article_id)
    return Folded(records[-1].seq if records else after, added, frozenset(removed))
