import numpy as np

from similar_articles.features import lexical
from similar_articles.features.lexical import (N_FEATURES, PAD, TERMS, TEXT_CHARS, Fingerprints, LexicalModel,
                                      list_overlaps, overlaps, term_counts)

TEXTS = ["NATO and Russia clash over the INF missile treaty",
         "Russia denies breaching the INF treaty, NATO unconvinced",
         "Arsenal beat Tottenham in the north London derby",
         "Tottenham fans angry after derby defeat to Arsenal"]


class PoolTerms:
    """The reference the overlaps are checked against: rows of a pool's term-overlap matrix.

    A row sorts one article's (at most 64) term ids and binary-searches every pool
    term among them: a few small vectorised passes, no pool-sized matrix, no BLAS call
    and no large table (a 4 MB lookup table indexed by term id was tried: its random
    reads cost ~160 us a row on real articles, against ~40 us for the search).
    """

    def __init__(self, prints: Fingerprints):
        self.ids = prints.ids
        self.weights = prints.weights

    def rows(self, which: np.ndarray) -> np.ndarray:
        """Cosine of the ``which`` rows against every row: shape (len(which), pool)."""
        out = np.zeros((len(which), len(self.ids)), dtype=np.float32)
        for i, row in enumerate(np.asarray(which).tolist()):
            real = self.ids[row] != PAD
            order = np.argsort(self.ids[row][real])
            keys = self.ids[row][real][order]
            if not len(keys):
                continue
            key_weights = self.weights[row][real][order].astype(np.float32)
            at = np.minimum(np.searchsorted(keys, self.ids), len(keys) - 1)
            matched = keys[at] == self.ids  # PAD (-1) is never a key
            out[i] = (np.where(matched, key_weights[at], 0.0) * self.weights).sum(axis=1)
        return out


def similarity_matrix(prints: Fingerprints) -> np.ndarray:
    """Cosine between every pair of fingerprints."""
    terms = PoolTerms(prints)
    return terms.rows(np.arange(len(prints)))


def test_fingerprints_link_stories_that_name_the_same_things():
    model, prints = LexicalModel.fit(TEXTS)
    assert prints.ids.shape == (4, TERMS) and prints.weights.dtype == np.float16
    sims = similarity_matrix(prints)
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-2)
    assert sims[0, 1] > 0.3 and sims[2, 3] > 0.3
    assert sims[0, 2] == 0 and sims[1, 3] == 0


def test_unseen_text_uses_the_fitted_weights_and_unknown_text_gives_zeros():
    model, prints = LexicalModel.fit(TEXTS)
    new = model.transform(["INF treaty talks between NATO and Russia", "xylophone quartet"])
    assert (new.ids[1] == PAD).all()
    merged = prints.extend(new)
    sims = similarity_matrix(merged)
    assert sims[4, :2].min() > 0.3 and sims[4, 2:4].max() == 0 and sims[5].sum() == 0


def test_term_overlap_equals_the_dense_cosine_of_the_fingerprints():
    from similar_articles.datasets import load_news_articles

    texts = [r.get("title", "") + " " + r.get("body", "") for r in load_news_articles("news100").rows]
    model, prints = LexicalModel.fit(texts)
    dense = np.zeros((len(texts), int(prints.ids.max()) + 1), dtype=np.float64)
    for row, (ids, weights) in enumerate(zip(prints.ids, prints.weights.astype(np.float64))):
        real = ids != PAD
        dense[row, ids[real]] = weights[real]
    np.testing.assert_allclose(similarity_matrix(prints), dense @ dense.T, atol=1e-3)


# ------------------------------------------------------------------ pair overlaps
def _news_prints(news100):
    texts = [r.get("title", "") + " " + r.get("body", "") for r in news100]
    return LexicalModel.fit(texts)[1]


def _random_prints(rng, n, id_range):
    """Fingerprints with ids from a small range (many shared terms, many ids sharing a
    table slot), some rows short and one empty, with junk weights in their PAD slots
    (which no term overlap may read)."""
    ids = np.full((n, TERMS), PAD, dtype=np.int32)
    weights = np.full((n, TERMS), 0.5, dtype=np.float32)
    for row in range(1, n):
        size = int(rng.integers(1, TERMS + 1))
        ids[row, :size] = rng.choice(id_range, size=size, replace=False)
        weights[row, :size] = rng.random(size) + 0.01
        weights[row, :size] /= np.linalg.norm(weights[row, :size])
    return Fingerprints(ids, weights.astype(np.float16))


def _pool_overlaps(prints, lists):
    """What PoolTerms says for each (article, listed article) pair."""
    sims = PoolTerms(prints).rows(np.arange(len(prints)))
    return np.where(lists >= 0, sims[np.arange(len(lists))[:, None], lists], 0.0)


def _pair_arrays(prints, lists):
    return prints.ids, prints.weights, prints.ids[lists], prints.weights[lists]


