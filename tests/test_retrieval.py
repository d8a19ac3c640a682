"""Two retrievers, one pool: the lexical postings, the fused candidate lists, the
calibrated relatedness floor, and the event halves the defaults are tuned on."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from similar_articles import Recommender
from similar_articles.articles import Article
from similar_articles.batch import candidates
from similar_articles.config import Config, IndexConfig, RankingConfig
from similar_articles.evaluation import event_halves
from similar_articles.features import retrieval
from similar_articles.features.lexical import PAD, Fingerprints, LexicalModel, list_overlaps

WIDTH = 5
RECIPE = ("Slowly simmer the leeks and potatoes in butter until soft, then add the stock and season with "
          "salt, pepper and a little nutmeg. Blend until smooth, stir in the cream and serve the soup hot "
          "with crusty bread and grated cheese. It keeps for three days in the fridge.")


@pytest.fixture(scope="module")
def prints(news100):
    return LexicalModel.fit([Article.from_row(r).text for r in news100])[1]


def test_an_article_finds_itself_first_and_never_when_excluded(prints):
    postings = retrieval.build_postings(prints)
    everyone = np.arange(len(prints))
    found = retrieval.search(postings, prints, 3)
    assert (found[:, 0] == everyone).mean() > 0.95  # exact copies may tie with it
    excluded = retrieval.search(postings, prints, 3, exclude=everyone)
    assert not (excluded == everyone[:, None]).any()


def test_build_lists_rank_as_a_call_searches(prints):
    lists = retrieval.neighbours(prints, WIDTH)
    searched = retrieval.search(retrieval.build_postings(prints), prints, WIDTH, exclude=np.arange(len(prints)))
    same = [len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (a >= 0).sum()) for a, b in zip(lists, searched)]
    assert np.mean(same) > 0.95  # only near-ties (float32 against float64 sums) may differ


@pytest.fixture(scope="module")
def planted(news100, news100_vectors, encoder, tmp_path_factory):
    """News100 plus an article that names the first article's people and places in a
    text about something else: the encoder ranks it far away, its terms do not."""
    source = Article.from_row(news100[0])
    names = sorted(set(re.findall(r"\b[A-Z][a-z]{3,}\b", source.title + " " + source.body)))[:12]
    row = {"id": "planted", "title": "Recipes for a winter soup", "body": RECIPE + " Thanks to " + " ".join(names) + "."}
    vectors = np.vstack([news100_vectors, encoder.encode_articles([Article.from_row(row)])])
    path = tmp_path_factory.mktemp("planted")
    # min_similarity 0: a lexical find below the index's min_similarity takes no list slot
    rec = Recommender.build([*news100, row], path, embeddings=vectors,
                            config=Config(index=IndexConfig(candidate_lists=WIDTH),
                                          ranking=RankingConfig(min_similarity=0.0)))
    return rec, vectors


def test_the_lexical_retriever_brings_what_the_encoder_misses_into_the_pool(planted, news100):
    rec, vectors = planted
    state = rec.state
    source, planted_at = 0, state.table.position_of("planted")
    dense_rank = int((vectors @ vectors[source] > vectors[planted_at] @ vectors[source]).sum()) - 1
    assert dense_rank >= WIDTH  # the dense list alone would not hold it
    assert planted_at in state.neighbours.lists[source].tolist()
    # The stored overlaps are exactly what a call would compute for the fused lists.
    prints = state.features.prints(np.arange(len(news100) + 1))
    np.testing.assert_array_equal(state.neighbours.overlap, list_overlaps(prints, state.neighbours.lists))


def test_no_unlisted_article_is_more_similar_than_the_stored_bound(planted):
    """What lets a filtered call skip a wider search: the bound must hold for every article."""
    rec, vectors = planted
    neighbours = rec.state.neighbours
    cosine = vectors @ vectors.T
    for i, row in enumerate(neighbours.lists):
        unlisted = np.ones(len(vectors), dtype=bool)
        unlisted[[i, *row[row >= 0].tolist()]] = False
        assert cosine[i, unlisted].max() <= float(neighbours.beyond[i]) + 1e-6


def test_an_unseen_article_queries_both_retrievers(planted, news100):
    rec, vectors = planted
    source = Article.from_row(news100[0])
    names = " ".join(sorted(set(re.findall(r"\b[A-Z][a-z]{3,}\b", source.title + " " + source.body)))[:12])
    row = {"id": "new", "title": "Recipes for a winter soup", "body": RECIPE + " Thanks to " + names + "."}
    own = rec.encoder.encode_articles([Article.from_row(row)])[0]
    fetch = 4  # the search's width for candidates=1 and k=1
    assert int((vectors @ own > vectors[0] @ own).sum()) >= fetch  # the dense search alone misses it
    with warnings.catch_warnings():  # an empty pool slot at lexical_weight=1 must not make a NaN
        warnings.simplefilter("error", RuntimeWarning)
        box = rec.recommend(row, k=1, candidates=1, lexical_weight=1.0, min_similarity=-1.0, floor_quantile=None)
    assert box[0].id == news100[0]["id"] and not box[0].fallback


@pytest.fixture(scope="module")
def calibrated(news100, news100_vectors, tmp_path_factory):
    """News100 built with the calibration allowed on 100 articles (the library waits
    for MIN_CALIBRATION_ARTICLES, where random pairs stand for chance)."""
    floor = candidates.MIN_CALIBRATION_ARTICLES
    candidates.MIN_CALIBRATION_ARTICLES = 50
    try:
        return Recommender.build(news100, tmp_path_factory.mktemp("calibrated"), embeddings=news100_vectors)
    finally:
        candidates.MIN_CALIBRATION_ARTICLES = floor


def test_the_floor_is_a_quantile_of_random_pairs_and_what_misses_it_is_fallback(calibrated):
    rec = calibrated
    pairs = rec.manifest["random_pairs"]
    assert len(pairs["cosine"]) == len(pairs["overlap"]) == candidates.FLOOR_PAIRS
    floor = rec.state.relatedness_floor(0.0, 0.9)
    assert floor == pytest.approx(float(np.quantile(pairs["cosine"], 0.9)))
    assert rec.state.relatedness_floor(0.0, None) == -np.inf
    ids = rec.ids()[:40]
    plain = rec.recommend_many(ids, 2, lexical_weight=0.0, floor_quantile=None, min_similarity=-1.0)
    strict = rec.recommend_many(ids, 2, lexical_weight=0.0, floor_quantile=0.9, min_similarity=-1.0)
    related = [item for box in strict for item in box if not item.fallback]
    assert related and all(item.similarity >= floor - 1e-6 for item in related)
    fallbacks = [item for box in strict for item in box if item.fallback]
    assert fallbacks and all(any(r.startswith("fallback") for r in item.reasons) for item in fallbacks)
    assert sum(item.fallback for box in plain for item in box) < len(fallbacks)


def test_a_small_index_keeps_min_similarity_alone(planted):
    rec, _ = planted
    assert rec.manifest["random_pairs"] == {"cosine": [], "overlap": []}
    assert rec.state.relatedness_floor(0.4, 0.95) == -np.inf


def test_event_halves_are_disjoint_stable_and_cover_every_event():
    groups = {f"E{i:03d}": [str(2 * i), str(2 * i + 1)] for i in range(200)}
    tuning, held_out = event_halves(groups)
    assert set(tuning) | set(held_out) == set(groups) and not set(tuning) & set(held_out)
    assert 60 < len(tuning) < 140
    assert event_halves(groups) == (tuning, held_out)


def test_the_site_report_measures_and_names_the_floor_of_the_settings_it_ranks_with(calibrated):
    """An editor comparing floors in notebook 04 reads each row's own floor and boxes."""
    from similar_articles.evaluation.site import index_report

    loose = index_report(calibrated, 2, sample=0, floor_quantile=0.5)["summary"]
    strict = index_report(calibrated, 2, sample=0, floor_quantile=0.99)["summary"]
    assert loose["relatedness_floor"] == pytest.approx(calibrated.state.relatedness_floor(0.4, 0.5))
    assert strict["relatedness_floor"] == pytest.approx(calibrated.state.relatedness_floor(0.4, 0.99))
    assert strict["fallback_share"] > loose["fallback_share"]


