"""Sources: files, globs, DataFrames and SQL read as streams, with bad rows reported."""

from __future__ import annotations

import json
import sqlite3
import sys
import tracemalloc
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from similar_articles import Article, ConfigError
from similar_articles.sources import (ArticleReader, DataFrameSource, FileSource, RowError, RowsSource,
                                      SourceError, SqlSource, as_sources, collect_articles, expand_paths,
                                      parse_mapping, read_rows)

ROWS = [
    {"id": "a1", "title": "Talks on the treaty fail", "body": "Diplomats left Geneva without a deal.",
     "published_at": "2019-01-25", "section": "world", "url": "https://example.org/a1", "tags": ["inf", "nato"]},
    {"id": "a2", "title": "Missile shown to attaches", "body": "The army displayed the 9M729.",
     "published_at": "2019-01-23T10:00:00+00:00", "section": "world", "url": "https://example.org/a2", "tags": []},
    {"id": "a3", "title": "Migration fell", "body": "An OECD report on migration.", "published_at": None,
     "section": "economy", "url": None, "tags": None},
]


def articles_of(source) -> tuple[list[Article], list[RowError]]:
    return collect_articles(source.rows(), source=source.name)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_sqlite(path, rows, *, body_column="body", extra_rows=0, body_size=0):
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE articles (id TEXT, title TEXT, {body_column} TEXT, published_at TEXT, "
               "section TEXT, url TEXT)")
    db.executemany("INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?)",
                   [(r["id"], r["title"], r["body"], r["published_at"], r["section"], r["url"]) for r in rows])
    filler = "word " * (body_size // 5)
    db.executemany("INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?)",
                   ((f"x{i}", f"Title {i}", f"{i} {filler}", "2020-01-01", "s", None) for i in range(extra_rows)))
    db.commit()
    db.close()
    return path


def reference():
    return [Article.from_row(r) for r in ROWS]


# ------------------------------------------------------------------ files
def test_jsonl_csv_and_parquet_give_the_same_articles(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    pd.DataFrame([{**r, "tags": ",".join(r["tags"] or [])} for r in ROWS]).to_csv(tmp_path / "a.csv", index=False)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.csv", "a.parquet"):
        articles, errors = articles_of(FileSource(tmp_path / name))
        assert errors == [] and articles == reference(), name


def test_parquet_reads_in_record_batches_with_native_types(tmp_path):
    table = pa.table({
        "id": pa.array(range(1, 11), pa.int64()),
        "title": [f"Story {i}" for i in range(1, 11)],
        "published_at": pa.array([datetime(2019, 1, i, 12) for i in range(1, 11)], pa.timestamp("us")),
        "tags": [["a", "b"]] * 10,
    })
    pq.write_table(table, tmp_path / "typed.parquet", row_group_size=4)
    rows = list(FileSource(tmp_path / "typed.parquet", batch_rows=3).rows())
    assert [n for n, _ in rows] == list(range(1, 11))
    article = Article.from_row(rows[4][1])
    assert article.id == "5" and article.tags == ("a", "b")
    assert article.published_at == datetime(2019, 1, 5, 12, tzinfo=timezone.utc)


def test_a_damaged_parquet_file_fails_the_source(tmp_path):
    path = tmp_path / "broken.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(SourceError, match="broken.parquet: not a readable Parquet file"):
        list(FileSource(path).rows())


def test_bad_rows_are_reported_with_source_row_reason_and_kind(tmp_path):
    path = tmp_path / "feed.jsonl"
    path.write_bytes(b'{"id": "ok", "body": "fine"}\n{broken\n[1, 2]\n{"id": "x", "body": "caf\xe9"}\n'
                     b'{"id": "no-text"}\n{"id": "ok", "body": "again"}\n')
    articles, errors = articles_of(FileSource(path))
    assert [a.id for a in articles] == ["ok"]
    assert [(e.row, e.summary_key) for e in errors] == [
        (2, "not valid JSON"), (3, "not a JSON object"), (4, "not UTF-8"), (5, "invalid body"), (6, "duplicate id")]
    assert str(errors[-1]).startswith(f"{path}, row 6 (id 'ok'): duplicate id (first at row 1)")
    assert json.loads(json.dumps(errors[0].to_dict()))["source"] == str(path)


def test_duplicate_ids_across_sources_name_the_first_source(tmp_path):
    reader = ArticleReader()
    first = list(reader.articles("one.jsonl", RowsSource(ROWS).rows()))
    second = list(reader.articles("two.jsonl", RowsSource(ROWS[:1]).rows()))
    assert all(isinstance(a, Article) for a in first)
    assert "first at one.jsonl, row 1" in second[0].reason and reader.rows_read == 4


def test_format_errors_are_clear(tmp_path):
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(SourceError, match="cannot tell the format"):
        list(read_rows(tmp_path / "rows.txt"))
    with pytest.raises(SourceError, match="no such file"):
        list(read_rows(tmp_path / "missing.jsonl"))
    assert [n for n, _ in read_rows(write_jsonl(tmp_path / "rows.txt", ROWS), fmt="jsonl")] == [1, 2, 3]
    with pytest.raises(ConfigError, match="format 'xml' is unknown"):
        FileSource(tmp_path / "rows.txt", fmt="xml")


def test_globs_folders_and_lists_expand_to_sorted_files(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.csv", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in expand_paths([tmp_path / "*.jsonl"])] == ["a.jsonl", "b.jsonl"]
    assert [p.name for p in expand_paths([tmp_path])] == ["a.jsonl", "b.jsonl", "c.csv"]
    sources = as_sources([str(tmp_path / "c.csv"), str(tmp_path / "*.jsonl")])
    assert [s.path.name for s in sources] == ["c.csv", "a.jsonl", "b.jsonl"]
    with pytest.raises(SourceError, match="matches no files"):
        expand_paths([tmp_path / "*.parquet"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no .jsonl"):
        expand_paths([tmp_path / "empty"])


# ------------------------------------------------------------------ column mapping
def test_mapping_takes_a_field_from_another_column(tmp_path):
    rows = [{"guid": r["id"], "headline": r["title"], "article_text": r["body"], "text": "decoy",
             "published_at": r["published_at"]} for r in ROWS]
    articles, _ = articles_of(RowsSource(rows, mapping={"id": "guid", "body": "article_text"}))
    assert [a.body for a in articles] == [r["body"] for r in ROWS]
    assert parse_mapping(["body=article_text", " id = guid "]) == {"body": "article_text", "id": "guid"}


@pytest.mark.parametrize("items, words", [
    (["body"], "write FIELD=COLUMN"),
    (["text=article_text"], "'text' is not an article field"),
    (["body=a", "body=b"], "twice"),
])
def test_bad_mappings_are_usage_errors(items, words):
    with pytest.raises(ConfigError, match=words):
        parse_mapping(items)


def test_a_mapped_column_the_source_lacks_fails_at_once(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    pd.DataFrame(ROWS).to_csv(tmp_path / "a.csv", index=False)
    for source in (FileSource(tmp_path / "a.parquet", mapping={"body": "article_text"}),
                   FileSource(tmp_path / "a.csv", mapping={"body": "article_text"}),
                   DataFrameSource(pd.DataFrame(ROWS), mapping={"body": "article_text"})):
        with pytest.raises(SourceError, match="no column for --map body=article_text; its columns are id, title"):
            source.check()


# ------------------------------------------------------------------ DataFrame
def test_dataframe_rows_with_nan_nat_and_numpy_types():
    frame = pd.DataFrame({
        "id": np.array([1, 2, 3], dtype=np.int64),
        "title": ["One", "Two", None],
        "content": ["Body one.", np.nan, "Body three."],
        "date": pd.to_datetime(["2019-01-25", None, "2019-01-27"]),
    })
    articles, errors = articles_of(DataFrameSource(frame, chunk_rows=2))
    assert errors == []
    assert [(a.id, a.title, a.body) for a in articles] == [("1", "One", "Body one."), ("2", "Two", ""),
                                                           ("3", "", "Body three.")]
    assert articles[1].published_at is None
    assert articles[2].published_at == datetime(2019, 1, 27, tzinfo=timezone.utc)
    assert isinstance(as_sources(frame)[0], DataFrameSource)


# ------------------------------------------------------------------ SQL
def test_sql_table_and_query_read_a_real_sqlite_file(tmp_path):
    db = make_sqlite(tmp_path / "archive.db", ROWS, body_column="article_text")
    url = f"sqlite:///{db}"
    by_table = SqlSource(url, table="articles", mapping={"body": "article_text"})
    by_query = SqlSource(url, query="SELECT id, title, article_text AS body, published_at, section, url "
                                    "FROM articles ORDER BY id", chunk_rows=2)
    expected = [Article.from_row({**r, "tags": None}) for r in ROWS]
    for source in (by_table, by_query):
        source.check()
        articles, errors = articles_of(source)
        assert errors == [] and articles == expected
    assert by_table.name == f"sql:sqlite:///{db} table articles"


def test_sql_urls_hide_passwords_and_missing_drivers_say_what_to_install():
    source = SqlSource("postgresql+psycopg2://news:secret@db.example/archive", table="articles")
    assert "secret" not in source.name and "***" in source.name
    with pytest.raises(SourceError, match="pip install psycopg2-binary"):
        source.check()
    with pytest.raises(ConfigError, match="not a database URL"):
        SqlSource("not a url", table="t")
    with pytest.raises(ConfigError, match="exactly one of --query and --table"):
        SqlSource("sqlite:///x.db")


def test_sql_errors_fail_the_source_without_creating_files(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(SourceError, match="no such database file"):
        SqlSource(f"sqlite:///{missing}", table="articles").check()
    assert not missing.exists()
    db = make_sqlite(tmp_path / "archive.db", ROWS)
    with pytest.raises(SourceError, match="no table 'nope'"):
        SqlSource(f"sqlite:///{db}", table="nope").check()
    with pytest.raises(SourceError, match="failed running the query .*no such column"):
        list(SqlSource(f"sqlite:///{db}", query="SELECT nope FROM articles").rows())
    with pytest.raises(SourceError, match="no column for --map body=article_text"):
        list(SqlSource(f"sqlite:///{db}", query="SELECT * FROM articles", mapping={"body": "article_text"}).rows())


@pytest.mark.parametrize("kind", ["sql", "parquet", "jsonl"])
def test_sources_stream_instead_of_loading_everything(tmp_path, kind):
    """20,000 rows of 2 KB (40 MB of text) pass through with a few MB of Python memory."""
    n, size = 20_000, 2_000
    if kind == "sql":
        source = SqlSource(f"sqlite:///{make_sqlite(tmp_path / 'big.db', [], extra_rows=n, body_size=size)}",
                           table="articles", chunk_rows=500)
    else:
        filler = "word " * (size // 5)
        rows = ({"id": f"x{i}", "title": f"Title {i}", "body": f"{i} {filler}"} for i in range(n))
        if kind == "parquet":
            path = tmp_path / "big.parquet"
            with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("title", pa.string()),
                                                   ("body", pa.string())])) as writer:
                batch = []
                for row in rows:
                    batch.append(row)
                    if len(batch) == 2000:
                        writer.write_table(pa.Table.from_pylist(batch))
                        batch = []
        else:
            path = write_jsonl(tmp_path / "big.jsonl", rows)
        source = FileSource(path, batch_rows=500)
    tracemalloc.start()
    count = sum(1 for _ in source.rows())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == n
    assert peak < 8 * 2**20, f"{kind}: peak {peak / 2**20:.1f} MB of Python objects while streaming"


def test_optional_libraries_fail_with_an_install_hint(tmp_path, monkeypatch):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(SourceError, match="pyarrow is needed to read Parquet files: pip install pyarrow"):
        list(FileSource(tmp_path / "a.parquet").rows())
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(SourceError, match="pip install sqlalchemy"):
        SqlSource("sqlite:///x.db", table="t")


def test_as_sources_accepts_what_a_caller_has(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    db = make_sqlite(tmp_path / "a.db", ROWS)
    sql = SqlSource(f"sqlite:///{db}", table="articles")
    kinds = [type(s).__name__ for s in as_sources([tmp_path / "a.jsonl", sql, pd.DataFrame(ROWS)])]
    assert kinds == ["FileSource", "SqlSource", "DataFrameSource"]
    assert type(as_sources(ROWS)[0]).__name__ == "RowsSource"
    with pytest.raises(ConfigError, match="not a single row"):
        as_sources(ROWS[0])
