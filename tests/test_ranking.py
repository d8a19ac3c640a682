import numpy as np
import pytest

from similar_articles import ranking

DAY = ranking.SECONDS_PER_DAY


def _eligible(positions, **kw):
    n = 5
    args = dict(alive=np.ones(n, bool), published=np.arange(n, dtype=float) * DAY, now=10 * DAY,
                reference=10 * DAY, max_age_days=None, excluded=np.array([], np.int64),
                section_codes=np.array([0, 0, 1, 1, -1], np.int32), allowed_sections=None)
    args.update(kw)
    return ranking.eligible(np.asarray(positions), **args).tolist()


def test_eligible_hides_removed_scheduled_old_excluded_and_other_sections():
    assert _eligible([0, 1, 2, 3, 4]) == [True] * 5
    assert _eligible([0, 1], alive=np.array([True, False, True, True, True])) == [True, False]
    assert _eligible([0, 4], now=3.5 * DAY) == [True, False]  # scheduled post does not leak
    assert _eligible([0, 3], max_age_days=7) == [False, True]
    assert _eligible([0, 1], excluded=np.array([1])) == [True, False]
    assert _eligible([0, 2, 4], allowed_sections=np.array([1])) == [False, True, False]


def test_undated_articles_are_never_scheduled_or_too_old():
    published = np.array([np.nan, 0, 0, 0, 0])
    assert _eligible([0], published=published, now=0.0, max_age_days=1) == [True]


def test_recency_decay_halves_per_half_life():
    decay = ranking.recency_decay(np.array([0.0, 30.0, 60.0, np.nan]), 30.0)
    np.testing.assert_allclose(decay, [1.0, 0.5, 0.25, 0.0])
    assert ranking.recency_decay(np.array([5.0]), None).tolist() == [0.0]


def test_freshness_never_lifts_a_clearly_less_relevant_article_over_a_relevant_one():
    sims = np.array([0.70, 0.60, 0.69])
    ages = np.array([400.0, 0.0, 0.0])  # the most relevant is old, the others brand new
    scores = ranking.freshness_scores(sims, ages, margin=0.03, half_life_days=30)
    assert scores[0] > scores[1]  # 0.10 less similar: freshness cannot make up for it
    assert scores[2] > scores[0]  # 0.01 less similar and fresh: freshness decides


def _unit(*rows):
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_select_box_collapses_copies_of_a_story():
    vectors = _unit([1, 0, 0], [1, 0.01, 0], [0.6, 0.8, 0])
    chosen, dropped = ranking.select_box(
        np.array([0.9, 0.89, 0.5]), vectors, 2, mmr_lambda=1.0, duplicate_similarity=0.95,
        title_keys=np.zeros(3, np.int64))
    assert chosen.tolist() == [0, 2] and dropped == 1


def test_select_box_collapses_equal_headlines_and_copies_of_the_source():
    vectors = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    keys = np.array([ranking.title_key("Six GRU officers charged"), ranking.title_key("six GRU officers charged!"), 0])
    chosen, _ = ranking.select_box(np.array([0.9, 0.8, 0.7]), vectors, 3, mmr_lambda=1.0,
                                   duplicate_similarity=0.95, title_keys=keys)
    assert chosen.tolist() == [0, 2]
    chosen, _ = ranking.select_box(np.array([0.9, 0.8, 0.7]), vectors, 3, mmr_lambda=1.0,
                                   duplicate_similarity=0.95, title_keys=np.zeros(3, np.int64),
                                   query_vector=_unit([1, 0, 0])[0])
    assert chosen.tolist() == [1, 2]  # the source's own copy is never shown


def test_select_box_collapses_text_copies_whatever_their_cosine():
    vectors = _unit([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1])  # no cosine rule
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    copy_pairs = {(0, 2), (2, 0)}  # items 0 and 2 are copies of each other
    asked = []

    def is_copy(i, chosen):
        asked.append(i)
        return any((i, c) in copy_pairs for c in chosen)

    chosen, dropped = ranking.select_box(scores, vectors, 3, mmr_lambda=1.0, duplicate_similarity=0.95,
                                         title_keys=np.zeros(4, np.int64), is_copy=is_copy)
    assert chosen.tolist() == [0, 1, 3] and dropped == 1
    assert asked == [1, 2, 3]  # only items about to be picked are checked, never the first
    chosen, dropped = ranking.select_box(scores, vectors, 3, mmr_lambda=1.0, duplicate_similarity=0.95,
                                         title_keys=np.zeros(4, np.int64), is_copy=is_copy,
                                         source_copies=np.array([False, True, False, False]))
    assert chosen.tolist() == [0, 3] and dropped == 2  # item 1 copies the source


