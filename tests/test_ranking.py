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


def _scores(sims, ages, same_section=None, **kw):
    args = dict(freshness_margin=0.03, half_life_days=30, section_bonus=0.0)
    args.update(kw)
    same = np.zeros(len(sims), bool) if same_section is None else np.asarray(same_section)
    return ranking.scores(np.asarray(sims), np.asarray(ages), same, **args)


def test_freshness_never_lifts_a_clearly_less_relevant_article_over_a_relevant_one():
    scores = _scores([0.70, 0.60, 0.69], [400.0, 0.0, 0.0])  # the most relevant is old, the others new
    assert scores[0] > scores[1]  # 0.10 less similar: freshness cannot make up for it
    assert scores[2] > scores[0]  # 0.01 less similar and fresh: freshness decides


def test_section_bonus_reorders_near_ties_only():
    scores = _scores([0.70, 0.69, 0.50], [0.0, 0.0, 0.0], [False, True, True], section_bonus=0.03,
                     half_life_days=None)
    assert scores[1] > scores[0]  # 0.01 apart: the source's section wins
    assert scores[0] > scores[2]  # 0.20 apart: relevance wins


def _unit(*rows):
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _select(rank, vectors, k, *, open_=None, title_keys=None, copies=None, mmr_lambda=1.0, duplicate=0.95):
    """ranking.select for one source whose pool vectors are ``vectors``."""
    rank = np.asarray(rank, dtype=np.float64)[None, :]
    open_ = np.ones(rank.shape, bool) if open_ is None else np.asarray(open_)[None, :]
    keys = np.zeros(rank.shape, np.int64) if title_keys is None else np.asarray(title_keys)[None, :]

    def cosines_to(picks):
        return (vectors @ vectors[picks[0]])[None, :]

    def copies_any(sources, candidates, picked):
        return np.array([any(frozenset((int(c), int(p))) in copies for p in row)
                         for c, row in zip(candidates, picked)])

    chosen = ranking.select(rank, open_, k, mmr_lambda=mmr_lambda, duplicate_similarity=duplicate,
                            title_keys=keys, cosines_to=cosines_to, copies_any=copies_any if copies else None)
    return [c for c in chosen[0].tolist() if c != ranking.NO_PICK]


def test_select_collapses_copies_of_a_story():
    vectors = _unit([1, 0, 0], [1, 0.01, 0], [0.6, 0.8, 0])
    assert _select([0.9, 0.89, 0.5], vectors, 2) == [0, 2]


def test_select_collapses_equal_headlines_and_nothing_after_the_last_pick():
    vectors = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    assert _select([0.9, 0.8, 0.7], vectors, 2, title_keys=[7, 7, 0]) == [0, 2]
    assert _select([0.9, 0.8, 0.7], vectors, 3, title_keys=[7, 7, 0]) == [0, 2]  # a short box, not a copy


def test_the_source_story_is_closed_before_selection():
    sims = np.array([[0.99, 0.8, 0.7]])
    keys = np.array([[0, 5, 0]])
    copies_source = np.array([[False, False, True]])
    open_ = ranking.not_the_source_story(sims, keys, np.array([5]), copies_source, 0.95)
    assert open_.tolist() == [[False, False, False]]  # near-identical, same headline, a text copy
    assert ranking.not_the_source_story(sims, keys, np.array([0]), copies_source * 0, 0.995).tolist() == \
        [[True, True, True]]  # no headline (key 0) matches nothing


def test_select_drops_a_text_copy_of_a_pick_whatever_its_cosine():
    vectors = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    assert _select([0.9, 0.8, 0.7], vectors, 2, copies={frozenset((0, 1))}) == [0, 2]


def test_mmr_prefers_a_different_topic_over_a_redundant_one():
    vectors = _unit([1, 0, 0], [0.9, 0.3, 0], [0, 1, 0])
    assert _select([0.9, 0.85, 0.8], vectors, 2, mmr_lambda=1.0, duplicate=0.999) == [0, 1]
    assert _select([0.9, 0.85, 0.8], vectors, 2, mmr_lambda=0.5, duplicate=0.999) == [0, 2]


def test_select_ranks_a_block_of_sources_each_on_its_own():
    rank = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]])
    open_ = np.array([[True, True, True], [False, True, True]])
    chosen = ranking.select(rank, open_, 2, mmr_lambda=1.0, duplicate_similarity=0.95,
                            title_keys=np.zeros(rank.shape, np.int64),
                            cosines_to=lambda picks: np.zeros(rank.shape))
    assert chosen.tolist() == [[0, 1], [2, 1]]


def test_title_key_ignores_case_and_punctuation_but_not_short_titles():
    assert ranking.title_key("NATO, Russia fail to agree!") == ranking.title_key("nato russia FAIL to agree")
    assert ranking.title_key("Photos") == 0


def test_fallback_walks_orders_in_turn_skipping_taken_and_ineligible():
    first, second = np.array([5, 3, 1]), np.array([9, 5, 7, 2])
    picked = ranking.fallback_order([first, second], 4, lambda block: block != 3, taken={1})
    assert picked == [5, 9, 7, 2]


@pytest.mark.parametrize("count", [3, 40])
def test_eligible_hides_every_excluded_article_few_or_many(count):
    n = 100
    positions = np.arange(n).reshape(4, 25)
    excluded = np.arange(0, n, max(1, n // count))[:count]
    mask = ranking.eligible(positions, alive=np.ones(n, bool), published=np.zeros(n), now=1.0, reference=1.0,
                            max_age_days=None, excluded=excluded, section_codes=np.zeros(n, np.int32),
                            allowed_sections=None)
    assert mask.tolist() == (~np.isin(positions, excluded)).tolist()


@pytest.mark.parametrize("n", [1, 7, 30])
def test_top_columns_keep_what_a_stable_sort_keeps_ties_included(n):
    """A pool's added articles are chosen by partition: the same set a stable sort of
    every column keeps, ties by the lower column, whatever the ties."""
    rng = np.random.default_rng(n)
    sims = rng.integers(0, 6, size=(40, 30)).astype(np.float32) / 5  # many ties
    got = ranking.top_columns(sims, n)
    want = np.sort(np.argsort(-sims, axis=1, kind="stable")[:, :n], axis=1)
    np.testing.assert_array_equal(got, want)
