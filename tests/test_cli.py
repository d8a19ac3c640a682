"""The command line as an operator uses it: clear messages, exit codes, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from similar_articles.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "similar_articles.cli", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory, seed_rows):
    folder = tmp_path_factory.mktemp("cli")
    source = folder / "rows.jsonl"
    with open(source, "wb") as f:
        for row in seed_rows:
            f.write(json.dumps(row).encode() + b"\n")
        f.write(b'{"id": "no-text"}\n')
        f.write(b"{broken json\n")
        f.write(b'{"id": "latin1", "body": "caf\xe9"}\n')
        f.write(b'{"id": "bad-date", "body": "x", "date": "yesterday"}\n')
        f.write(json.dumps(seed_rows[0]).encode() + b"\n")  # repeated id
    result = run("build", str(source), "--index", str(folder / "index"), "--errors", str(folder / "errors.jsonl"))
    return folder, result


def test_build_skips_bad_rows_keeps_good_ones_and_reports_them(built, seed_rows):
    folder, result = built
    assert result.returncode == 0, result.stderr
    assert f"published {len(seed_rows)} articles" in result.stdout
    assert "5 rows skipped" in result.stdout
    for words in ("row 12 (id 'no-text'): no text", "row 13: not valid JSON", "row 14: not valid UTF-8",
                  "row 15 (id 'bad-date'): date 'yesterday' is not ISO 8601", "row 16 (id 'inf-talks-fail'): duplicate id"):
        assert words in result.stderr
    report = [json.loads(line) for line in open(folder / "errors.jsonl")]
    assert [r["row"] for r in report] == [12, 13, 14, 15, 16]
    assert "Traceback" not in result.stderr


def test_recommend_prints_a_box_or_json(built):
    folder, _ = built
    text = run("recommend", "inf-talks-fail", "--index", str(folder / "index"), "-k", "2")
    assert text.returncode == 0 and "1. Washington announces withdrawal" in text.stdout
    assert "similarity 0." in text.stdout
    data = json.loads(run("recommend", "inf-talks-fail", "--index", str(folder / "index"), "--json").stdout)
    assert [item["id"] for item in data] == ["us-quits-inf", "russia-shows-missile"]
    assert set(data[0]) >= {"id", "title", "url", "published_at", "section", "score", "similarity", "reasons"}


def test_info_describes_the_index(built, capsys):
    folder, _ = built
    assert main(["info", "--index", str(folder / "index"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["articles"] == 11 and info["model_id"].startswith("all-MiniLM-L6-v2")


def test_build_keeps_half_precision_vectors_when_asked(built, capsys):
    folder, _ = built
    index = folder / "index-fp16"
    assert main(["build", str(folder / "rows.jsonl"), "--index", str(index), "--index-store", "fp16",
                 "--cache", str(folder / "index" / "embeddings.sqlite"), "--progress", "none"]) == 0
    capsys.readouterr()
    assert main(["info", "--index", str(index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["index_kind"] == "flat-fp16" and info["articles"] == 11


@pytest.mark.parametrize("args, code, words", [
    (["recommend", "x", "--index", "/nonexistent/index"], 1, "no index at /nonexistent/index"),
    (["recommend", "missing-id", "--index", "{index}"], 2, "'missing-id' is not in the index"),
    (["recommend", "inf-talks-fail", "--index", "{index}", "-k", "0"], 2, "k=0 is invalid"),
    (["build", "/nonexistent.jsonl", "--index", "{folder}/x"], 1, "no such file"),
    (["build", "{folder}/rows.txt", "--index", "{folder}/x"], 1, "cannot tell the format"),
])
def test_errors_are_one_clear_line(built, capsys, args, code, words):
    folder, _ = built
    (folder / "rows.txt").write_text("x")
    args = [a.format(index=folder / "index", folder=folder) for a in args]
    assert main(args) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_set_saves_ranking_settings_with_the_index_and_overrides_them_for_one_run(built, capsys):
    folder, _ = built
    index = folder / "index-strict"
    assert main(["build", str(folder / "rows.jsonl"), "--index", str(index), "--progress", "none",
                 "--cache", str(folder / "index" / "embeddings.sqlite"),
                 "--set", "min_similarity=0.99", "--set", "floor_quantile=None"]) == 0
    capsys.readouterr()
    from similar_articles import Recommender

    loaded = Recommender.load(index)  # a fresh process's view: the settings come from the manifest
    assert loaded.config.ranking.min_similarity == 0.99 and loaded.config.ranking.floor_quantile is None
    assert all(item.fallback for item in loaded.recommend("inf-talks-fail", k=2))
    # One run with other settings; the index keeps its own.
    assert main(["recommend", "inf-talks-fail", "--index", str(index), "--json", "--set", "min_similarity=0.2"]) == 0
    assert not any(item["fallback"] for item in json.loads(capsys.readouterr().out))
    assert Recommender.load(index).config.ranking.min_similarity == 0.99
    # `info` says which settings the index was built with, so an operator can see them.
    assert main(["info", "--index", str(index)]) == 0
    assert "ranking settings  min_similarity=0.99, floor_quantile=None" in capsys.readouterr().out
    assert main(["info", "--index", str(folder / "index"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ranking_settings"] == {}


@pytest.mark.parametrize("setting, words", [
    ("min_similarity", "not NAME=VALUE"),
    ("no_such_knob=1", "unknown ranking option(s) ['no_such_knob']"),
    ("min_similarity=high", "min_similarity"),
])
def test_a_bad_set_is_one_clear_line(built, capsys, setting, words):
    folder, _ = built
    assert main(["recommend", "inf-talks-fail", "--index", str(folder / "index"), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_evaluate_index_reports_box_health_and_sample_boxes(built, capsys):
    folder, _ = built
    assert main(["evaluate", "--index", str(folder / "index"), "--json", "--sample", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    summary = report["summary"]
    assert summary["articles"] == 11 and summary["coverage"] == 1.0
    assert summary["duplicate_story_share"] == 0.0 and 0.0 <= summary["fallback_share"] <= 1.0
    assert 0.0 <= summary["hub_gini"] <= 1.0 and summary["similarity_shown_mean"] > 0.2
    assert report["sample"].count("### ") == 3 and "similarity 0." in report["sample"]
    assert main(["evaluate", "--index", str(folder / "index"), "--sample", "1"]) == 0
    assert "| coverage | 1.000 |" in capsys.readouterr().out
    assert main(["evaluate"]) == 2
