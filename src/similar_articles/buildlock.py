"""``build.lock`` in an index root: one build or rollback at a time, with a lock left
by a killed build detected and taken over."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from .errors import SimilarArticlesError

LOCK_FILE = "build.lock"


class BuildLockedError(SimilarArticlesError):
    """Another build (or rollback) holds the index root's lock file."""


class BuildLock:
    """``root/build.lock``: one build or rollback at a time per index root.

    The file holds the holder's pid, host and start time. A second build is refused
    with those details; a lock left by a killed build (its pid is dead on this host)
    is detected, cleared and taken over. A lock from another host cannot be checked:
    the message says how to clear it by hand.
    """

    def __init__(self, root: str | os.PathLike, *, purpose: str = "build"):
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.purpose = purpose
        self.cleared: dict | None = None  # the stale lock taken over, if any
        self._fd: int | None = None

    def acquire(self) -> "BuildLock":
        self.root.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(self.path)
                if holder is None:  # released or half-written this instant: look again
                    continue
                if not _lock_is_stale(holder):
                    raise BuildLockedError(self._held_message(holder)) from None
                if _remove_if_unchanged(self.path, holder):
                    self.cleared = holder
                continue
            os.write(fd, json.dumps(info).encode("utf-8"))
            os.fsync(fd)
            self._fd = fd
            return self
        raise BuildLockedError(f"{self.path}: could not take the lock (it keeps changing hands); try again")

    def release(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        holder = _read_lock(self.path)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "BuildLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _held_message(self, holder: dict) -> str:
        what = holder.get("purpose", "build")
        where = f"pid {holder.get('pid')} on {holder.get('host')}"
        message = (f"{self.root}: another {what} is running ({where}, started {holder.get('started_at')}); "
                   f"this {self.purpose} was refused. Wait for it to finish")
        if holder.get("host") != socket.gethostname():
            message += f", or if that process is gone, delete {self.path}"
        return message


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to another user
    try:  # a killed child its parent has not reaped yet holds no lock
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _read_lock(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Unreadable or half-written (a build killed between create and write):
        # stale once it is older than a few seconds.
        return {"pid": -1, "host": socket.gethostname(), "unreadable": True} if older_than(path, hours=5 / 3600) \
            else None
    return data if isinstance(data, dict) else {"pid": -1, "host": socket.gethostname()}


def _lock_is_stale(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return False  # a pid on another machine cannot be checked from here
    pid = holder.get("pid")
    return not isinstance(pid, int) or not pid_alive(pid)


def _remove_if_unchanged(path: Path, holder: dict) -> bool:
    """Delete a stale lock file, unless another process replaced it meanwhile.

    Two builds may find the same stale lock; the flock makes them take turns and the
    inode check stops the second from deleting the fresh lock the first just made.
    """
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False
        if not same_file or _read_lock(path) != holder:
            return False
        path.unlink()
        return True
    finally:
        os.close(fd)


def older_than(path: Path, *, hours: float) -> bool:
    try:
        return (datetime.now().timestamp() - path.stat().st_mtime) > hours * 3600
    except OSError:
        return False
