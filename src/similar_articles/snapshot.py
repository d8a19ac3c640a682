"""Snapshot directories: manifest, checksums, atomic publish, retention.

An index root looks like::

    index/
      current -> snapshots/20261127T183705123456Z   (symlink, swapped atomically)
      snapshots/20261127T183705123456Z/
        manifest.json  index.faiss  articles.json  published.npy  title_keys.npy

A snapshot is written in a hidden temporary folder, renamed into ``snapshots/`` and only
then pointed at by ``current``, so a crash at any point leaves the previous one serving.
Nothing is pickled: JSON, FAISS and ``.npy`` files read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import IndexCorruptedError, IndexNotFoundError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "current"
SNAPSHOTS = "snapshots"
INDEX_FILE = "index.faiss"
METADATA_FILE = "articles.json"


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
                   manifest: dict[str, Any], keep: int = 3) -> Path:
    """Write a new snapshot under ``root`` and make it current. Returns its folder.

    ``keep`` is how many snapshots stay on disk (the current one included), so that
    a bad build can be rolled back; older ones are deleted after the switch.
    """
    root = Path(root)
    (root / SNAPSHOTS).mkdir(parents=True, exist_ok=True)
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=root / SNAPSHOTS))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; web servers may run as another user
        write_index(staging / INDEX_FILE)
        _write_json(staging / METADATA_FILE, metadata)
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        files = sorted(p.name for p in staging.iterdir())
        full_manifest = {
            "format_version": FORMAT_VERSION, **manifest, "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "checksums": {name: _sha256(staging / name) for name in files},
        }
        _write_json(staging / MANIFEST, full_manifest)
        for name in [*files, MANIFEST]:
            _fsync(staging / name)
        final = root / SNAPSHOTS / version
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(root / SNAPSHOTS)
    point_current(root, final)
    prune(root, keep=keep)
    return final


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
    for staging in (root / SNAPSHOTS).glob(".tmp-*"):
        if _older_than(staging, hours=1):  # a killed build's leftovers
            shutil.rmtree(staging, ignore_errors=True)


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
    raise IndexNotFoundError(
        f"{path} holds no index (no {CURRENT}/{MANIFEST}): build one with "
        f"`similar-articles build SOURCE --index {path}`")


def read_snapshot(path: str | os.PathLike, *, verify: bool = True) -> Snapshot:
    """Read and (by default) checksum-verify the snapshot that ``path`` serves.

    Verification reads every byte once (about 1 s per GB); pass verify=False only
    for a snapshot this process wrote itself.
    """
    folder = resolve_snapshot_dir(path)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorruptedError(f"{folder / MANIFEST} is unreadable ({exc}); rebuild the index") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexCorruptedError(
            f"{folder} has snapshot format {version!r}, this library reads format "
            f"{FORMAT_VERSION}; rebuild the index with this version")
    checksums = manifest.get("checksums") or {}
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
        arrays = {name[:-4]: np.load(folder / name, allow_pickle=False)
                  for name in checksums if name.endswith(".npy")}
    except (OSError, ValueError) as exc:
        raise IndexCorruptedError(f"{folder}: cannot read metadata ({exc}); rebuild the index") from None
    return Snapshot(folder, manifest, metadata, arrays)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))


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


def _older_than(path: Path, *, hours: float) -> bool:
    try:
        return (datetime.now().timestamp() - path.stat().st_mtime) > hours * 3600
    except OSError:
        return False
