"""Metrics on hand-made boxes (known answers), baselines and the section bonus on a
small synthetic corpus, and the headline claims on the real News100 subset."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from similar_articles import evaluation as ev
from similar_articles import Article

BASE = datetime(2017, 1, 1, tzinfo=timezone.utc)


def synthetic_corpus(n_per_topic: int = 12, topics: int = 3, seed: int = 0) -> ev.EvalCorpus:
    """Clustered unit vectors with dates, sections = topics, distinct titles and words."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, 32))
    articles, vectors = [], []
    for t in range(topics):
        for i in range(n_per_topic):
            articles.append(Article(
                id=f"t{t}-{i}", title=f"Topic {t} story number {i}",
                body=f"topic{t}word alpha{t} beta{t} story {i} " * 3 + f"unique{t}x{i}",
                published_at=BASE + timedelta(days=3 * i + t), section=f"s{t}"))
            vectors.append(centres[t] + 0.6 * rng.normal(size=32))
    v = np.asarray(vectors, dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return ev.EvalCorpus(name="synthetic", articles=articles, vectors=v)


@pytest.fixture(scope="module")
def corpus() -> ev.EvalCorpus:
    return synthetic_corpus()


# ----------------------------------------------------------------- metrics, known answers
LABELS = {"a": "x", "b": "x", "c": "y", "d": "x", "e": "y"}


def test_precision_counts_short_boxes_as_misses():
    boxes = {"a": ["b", "c"], "c": ["e"]}
    assert ev.per_source_precision(boxes, LABELS, 2) == {"a": 0.5, "c": 0.5}
    assert ev.precision_at_k(boxes, LABELS, 2) == 0.5
    assert ev.per_label_precision(boxes, LABELS, 2) == {"x": 0.5, "y": 0.5}


def test_ndcg_binary_and_graded():
    assert ev.ndcg_at_k({"a": ["b", "d"]}, 2, labels=LABELS) == pytest.approx(1.0)
    # relevant item at rank 2 only; ideal has two relevant ("b", "d")
    expected = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert ev.ndcg_at_k({"a": ["c", "b"]}, 2, labels=LABELS) == pytest.approx(expected)
    grades = {"a": {"b": 2, "d": 1}}
    assert ev.ndcg_at_k({"a": ["d", "b"]}, 2, grades=grades) == pytest.approx(
        (1 + 2 / np.log2(3)) / (2 + 1 / np.log2(3)))
    with pytest.raises(ValueError, match="exactly one"):
        ev.ndcg_at_k({"a": ["b"]}, 2)


def test_coverage_gini_and_hubs():
    assert ev.coverage({"a": ["b", "c"], "b": ["a"]}, 2) == 0.5
    assert ev.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert ev.gini([0, 0, 0, 4]) == pytest.approx(0.75)
    ids = [f"i{n}" for n in range(200)]
    boxes = {f"i{n}": ["i0", "i1"] for n in range(2, 200)}
    hubs = ev.hub_concentration(boxes, ids)
    assert hubs["top1pct_share"] == 1.0 and hubs["max_shown"] == 198
    assert hubs["never_shown"] == pytest.approx(198 / 200)
    assert hubs["gini"] > 0.98


def test_duplicates_churn_and_event_recall(corpus):
    same = ev.same_story_checker(corpus, cosine=None, titles=False, copy_groups=[["t0-1", "t0-2"]])
    boxes = {"t0-0": ["t0-1", "t0-2"], "t0-1": ["t0-3", "t0-4"], "t0-5": ["t0-2", "t0-3"]}
    assert ev.duplicate_pairs(boxes, same) == [("t0-0", "t0-1", "t0-2")]
    assert ev.duplicate_rate(boxes, same) == pytest.approx(1 / 3)
    # a copy of the source in its own box is a duplicate too
    assert ev.duplicate_rate({"t0-1": ["t0-2"]}, same) == 1.0
    assert ev.churn({"a": ["b", "c"]}, {"a": ["c", "b"]}) == 0.0
    assert ev.box_agreement({"a": ["b", "c"], "x": ["y"]}, {"a": ["c", "b"], "x": ["y"]}) == 0.5
    assert ev.box_agreement({"a": ["b", "c"], "x": ["y"]}, {"a": ["c", "b"], "x": ["y"]}, ordered=False) == 1.0
    assert ev.churn({"a": ["b", "c"], "x": ["y", "z"]}, {"a": ["b", "d"], "x": ["q", "r"]}) == 0.75
    groups = {"e1": ["t0-0", "t0-1", "t0-2"]}
    result = ev.event_recall({"t0-0": ["t0-1", "t1-0"], "t0-1": ["t1-1", "t1-2"]}, groups, 2)
    assert result == {"hit_rate": 0.5, "recall": 0.25, "sources": 2}


def test_event_groups_filters_kind_and_ids():
    import pandas as pd

    events = pd.DataFrame({"event_id": ["1", "1", "2", "2", "2"], "article_id": ["a", "b", "c", "d", "e"],
                           "event": ["x"] * 5, "kind": ["copy", "copy", "coverage", "coverage", "coverage"]})
    assert ev.event_groups(events, "copy") == {"1": ["a", "b"]}
    assert ev.event_groups(events, None, ids=["a", "c", "d"]) == {"2": ["c", "d"]}


def test_diversity_and_age(corpus):
    boxes = {"t0-0": ["t0-1", "t0-2"]}
    v = corpus.vectors_of(["t0-1", "t0-2"])
    assert ev.intra_list_diversity(boxes, corpus) == pytest.approx(1 - float(v[0] @ v[1]), abs=1e-6)
    frame = ev.ages(boxes, corpus, now=BASE + timedelta(days=10))
    assert frame["days_from_source"].tolist() == [3.0, 6.0]
    assert frame["days_before_now"].tolist() == [7.0, 4.0]
    summary = ev.age_summary(boxes, corpus, now=BASE + timedelta(days=10))
    assert summary["share_newer_than_source"] == 1.0


# ----------------------------------------------------------------------------- baselines
def test_baselines_never_show_the_source_and_fill_k(corpus):
    for boxes in (ev.encoder_boxes(corpus, corpus.ids, 5), ev.tfidf_boxes(corpus, corpus.ids, 5),
                  ev.recent_in_section_boxes(corpus, corpus.ids, 5), ev.random_boxes(corpus, corpus.ids, 5)):
        assert set(boxes) == set(corpus.ids)
        for source, items in boxes.items():
            assert len(items) == 5 == len(set(items)) and source not in items


def test_encoder_and_tfidf_find_the_topic_random_does_not(corpus):
    labels = corpus.labels
    assert ev.precision_at_k(ev.encoder_boxes(corpus, corpus.ids, 3), labels, 3) > 0.95
    assert ev.precision_at_k(ev.tfidf_boxes(corpus, corpus.ids, 3), labels, 3) > 0.95
    assert ev.precision_at_k(ev.random_boxes(corpus, corpus.ids, 3), labels, 3) < 0.6


def test_recent_in_section_is_newest_first_and_respects_now(corpus):
    boxes = ev.recent_in_section_boxes(corpus, ["t1-0"], 2)
    assert boxes["t1-0"] == ["t1-11", "t1-10"]
    boxes = ev.recent_in_section_boxes(corpus, ["t1-0"], 2, now=BASE + timedelta(days=10))
    assert boxes["t1-0"] == ["t1-3", "t1-2"]  # t1-3 is published on day 10


def test_section_bonus_raises_precision(tmp_path):
    """The library's own section_bonus option, through section_bonus_boxes: on a corpus
    whose topics are blurred, preferring the source's section (= its topic) must raise
    precision over the same pipeline with the bonus at 0."""
    mixed = synthetic_corpus(seed=3)
    # blur the topics so the bonus has something to do
    mixed.vectors = mixed.vectors + 3.0 * np.random.default_rng(1).normal(size=mixed.vectors.shape).astype(np.float32)
    mixed.vectors /= np.linalg.norm(mixed.vectors, axis=1, keepdims=True)
    rec = ev.build_recommender(mixed, tmp_path / "index")
    text_only = {"min_similarity": -1.0, "half_life_days": None, "lexical_weight": 0.0}
    plain = ev.section_bonus_boxes(rec, mixed, mixed.ids, 2, 0.0, **text_only)
    assert plain == ev.recommender_boxes(rec, mixed.ids, 2, section_bonus=0.0, **text_only)
    bonus = ev.section_bonus_boxes(rec, mixed, mixed.ids, 2, 0.1, **text_only)
    assert ev.precision_at_k(bonus, mixed.labels, 2) > ev.precision_at_k(plain, mixed.labels, 2)


def test_relevance_table_shape(corpus):
    table = ev.relevance_table({"encoder": lambda k: ev.encoder_boxes(corpus, corpus.ids, k)},
                               corpus.labels, ks=(2, 5))
    assert list(table.columns) == ["precision@2", "precision@5", "nDCG@5"]
    assert table.index.tolist() == ["encoder"]


# ------------------------------------------------------------- real data: News100
@pytest.fixture(scope="module")
def news100_corpus():
    return ev.load_corpus("news100")  # 100 articles; encoded once, then from the shared cache


def test_news100_default_boxes_are_full_without_copies(news100_corpus, tmp_path_factory):
    corpus = news100_corpus
    rec = ev.build_recommender(corpus, tmp_path_factory.mktemp("news100-eval"))
    now = corpus.last_published()
    boxes = ev.recommender_boxes(rec, corpus.ids, 2, now=now)
    assert ev.coverage(boxes, 2) == 1.0
    assert ev.duplicate_rate(boxes, ev.same_story_checker(corpus)) == 0.0
    row = ev.health_row(boxes, corpus, 2, is_same_story=ev.same_story_checker(corpus), now=now)
    assert set(row) >= {"coverage", "duplicate_rate", "hub_gini", "top1pct_share", "diversity",
                        "median_abs_days_from_source"}


def test_cli_has_an_evaluate_command(capsys):
    from similar_articles.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--help"])
    assert exit_.value.code == 0
    assert "bbc" in capsys.readouterr().out
