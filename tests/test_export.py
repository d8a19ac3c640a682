"""The export: every live article's box in one JSONL or Parquet file, written by the
CLI or write_boxes, on forked workers or in this process, whole or not at all."""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime, timezone

import pytest

from similar_articles import Recommender
from similar_articles.errors import ConfigError
from similar_articles.export import EXPORT_MARK

NOW = datetime(2017, 6, 1, tzinfo=timezone.utc)
PARENT = os.getpid()


@pytest.fixture(scope="module")
def news100_index(tmp_path_factory, news100, news100_vectors, encoder):
    path = tmp_path_factory.mktemp("news100-export")
    return Recommender.build(news100, path, embeddings=news100_vectors, encoder=encoder)


def _lines(out) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def _expected_lines(rec, k=2, now=NOW) -> list[dict]:
    ids = rec.ids()
    return [{"id": article_id, "box": [item.to_dict() for item in box]}
            for article_id, box in zip(ids, rec.recommend_many(ids, k=k, now=now))]


def _assert_every_box_written(out, rec, k=2, now=NOW) -> None:
    lines = _lines(out)
    assert [line["id"] for line in lines] == rec.ids()
    assert lines == json.loads(json.dumps(_expected_lines(rec, k, now)))
    assert not list(out.parent.glob(f".{out.name}.tmp*"))  # the staging file is gone


@pytest.mark.parametrize("encoder_module,processes", [("orjson", []), ("json", []), ("orjson", ["--processes", "1"]),
                                                      ("json", ["--processes", "1"])])
def test_export_cli_writes_every_box(tmp_path, news100_index, capsys, monkeypatch, encoder_module, processes):
    """On worker processes (the default: 12 batches here) or in this one."""
    from similar_articles.cli import main

    if encoder_module == "json":
        monkeypatch.setitem(sys.modules, "orjson", None)  # as if the export extra were not installed
    out = tmp_path / "boxes.jsonl"
    code = main(["export", "--index", str(news100_index.path), "--out", str(out), "-k", "2",
                 "--now", NOW.isoformat(), "--batch-size", "9", *processes])
    assert code == 0
    assert "wrote 100 boxes" in capsys.readouterr().err
    _assert_every_box_written(out, news100_index)
    assert all(len(line["box"]) == 2 for line in _lines(out))


def test_export_cli_takes_k_and_a_naive_now_as_utc(tmp_path, news100_index, capsys):
    from similar_articles.cli import main

    out = tmp_path / "deep" / "folder" / "boxes.jsonl"  # folders are made
    assert main(["export", "--index", str(news100_index.path), "--out", str(out), "-k", "4",
                 "--now", "2017-03-01T00:00:00", "--processes", "1"]) == 0
    _assert_every_box_written(out, news100_index, k=4, now=datetime(2017, 3, 1, tzinfo=timezone.utc))
    for line in _lines(out):
        assert all(item["published_at"] <= "2017-03-01T00:00:00+00:00" for item in line["box"])


@pytest.mark.parametrize("args,words", [(["--batch-size", "0"], "batch-size"), (["--processes", "0"], "processes"),
                                        (["--now", "yesterday"], "ISO 8601")])
def test_export_cli_refuses_bad_options(tmp_path, news100_index, capsys, args, words):
    from similar_articles.cli import main

    out = tmp_path / "boxes.jsonl"
    code = main(["export", "--index", str(news100_index.path), "--out", str(out), *args])
    assert code != 0 and words in capsys.readouterr().err
    assert not out.exists()


def test_export_writes_the_live_articles_after_adds_and_removals(tmp_path, news100, news100_vectors, encoder):
    from similar_articles.export import write_boxes

    rec = Recommender.build(news100[:90], tmp_path / "index", embeddings=news100_vectors[:90], encoder=encoder)
    rec.add([dict(row, id=f"added-{row['id']}") for row in news100[90:]], embeddings=news100_vectors[90:])
    removed = [row["id"] for row in news100[:5]]
    rec.remove(removed)
    out = tmp_path / "boxes.jsonl"
    assert write_boxes(rec, out, k=3, now=NOW, batch_size=11, processes=1) == 95
    _assert_every_box_written(out, rec, k=3)
    shown = {item["id"] for line in _lines(out) for item in line["box"]}
    assert not shown & set(removed) and any(i.startswith("added-") for i in shown)


