"""The nightly rebuild with real parts: the real model, FAISS, SQLite files and
subprocesses killed with SIGKILL at every stage."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import similar_articles.default as recommender_module
from similar_articles import Article, Config, ConfigError, Recommender, recommend
from similar_articles.batch import ERRORS_FILE, GATE_FILE, REPORT_FILE, GateLimits, run_build
from similar_articles.cli import main
from similar_articles.embedding import EmbeddingCache, SentenceTransformerEncoder
from similar_articles.index import FaissIndex
from similar_articles.config import IndexConfig
from similar_articles.buildlock import LOCK_FILE, BuildLockedError
from similar_articles.snapshot import SNAPSHOTS, resolve_snapshot_dir
from similar_articles.sources import DataFrameSource, SourceError, SqlSource

NOW = datetime(2017, 4, 1, tzinfo=timezone.utc)

FAULT_BUILD = Path(__file__).with_name("fault_build.py")


# ------------------------------------------------------------------ helpers
def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def warm(root: Path, rows, vectors, encoder, only=None) -> None:
    """Put the session's News100 vectors into the index's cache, as an earlier build would."""
    root.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(root / "embeddings.sqlite")
    keep = [i for i, r in enumerate(rows) if only is None or r["id"] in only]
    cache.put_many(encoder.model_id, [Article.from_row(rows[i]).content_hash for i in keep], vectors[keep])
    cache.close()


def cache_count(root: Path, kind: str = "vectors") -> int:
    """Vectors (or "terms": term counts, "copies": copy sketches) in the index's cache."""
    table = {"vectors": "embeddings", "terms": "term_counts", "copies": "copy_sketches"}[kind]
    with sqlite3.connect(root / "embeddings.sqlite") as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def integrity(root: Path) -> str:
    with sqlite3.connect(root / "embeddings.sqlite") as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.fixture()
def index(tmp_path, news100, news100_vectors, encoder):
    """An index root whose cache already holds every News100 vector."""
    root = tmp_path / "index"
    warm(root, news100, news100_vectors, encoder)
    return root


def build(rows_or_path, root, encoder, **kwargs):
    kwargs.setdefault("progress", False)
    return run_build(rows_or_path, root, encoder=encoder, **kwargs)


# ------------------------------------------------------------------ incremental
def test_rebuild_encodes_only_new_and_changed_articles_and_drops_removed_ones(
        tmp_path, news100, news100_vectors, encoder):
    root = tmp_path / "index"
    warm(root, news100, news100_vectors, encoder, only={r["id"] for r in news100[:60]})
    first = build(news100[:60], root, encoder)
    assert (first.status, first.articles, first.encoded, first.added) == ("published", 60, 0, 60)
    changed = dict(news100[3], body=news100[3]["body"] + " Updated with a correction.")
    rows = news100[:3] + [changed] + news100[4:58] + news100[60:65]  # 2 removed, 5 added, 1 changed
    second = build(rows, root, encoder)
    assert second.status == "published", second.summary()
    assert (second.encoded, second.reused) == (6, 57)
    assert (second.added, second.changed, second.removed) == (5, 1, 2)
    rec = Recommender.load(root, encoder=encoder)
    assert len(rec) == 63 and news100[58]["id"] not in rec and news100[64]["id"] in rec
    assert Path(second.snapshot).parent == root / SNAPSHOTS and cache_count(root) == 66
    assert cache_count(root, "terms") == 66  # term counts are cached the same way
    assert cache_count(root, "copies") == 66  # and so are copy sketches
    third = build(rows, root, encoder)  # nothing changed: nothing encoded
    assert third.encoded == 0 and third.gate.churn == 0.0


def test_precomputed_vectors_from_a_parquet_column_never_load_the_model(tmp_path, news100, news100_vectors):
    table = pa.Table.from_pylist([dict(r, vector=v.tolist()) for r, v in zip(news100, news100_vectors)])
    pq.write_table(table, tmp_path / "with-vectors.parquet")
    encoder = SentenceTransformerEncoder()
    report = run_build(tmp_path / "with-vectors.parquet", tmp_path / "index", vector_column="vector",
                       encoder=encoder, progress=False)
    assert report.status == "published" and report.articles == 100 and report.encoded == 0
    assert encoder._model is None
    rec = Recommender.load(tmp_path / "index")
    assert rec.manifest["embeddings"] == "precomputed" and len(rec.recommend(news100[0]["id"], k=2)) == 2


