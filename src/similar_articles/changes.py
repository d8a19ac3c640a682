"""Changed boxes as data: what one live update changed (:class:`ChangedBoxes`), what
``Recommender.add`` and ``remove`` return (:class:`Update`, an int as before), and
INDEX/changes.jsonl, where a process that tracks changes appends each update it made,
for ``export --changed`` to rewrite only those boxes. How they are found:
tracking.py."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .journal import FileLock
from .jsonlines import newest_records

CHANGES_FILE = "changes.jsonl"  # INDEX/changes.jsonl: a line an update, what export --changed reads
CHANGES_MAX_BYTES = 64 << 20  # past this the log keeps its newer half (an export older than that ranks every box)
CHANGE_KINDS = ("box", "added", "replaced", "removed")


@dataclass(frozen=True)
class ChangedBoxes:
    """The boxes one live update changed. ``boxes``: existing articles whose box
    changed; ``added`` / ``replaced``: articles the update indexed (a new box, or a
    new version with a box that may differ); ``removed``: articles whose box is gone.
    ``complete``: False when an added article was close to so many boxes' entry
    scores that only its nearest articles (and boxes with room) were scored: a box
    taking it from further away could be missing (docs/changes.md). ``rules``: for a
    rules edit, the versions (from, to) of the rules it went between (no articles
    came or went); None for a live update of articles."""

    seq: int
    k: int
    snapshot: str | None
    boxes: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    complete: bool = True
    rules: tuple[int, int] | None = None
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))

    def records(self) -> list[dict[str, Any]]:
        """A dict a box: ``{"id", "change", "live_update"}`` (and ``"rules"``, the version a
        rules edit made), change one of CHANGE_KINDS."""
        edit = {} if self.rules is None else {"rules": self.rules[1]}
        return [{"id": i, "change": kind, "live_update": self.seq, **edit}
                for kind, ids in zip(CHANGE_KINDS, (self.boxes, self.added, self.replaced, self.removed)) for i in ids]

    def to_dict(self) -> dict[str, Any]:
        """The webhook's payload and a line of changes.jsonl (docs/http.md)."""
        return {"event": "boxes.changed", "live_update": self.seq, "snapshot": self.snapshot, "k": self.k,
                "at": self.at, "complete": self.complete,
                "rules": None if self.rules is None else {"from": self.rules[0], "to": self.rules[1]}, "boxes": [{"id": r["id"], "change": r["change"]} for r in self.records()]}

    def __len__(self) -> int:
        return len(self.boxes) + len(self.added) + len(self.replaced) + len(self.removed)


class Update(int):
    """What ``Recommender.add`` and ``remove`` return: how many articles were added or
    removed (an int, as before: it compares, adds and prints as the count), ``seq``
    (the live update's journal position) and ``changed`` (a :class:`ChangedBoxes`, or
    None when the recommender does not track changes: ``track_changes()``)."""

    seq: int
    changed: ChangedBoxes | None

    def __new__(cls, count: int, seq: int = 0, changed: ChangedBoxes | None = None) -> "Update":
        update = super().__new__(cls, count)
        update.seq, update.changed = seq, changed
        return update

    def __repr__(self) -> str:
        return f"Update({int(self)}, seq={self.seq}, changed={None if self.changed is None else len(self.changed)})"


def append_changes(path: Path, report: ChangedBoxes) -> None:
    """One line for ``report`` at the end of INDEX/changes.jsonl, under its lock (a
    torn last line is skipped by readers). Past CHANGES_MAX_BYTES the file is cut to
    its newer half, by atomic rename: a reader sees the old file or the new one."""
    line = (json.dumps(report.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    with FileLock(path.with_suffix(".lock")):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > CHANGES_MAX_BYTES:
            data = path.read_bytes()  # it ends with a newline: the cut finds one
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(data[data.find(b"\n", len(data) - CHANGES_MAX_BYTES // 2) + 1:])
            os.replace(temporary, path)


def recent_changes(path: Path, limit: int = 10) -> list[dict[str, Any]]:
    """The last ``limit`` reports of INDEX/changes.jsonl, newest first."""
    return newest_records(path, limit)


def read_changes(path: Path, after: int, upto: int, snapshot: str | None, k: int, rules: tuple[int, int] = (0, 0)
                 ) -> tuple[set[str], set[str]] | None:
    """(ids whose box to rewrite, ids whose box is gone) from the live updates after
    ``after`` up to ``upto`` of ``snapshot`` and the rules edits from version
    ``rules[0]`` to ``rules[1]``, from INDEX/changes.jsonl; None when one of those is
    missing (made by a process that did not track changes, or that compared boxes of
    another size than ``k``)."""
    rewrite, gone, seen, edited = set(), set(), set(), set()
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            body = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if body.get("snapshot") != snapshot or body.get("k") != k:
            continue
        edit = body.get("rules")
        if edit is None and after < body.get("live_update", -1) <= upto:
            seen.add(body["live_update"])
        elif edit is not None and rules[0] <= edit["from"] < edit["to"] <= rules[1]:
            edited.update(range(edit["from"] + 1, edit["to"] + 1))
        else:
            continue
        for box in sorted(body["boxes"], key=lambda b: b["change"] == "removed"):
            (gone if box["change"] == "removed" else rewrite).add(box["id"])
            (rewrite if box["change"] == "removed" else gone).discard(box["id"])
    whole = seen >= set(range(after + 1, upto + 1)) and edited >= set(range(rules[0] + 1, rules[1] + 1))
    return (rewrite, gone) if whole else None
