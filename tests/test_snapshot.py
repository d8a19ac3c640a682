"""Snapshots: staged writes, atomic publish, retention, rollback and the build lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from similar_articles import IndexCorruptedError, IndexNotFoundError
from similar_articles.buildlock import LOCK_FILE, BuildLock, BuildLockedError, pid_alive
from similar_articles.snapshot import (CURRENT, SNAPSHOTS, clean_staging, discard_staged, list_snapshots,
                                       publish_snapshot, read_snapshot, resolve_snapshot_dir, rollback,
                                       write_snapshot)


def write(root: Path, n: int = 1, **kwargs) -> Path:
    """A tiny but complete snapshot (the index file is opaque bytes here)."""
    return write_snapshot(root, write_index=lambda path: path.write_bytes(b"index-%d" % n),
                          metadata={"ids": [f"a{n}"]}, arrays={"published": np.array([float(n)])},
                          manifest={"count": n}, **kwargs)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ write and publish
def test_write_publishes_and_keeps_the_newest(tmp_path):
    folders = [write(tmp_path, n, keep=2) for n in range(1, 5)]
    assert resolve_snapshot_dir(tmp_path) == folders[-1]
    assert list_snapshots(tmp_path) == folders[-2:]
    assert read_snapshot(tmp_path).manifest["count"] == 4


def test_staged_snapshots_are_invisible_until_published(tmp_path):
    first = write(tmp_path, 1)
    staged = write(tmp_path, 2, publish=False, extra_files={"gate.json": {"passed": True}, "notes.txt": "hi"})
    assert staged.name.startswith(".tmp-") and staged.parent == tmp_path / SNAPSHOTS
    assert list_snapshots(tmp_path) == [first] and resolve_snapshot_dir(tmp_path) == first
    snapshot = read_snapshot(staged)  # complete and verified before it is visible
    assert set(snapshot.manifest["checksums"]) >= {"gate.json", "notes.txt", "index.faiss"}
    final = publish_snapshot(tmp_path, staged, keep=3)
    assert resolve_snapshot_dir(tmp_path) == final and not staged.exists()
    assert json.loads((final / "gate.json").read_text()) == {"passed": True}
    (final / "gate.json").write_text('{"passed": false}')
    with pytest.raises(IndexCorruptedError, match="gate.json does not match its checksum"):
        read_snapshot(final)

    dropped = write(tmp_path, 3, publish=False)
    discard_staged(dropped)
    assert not dropped.exists() and resolve_snapshot_dir(tmp_path) == final


def test_extra_files_cannot_replace_the_snapshot_files(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        write(tmp_path, 1, extra_files={"manifest.json": "{}"})
    assert list(tmp_path.joinpath(SNAPSHOTS).iterdir()) == []


def test_versions_keep_publish_order_when_the_clock_goes_back(tmp_path):
    first = write(tmp_path, 1)
    future = tmp_path / SNAPSHOTS / "29991231T235959999999Z"
    first.rename(future)
    second = write(tmp_path, 2)
    assert second.name > future.name


def test_leftovers_of_dead_builds_are_cleaned(tmp_path):
    write(tmp_path, 1)
    dead = tmp_path / SNAPSHOTS / f".tmp-20260101T000000000000Z-p{dead_pid()}-abc"
    live = tmp_path / SNAPSHOTS / f".tmp-20260101T000000000000Z-p{os.getpid()}-abc"
    dead.mkdir()
    live.mkdir()
    half_switched = tmp_path / f".current.{dead_pid()}.tmp"  # killed inside point_current
    half_switched.symlink_to(dead)
    assert clean_staging(tmp_path) == [dead, half_switched]
    assert live.exists() and not dead.exists() and not half_switched.is_symlink()


# ------------------------------------------------------------------ rollback
def test_rollback_goes_back_one_snapshot_at_a_time(tmp_path):
    folders = [write(tmp_path, n) for n in (1, 2, 3)]
    assert rollback(tmp_path) == (folders[1], folders[2])
    assert resolve_snapshot_dir(tmp_path) == folders[1]
    assert rollback(tmp_path)[0] == folders[0]
    with pytest.raises(IndexNotFoundError, match="nothing to roll back to"):
        rollback(tmp_path)
    assert rollback(tmp_path, to=folders[2].name)[0] == folders[2]
    with pytest.raises(IndexNotFoundError, match="no snapshot 'nope'"):
        rollback(tmp_path, to="nope")
    assert not (tmp_path / LOCK_FILE).exists()


def test_rollback_never_switches_to_a_damaged_snapshot(tmp_path):
    first, second = write(tmp_path, 1), write(tmp_path, 2)
    (first / "index.faiss").write_bytes(b"damaged")
    with pytest.raises(IndexCorruptedError):
        rollback(tmp_path)
    assert resolve_snapshot_dir(tmp_path) == second


def test_rollback_waits_for_no_build(tmp_path):
    write(tmp_path, 1), write(tmp_path, 2)
    with BuildLock(tmp_path):
        with pytest.raises(BuildLockedError, match="another build is running .* this rollback was refused"):
            rollback(tmp_path)
    assert (tmp_path / CURRENT).resolve().name == list_snapshots(tmp_path)[1].name


# ------------------------------------------------------------------ the lock
def test_a_second_build_is_refused_with_who_holds_the_lock(tmp_path):
    with BuildLock(tmp_path) as lock:
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(BuildLockedError) as info:
            BuildLock(tmp_path).acquire()
        assert f"pid {os.getpid()} on {socket.gethostname()}, started {holder['started_at']}" in str(info.value)
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_stale_lock_from_a_killed_build_is_cleared(tmp_path):
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "purpose": "build", "started_at": "then"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))
    with BuildLock(tmp_path) as lock:
        assert lock.cleared == stale
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_half_written_lock_is_stale_only_once_it_is_old(tmp_path):
    path = tmp_path / LOCK_FILE
    path.write_text("")
    with pytest.raises(BuildLockedError, match="could not take the lock"):
        BuildLock(tmp_path).acquire()  # a build is writing it right now
    old = time.time() - 60
    os.utime(path, (old, old))
    with BuildLock(tmp_path) as lock:
        assert lock.cleared and lock.cleared.get("unreadable")


def test_a_lock_from_another_host_is_not_guessed_at(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started_at": "x"}))
    with pytest.raises(BuildLockedError, match=f"if that process is gone, delete {tmp_path / LOCK_FILE}"):
        BuildLock(tmp_path).acquire()


def test_release_never_deletes_another_process_lock(tmp_path):
    lock = BuildLock(tmp_path).acquire()
    other = {"pid": 1, "host": "elsewhere"}
    lock.path.write_text(json.dumps(other))
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == other


def _race(root: str, barrier, results) -> None:
    barrier.wait()
    try:
        with BuildLock(root):
            results.put("won")
            time.sleep(0.5)
    except BuildLockedError:
        results.put("refused")


def test_builds_racing_for_a_stale_lock_let_exactly_one_in(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["refused", "refused", "refused", "won"]


def test_pid_alive_treats_zombies_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    while pid_alive(proc.pid) and time.time() < deadline:  # exited, not yet reaped
        time.sleep(0.05)
    assert not pid_alive(proc.pid)
    proc.wait()
    assert pid_alive(os.getpid()) and not pid_alive(-1)