def test_bad_vectors_are_skipped_like_bad_rows(tmp_path, news100, news100_vectors):
    rows = [dict(r, vector=v.tolist()) for r, v in zip(news100[:30], news100_vectors[:30])]
    rows[1]["vector"] = None
    rows[2]["vector"] = [0.0] * 384
    rows[3]["vector"] = rows[3]["vector"][:10]
    report = run_build(rows, tmp_path / "index", vector_column="vector", progress=False)
    assert report.articles == 27 and report.skipped_by_reason == {"bad vector": 3}
    reasons = [json.loads(line)["reason"] for line in open(report.errors_path)]
    assert reasons == ["no vector in the vector column", "the vector has NaN, infinite or only zero values",
                       "the vector has 10 numbers, most rows 384"]


# ------------------------------------------------------------------ bad rows and sources
def test_bad_rows_are_skipped_and_reported_good_rows_kept(tmp_path, index, news100, encoder, caplog):
    source = tmp_path / "feed.jsonl"
    write_jsonl(source, news100[:30])
    with open(source, "ab") as f:
        f.write(b'{"id": "no-text"}\n{broken\n{"id": "bad-date", "body": "x", "date": "yesterday"}\n')
    caplog.set_level(logging.INFO, logger="similar_articles")
    report = build(source, index, encoder, progress="log")
    assert report.status == "published" and report.articles == 30 and report.rows_read == 33
    assert report.skipped_by_reason == {"invalid body": 1, "not valid JSON": 1, "invalid published_at": 1}
    errors = [json.loads(line) for line in open(index / ERRORS_FILE)]
    assert [(e["source"], e["row"]) for e in errors] == [(str(source), 31), (str(source), 32), (str(source), 33)]
    assert f"skipped: {source}, row 33 (id 'bad-date'): date 'yesterday' is not ISO 8601" in caplog.text
    assert "read: done, 33 rows" in caplog.text  # plain log lines when not on a terminal


def test_an_unreadable_source_fails_before_anything_is_published(tmp_path, index, news100, encoder):
    good = write_jsonl(tmp_path / "good.jsonl", news100[:40])
    first = build(good, index, encoder)
    for bad in (tmp_path / "missing.jsonl", SqlSource(f"sqlite:///{tmp_path / 'nope.db'}", table="articles")):
        with pytest.raises(SourceError):
            build([good, bad], index, encoder)
        assert resolve_snapshot_dir(index) == Path(first.snapshot).resolve()
        assert not (index / LOCK_FILE).exists()
        assert json.loads((index / REPORT_FILE).read_text())["status"] == "failed"
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": "x"}])
    with pytest.raises(SourceError, match="no valid articles"):
        build(empty, index, encoder)


def test_a_running_build_refuses_a_second_one(tmp_path, index, news100, encoder, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (index / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                   "purpose": "build", "started_at": "2026-01-01T03:00:00+00:00"}))
        source = write_jsonl(tmp_path / "a.jsonl", news100[:10])
        with pytest.raises(BuildLockedError, match=f"another build is running \\(pid {sleeper.pid}"):
            build(source, index, encoder)
        assert main(["build", str(source), "--index", str(index)]) == 1
        assert "this build was refused. Wait for it to finish" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------ quality gate
