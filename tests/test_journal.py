"""Live updates shared by processes: the journal in the index folder, followed by every
process serving the index, replayed on load and folded in by the next build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from similar_articles import Recommender
from similar_articles.batch import run_build
from similar_articles.journal import JOURNAL_FILE, Journal, JournalError, remove_record
from similar_articles.snapshot import rollback

LEMON = {"id": "lemon", "title": "Lemon cake", "body": "A recipe for lemon cake with butter and sugar.",
         "published_at": "2017-03-01T10:00:00Z", "section": "food"}


@pytest.fixture
def index(tmp_path, news100, news100_vectors, encoder):
    Recommender.build(news100[:60], tmp_path, embeddings=news100_vectors[:60], encoder=encoder)
    return tmp_path


def _process(index, encoder):
    """Another process's view of the index: its own Recommender, following nothing
    until it refreshes (what its background check does every reload_interval)."""
    return Recommender.load(index, encoder=encoder, reload_interval=None)


def test_an_add_in_one_process_reaches_the_others_and_survives_a_restart(index, news100, encoder):
    writer, reader = _process(index, encoder), _process(index, encoder)
    assert writer.add([LEMON]) == 1 and "lemon" in writer
    assert "lemon" not in reader
    assert reader.refresh() is True and "lemon" in reader
    query = {"id": "q", "title": "Lemon cake recipe", "body": "Bake a lemon cake."}
    assert reader.recommend(query, k=1)[0].id == "lemon"
    # A takedown through the reader reaches the writer; a restart replays both.
    assert reader.remove([news100[3]["id"]]) == 1
    writer.refresh()
    assert news100[3]["id"] not in writer
    restarted = _process(index, encoder)
    assert "lemon" in restarted and news100[3]["id"] not in restarted and len(restarted) == 60
    assert restarted.refresh() is False  # nothing new: the follower read it all on load


def test_a_real_second_process_sees_an_add_within_one_second(index, encoder):
    rec = Recommender.load(index, encoder=encoder)  # the default follows every 0.5 s
    script = textwrap.dedent(f"""
        import numpy as np
        from similar_articles import Recommender
        rec = Recommender.load({str(index)!r}, reload_interval=None)
        rng = np.random.default_rng(0)
        rec.add([{LEMON!r}], embeddings=rng.normal(size=(1, rec.state.index.dim)))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    deadline = time.monotonic() + 1.0
    while "lemon" not in rec and time.monotonic() < deadline:
        rec.recommend(rec.ids()[0], k=2)  # a call starts the check in the background
        time.sleep(0.05)
    assert "lemon" in rec


