import numpy as np
import pytest

from similar_articles import Article, ConfigError
from similar_articles.config import EncoderConfig
from similar_articles.embedding import EmbeddingCache, SentenceTransformerEncoder, embed_articles, normalise_rows


def _articles(rows):
    return [Article.from_row(r) for r in rows]


def test_real_model_gives_unit_vectors_that_rank_related_news_closer(encoder, seed_rows):
    vectors = encoder.encode_articles(_articles(seed_rows))
    assert vectors.shape == (len(seed_rows), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    ids = [r["id"] for r in seed_rows]
    sim = vectors @ vectors[ids.index("inf-talks-fail")]
    assert sim[ids.index("us-quits-inf")] > sim[ids.index("oecd-migration-drop")] + 0.3


def test_cache_means_an_unchanged_article_is_never_encoded_twice(tmp_path, encoder, seed_rows):
    articles = _articles(seed_rows)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    first, encoded = embed_articles(articles, encoder, cache=cache)
    assert encoded == len(articles) and len(cache) == len(articles)
    changed = articles[:3] + [Article.from_row(dict(seed_rows[3], body="An edited body."))]
    second, encoded = embed_articles(changed, encoder, cache=cache)
    assert encoded == 1
    np.testing.assert_array_equal(second[:3], first[:3])
    cache.close()
    reopened = EmbeddingCache(tmp_path / "cache.sqlite")
    assert embed_articles(articles, encoder, cache=reopened)[1] == 0


def test_copies_of_one_text_are_encoded_once(encoder):
    rows = [{"id": "a", "body": "Same text."}, {"id": "b", "body": "Same text."}]
    vectors, encoded = embed_articles(_articles(rows), encoder)
    assert encoded == 1 and np.array_equal(vectors[0], vectors[1])


def test_chunks_mode_reads_past_the_lead(encoder):
    chunked = SentenceTransformerEncoder(EncoderConfig(long_text="chunks"))
    chunked._model = encoder.model  # same weights, loaded once
    lead = "The council met to discuss the budget. " * 40
    tail = "Then a volcano erupted and lava reached the sea. " * 40
    article = Article.from_row({"id": "a", "title": "Council meeting", "body": lead + tail})
    probe = encoder.encode_texts(["volcano eruption lava"])[0]
    assert chunked.encode_articles([article])[0] @ probe > encoder.encode_articles([article])[0] @ probe
    assert chunked.model_id != encoder.model_id  # so their caches and indexes never mix


def test_user_vectors_are_checked_and_normalised():
    np.testing.assert_allclose(normalise_rows([[3, 4]]), [[0.6, 0.8]], atol=1e-6)
    with pytest.raises(ConfigError, match="2-D"):
        normalise_rows(np.ones(5))
    with pytest.raises(ConfigError, match="row 1 is all zeros"):
        normalise_rows([[1, 0], [0, 0]])


def test_unknown_model_fails_with_advice():
    with pytest.raises(ConfigError, match="cannot load model"):
        SentenceTransformerEncoder(EncoderConfig(model="/nonexistent/model-dir")).model