def test_a_regressing_build_is_refused_unless_forced(tmp_path, index, news100, encoder):
    full = build(news100, index, encoder)
    assert full.gate.passed and full.gate.new["coverage"] > 0.8
    gate = json.loads((Path(full.snapshot) / GATE_FILE).read_text())
    assert gate["passed"] and gate["new"]["boxes"] == 100
    assert GATE_FILE in json.loads((Path(full.snapshot) / "manifest.json").read_text())["checksums"]

    truncated = build(news100[:50], index, encoder)  # what a broken export looks like
    assert truncated.status == "refused" and truncated.exit_code == 3
    assert {c.name for c in truncated.gate.failed} >= {"removed", "churn"}
    assert resolve_snapshot_dir(index) == Path(full.snapshot).resolve()
    assert "failed the quality gate" in truncated.summary() and "--force" in truncated.summary()
    assert json.loads((index / REPORT_FILE).read_text())["gate"]["passed"] is False

    forced = build(news100[:50], index, encoder, force=True)
    assert forced.status == "published" and forced.gate.forced
    assert json.loads((Path(forced.snapshot) / GATE_FILE).read_text())["forced"] is True
    relaxed = build(news100[:40], index, encoder, gate=GateLimits(max_removed_share=None, max_churn=None,
                                                                  max_coverage_drop=None, max_hub_rise=None))
    assert relaxed.status == "published"


def test_absolute_limits_apply_to_a_first_build(tmp_path, news100, index, encoder):
    report = build(news100, index, encoder, gate=GateLimits(min_coverage=0.99))
    assert report.status == "refused" and [c.name for c in report.gate.failed] == ["coverage"]
    assert not (index / "current").exists()


def test_the_gate_catches_a_ranking_that_lets_copies_through(tmp_path, index, news100, encoder):
    build(news100, index, encoder)
    # Syndicated copies: the same text under another id and a retouched headline.
    copies = [dict(r, id=r["id"] + "-ap", title=r["title"] + " (AP)") for r in news100[:20]]
    # On 120 articles one more box for the top article moves the hub share by ~0.05:
    # this test is about copies, so only the duplicate limits apply.
    only_duplicates = GateLimits(max_duplicate_rate=0.0, max_hub_rise=None)
    report = build(news100 + copies, index, encoder, gate=only_duplicates)
    # The ranking collapses copies, so boxes stay clean with 20 copies indexed.
    assert report.encoded == 20 and report.status == "published"
    assert report.gate.new["duplicate_rate"] == 0.0
    # Both same-story rules off (cosine and shingle copies), as a broken setting would.
    no_dedup = Config.from_dict({"ranking": {"duplicate_similarity": 1.0, "copy_containment": None}})
    leaky = build(news100 + copies, index, encoder, config=no_dedup, dry_run=True,
                  gate=GateLimits(max_hub_rise=None))
    assert leaky.gate.new["duplicate_rate"] > 0.2
    assert [c.name for c in leaky.gate.failed] == ["duplicate rise"] and leaky.status == "refused"


def test_churn_is_measured_against_the_boxes_the_previous_gate_stored(tmp_path, index, news100, encoder,
                                                                      monkeypatch):
    import similar_articles.batch as batch
    import similar_articles.batch.gate

    Recommender.build(news100[:90], index, encoder=encoder)  # no gate files: boxes recomputed
    first = build(news100[:95], index, encoder)
    assert first.gate.previous["boxes"] == 90 and first.gate.churn_sample == 90
    stored = json.loads((Path(first.snapshot) / batch.gate.GATE_BOXES_FILE).read_text())
    assert len(stored) == 95 and all(len(items) == 2 for items in stored.values())

    def never(*args, **kwargs):
        raise AssertionError("the previous snapshot was opened although its gate boxes were stored")

    monkeypatch.setattr(batch.gate.ServingState, "from_snapshot", never)
    second = build(news100, index, encoder)
    assert second.gate.previous == first.gate.new and second.gate.churn_sample == 95
    monkeypatch.undo()
    third = build(news100, index, encoder, gate=GateLimits(sample=50))  # other settings: recomputed
    assert third.gate.previous["boxes"] == 50 and third.gate.churn == 0.0


@pytest.mark.parametrize("items, words", [
    (["max_churn"], "write NAME=VALUE"),
    (["max_churn=lots"], "not a number"),
    (["max_churn=2"], "a share in \\[0, 1\\]"),
    (["k=0"], "positive integer"),
])
def test_gate_limits_are_validated(items, words):
    with pytest.raises(ConfigError, match=words):
        GateLimits.from_overrides(items)


