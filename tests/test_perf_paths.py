"""The fast paths behave like the plain ones: batch boxes, ONNX vectors, other index kinds."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from similar_articles import Recommender
from similar_articles.config import Config, EncoderConfig, IndexConfig
from similar_articles.errors import UnknownArticleError

NOW = datetime(2017, 6, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def news100_index(tmp_path_factory, news100, news100_vectors, encoder):
    path = tmp_path_factory.mktemp("news100-many")
    return Recommender.build(news100, path, embeddings=news100_vectors, encoder=encoder)


def _boxes_equal(a, b) -> None:
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]


def test_recommend_many_gives_the_same_boxes_as_recommend(news100_index, news100):
    ids = [row["id"] for row in news100]
    many = news100_index.recommend_many(ids, k=3, now=NOW)
    assert len(many) == len(ids)
    for article_id, box in zip(ids, many):
        _boxes_equal(box, news100_index.recommend(article_id, k=3, now=NOW))


def test_recommend_many_passes_filters_and_overrides(news100_index, news100):
    ids = [row["id"] for row in news100[:20]]
    options = dict(now=NOW, exclude_ids=ids[:5], max_age_days=20, min_similarity=0.4)
    many = news100_index.recommend_many(ids, k=2, batch_size=7, **options)
    for article_id, box in zip(ids, many):
        _boxes_equal(box, news100_index.recommend(article_id, k=2, **options))
        assert not {r.id for r in box} & set(ids[:5])


def test_recommend_many_refuses_unknown_ids(news100_index):
    with pytest.raises(UnknownArticleError, match="not-there"):
        news100_index.recommend_many(["not-there"], k=2)


@pytest.mark.parametrize("kind,store", [("ivf", "float"), ("flat", "sq8"), ("hnsw", "sq8"), ("ivf", "sq8")])
def test_other_index_kinds_serve_boxes_and_round_trip(tmp_path, news100, news100_vectors, encoder, kind, store):
    config = Config(index=IndexConfig(kind=kind, store=store, ivf_nprobe=64))
    built = Recommender.build(news100, tmp_path, embeddings=news100_vectors, encoder=encoder, config=config)
    expected_kind = kind if store == "float" else f"{kind}-sq8"
    assert built.info()["index_kind"] == expected_kind
    loaded = Recommender.load(tmp_path, encoder=encoder, reload_interval=None)
    source = news100[0]["id"]
    box = loaded.recommend(source, k=2, now=NOW)
    assert len(box) == 2 and source not in {r.id for r in box}
    _boxes_equal(box, built.recommend(source, k=2, now=NOW))
    # the nearest neighbour by exact cosine is still found first
    exact = np.argsort(-(news100_vectors @ news100_vectors[0]))[1]
    assert loaded._served.index.search(news100_vectors[0], 3)[1][1] == exact


@pytest.fixture(scope="module")
def onnx_ready():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")


@pytest.mark.parametrize("backend,floor", [("onnx", 0.9999), ("onnx-int8", 0.99)])
def test_onnx_vectors_match_torch(onnx_ready, encoder, news100, backend, floor):
    from similar_articles.articles import Article
    from similar_articles.embedding import SentenceTransformerEncoder

    articles = [Article.from_row(r) for r in news100[:24]]  # full-length: padded batches
    torch_vectors = encoder.encode_articles(articles)
    onnx_encoder = SentenceTransformerEncoder(EncoderConfig(backend=backend))
    vectors = onnx_encoder.encode_articles(articles)
    assert vectors.shape == torch_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.mean() > 0.99 and cosine.min() > floor - 0.01
    # int8 vectors never share cache entries or indexes with fp32 ones
    assert (onnx_encoder.model_id == encoder.model_id) == (backend == "onnx")


def test_export_cli_writes_every_box(tmp_path, news100_index, news100, capsys):
    from similar_articles.cli import main

    out = tmp_path / "boxes.jsonl"
    code = main(["export", "--index", str(news100_index.path), "--out", str(out), "-k", "2",
                 "--now", NOW.isoformat()])
    assert code == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(news100)
    first = lines[0]
    assert first["id"] == news100[0]["id"]
    expected = [r.to_dict() for r in news100_index.recommend(first["id"], k=2, now=NOW)]
    assert first["box"] == expected
