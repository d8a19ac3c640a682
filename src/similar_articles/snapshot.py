"""Snapshot directories: manifest, checksums, atomic publish, retention.

An index root looks like::

    index/
      current -> snapshots/20261127T183705123456Z   (symlink, swapped atomically)
      snapshots/20261127T183705123456Z/
        manifest.json  index.faiss  articles.json  published.npy  title_keys.npy

A snapshot is written in a hidden temporary folder, renamed into ``snapshots/`` and only
then pointed at by ``current``, so a crash at any point leaves the previous one serving.
``build.lock`` in the root (pid, host, start time) lets one build or rollback run at a time.
Nothing is pickled: JSON, FAISS and ``.npy`` files read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .buildlock import BuildLock, older_than, pid_alive
from .errors import IndexCorruptedError, IndexNotFoundError

FORMAT_VERSION = 2  # 2: the schema of artifacts.py (one set of array names, checked on load)
MANIFEST = "manifest.json"
CURRENT = "current"
SNAPSHOTS = "snapshots"
INDEX_FILE = "index.faiss"
METADATA_FILE = "articles.json"
VERSION_FORMAT = "%Y%m%dT%H%M%S%fZ"
_STAGING_PID = re.compile(r"-p(\d+)-")


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot directory, its manifest, metadata columns and arrays."""

    path: Path
    manifest: dict[str, Any]
    metadata: dict[str, list]
    arrays: dict[str, np.ndarray]

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE


def write_snapshot(root: str | os.PathLike, *, write_index: Callable[[Path], None],
                   metadata: dict[str, list], arrays: dict[str, np.ndarray],
                   manifest: dict[str, Any], keep: int = 3,
                   extra_files: dict[str, bytes | str | dict] | None = None,
                   publish: bool = True) -> Path:
    """Write a new snapshot under ``root`` and make it current. Returns its folder.

    ``keep`` is how many snapshots stay on disk (the current one included), so that
    a bad build can be rolled back; older ones are deleted after the switch.
    ``extra_files``: more files for the snapshot (name -> bytes, text or a JSON-able
    dict), checksummed like the rest, e.g. a build's quality-gate report.
    ``publish=False`` stops before anything is visible: the complete snapshot waits in
    a hidden staging folder (returned) for :func:`publish_snapshot` or
    :func:`discard_staged`; a crash leaves only that folder, which prune clears.
    """
    root = Path(root)
    (root / SNAPSHOTS).mkdir(parents=True, exist_ok=True)
    version = _next_version(root)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-p{os.getpid()}-", dir=root / SNAPSHOTS))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; web servers may run as another user
        write_index(staging / INDEX_FILE)
        _write_json(staging / METADATA_FILE, metadata)
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        for name, content in (extra_files or {}).items():
            if name in (MANIFEST, INDEX_FILE, METADATA_FILE) or "/" in name or name.startswith("."):
                raise ValueError(f"extra file name {name!r} is reserved or not a plain file name")
            if isinstance(content, dict):
                _write_json(staging / name, content, indent=2)
            else:
                (staging / name).write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        files = sorted(p.name for p in staging.iterdir())
        full_manifest = {
            "format_version": FORMAT_VERSION, **manifest, "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "checksums": {name: _sha256(staging / name) for name in files},
        }
        _write_json(staging / MANIFEST, full_manifest)
        for name in [*files, MANIFEST]:
            _fsync(staging / name)
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not publish:
        return staging
    return publish_snapshot(root, staging, keep=keep)


def publish_snapshot(root: str | os.PathLike, staged: Path, *, keep: int = 3) -> Path:
    """Move a snapshot staged by ``write_snapshot(publish=False)`` into ``snapshots/``,
    switch ``current`` to it and prune. Returns its final folder."""
    root = Path(root)
    version = json.loads((staged / MANIFEST).read_text(encoding="utf-8"))["version"]
    final = root / SNAPSHOTS / version
    os.rename(staged, final)
    _fsync_dir(root / SNAPSHOTS)
    point_current(root, final)
    prune(root, keep=keep)
    return final


def discard_staged(staged: Path) -> None:
    """Delete a staged snapshot that will not be published (dry run, refused build)."""
    shutil.rmtree(staged, ignore_errors=True)