@pytest.mark.parametrize("processes", [None, 1])
def test_export_writes_parquet_rows_with_a_fixed_schema(tmp_path, news100, news100_vectors, encoder, processes):
    """One row per box item, in box order; a batch whose items have no URL or date keeps
    the file's schema (an inferred null column would not match the first batch's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from similar_articles.cli import main

    rows = [dict(row, url=None, published_at=None) if i >= 50 else row for i, row in enumerate(news100)]
    rows = [dict(row, section=None) if i % 10 == 0 else row for i, row in enumerate(rows)]
    rec = Recommender.build(rows, tmp_path / "index", embeddings=news100_vectors, encoder=encoder)
    out = tmp_path / "boxes.parquet"
    assert main(["export", "--index", str(rec.path), "--out", str(out), "-k", "2", "--now", NOW.isoformat(),
                 "--batch-size", "7", *(["--processes", str(processes)] if processes else [])]) == 0
    table = pq.read_table(out)
    assert table.schema.names == ["id", "rank", "item_id", "title", "url", "published_at", "section", "score",
                                  "similarity", "reasons", "fallback", "label"]
    assert table.schema.field("url").type == pa.string() and table.schema.field("score").type == pa.float64()
    assert table.schema.field("published_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("reasons").type == pa.list_(pa.string())
    got = table.to_pylist()
    expected = [{"id": article_id, "rank": rank,
                 **{("item_id" if key == "id" else key): value for key, value in item.to_dict().items()},
                 "published_at": item.published_at}
                for article_id, box in zip(rec.ids(), rec.recommend_many(rec.ids(), k=2, now=NOW))
                for rank, item in enumerate(box, start=1)]
    assert got == expected and len(got) == 200
    assert any(row["url"] is None for row in got) and any(row["url"] for row in got)
    assert any(row["published_at"] is None for row in got) and any(row["published_at"] for row in got)
    assert any(row["section"] is None for row in got)
    assert not list(out.parent.glob(f".{out.name}.tmp*"))


def test_a_parquet_batch_without_any_url_or_date_matches_the_file(tmp_path, news100, news100_vectors, encoder):
    """Batches of one box of one item: some items have a URL and a date, later ones
    none at all, and every batch is appended to the same file."""
    import pyarrow.parquet as pq

    from similar_articles.export import write_boxes

    rows = [dict(row, url=None, published_at=None) if i % 2 else row for i, row in enumerate(news100)]
    rec = Recommender.build(rows, tmp_path / "index", embeddings=news100_vectors, encoder=encoder)
    out = tmp_path / "boxes.parquet"
    assert write_boxes(rec, out, k=1, now=NOW, batch_size=1, processes=1) == 100
    got = pq.read_table(out).to_pylist()
    expected = [(i, item.id, item.url, item.published_at)
                for i, box in zip(rec.ids(), rec.recommend_many(rec.ids(), k=1, now=NOW)) for item in box]
    assert [(row["id"], row["item_id"], row["url"], row["published_at"]) for row in got] == expected
    has_url = [row["url"] is not None for row in got]
    assert has_url[0] and not all(has_url)  # a batch without a URL came after one with a URL


def _export_batch_dies_in_a_worker(start, stop):
    from similar_articles import export

    if os.getpid() != PARENT:
        os._exit(1)  # as a worker killed for memory would
    return export._job.batch(start, stop)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_an_export_worker_that_dies_costs_time_not_boxes(tmp_path, news100_index, monkeypatch, caplog):
    from similar_articles import export

    monkeypatch.setattr(export, "_batch_on_worker", _export_batch_dies_in_a_worker)
    out = tmp_path / "boxes.jsonl"
    assert export.write_boxes(news100_index, out, now=NOW, batch_size=9) == 100
    assert "export worker died" in caplog.text
    _assert_every_box_written(out, news100_index)


def test_an_export_short_of_memory_stays_in_this_process(tmp_path, news100_index, monkeypatch, caplog):
    from similar_articles import export, parallel

    monkeypatch.setattr(parallel, "_memory_free", lambda: 256 * 2**20)
    monkeypatch.setattr(export, "_batch_on_worker", _export_batch_dies_in_a_worker)  # no worker may run
    out = tmp_path / "boxes.jsonl"
    assert export.write_boxes(news100_index, out, now=NOW, batch_size=9, processes=2) == 100
    assert "the export runs on one core" in caplog.text and "worker died" not in caplog.text
    _assert_every_box_written(out, news100_index)


@pytest.mark.parametrize("name", ["boxes.jsonl", "boxes.parquet"])
def test_a_failed_export_leaves_the_old_file_and_no_partial_one(tmp_path, news100_index, monkeypatch, name):
    from similar_articles import export

    out = tmp_path / name
    out.write_bytes(b"the export of yesterday")
    with pytest.raises(ConfigError):
        export.write_boxes(news100_index, out, k=0, processes=1)  # refused as the first batch is ranked
    assert out.read_bytes() == b"the export of yesterday" and sorted(tmp_path.iterdir()) == [out]

    writer = export._ParquetRows if name.endswith(".parquet") else export._JsonLines
    encode, batches = writer.encode, []

    def failing_on_the_third_batch(self, ids, boxes):
        batches.append(len(ids))
        if len(batches) == 3:
            raise OSError("disk full")
        return encode(self, ids, boxes)

    monkeypatch.setattr(writer, "encode", failing_on_the_third_batch)
    with pytest.raises(OSError, match="disk full"):
        export.write_boxes(news100_index, out, k=2, now=NOW, batch_size=10, processes=1)
    assert len(batches) == 3
    assert out.read_bytes() == b"the export of yesterday" and sorted(tmp_path.iterdir()) == [out]
    fresh = tmp_path / f"new-{name}"
    with pytest.raises(OSError, match="disk full"):
        batches.clear()
        export.write_boxes(news100_index, fresh, k=2, now=NOW, batch_size=10, processes=1)
    assert not fresh.exists() and sorted(tmp_path.iterdir()) == [out]


def test_bad_export_arguments_are_refused_before_any_file(tmp_path, news100_index):
    from similar_articles.export import write_boxes

    for kwargs in ({"fmt": "csv"}, {"batch_size": 0}, {"batch_size": True}, {"processes": 0}):
        with pytest.raises(ConfigError):
            write_boxes(news100_index, tmp_path / "boxes.jsonl", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_two_exports_to_one_file_at_once_each_leave_a_whole_file(tmp_path, news100_index):
    """Two jobs of one process (threads of a CMS worker, say) exporting to the same path:
    the file ends whole, one export's or the other's, never a mix or a truncated one."""
    from similar_articles.export import write_boxes

    out = tmp_path / "boxes.jsonl"
    errors = []
    start = threading.Barrier(2)

    def export(k):
        try:
            start.wait()
            write_boxes(news100_index, out, k=k, now=NOW, batch_size=5, processes=1, progress=False)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    for _ in range(5):
        threads = [threading.Thread(target=export, args=(k,)) for k in (2, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        lines = _lines(out)
        assert lines in (json.loads(json.dumps(_expected_lines(news100_index, 2))),
                         json.loads(json.dumps(_expected_lines(news100_index, 3)))), len(lines)


def changed_files_after(main, args, capsys) -> str:
    assert main(args) == 0
    return capsys.readouterr().err.split(": ", 1)[1].split(" (")[0]


def test_per_article_files_are_the_boxes_and_a_rerun_rewrites_only_the_changed(tmp_path, news100, news100_vectors,
                                                                                encoder, capsys):
    """For a CDN or PHP: OUT/<id>.json, each replaced only when its box changed."""
    from urllib.parse import quote

    from similar_articles.cli import main

    rows = [dict(row, id=f"2017/{row['id']}") if i == 0 else row for i, row in enumerate(news100)]  # a '/' in an id
    rec = Recommender.build(rows, tmp_path / "index", embeddings=news100_vectors, encoder=encoder)
    out = tmp_path / "boxes"
    args = ["export", "--index", str(tmp_path / "index"), "--layout", "per-article", "--out", str(out),
            "--now", NOW.isoformat(), "--batch-size", "16"]
    assert main(args) == 0
    assert "100 boxes" in (err := capsys.readouterr().err) and "100 written, 0 unchanged, 0 deleted" in err
    files = {p.name: json.loads(p.read_text()) for p in out.glob("[!.]*.json")}
    expected = _expected_lines(rec)
    assert files == {quote(line["id"], safe="") + ".json": json.loads(json.dumps(line)) for line in expected}
    assert "2017%2F" + rows[0]["id"].split("/")[1] + ".json" in files and [p.name for p in out.glob(".*")] == [EXPORT_MARK]  # no staging file left
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("[!.]*.json")}
    assert changed_files_after(main, args, capsys) == "0 written, 100 unchanged, 0 deleted"
    # Remove one article: its file goes, the boxes that showed it change, the rest stay as they were.
    gone = expected[5]["id"]
    rec.remove([gone])
    assert main(args) == 0
    err = capsys.readouterr().err
    changed = {quote(line["id"], safe="") + ".json" for line in expected
               if gone in [item["id"] for item in line["box"]]}
    assert f"{len(changed)} written, {99 - len(changed)} unchanged, 1 deleted" in err
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("[!.]*.json")}
    assert quote(gone, safe="") + ".json" not in after
    assert {name for name in after if after[name] != stamps[name]} == changed
