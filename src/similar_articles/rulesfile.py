"""Where the rules live: ``rules.json`` in the index folder, beside the snapshots (so
rebuilds, rollbacks and the journal's compaction leave it alone), ``rules-history.jsonl``
(what each version changed, for editors), and ``labels.json`` (labels.py).

Every edit is an operation applied under ``rules.lock`` to the document found there,
validated, numbered (version + 1) and written by atomic rename: two processes editing at
once both get their change in; a bad rule is refused naming it and the file in force is
untouched. Processes serving the index notice a new file with one ``stat`` at each
refresh (:class:`Watcher`).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .errors import StorageError
from .journal import FileLock
from .jsonlines import newest_records
from .labels import LABELS_FILE, read_labels
from .rules import RuleError, Rules, RulesConflictError

RULES_FILE = "rules.json"
RULES_LOCK = "rules.lock"
HISTORY_FILE = "rules-history.jsonl"
HISTORY_KEPT = 1000  # versions the history keeps (it is cut back to this when twice as long)


class RulesFile:
    """``rules.json`` and ``labels.json`` of the index at ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / RULES_FILE
        self.labels_path = self.root / LABELS_FILE

    def read(self) -> Rules:
        """The rules in force (none when there is no file)."""
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return Rules()
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise RuleError(f"{self.path} is not JSON ({exc}); restore it from a backup or delete it") from None
        try:
            return Rules.from_document(document)
        except RuleError as exc:
            raise RuleError(f"{self.path}: {exc}") from None

    def read_labels(self) -> dict[str, str]:
        return read_labels(self.labels_path)

    def edit(self, change: Callable[[Rules], Rules], *, based_on: int | None = None) -> Rules:
        """Apply ``change`` to the rules in force, under the lock, and save the result
        as the next version. ``based_on``: the version the edit was made from; another
        version in force raises RulesConflictError (nothing is written)."""
        try:
            return self._edit(change, based_on)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path} ({exc.strerror}): the rules in force are unchanged; make "
                               "the index folder writable and free space, then retry") from None

    def _edit(self, change: Callable[[Rules], Rules], based_on: int | None) -> Rules:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / RULES_LOCK):
            current = self.read()
            if based_on is not None and based_on != current.version:
                raise RulesConflictError(f"the edit was based on rules version {based_on}, but version "
                                         f"{current.version} is in force now; reload the rules and redo the edit")
            made = change(current)
            made.check()
            made = replace(made, version=current.version + 1,
                           updated_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
            temporary = self.path.with_name(f".{RULES_FILE}.{os.getpid()}.tmp")
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump(made.to_document(), f, ensure_ascii=False, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
            self._log({"version": made.version, "at": made.updated_at, "changes": made.changes_from(current)})
            return made

    def _log(self, entry: dict[str, Any]) -> None:
        """Append one version's changes to the history (under the lock), cutting it back
        to the last HISTORY_KEPT versions when it has grown to twice that."""
        history = self.root / HISTORY_FILE
        with open(history, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        lines = history.read_text("utf-8").splitlines(keepends=True)
        if len(lines) > 2 * HISTORY_KEPT:
            temporary = history.with_name(f".{HISTORY_FILE}.{os.getpid()}.tmp")
            temporary.write_text("".join(lines[-HISTORY_KEPT:]), encoding="utf-8")
            os.replace(temporary, history)

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` versions' changes, newest first: {"version", "at", "changes"}."""
        return newest_records(self.root / HISTORY_FILE, limit)

    def replace_document(self, document: Any, *, based_on: int | None = None) -> Rules:
        """Put a whole document in force (validated first; its version is ignored)."""
        made = Rules.from_document(document)
        return self.edit(lambda current: replace(made, version=current.version), based_on=based_on)


class Watcher(RulesFile):
    """The rules and labels files of an index, read again when one ``stat`` each says
    one changed."""

    def __init__(self, root: str | os.PathLike):
        super().__init__(root)
        self._seen: tuple = ("unread",)

    def read_if_changed(self) -> tuple[Rules, dict[str, str]] | None:
        """(rules, labels) if either file changed since the last read, else None. A file
        that cannot be read raises (once: it is read again when it changes)."""
        stamps = tuple(_stamp(p) for p in (self.path, self.labels_path))
        if stamps == self._seen:
            return None
        self._seen = stamps  # a bad file is reported once, and read again when it changes
        return self.read(), self.read_labels()


def _stamp(path: Path) -> tuple | None:
    try:
        s = os.stat(path)
    except FileNotFoundError:
        return None
    return (s.st_ino, s.st_mtime_ns, s.st_size)