def test_writers_in_several_processes_never_interleave_records(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from similar_articles.journal import Journal, remove_record
        journal = Journal(__import__('pathlib').Path({str(tmp_path)!r}))
        for n in range(40):
            journal.append(remove_record([f"{{sys.argv[1]}}-{{n}}-" + "x" * 5000]))
    """)
    writers = [subprocess.Popen([sys.executable, "-c", script, str(w)]) for w in range(4)]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    records = Journal(tmp_path).follow(0)
    assert [r.seq for r in records] == list(range(1, 161))
    assert sorted(r.ids[0] for r in records) == sorted(f"{w}-{n}-" + "x" * 5000 for w in range(4) for n in range(40))


def test_a_torn_write_is_never_applied_and_the_next_writer_cuts_it_off(tmp_path):
    journal = Journal(tmp_path)
    journal.append(remove_record(["a"]))
    full = (tmp_path / JOURNAL_FILE).read_bytes()
    with open(tmp_path / JOURNAL_FILE, "ab") as f:  # a writer killed halfway through its line
        f.write(full.splitlines(keepends=True)[-1][:30])
    follower = Journal(tmp_path)
    assert [r.ids for r in follower.follow(0)] == [("a",)]
    assert journal.append(remove_record(["b"])) == 2
    assert [r.ids for r in follower.follow(1)] == [("b",)]  # read from where the torn line began
    assert [r.ids for r in Journal(tmp_path).follow(0)] == [("a",), ("b",)]


def test_a_damaged_record_before_others_is_reported_with_the_fix(tmp_path):
    journal = Journal(tmp_path)
    for name in "abc":
        journal.append(remove_record([name]))
    data = bytearray((tmp_path / JOURNAL_FILE).read_bytes())
    data[data.index(b'"a"') + 1] = ord("z")  # a flipped byte in the first record
    (tmp_path / JOURNAL_FILE).write_bytes(bytes(data))
    with pytest.raises(JournalError, match="damaged.*run a build"):
        Journal(tmp_path).follow(0)


def test_a_journal_in_a_read_only_folder_refuses_the_update_and_says_why(index, encoder):
    if os.geteuid() == 0:  # root ignores permissions: make the lock's path unusable instead
        (index / "journal.lock").unlink(missing_ok=True)
        os.symlink(index / "missing" / "lock", index / "journal.lock")
    else:
        os.chmod(index, 0o555)
    rec = _process(index, encoder)
    try:
        with pytest.raises(JournalError, match="not recorded.*writable"):
            rec.remove(["anything"])
    finally:
        os.chmod(index, 0o755)


def test_the_next_build_folds_the_journal_in_and_starts_afresh(tmp_path, news100, news100_vectors, encoder):
    rows, vectors = news100[:60], news100_vectors[:60]
    rec = Recommender.build(rows, tmp_path, embeddings=vectors, encoder=encoder)
    rec.add([LEMON])
    rec.remove([rows[5]["id"]])
    # The nightly build reads a source that lacks the new article and still has the removed one.
    report = run_build(rows, tmp_path, encoder=encoder, progress=False, vectors=vectors, gated=False)
    assert report.status == "published"
    assert report.live_updates == {"through": 2, "added": 1, "removed": 1}
    manifest = json.loads((tmp_path / "current" / "manifest.json").read_text())
    assert manifest["journal_seq"] == 2 and manifest["count"] == 60  # 60 - 1 removed + 1 added
    fresh = _process(tmp_path, encoder)
    assert "lemon" in fresh and rows[5]["id"] not in fresh and len(fresh) == 60
    # A record made after the fold is replayed on top of the new snapshot, once.
    rec.remove(["lemon"])
    assert "lemon" not in _process(tmp_path, encoder)
    # The build after that folds in only the newer record; the journal keeps what a
    # rollback to a kept snapshot still needs.
    run_build(rows, tmp_path, encoder=encoder, progress=False, vectors=vectors, gated=False)
    latest = _process(tmp_path, encoder)
    assert "lemon" not in latest and rows[5]["id"] in latest  # the source is the truth again
    rollback(tmp_path)
    back = _process(tmp_path, encoder)
    assert "lemon" not in back and rows[5]["id"] not in back


def test_a_build_folds_journaled_vectors_without_encoding_them(tmp_path, news100, news100_vectors, encoder):
    rows = news100[:40]
    rec = Recommender.build(rows, tmp_path, embeddings=news100_vectors[:40], encoder=encoder)
    vector = np.random.default_rng(1).normal(size=(1, news100_vectors.shape[1]))
    rec.add([LEMON], embeddings=vector)
    report = run_build(rows, tmp_path, encoder=encoder, progress=False, gated=False)
    assert report.status == "published" and "lemon" in _process(tmp_path, encoder)
    stored = _process(tmp_path, encoder).state.index.vectors(
        np.array([_process(tmp_path, encoder).state.table.position_of("lemon")]))[0]
    assert float(stored @ (vector[0] / np.linalg.norm(vector[0]))) > 0.999


def test_a_writer_killed_mid_stream_leaves_only_whole_records(tmp_path):
    """kill -9 while appending as fast as it can: every acknowledged record is there
    (the writer prints each seq after append returns), none is half applied."""
    script = textwrap.dedent(f"""
        import pathlib, sys
        from similar_articles.journal import Journal, remove_record
        journal = Journal(pathlib.Path({str(tmp_path)!r}))
        while True:
            seq = journal.append(remove_record(["x" * 20000]))
            print(seq, flush=True)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = [int(writer.stdout.readline()) for _ in range(30)]
    writer.kill()
    acknowledged += [int(line) for line in writer.stdout.read().split()]
    writer.wait()
    records = Journal(tmp_path).follow(0)
    assert [r.seq for r in records][:len(acknowledged)] == acknowledged
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert all(r.ids == ("x" * 20000,) for r in records)
    assert Journal(tmp_path).append(remove_record(["after"])) == len(records) + 1
