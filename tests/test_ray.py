"""The Ray engine (`build --engine ray`) on a real local Ray: it builds the snapshot the
local engine builds, survives an encoding actor killed mid-build, and a build that
cannot finish leaves the previous snapshot serving.

Local builds use the shared embedding cache of the data folder (NewsArticles is encoded
once for the whole suite); Ray builds of subsets start from an empty cache, so their
actors encode every article for real.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import ray

from similar_articles import Recommender
from similar_articles.batch import REPORT_FILE, run_build
from similar_articles.batch.ray_engine import RayEngine
from similar_articles.cli import main
from similar_articles.config import IndexConfig
from similar_articles.datasets import load_news_articles
from similar_articles.index import FaissIndex
from similar_articles.paths import data_dir
from similar_articles.snapshot import resolve_snapshot_dir

NOW = datetime(2017, 4, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One real local Ray for the module (two CPUs), shut down at its end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def news_rows():
    return load_news_articles("full").rows


def write_jsonl(path: Path, rows, bad_lines: bool = False) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            if bad_lines and i == 3:
                f.write("\n{not json\n[1, 2]\n")  # a blank line, bad JSON, not an object
    return path


def write_parquet(path: Path, rows) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["id", "title", "body", "published_at", "url", "section"]
    pq.write_table(pa.table({n: [r.get(n) for r in rows] for n in names}), path, row_group_size=64)
    return path


def shards(tmp_path: Path, rows) -> list[Path]:
    """Half the rows in a JSONL shard with bad lines, half in a Parquet shard."""
    half = len(rows) // 2
    return [write_jsonl(tmp_path / "part-0.jsonl", rows[:half], bad_lines=True),
            write_parquet(tmp_path / "part-1.parquet", rows[half:])]


def local_build(sources, root: Path, **kwargs):
    return run_build(sources, root, cache=data_dir() / "embeddings.sqlite", progress=False, **kwargs)


def assert_same_snapshot(local_root: Path, ray_root: Path, ids) -> None:
    """Same articles, same vectors (cosine >= 0.9999 each), same lists, same boxes."""
    a, b = resolve_snapshot_dir(local_root), resolve_snapshot_dir(ray_root)
    assert json.loads((a / "articles.json").read_text()) == json.loads((b / "articles.json").read_text())
    for name in sorted(p.name for p in a.glob("*.npy")):
        np.testing.assert_array_equal(np.load(a / name), np.load(b / name), err_msg=name)
    kind = json.loads((a / "manifest.json").read_text())["index_kind"]
    ia, ib = (FaissIndex.load(p / "index.faiss", kind, IndexConfig()) for p in (a, b))
    positions = np.arange(len(ia))
    cosines = np.einsum("nd,nd->n", ia.vectors(positions), ib.vectors(positions))
    assert len(ia) == len(ib) and cosines.min() >= 0.9999
    ra, rb = Recommender.load(local_root), Recommender.load(ray_root)
    assert ra.recommend_many(ids, k=3, now=NOW) == rb.recommend_many(ids, k=3, now=NOW)


def test_a_ray_build_of_file_shards_equals_the_local_build(tmp_path, news_rows):
    """JSONL and Parquet shards read by Ray Data, every article encoded by two actors:
    the same snapshot, the same skipped rows (with their line numbers), the same boxes."""
    rows = news_rows[:300]
    sources = shards(tmp_path, rows)
    local = local_build(sources, tmp_path / "local")
    remote = run_build(sources, tmp_path / "ray", engine=RayEngine(actors=2), progress=False)
    assert remote.status == local.status == "published" and remote.exit_code == 0
    assert remote.encoded == remote.articles == local.articles  # an empty cache: all encoded in actors
    assert remote.skipped == local.skipped >= 2
    errors = [(tmp_path / root / "last-build-errors.jsonl").read_text() for root in ("local", "ray")]
    assert errors[0] == errors[1] and '"row": 6' in errors[0]  # line numbers of the file, blank line counted
    assert_same_snapshot(tmp_path / "local", tmp_path / "ray", [r["id"] for r in rows][::10])


@pytest.mark.slow
def test_the_whole_news_articles_corpus_builds_the_same_on_both_engines(tmp_path, news_rows):
    """All 3,824 rows through the CLI: Ray Data reads the shard, Ray tasks find the
    candidate lists, the driver gates and publishes (vectors from the shared cache)."""
    source = write_jsonl(tmp_path / "news.jsonl", news_rows)
    cache = str(data_dir() / "embeddings.sqlite")
    common = [str(source), "--cache", cache, "--progress", "none", "--gate", "sample=300"]
    assert main(["build", *common, "--index", str(tmp_path / "local")]) == 0
    assert main(["build", *common, "--index", str(tmp_path / "ray"), "--engine", "ray", "--ray-actors", "2"]) == 0
    reports = [json.loads((tmp_path / root / REPORT_FILE).read_text()) for root in ("local", "ray")]
    assert reports[0]["articles"] == reports[1]["articles"] > 3700
    assert reports[0]["gate"]["new"] == reports[1]["gate"]["new"]
    assert_same_snapshot(tmp_path / "local", tmp_path / "ray", [r["id"] for r in news_rows][::20])


def _encoding_actors() -> list:
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if "EncodeArticles" in " ".join(p.info["cmdline"] or ())]


def test_an_encoding_actor_killed_mid_build_is_replaced_and_the_build_publishes(tmp_path, news_rows):
    rows = news_rows[300:500]
    source = write_jsonl(tmp_path / "news.jsonl", rows)
    killed: list[int] = []

    def kill_one_actor_after_the_first_batch() -> None:
        cache = tmp_path / "ray" / "embeddings.sqlite"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            actors = _encoding_actors()
            if actors and cache.exists():
                try:
                    with sqlite3.connect(cache, timeout=1) as db:
                        stored = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
                except sqlite3.Error:
                    stored = 0
                if stored:  # a batch came back: the actors are mid-map
                    os.kill(actors[0].pid, signal.SIGKILL)
                    killed.append(actors[0].pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_one_actor_after_the_first_batch, daemon=True)
    watcher.start()
    remote = run_build([source], tmp_path / "ray", engine=RayEngine(actors=2), progress=False)
    watcher.join()
    assert killed, "no encoding actor was found to kill"
    assert remote.status == "published" and remote.encoded == remote.articles == len(rows)
    local_build([source], tmp_path / "local")
    assert_same_snapshot(tmp_path / "local", tmp_path / "ray", [r["id"] for r in rows][::10])


def test_a_ray_build_that_cannot_finish_fails_and_the_previous_snapshot_serves(tmp_path, news_rows, capsys):
    source = write_jsonl(tmp_path / "news.jsonl", news_rows[:60])
    root = tmp_path / "index"
    assert local_build([source], root, gated=False).status == "published"
    before = resolve_snapshot_dir(root)
    # The actors cannot load this model: the encoding fails on the cluster.
    code = main(["build", str(source), "--index", str(root), "--engine", "ray", "--ray-actors", "1",
                 "--model", str(tmp_path / "no-such-model"), "--backend", "torch", "--progress", "none"])
    assert code == 1
    assert "encoding on Ray failed" in capsys.readouterr().err
    assert resolve_snapshot_dir(root) == before
    assert json.loads((root / REPORT_FILE).read_text())["status"] == "failed"
    assert Recommender.load(root).recommend(news_rows[0]["id"], k=2, now=NOW)


def test_ray_settings_are_checked_before_anything_is_read(tmp_path, capsys):
    source = write_jsonl(tmp_path / "a.jsonl", [{"id": "a", "title": "t"}])
    assert main(["build", str(source), "--index", str(tmp_path / "i"), "--ray-actors", "2"]) == 2
    assert "--engine ray" in capsys.readouterr().err
    assert main(["build", str(source), "--index", str(tmp_path / "i"), "--engine", "ray", "--ray-actors", "0"]) == 2
    assert "ray_actors=0" in capsys.readouterr().err
    assert main(["build", str(source), "--index", str(tmp_path / "i"), "--engine", "ray",
                 "--ray-actors", "64", "--progress", "none"]) == 2
    assert "more than the 2 CPUs" in capsys.readouterr().err
    assert not (tmp_path / "i" / "current").exists()