def test_mmr_prefers_a_different_topic_over_a_redundant_one():
    vectors = _unit([1, 0, 0], [0.9, 0.43, 0], [0, 0, 1])
    scores = np.array([0.80, 0.79, 0.70])
    by_score, _ = ranking.select_box(scores, vectors, 2, mmr_lambda=1.0, duplicate_similarity=0.99,
                                     title_keys=np.zeros(3, np.int64))
    diverse, _ = ranking.select_box(scores, vectors, 2, mmr_lambda=0.5, duplicate_similarity=0.99,
                                    title_keys=np.zeros(3, np.int64))
    assert by_score.tolist() == [0, 1] and diverse.tolist() == [0, 2]


def test_title_key_ignores_case_and_punctuation_but_not_short_titles():
    assert ranking.title_key("Trump signs order!") == ranking.title_key("trump  signs order")
    assert ranking.title_key("Photos") == 0


def test_fallback_walks_orders_in_turn_skipping_taken_and_ineligible():
    picked = ranking.fallback_positions(
        [np.array([5, 4, 3]), np.array([9, 8, 5, 1])], 4, lambda block: block != 4, {3})
    assert picked == [5, 9, 8, 1]


@pytest.mark.parametrize("delta_days, relative_to, text", [
    (3, "article", "published 3 days earlier"),
    (-1, "article", "published 1 day later"),
    (0.2, "article", "published the same day"),
    (640, "article", "published 21 months earlier"),
    (3, "now", "published 3 days ago"),
])
def test_age_wording(delta_days, relative_to, text):
    assert ranking.describe_age(delta_days * DAY, relative_to) == text


def test_reasons_name_similarity_section_age_and_fallback():
    assert ranking.reasons_for(similarity=0.714, section="world", source_section="world",
                               age_seconds=3 * DAY, age_relative_to="article", fallback=None) == \
        ("similarity 0.71", "same section: world", "published 3 days earlier")
    assert ranking.reasons_for(similarity=0.1, section="sport", source_section="world",
                               age_seconds=np.nan, age_relative_to="now",
                               fallback="recent article") == ("fallback: recent article",)


def test_relevance_blends_terms_and_rewards_neighbourhood_consensus():
    # source, then candidates a (close to source alone), b and c (close to each other and source)
    embedding = np.array([[1.0, 0.62, 0.60, 0.60],
                          [0.62, 1.0, 0.1, 0.1],
                          [0.60, 0.1, 1.0, 0.9],
                          [0.60, 0.1, 0.9, 1.0]])
    rows = embedding.__getitem__
    direct = ranking.relevance(rows, None, lexical_weight=0.5, neighbours=0, neighbour_weight=0.5)
    np.testing.assert_allclose(direct, [0.62, 0.60, 0.60])
    consensus = ranking.relevance(rows, None, lexical_weight=0, neighbours=3, neighbour_weight=0.5)
    assert consensus[1] > consensus[0]  # b is backed by its neighbour c; a stands alone
    lexical = np.eye(4)
    lexical[0, 2] = lexical[2, 0] = 1.0  # b shares all its key terms with the source
    blended = ranking.relevance(rows, lexical.__getitem__, lexical_weight=0.5, neighbours=0,
                                neighbour_weight=0)
    assert blended.argmax() == 1


def test_section_bonus_reorders_near_ties_only():
    scores = np.array([0.70, 0.69, 0.50])
    codes = np.array([1, 2, 2])
    boosted = ranking.section_scores(scores, codes, 2, 0.03)
    assert boosted.argmax() == 1  # a near tie goes to the source's section
    assert boosted[2] < boosted[0]  # a clearly less relevant one stays behind
