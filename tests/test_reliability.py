"""Issue 30: no input silently lost, no bad row crashes a build, every failure names its
fix. One test per finding of the issue (numbered as there)."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import sqlite3
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from similar_articles import (Article, ConfigError, IndexCorruptedError, IndexNotFoundError, InvalidArticleError,
                              Recommender, StorageError)
from similar_articles.batch import DRY_RUN_REPORT_FILE, REPORT_FILE, GateLimits, run_build
from similar_articles.cli import main
from similar_articles.embedding import EmbeddingCache
from similar_articles.embedding.vectors import normalise_rows
from similar_articles.snapshot import CURRENT, SNAPSHOTS, list_snapshots, resolve_snapshot_dir, rollback
from similar_articles.sources import FileSource, RowError, SourceError, read_rows

from test_snapshot import write as write_snapshot


def csv_file(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def jsonl_file(path: Path, rows, *, prefix: bytes = b"") -> Path:
    path.write_bytes(prefix + "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
    return path


def small_rows(n: int) -> list[dict]:
    return [{"id": f"a{i}", "title": f"Headline number {i}", "body": f"Body of article {i}, in words."}
            for i in range(1, n + 1)]


def warm(root: Path, rows, vectors, encoder) -> None:
    """Put the session's News100 vectors into the index's cache, as an earlier build would."""
    root.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(root / "embeddings.sqlite")
    cache.put_many(encoder.model_id, [Article.from_row(r).content_hash for r in rows], vectors[:len(rows)])
    cache.close()


# ------------------------------------------------------------------ 1. unclosed quote
def test_1_an_unclosed_quote_costs_one_row_not_the_rest_of_the_file(tmp_path):
    path = csv_file(tmp_path / "feed.csv", small_rows(100))
    lines = path.read_text(encoding="utf-8").split("\n")
    # Row 91 (line 92): a quote opened and never closed, as a hand-edited export has it.
    lines[91] = 'a91,"Minister says ""no comment"" on budget,Body of article 91'
    path.write_text("\n".join(lines), encoding="utf-8")
    read = list(read_rows(path))
    errors = [row for _, row in read if isinstance(row, RowError)]
    ids = [row["id"] for _, row in read if not isinstance(row, RowError)]
    assert len(errors) == 1 and errors[0].kind == "unclosed quote"
    assert "line 92" in errors[0].reason and "Close the quote" in errors[0].reason
    assert ids == [f"a{i}" for i in range(1, 101) if i != 91]  # rows 92-100 are not swallowed
    assert max(len(row.get("title", "")) for _, row in read if isinstance(row, dict)) < 30


def test_1_a_build_reports_the_swallowing_row(tmp_path, encoder):
    path = csv_file(tmp_path / "feed.csv", small_rows(40))
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[31] = 'a31,"Minister says ""no comment"" on budget,Body of article 31'
    path.write_text("\n".join(lines), encoding="utf-8")
    report = run_build(path, tmp_path / "index", encoder=encoder, cache=False, progress=False)
    assert report.status == "published" and report.articles == 39
    assert report.skipped_by_reason == {"unclosed quote": 1}


def test_1_a_quote_closed_by_a_later_row_is_reported_too(tmp_path):
    rows = small_rows(10)
    rows[7]["title"] = 'She said "yes, and'  # written quoted by csv: fine
    path = csv_file(tmp_path / "feed.csv", rows)
    text = path.read_text(encoding="utf-8").replace("a3,Headline number 3", 'a3,"Headline number 3')
    path.write_text(text, encoding="utf-8")
    read = list(read_rows(path))
    errors = [row for _, row in read if isinstance(row, RowError)]
    assert [e.row for e in errors] == [3] and "line 4" in errors[0].reason
    assert len(read) == 10 and sum(isinstance(r, dict) for _, r in read) == 9


def test_1_quoted_fields_spanning_lines_still_read_whole(tmp_path):
    rows = small_rows(3)
    rows[1]["body"] = "First paragraph.\n\nSecond, with a \"quote\"."
    read = list(read_rows(csv_file(tmp_path / "feed.csv", rows)))
    assert [r["body"] for _, r in read] == [row["body"] for row in rows]


# ------------------------------------------------------------------ 2. now=
@pytest.mark.parametrize("now", ["2019-02-01", date(2019, 2, 1), 1548979200, 0])
def test_2_now_that_is_not_a_datetime_is_refused_by_name(seed_index, now):
    rec = Recommender.load(seed_index)
    with pytest.raises(ConfigError, match="now=.* give a datetime"):
        rec.recommend(rec.ids()[0], now=now)
    with pytest.raises(ConfigError, match="now=.* give a datetime"):
        rec.recommend_many(rec.ids()[:2], now=now)


# ------------------------------------------------------------------ 3. current lost
@pytest.mark.parametrize("damage", ["deleted", "dangling"])
def test_3_rollback_to_repairs_a_lost_current_link(tmp_path, damage):
    first, second = write_snapshot(tmp_path, 1), write_snapshot(tmp_path, 2)
    (tmp_path / CURRENT).unlink()
    if damage == "dangling":
        os.symlink(Path(SNAPSHOTS) / "20200101T000000000000Z", tmp_path / CURRENT)
    with pytest.raises(IndexNotFoundError, match=f"rollback --to needs one of: {first.name}, {second.name}"):
        rollback(tmp_path)
    with pytest.raises(IndexNotFoundError, match=f"current is missing .* rollback --index {tmp_path} --to {second.name}"):
        resolve_snapshot_dir(tmp_path)
    assert rollback(tmp_path, to=first.name) == (first, None)
    assert resolve_snapshot_dir(tmp_path) == first


def test_3_a_build_after_current_is_lost_is_not_a_first_build(tmp_path, news100, news100_vectors, encoder):
    root = tmp_path / "index"
    warm(root, news100[:60], news100_vectors, encoder)
    assert run_build(news100[:60], root, encoder=encoder, progress=False).status == "published"
    (root / CURRENT).unlink()
    truncated = run_build(news100[:10], root, encoder=encoder, progress=False)  # a truncated export
    assert truncated.status == "refused" and truncated.removed == 50
    assert any(c.name == "removed" for c in truncated.gate.failed)
    assert any("missing or dangling" in note for note in truncated.gate.notes)


# ------------------------------------------------------------------ 4. vector length
def test_4_most_rows_decide_the_vector_length_not_the_first(tmp_path, news100, news100_vectors):
    rows = [dict(r, vector=v.tolist()) for r, v in zip(news100[:40], news100_vectors[:40])]
    rows[0]["vector"] = rows[0]["vector"][:8]
    report = run_build(rows, tmp_path / "index", vector_column="vector", progress=False)
    assert report.status == "published" and report.articles == 39
    assert report.skipped_by_reason == {"bad vector": 1}
    reason = json.loads(Path(report.errors_path).read_text().splitlines()[0])
    assert reason["row"] == 1 and reason["reason"] == "the vector has 8 numbers, most rows 384"
    assert Recommender.load(tmp_path / "index").manifest["dimensions"] == 384


# ------------------------------------------------------------------ 5. crashing rows
def test_5_a_deeply_nested_line_is_a_row_error(tmp_path):
    path = tmp_path / "feed.jsonl"
    path.write_bytes(b'{"id": "a1", "title": "One"}\n' + b'{"id": "x", "tags": ' + b"[" * 100_000
                     + b"]" * 100_000 + b"}\n" + b'{"id": "a2", "title": "Two"}\n')
    read = list(read_rows(path))
    assert [n for n, _ in read] == [1, 2, 3] and isinstance(read[1][1], RowError)
    assert "nested too deeply" in read[1][1].reason and read[2][1]["id"] == "a2"


@pytest.mark.parametrize("when", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_5_a_date_outside_the_calendar_in_utc_is_a_row_error(tmp_path, seed_index, when):
    row = {"id": "x", "title": "NATO summit", "published_at": when}
    with pytest.raises(InvalidArticleError, match="out of range.*fix the date"):
        Article.from_row(row)
    with pytest.raises(InvalidArticleError, match="out of range"):
        Recommender.build([row, {"id": "y", "title": "Other"}], tmp_path / "b")
    with pytest.raises(InvalidArticleError, match="out of range"):
        Recommender.load(seed_index).recommend(row)
    report = run_build([row, *small_rows(3)], tmp_path / "index", progress=False, cache=False)
    assert report.status == "published" and report.skipped_by_reason == {"invalid published_at": 1}


# ------------------------------------------------------------------ 6. lost without a word
def test_6_a_byte_order_mark_does_not_cost_the_first_jsonl_row(tmp_path):
    path = jsonl_file(tmp_path / "feed.jsonl", small_rows(3), prefix=b"\xef\xbb\xbf")
    assert [row["id"] for _, row in read_rows(path)] == ["a1", "a2", "a3"]


def test_6_a_misspelt_mapped_jsonl_column_fails_at_once(tmp_path):
    rows = [dict(r, article_text=r.pop("body")) for r in small_rows(3)]
    path = jsonl_file(tmp_path / "feed.jsonl", rows)
    source = FileSource(path, mapping={"body": "artcle_text"})
    with pytest.raises(SourceError, match=r"no column for --map body=artcle_text; its columns \(in the first"
                                          r" 1000 rows\) are id, title, article_text; fix the column name"):
        source.check()
    with pytest.raises(SourceError, match="artcle_text"):
        run_build(path, tmp_path / "index", mapping=["body=artcle_text"], progress=False)
    FileSource(path, mapping={"body": "article_text"}).check()


# ------------------------------------------------------------------ 7. misuse
def test_7_misused_arguments_raise_errors_naming_the_parameter(seed_index):
    rec = Recommender.load(seed_index)
    ids = rec.ids()
    with pytest.raises(ConfigError, match="exclude_ids=.* a single string: give a list of ids"):
        rec.recommend(ids[0], exclude_ids=ids[1])
    with pytest.raises(ConfigError, match="sections='sport' is a single string"):
        rec.recommend(ids[0], sections="sport")
    with pytest.raises(ConfigError, match="batch_size=-1 is invalid"):
        rec.recommend_many(ids, batch_size=-1)
    with pytest.raises(ConfigError, match=r"remove\(\) takes article ids \(strings\), got dict"):
        rec.remove([{"id": ids[0]}])


# ------------------------------------------------------------------ 8. rollback twice
def test_8_a_second_rollback_goes_further_back_not_forward(tmp_path):
    first, second, third = (write_snapshot(tmp_path, n) for n in (1, 2, 3))
    assert rollback(tmp_path) == (second, third)
    assert rollback(tmp_path) == (first, second)
    assert resolve_snapshot_dir(tmp_path) == first


# ------------------------------------------------------------------ 10. smaller risks
def test_10_vectors_scaled_far_up_or_down_keep_their_direction():
    base = np.random.default_rng(0).normal(size=(3, 384)).astype(np.float32)
    expected = normalise_rows(base)
    for scale in (1e30, 1e-30):
        scaled = normalise_rows(base * np.float32(scale))
        assert np.allclose(scaled, expected, atol=1e-5)
        assert np.allclose(np.linalg.norm(scaled, axis=1), 1.0, atol=1e-5)


def test_10_a_huge_row_is_refused_with_its_size_not_read_into_memory(tmp_path):
    rows = small_rows(3)
    rows[1]["body"] = "word " * (2 * 2**20)  # 10 MB
    for path in (jsonl_file(tmp_path / "feed.jsonl", rows), csv_file(tmp_path / "feed.csv", rows)):
        read = list(read_rows(path))
        assert [r["id"] for _, r in read if isinstance(r, dict)] == ["a1", "a3"]
        error = read[1][1]
        assert isinstance(error, RowError) and error.kind == "row too large" and "MB" in error.reason


# ------------------------------------------------------------------ 9. failures that name their fix
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/index/snapshots/.tmp-x/published.npy")


def test_9_a_full_disk_while_writing_a_snapshot_names_the_fix(tmp_path, monkeypatch, capsys):
    path = jsonl_file(tmp_path / "feed.jsonl", small_rows(5))
    first = run_build(path, tmp_path / "index", progress=False, cache=False)
    monkeypatch.setattr(np, "save", no_space)
    assert main(["build", str(path), "--index", str(tmp_path / "index"), "--progress", "none"]) == 1
    err = capsys.readouterr().err
    assert "no space left on the disk of /index/snapshots/.tmp-x/published.npy while building the index: " \
           "free space there" in err and "Traceback" not in err
    assert resolve_snapshot_dir(tmp_path / "index") == Path(first.snapshot)  # the old one serves
    saved = json.loads((tmp_path / "index" / REPORT_FILE).read_text())
    assert saved["status"] == "failed" and "free space there" in saved["error"]


def test_9_a_full_disk_while_writing_the_cache_names_the_fix(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(EmbeddingCache, "put_many", full)
    with pytest.raises(StorageError, match="no space left on the disk of .*index while building the index"):
        run_build(small_rows(5), tmp_path / "index", progress=False)


def test_9_a_read_only_index_folder_names_the_fix(tmp_path, monkeypatch):
    import similar_articles.buildlock as buildlock

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(buildlock.os, "open", read_only)
    with pytest.raises(StorageError, match="build.lock is not writable .*Read-only file system.* give the user "
                                           "running the build write access to"):
        run_build(small_rows(5), tmp_path / "index", progress=False)


def test_9_a_garbage_cache_file_is_moved_aside_and_rebuilt(tmp_path, caplog):
    root = tmp_path / "index"
    root.mkdir()
    (root / "embeddings.sqlite").write_bytes(b"this is not a database" * 100)
    report = run_build(small_rows(5), root, progress=False)
    assert report.status == "published" and report.encoded == 5
    aside = [p.name for p in root.iterdir() if p.name.startswith("embeddings.sqlite.damaged-")]
    assert len(aside) == 1 and "moved it to " + aside[0] in caplog.text


@pytest.mark.parametrize("damage", [b"\x00\x01", bytes(384 * 4), np.full(384, np.nan, np.float32).tobytes()])
def test_9_a_damaged_cache_row_is_dropped_and_encoded_again(tmp_path, encoder, damage):
    root = tmp_path / "index"
    rows = small_rows(6)
    assert run_build(rows, root, encoder=encoder, progress=False).encoded == 6
    with sqlite3.connect(root / "embeddings.sqlite") as db:
        db.execute("UPDATE embeddings SET vector = ? WHERE content_hash = ?",
                   (damage, Article.from_row(rows[2]).content_hash))
    for _ in range(2):  # the damaged row is replaced, so the build after is clean again
        report = run_build(rows, root, encoder=encoder, progress=False)
        assert report.status == "published"
    rec = Recommender.load(root)
    vectors = rec.state.index.vectors(np.arange(len(rec)))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert report.encoded == 0 and report.cache_repaired == 0


@pytest.mark.parametrize("tamper", [
    lambda m: [],
    lambda m: {**m, "checksums": list(m["checksums"])},
    lambda m: {**m, "config": [1]},
    lambda m: {**m, "checksums": {**m["checksums"], "/etc/passwd.npy": "0" * 64}},
    lambda m: {**m, "checksums": {**m["checksums"], "../published.npy": "0" * 64}},
])
def test_9_and_10_a_tampered_manifest_is_refused_by_name(tmp_path, seed_index, tamper):
    root = tmp_path / "index"
    shutil.copytree(seed_index, root, symlinks=True)
    manifest_path = resolve_snapshot_dir(root) / "manifest.json"
    manifest_path.write_text(json.dumps(tamper(json.loads(manifest_path.read_text()))))
    with pytest.raises(IndexCorruptedError, match="manifest.json: .*; roll back to an earlier snapshot"):
        Recommender.load(root)


# ------------------------------------------------------------------ docs: the cron job
def test_a_dry_run_leaves_last_build_json_alone(tmp_path):
    path = jsonl_file(tmp_path / "feed.jsonl", small_rows(5))
    run_build(path, tmp_path / "index", progress=False, cache=False)
    before = (tmp_path / "index" / REPORT_FILE).read_text()
    report = run_build(path, tmp_path / "index", progress=False, cache=False, dry_run=True)
    assert report.status == "dry_run" and (tmp_path / "index" / REPORT_FILE).read_text() == before
    assert json.loads((tmp_path / "index" / DRY_RUN_REPORT_FILE).read_text())["status"] == "dry_run"


# ------------------------------------------------------------------ 10. cache pruning
def test_10_cache_entries_no_recent_build_used_are_pruned(tmp_path, encoder):
    root, rows = tmp_path / "index", small_rows(6)
    run_build(rows, root, encoder=encoder, progress=False, prune_cache_after=2)
    edited = [dict(rows[0], body="An edit that changes the text."), *rows[1:]]
    first = run_build(edited, root, encoder=encoder, progress=False, prune_cache_after=2)
    assert first.cache_pruned == 0 and len(EmbeddingCache(root / "embeddings.sqlite")) == 7
    second = run_build(edited, root, encoder=encoder, progress=False, prune_cache_after=2)
    assert second.cache_pruned == 1 and "1 unused entries pruned" in second.summary()
    assert len(EmbeddingCache(root / "embeddings.sqlite")) == 6
    kept = run_build(edited, root, encoder=encoder, progress=False, prune_cache_after=0)
    assert kept.cache_pruned == 0 and kept.encoded == 0


def test_1_the_gate_counts_unreadable_rows(tmp_path, encoder):
    path = csv_file(tmp_path / "feed.csv", small_rows(40))
    lines = path.read_text(encoding="utf-8").split("\n")
    for line in (5, 12, 20):  # 3 of 40 rows: 7.5% unreadable
        lines[line] = f'a{line},"Minister says ""no comment"" on budget,Body'
    path.write_text("\n".join(lines), encoding="utf-8")
    report = run_build(path, tmp_path / "index", encoder=encoder, cache=False, progress=False)
    assert report.status == "published" and report.articles == 37  # under the default 0.2
    assert "ok   unreadable rows   0.075  (limit: max 0.2)" in report.summary()
    strict = run_build(path, tmp_path / "index", encoder=encoder, cache=False, progress=False,
                       gate=GateLimits(max_unreadable_share=0.05))
    assert strict.status == "refused" and strict.exit_code == 3
    assert [c.problem() for c in strict.gate.failed] == ["unreadable rows 0.075 > 0.05"]


def test_10_the_cache_keeps_the_layout_older_versions_write(tmp_path, encoder):
    """A cache shared through --cache with an older version: its rows still go in, and
    count as used from the next build on (so they are pruned only once unused)."""
    root = tmp_path / "index"
    run_build(small_rows(3), root, encoder=encoder, progress=False, prune_cache_after=1)
    with sqlite3.connect(root / "embeddings.sqlite") as db:
        db.execute("INSERT INTO embeddings VALUES (?, ?, ?)", ("old-model", "abc", np.ones(4, np.float32).tobytes()))
    first = run_build(small_rows(3), root, encoder=encoder, progress=False, prune_cache_after=1)
    assert first.cache_pruned == 0 and len(EmbeddingCache(root / "embeddings.sqlite")) == 4
    second = run_build(small_rows(3), root, encoder=encoder, progress=False, prune_cache_after=1)
    assert second.cache_pruned == 1 and len(EmbeddingCache(root / "embeddings.sqlite")) == 3


@pytest.mark.parametrize("table, column", [("term_counts", "term_ids"), ("copy_sketches", "sketch")])
def test_9_a_damaged_feature_row_is_computed_again(tmp_path, encoder, table, column):
    root, rows = tmp_path / "index", small_rows(6)
    first = run_build(rows, root, encoder=encoder, progress=False)
    with sqlite3.connect(root / "embeddings.sqlite") as db:
        db.execute(f"UPDATE {table} SET {column} = ? WHERE content_hash = ?",
                   (b"\x01\x02\x03", Article.from_row(rows[2]).content_hash))
    again = run_build(rows, root, encoder=encoder, progress=False)
    assert again.status == "published"
    assert (Path(again.snapshot) / "term_ids.npy").read_bytes() == (Path(first.snapshot) / "term_ids.npy").read_bytes()
    assert (Path(again.snapshot) / "copy_sketches.npy").read_bytes() == \
        (Path(first.snapshot) / "copy_sketches.npy").read_bytes()


# ------------------------------------------------------------------ docs: the cron job
def test_the_cron_example_needs_nothing_from_a_login_shell(monkeypatch):
    """Cron gives a job a bare environment: the example names the command by an absolute
    path, sets every variable it reads in the crontab, and parses as a real build."""
    import re
    import shlex

    from similar_articles.cli import _parser

    text = (Path(__file__).parents[1] / "docs" / "batch.md").read_text(encoding="utf-8")
    block = re.search(r"```cron\n(.*?)```", text, re.S).group(1).splitlines()
    settings = dict(line.split("=", 1) for line in block if re.match(r"^[A-Z_]+=", line))
    job = next(line for line in block if re.match(r"^[\d*]", line))
    command = shlex.split(job)[5:]
    assert command[0].startswith("/") and command[0].endswith("/bin/similar-articles")
    assert set(re.findall(r"\$\{?([A-Za-z_]+)", job)) <= set(settings)  # no variable cron lacks
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    args = _parser().parse_args(command[1:command.index(">>/var/log/sa-build.log")])
    assert args.sql_url == settings["SIMILAR_ARTICLES_SQL_URL"] and args.table == "articles"