def test_a_search_ranks_ties_by_position_as_a_sort_of_every_total(prints):
    """The k best of the lexical totals come largest first, ties by lower position: what
    a stable sort of every article's total gives (the search only sorts the best)."""
    postings = retrieval.build_postings(prints)
    tied = Fingerprints(prints.ids, np.where(prints.ids != PAD, 1.0, 0.0).astype(prints.weights.dtype))
    for row in range(0, len(prints), 7):
        query = tied.take(np.array([row]))
        found = retrieval.search(postings, query, 10)[0]
        ids = query.ids[0, :retrieval.QUERY_TERMS]
        totals = np.zeros(len(prints))
        for term in ids[ids != PAD].tolist():
            at = slice(postings.offsets[term], postings.offsets[term + 1])
            np.add.at(totals, postings.docs[at], postings.weights[at].astype(np.float32))
        held = np.flatnonzero(totals > 0)
        want = held[np.argsort(-totals[held], kind="stable")][:10]
        np.testing.assert_array_equal(found[found >= 0], want)


def test_a_state_answers_a_narrower_lexical_search_from_a_wider_one_it_kept(planted):
    """A state keeps each lexical search's answer; a narrower search of the same
    fingerprint (a pool's 50 after the change tracker's 65) gets what it would find."""
    rec, _ = planted
    state = rec.state.with_rules(rec.state.rules, rec.state.labels)  # the answers are shared: start from none
    state.finds.clear()
    rows = np.arange(0, 60, 6)
    prints, exclude = state.features.prints(rows), rows
    wide = state.lexical_finds(prints, 30, exclude)
    assert len(state.finds) == len(rows) and (wide >= 0).sum(axis=1).min() > 10
    narrow = state.lexical_finds(prints, 10, exclude)
    np.testing.assert_array_equal(narrow, retrieval.search(state.postings, prints, 10, exclude=exclude))
    np.testing.assert_array_equal(narrow, wide[:, :10])
    assert len(state.finds) == len(rows)  # served from the kept answers