def _next_version(root: Path) -> str:
    """A UTC timestamp, later than every existing snapshot even if the clock went back,
    so that name order is publish order (rollback relies on it)."""
    now = datetime.now(timezone.utc)
    existing = list_snapshots(root)
    if existing:
        try:
            latest = datetime.strptime(existing[-1].name, VERSION_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError:
            latest = None
        if latest is not None and latest >= now:
            now = latest + timedelta(microseconds=1)
    return now.strftime(VERSION_FORMAT)


def point_current(root: Path, snapshot_dir: Path) -> None:
    """Atomically switch ``root/current`` to ``snapshot_dir`` (rename over the link)."""
    link = root / f".{CURRENT}.{os.getpid()}.tmp"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(Path(SNAPSHOTS) / snapshot_dir.name, link)
    os.replace(link, root / CURRENT)
    _fsync_dir(root)


def list_snapshots(root: str | os.PathLike) -> list[Path]:
    """Published snapshot folders, oldest first."""
    folder = Path(root) / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def prune(root: Path, *, keep: int) -> None:
    """Delete all but the newest ``keep`` snapshots and stale staging folders; the
    current snapshot is never deleted."""
    current = resolve_snapshot_dir(root) if (root / CURRENT).exists() else None
    for old in list_snapshots(root)[:-keep] if keep > 0 else []:
        if current is None or old.resolve() != current.resolve():
            shutil.rmtree(old, ignore_errors=True)
    clean_staging(root)


def clean_staging(root: Path) -> list[Path]:
    """Delete staging folders of builds that are gone (killed, crashed): their process
    (named in the folder) is dead on this host, or they are older than an hour."""
    removed = []
    for staging in (Path(root) / SNAPSHOTS).glob(".tmp-*"):
        match = _STAGING_PID.search(staging.name)
        writer_dead = match is not None and not pid_alive(int(match.group(1)))
        if writer_dead or older_than(staging, hours=1):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    for link in Path(root).glob(f".{CURRENT}.*.tmp"):  # a switch killed halfway (point_current)
        pid = link.name.split(".")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            link.unlink(missing_ok=True)
            removed.append(link)
    return removed


def resolve_snapshot_dir(path: str | os.PathLike) -> Path:
    """The snapshot folder that ``path`` (an index root or a snapshot folder) serves."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    current = path / CURRENT
    if current.exists() and (current / MANIFEST).is_file():
        return current.resolve()
    if not path.exists():
        raise IndexNotFoundError(
            f"no index at {path}: build one with `similar-articles build SOURCE --index {path}`")
    kept = list_snapshots(path)
    if kept:
        raise IndexNotFoundError(
            f"{path / CURRENT} is missing or points to no snapshot; kept: {', '.join(p.name for p in kept)}: "
            f"serve one with `similar-articles rollback --index {path} --to {kept[-1].name}`")
    raise IndexNotFoundError(
        f"{path} holds no index (no {CURRENT}/{MANIFEST}): build one with "
        f"`similar-articles build SOURCE --index {path}`")


def serving_dir(root: str | os.PathLike) -> Path | None:
    """The snapshot ``root/current`` points to, or None when the link is missing or
    dangling (deleted by hand, or its folder removed)."""
    current = Path(root) / CURRENT
    return current.resolve() if (current / MANIFEST).is_file() else None


def latest_snapshot_dir(root: str | os.PathLike) -> tuple[Path | None, bool]:
    """(the snapshot serving, True), or with ``current`` lost (the newest kept one,
    False), or (None, False) for a root with no snapshot: a first build."""
    serving = serving_dir(root)
    if serving is not None:
        return serving, True
    kept = list_snapshots(root)
    return (kept[-1] if kept else None), False


def read_snapshot(path: str | os.PathLike, *, verify: bool = True,
                  mapped: Iterable[str] = ()) -> Snapshot:
    """Read and (by default) checksum-verify the snapshot that ``path`` serves.

    Verification reads every byte once (about 1 s per GB); pass verify=False only
    for a snapshot this process wrote itself.
    mapped: names of arrays to memory-map read-only instead of reading: a page costs
        resident memory only once a call touches it (and the kernel may drop it again),
        for arrays that most calls never read. The mapping outlives the snapshot's
        deletion by retention (the file stays until unmapped).
    """
    mapped = set(mapped)
    folder = resolve_snapshot_dir(path)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorruptedError(f"{folder / MANIFEST} is unreadable ({exc}); rebuild the index") from None
    _check_manifest(folder, manifest)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexCorruptedError(
            f"{folder} has snapshot format {version!r}, this library reads format "
            f"{FORMAT_VERSION}; rebuild it with this version: `similar-articles build SOURCE --index "
            f"{folder.parent.parent if folder.parent.name == SNAPSHOTS else folder}`")
    checksums = manifest["checksums"]
    for name in (INDEX_FILE, METADATA_FILE):
        if name not in checksums:
            raise IndexCorruptedError(f"{folder / MANIFEST} lists no {name}; rebuild the index")
    if verify:
        for name, expected in checksums.items():
            file = folder / name
            if not file.is_file():
                raise IndexCorruptedError(f"{file} is missing; rebuild the index")
            if _sha256(file) != expected:
                raise IndexCorruptedError(
                    f"{file} does not match its checksum in the manifest (corrupted or "
                    "modified); rebuild the index or roll back to an earlier snapshot")
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        # A mapped array is served as a plain ndarray view of its map: np.memmap's
        # indexing runs Python code (~8 us a read), and a live update reads hundreds.
        arrays = {name[:-4]: np.asarray(np.load(folder / name, allow_pickle=False,
                                                mmap_mode="r" if name[:-4] in mapped else None))
                  for name in checksums if name.endswith(".npy")}
    except (OSError, ValueError) as exc:
        raise IndexCorruptedError(f"{folder}: cannot read metadata ({exc}); rebuild the index") from None
    return Snapshot(folder, manifest, metadata, arrays)


def _check_manifest(folder: Path, manifest: Any) -> None:
    """A manifest edited by hand or damaged is refused by name, and every file it lists
    must be a plain name inside the snapshot folder (not an absolute or ``../`` path)."""
    def fail(problem: str) -> None:
        raise IndexCorruptedError(f"{folder / MANIFEST}: {problem}; roll back to an earlier snapshot "
                                  "(`similar-articles rollback`) or rebuild the index")

    if not isinstance(manifest, dict):
        fail(f"expected a JSON object, found a {type(manifest).__name__}")
    checksums = manifest.get("checksums")
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        fail("'checksums' is not an object of file name -> SHA-256")
    for name in checksums:
        if name != os.path.basename(name) or name.startswith(".") or "\\" in name:
            fail(f"it lists {name!r}, which is not a file of the snapshot folder")
    for key in ("config",):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            fail(f"{key!r} is not an object")


# ------------------------------------------------------------------ rollback
def rollback(root: str | os.PathLike, *, to: str | None = None) -> tuple[Path, Path | None]:
    """Point ``current`` at the snapshot published before the current one (or at the
    version ``to``, which also repairs a deleted or dangling ``current``). Returns (now
    serving, was serving or None). Running servers pick it up by hot reload. Refused
    while a build holds the lock."""
    root = Path(root)
    with BuildLock(root, purpose="rollback"):
        kept = list_snapshots(root)
        names = ", ".join(p.name for p in kept) or "none"
        was = serving_dir(root)
        if to is not None:
            target = root / SNAPSHOTS / to
            if target not in kept:
                raise IndexNotFoundError(f"no snapshot {to!r} in {root / SNAPSHOTS}; rollback --to needs one of: {names}")
        elif was is None:
            raise IndexNotFoundError(
                f"{root / CURRENT} is missing or points to no snapshot, so there is no previous one; "
                f"rollback --to needs one of: {names}")
        else:
            earlier = [p for p in kept if p.name < was.name]
            if not earlier:
                raise IndexNotFoundError(
                    f"{root}: no snapshot older than the current {was.name} is kept, so there is "
                    "nothing to roll back to (builds keep --keep snapshots)")
            target = earlier[-1]
        read_snapshot(target)  # never switch to a damaged snapshot
        point_current(root, target)
        return target, was


def _write_json(path: Path, data: Any, *, indent: int | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=indent,
                  separators=None if indent else (",", ":"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