def test_overlaps_are_the_pool_terms_cosine_to_float16_precision(news100):
    prints = _news_prints(news100)
    rng = np.random.default_rng(0)
    lists = rng.integers(0, len(prints), size=(len(prints), 50)).astype(np.int32)
    lists[:, 0] = np.arange(len(prints))  # itself: every term shared
    got = overlaps(*_pair_arrays(prints, lists))
    assert got.dtype == np.float32 and got.shape == lists.shape
    assert np.array_equal(got, got.astype(np.float16).astype(np.float32))  # what float16 stores
    expected = _pool_overlaps(prints, lists)
    np.testing.assert_allclose(got, expected, rtol=2**-10, atol=2**-24)  # one float16 step
    assert (got[:, 0] > 0.99).all() and (got > 0).mean() > 0.5


def test_overlaps_of_terms_that_share_a_table_slot():
    rng = np.random.default_rng(1)
    prints = _random_prints(rng, 40, 3 * lexical._SLOTS)  # ~1/3 of a row's slots are shared
    lists = rng.integers(0, len(prints), size=(len(prints), 30)).astype(np.int32)
    got = overlaps(*_pair_arrays(prints, lists))
    np.testing.assert_allclose(got, _pool_overlaps(prints, lists), rtol=2**-10, atol=2**-24)
    # By hand: the source's 3 terms all sit in the slot where PAD ids look; the
    # candidate shares one of them and has one more term there. PAD weights are junk.
    slot, step = lexical._SLOTS - 1, lexical._SLOTS
    ids = np.array([[slot, slot + step, slot + 2 * step, PAD]], dtype=np.int32)
    weights = np.array([[0.36, 0.48, 0.8, 0.5]], dtype=np.float16)
    candidates = np.array([[[slot + 3 * step, slot + 2 * step, PAD, PAD]]], dtype=np.int32)
    candidate_weights = np.array([[[0.8, 0.6, 0.7, 0.7]]], dtype=np.float16)
    expected = np.float16(np.float32(np.float16(0.8)) * np.float32(np.float16(0.6)))
    assert overlaps(ids, weights, candidates, candidate_weights)[0, 0] == expected


def test_overlaps_with_no_terms_are_zero(news100):
    prints = _news_prints(news100)
    no_terms = Fingerprints(np.full((1, TERMS), PAD, dtype=np.int32), np.zeros((1, TERMS), dtype=np.float16))
    merged = prints.extend(no_terms)
    lists = np.array([[0, 1, len(prints)]] * len(merged), dtype=np.int32)
    got = overlaps(*_pair_arrays(merged, lists))
    assert (got[-1] == 0).all()  # an article without terms
    assert (got[:, 2] == 0).all()  # a candidate without terms
    assert got[0, 0] > 0.99


def test_a_pair_overlap_does_not_depend_on_the_batch(news100):
    prints = _news_prints(news100)
    rng = np.random.default_rng(2)
    lists = rng.integers(0, len(prints), size=(len(prints), 20)).astype(np.int32)
    together = overlaps(*_pair_arrays(prints, lists))
    for row in (0, 17, len(prints) - 1):
        alone = overlaps(prints.ids[row:row + 1], prints.weights[row:row + 1],
                         prints.ids[lists[row:row + 1]], prints.weights[lists[row:row + 1]])
        assert np.array_equal(alone[0], together[row])
        one_pair = overlaps(prints.ids[row:row + 1], prints.weights[row:row + 1],
                            prints.ids[lists[row, 5:6]][None], prints.weights[lists[row, 5:6]][None])
        assert one_pair[0, 0] == together[row, 5]


def test_list_overlaps_store_the_overlaps_and_zero_for_missing_neighbours(counting_bar, news100):
    prints = _news_prints(news100)
    rng = np.random.default_rng(3)
    lists = rng.integers(0, len(prints), size=(len(prints), 12)).astype(np.int32)
    lists[rng.random(lists.shape) < 0.3] = -1
    lists[5] = -1
    stored = list_overlaps(prints, lists, block=7, bar=counting_bar)
    assert stored.dtype == np.float16 and stored.shape == lists.shape and counting_bar.n == len(prints)
    assert (stored[lists < 0] == 0).all()
    computed = overlaps(*_pair_arrays(prints, np.maximum(lists, 0)))  # what a call computes
    assert np.array_equal(stored[lists >= 0].astype(np.float32), computed[lists >= 0])
    assert (stored[lists >= 0] > 0).any()


# ------------------------------------------------------------------ hashing
def test_term_counts_are_the_hashing_vectorizers():
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(n_features=N_FEATURES, alternate_sign=False, norm=None,
                                   stop_words="english", dtype=np.float32)
    texts = ["", "the and of it was", "Zürich café: naïve façade, 東京 2024 — ünïcödé 🚀 ÉCOLE école",
             "NATO NATO nato treaty treaty missile", TEXTS[0] + " " + "word " * 2_000 + " tail"] + TEXTS
    for batch in (texts, texts[:1], texts[2:3]):
        expected = vectorizer.transform(t[:TEXT_CHARS] for t in batch).tocsr()
        for _ in range(2):  # the cached analyzer gives the same the second time
            got = term_counts(batch)
            assert got.dtype == np.float32 and got.shape == expected.shape and type(got) is type(expected)
            for name in ("indptr", "indices", "data"):
                assert np.array_equal(getattr(got, name), getattr(expected, name)), name
    assert term_counts(texts[:2]).nnz == 0 and term_counts(texts[2:3]).nnz > 5