def test_gate_overrides_parse():
    limits = GateLimits.from_overrides(["max-churn=0.8", "min_coverage=none", "sample=500"])
    assert (limits.max_churn, limits.min_coverage, limits.sample) == (0.8, None, 500)


def test_dry_run_does_everything_but_publish(tmp_path, index, news100, encoder):
    report = build(news100, index, encoder, dry_run=True)
    assert report.status == "dry_run" and report.exit_code == 0 and report.gate.passed
    assert "write" in report.seconds and "publish" not in report.seconds
    assert not (index / "current").exists() and list((index / SNAPSHOTS).iterdir()) == []


# ------------------------------------------------------------------ sources end to end
def _sqlite_equals_jsonl(tmp_path, rows, encoder, *, cache=None, gate=None):
    """Build ``rows`` from JSONL and from a SQLite file (other column names, mapped back)
    and check that the two snapshots hold the same articles, vectors and boxes."""
    jsonl_root, sql_root = tmp_path / "from-jsonl", tmp_path / "from-sql"
    from_jsonl = build(write_jsonl(tmp_path / "rows.jsonl", rows), jsonl_root, encoder,
                       cache=cache or True, gate=gate)
    db = tmp_path / "archive.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE articles (article_id TEXT PRIMARY KEY, title TEXT, article_text TEXT, "
                    "published_at TEXT, url TEXT, section TEXT)")
        con.executemany("INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?)",
                        [(r["id"], r["title"], r["body"], r["published_at"], r["url"], r["section"])
                         for r in rows])
    if cache is None:  # the same vectors, as a nightly job pointed at the database would find them
        sql_root.mkdir()
        (sql_root / "embeddings.sqlite").write_bytes((jsonl_root / "embeddings.sqlite").read_bytes())
    args = ["build", "--sql-url", f"sqlite:///{db}", "--query", "SELECT * FROM articles ORDER BY rowid",
            "--map", "body=article_text", "--map", "id=article_id", "--index", str(sql_root), "--progress", "none"]
    if cache is not None:
        args += ["--cache", str(cache)]
    if gate is not None:
        args += ["--gate", f"sample={gate.sample}"]
    assert main(args) == 0
    from_sql = json.loads((sql_root / REPORT_FILE).read_text())
    assert from_sql["encoded"] == 0  # same text, same content hashes: every vector from the cache

    a, b = resolve_snapshot_dir(jsonl_root), resolve_snapshot_dir(sql_root)
    assert json.loads((a / "articles.json").read_text()) == json.loads((b / "articles.json").read_text())
    for name in sorted(p.name for p in a.glob("*.npy")):
        np.testing.assert_array_equal(np.load(a / name), np.load(b / name), err_msg=name)
    kind = json.loads((a / "manifest.json").read_text())["index_kind"]
    ia, ib = (FaissIndex.load(p / "index.faiss", kind, IndexConfig()) for p in (a, b))
    positions = np.arange(len(rows))
    np.testing.assert_array_equal(ia.vectors(positions), ib.vectors(positions))
    ra, rb = Recommender.load(jsonl_root, encoder=encoder), Recommender.load(sql_root, encoder=encoder)
    ids = [r["id"] for r in rows][::max(1, len(rows) // 200)]
    assert ra.recommend_many(ids, k=3, now=NOW) == rb.recommend_many(ids, k=3, now=NOW)
    assert from_jsonl.articles == from_sql["articles"] == len(rows)


def test_sqlite_build_equals_jsonl_build(tmp_path, news100, news100_vectors, encoder):
    warm(tmp_path / "from-jsonl", news100, news100_vectors, encoder)
    _sqlite_equals_jsonl(tmp_path, news100, encoder)


@pytest.mark.slow
def test_sqlite_build_equals_jsonl_build_on_all_news_articles(tmp_path, encoder):
    """The whole NewsArticles corpus (3,783 articles after cleaning). Uses the shared
    embedding cache of the data folder: minutes the first time, under a minute after."""
    from similar_articles.datasets import load_news_articles
    from similar_articles.paths import data_dir

    rows = load_news_articles("full").rows
    _sqlite_equals_jsonl(tmp_path, rows, encoder, cache=data_dir() / "embeddings.sqlite",
                         gate=GateLimits(sample=300))


def test_batch_build_equals_recommender_build(tmp_path, index, news100, encoder):
    """Streaming (chunks, two-pass lexical fingerprints) changes nothing in the snapshot."""
    streamed = build(news100, index, encoder, chunk_rows=7)
    direct = Recommender.build(news100, tmp_path / "direct", encoder=encoder, cache=index / "embeddings.sqlite")
    a, b = Path(streamed.snapshot), direct.path
    assert json.loads((a / "articles.json").read_text()) == json.loads((b / "articles.json").read_text())
    arrays = sorted(p.name for p in b.glob("*.npy"))
    assert arrays == sorted(p.name for p in a.glob("*.npy")) and "lexical_idf.npy" in arrays
    assert "copy_sketches.npy" in arrays  # from the cache and chunks: the same sketches
    for name in arrays:
        np.testing.assert_array_equal(np.load(a / name), np.load(b / name), err_msg=name)
    rec = Recommender.load(index, encoder=encoder)
    for row in news100[::10]:
        assert rec.recommend(row["id"], k=3, now=NOW) == direct.recommend(row["id"], k=3, now=NOW)


def test_dataframe_and_many_files_in_the_library_api(tmp_path, index, news100, encoder):
    frame = pd.DataFrame(news100[:40]).rename(columns={"body": "article_text"})
    write_jsonl(tmp_path / "part-1.jsonl", news100[40:70])
    pq.write_table(pa.Table.from_pylist(news100[70:]), tmp_path / "part-2.parquet")
    report = build([DataFrameSource(frame, mapping={"body": "article_text"}), str(tmp_path / "part-*")],
                   index, encoder)
    assert report.articles == 100 and report.encoded == 0 and len(report.sources) == 3


# ------------------------------------------------------------------ the command line
def test_cli_usage_errors_exit_2(tmp_path, capsys):
    cases = [
        ["build", "--index", str(tmp_path)],
        ["build", "--index", str(tmp_path), "--query", "SELECT 1"],
        ["build", "x.jsonl", "--index", str(tmp_path), "--map", "nonsense"],
        ["build", "x.jsonl", "--index", str(tmp_path), "--gate", "max_churn=9"],
        ["build", "--index", str(tmp_path), "--sql-url", "sqlite:///x.db"],
    ]
    for args in cases:
        assert main(args) == 2, args
        assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["build", "x.jsonl"])  # argparse: --index is required
    assert info.value.code == 2


def test_cli_reports_json_and_rolls_back(tmp_path, index, news100, encoder, capsys):
    source = write_jsonl(tmp_path / "a.jsonl", news100[:90])
    assert main(["build", str(source), "--index", str(index), "--progress", "none"]) == 0
    assert capsys.readouterr().out.startswith("published 90 articles (0 encoded, 90 from cache; 0 rows skipped)")
    first = resolve_snapshot_dir(index)
    write_jsonl(source, news100)
    assert main(["build", str(source), "--index", str(index), "--json", "--progress", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "published" and report["added"] == 10 and report["exit_code"] == 0
    assert main(["rollback", "--index", str(index)]) == 0
    assert resolve_snapshot_dir(index) == first
    assert f"now serving {first.name}" in capsys.readouterr().out
    assert main(["rollback", "--index", str(index)]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err


# ------------------------------------------------------------------ kill -9 at every stage
KILL_STAGES = ["read", "encode", "encode#2", "index", "candidates", "gate", "write", "publish"]


@pytest.mark.parametrize("stage", KILL_STAGES)
def test_kill_9_at_any_stage_leaves_the_previous_snapshot_serving(tmp_path, news100, news100_vectors,
                                                                  encoder, stage, caplog):
    root = tmp_path / "index"
    encoding = stage.startswith("encode")
    # Before encoding stages the 10 new articles are not cached, so the killed build has
    # real encoding to do; for later stages everything is cached and the kill is fast.
    warm(root, news100, news100_vectors, encoder,
         only={r["id"] for r in (news100[:90] if encoding else news100)})
    before = build(news100[:90], root, encoder)
    # New articles first, so that with 4-row chunks "encode#2" comes after 4 were committed.
    source = write_jsonl(tmp_path / "all.jsonl", news100[90:] + news100[:90])

    proc = subprocess.Popen(
        [sys.executable, str(FAULT_BUILD), stage, "build", str(source), "--index", str(root),
         "--chunk-rows", "4", "--progress", "log"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 300
        for line in proc.stderr:
            if f"paused at {stage}" in line:
                break
            assert time.time() < deadline, "the build never reached the stage"
        else:
            pytest.fail(f"the build ended without pausing at {stage} (exit {proc.wait()})")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    # The previous snapshot still loads and serves.
    assert resolve_snapshot_dir(root) == Path(before.snapshot).resolve()
    rec = Recommender.load(root, encoder=encoder)
    assert len(rec) == 90 and len(rec.recommend(news100[0]["id"], k=2)) == 2
    # The cache is whole; what the killed build committed is kept.
    assert integrity(root) == "ok"
    committed = cache_count(root)
    assert committed == (94 if stage == "encode#2" else 90 if encoding else 100)
    assert cache_count(root, "terms") == {"read": 90, "encode": 90, "encode#2": 94}.get(stage, 100)
    assert (root / LOCK_FILE).exists()  # stale: its pid is dead

    caplog.set_level(logging.WARNING, logger="similar_articles")
    after = build(source, root, encoder)
    assert after.status == "published" and after.articles == 100
    assert after.encoded == 100 - committed  # every vector the killed build committed is reused
    assert "cleared a stale lock" in caplog.text
    assert not (root / LOCK_FILE).exists()
    assert not [p for p in (root / SNAPSHOTS).iterdir() if p.name.startswith(".tmp-")]
    assert integrity(root) == "ok" and len(Recommender.load(root, encoder=encoder)) == 100


# ------------------------------------------------------------------ concurrent readers
def test_readers_see_no_error_while_two_builds_publish(tmp_path, index, news100, encoder, monkeypatch):
    build(news100[:80], index, encoder)
    rec = Recommender.load(index, encoder=encoder, reload_interval=0.05)
    monkeypatch.setattr(recommender_module, "_default", rec)  # what recommend() serves
    stable_ids = [r["id"] for r in news100[:80]]
    errors: list[BaseException] = []
    calls = [0] * 4
    stop = threading.Event()

    def reader(n: int) -> None:
        ask = recommend if n % 2 else rec.recommend
        i = n
        while not stop.is_set():
            try:
                box = ask(stable_ids[i % len(stable_ids)], k=2)
                assert len(box) == 2, box
            except BaseException as exc:  # noqa: BLE001 - every failure counts
                errors.append(exc)
            calls[n] += 1
            i += 7

    threads = [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for upto in (90, 100):
            report = build(news100[:upto], index, encoder)
            assert report.status == "published"
            seen_before = sum(calls)
            deadline = time.time() + 10
            published = Path(report.snapshot).resolve()
            while rec.path != published and time.time() < deadline:
                time.sleep(0.02)
            assert rec.path == published, "the readers never switched"
            new_id = news100[upto - 1]["id"]
            assert new_id in rec and len(recommend(new_id, k=2)) == 2
            time.sleep(0.2)
            assert sum(calls) > seen_before  # readers kept going across the swap
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert min(calls) > 10


def test_feature_rows_an_older_version_kept_among_the_embeddings_are_dropped(tmp_path, encoder):
    from similar_articles.batch.features import FeatureCache

    path = tmp_path / "embeddings.sqlite"
    cache = EmbeddingCache(path)
    vector = np.ones((1, 4), np.float32)
    for model_id in (encoder.model_id, "terms|hashing|1048576|5000|english", "copies|v1|32"):
        cache.put_many(model_id, ["h1"], vector)
    cache.close()
    FeatureCache(path).close()
    with sqlite3.connect(path) as db:
        left = [row[0] for row in db.execute("SELECT model_id FROM embeddings")]
    assert left == [encoder.model_id]  # the vectors stay; term counts and sketches have their own tables
