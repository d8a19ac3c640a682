"""The Recommender as a site backend uses it: build, load, recommend, add, remove."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import numpy as np
import pytest

from similar_articles import (Config, ConfigError, IndexConfig, IndexCorruptedError, IndexNotFoundError,
                              InvalidArticleError, ModelMismatchError, RankingConfig, Recommender,
                              UnknownArticleError)
from similar_articles.embedding import SentenceTransformerEncoder
from similar_articles.config import EncoderConfig

INF = "inf-talks-fail"


# ----------------------------------------------------------------- the seed case
def test_seed_box_ranks_the_cyberattack_story_above_the_migration_story(seed_index, encoder):
    rec = Recommender.load(seed_index, encoder=encoder)
    box = rec.recommend(INF, k=2)
    ids = [item.id for item in box]
    assert ids == ["us-quits-inf", "russia-shows-missile"]  # the treaty stories
    assert "oecd-migration-drop" not in ids
    longer = [item.id for item in rec.recommend(INF, k=5)]
    gru = [i for i in longer if i.startswith("gru-cyber")]
    assert gru, longer
    if "oecd-migration-drop" in longer:
        assert longer.index(gru[0]) < longer.index("oecd-migration-drop")


def test_every_item_explains_itself(seed_index, encoder):
    box = Recommender.load(seed_index, encoder=encoder).recommend(INF, k=3)
    first = box[0]
    assert first.reasons[0] == f"similarity {first.similarity:.2f}"
    assert "same section: world" in first.reasons
    assert "published 7 days later" in first.reasons
    assert first.title and first.url.startswith("https://") and first.section == "world"
    assert first.published_at == datetime(2019, 2, 1, 15, tzinfo=timezone.utc)
    assert 0 < first.score <= 1.03  # relevance (cosine blended with term overlap) + freshness


def test_an_item_as_json_has_every_field_in_order(seed_index, encoder):
    from dataclasses import fields

    item = Recommender.load(seed_index, encoder=encoder).recommend(INF, k=1)[0]
    data = item.to_dict()
    assert list(data) == [f.name for f in fields(item)]
    assert data["published_at"] == "2019-02-01T15:00:00+00:00" and data["reasons"] == list(item.reasons)
    assert {k: v for k, v in data.items() if k not in ("published_at", "reasons")} == \
        {f.name: getattr(item, f.name) for f in fields(item) if f.name not in ("published_at", "reasons")}
    assert json.loads(json.dumps(data)) == data


def test_scheduled_posts_never_leak(seed_index, encoder):
    rec = Recommender.load(seed_index, encoder=encoder)
    ids = [item.id for item in rec.recommend(INF, k=10)]
    assert "arms-control-scheduled" not in ids and INF not in ids
    later = rec.recommend(INF, k=10, now=datetime(2100, 1, 1, tzinfo=timezone.utc))
    assert "arms-control-scheduled" in [item.id for item in later]


def test_same_story_never_twice(seed_index, encoder):
    rec = Recommender.load(seed_index, encoder=encoder)
    for source in ("oecd-migration-drop", "nato-spending", INF):
        ids = [item.id for item in rec.recommend(source, k=8)]
        assert not {"gru-cyber-charges", "gru-cyber-charges-wire"} <= set(ids), (source, ids)
    # Nor a copy of the article being read.
    ids = [item.id for item in rec.recommend("gru-cyber-charges", k=8)]
    assert "gru-cyber-charges-wire" not in ids


def test_box_is_never_short_and_fallbacks_say_so(seed_index, encoder):
    rec = Recommender.load(seed_index, encoder=encoder)
    box = rec.recommend("premier-league-derby", k=4)
    assert len(box) == 4
    fallbacks = [item for item in box if item.fallback]
    assert fallbacks and all(item.reasons[0].startswith("fallback: ") for item in fallbacks)
    assert all(not item.fallback for item in box[: len(box) - len(fallbacks)])


def test_box_has_at_most_every_other_visible_article(seed_index, encoder):
    box = Recommender.load(seed_index, encoder=encoder).recommend(INF, k=100)
    # 11 articles: minus itself, the scheduled one and one copy of the GRU story.
    assert len(box) == 8 and len({item.id for item in box}) == 8


def test_per_call_filters_and_overrides(seed_index, encoder):
    rec = Recommender.load(seed_index, encoder=encoder)
    assert "us-quits-inf" not in [i.id for i in rec.recommend(INF, k=3, exclude_ids=["us-quits-inf"])]
    assert {i.section for i in rec.recommend(INF, k=3, sections=["sport", "business"])} <= {"sport", "business"}
    recent = rec.recommend(INF, k=5, recency_reference="article", max_age_days=30)
    assert {i.id for i in recent} <= {"us-quits-inf", "russia-shows-missile", "nato-spending",
                                      "premier-league-derby"}
    with pytest.raises(ConfigError, match="unknown ranking option"):
        rec.recommend(INF, half_life=3)
    with pytest.raises(ConfigError, match="mmr_lambda"):
        rec.recommend(INF, mmr_lambda=2)


@pytest.mark.parametrize("k", [0, -1, 10**6, 2.5, True, "2"])
def test_bad_k_is_refused_clearly(seed_index, encoder, k):
    with pytest.raises(ConfigError, match="k="):
        Recommender.load(seed_index, encoder=encoder).recommend(INF, k=k)


def test_unknown_id_says_what_to_do(seed_index, encoder):
    with pytest.raises(UnknownArticleError, match="not in the index; pass the article itself"):
        Recommender.load(seed_index, encoder=encoder).recommend("nope")


def test_unseen_article_is_encoded_on_the_fly(seed_index, encoder):
    rec = Recommender.load(seed_index, encoder=encoder)
    box = rec.recommend({"id": "new", "title": "Moscow rejects NATO demand to scrap missile",
                         "text": "Russia refused to destroy the cruise missile NATO says breaks the INF treaty.",
                         "date": "2019-01-28"}, k=2)
    assert {item.id for item in box} <= {INF, "us-quits-inf", "russia-shows-missile"}
    assert "published 3 days earlier" in box[0].reasons or "published 4 days later" in box[0].reasons \
        or any(r.startswith("published") for r in box[0].reasons)
    # An unseen version of an indexed article never recommends itself.
    assert INF not in [i.id for i in rec.recommend({"id": INF, "title": "NATO Russia INF talks fail"}, k=3)]


# -------------------------------------------------------- contract, every index kind
@pytest.fixture(params=["flat", "hnsw"])
def kind(request):
    return request.param


def test_build_from_vectors_load_round_trip(tmp_path, news100, news100_vectors, encoder, kind):
    config = Config(index=IndexConfig(kind=kind))
    built = Recommender.build(news100, tmp_path, embeddings=news100_vectors, config=config, encoder=encoder)
    loaded = Recommender.load(tmp_path, encoder=encoder)
    assert loaded.info()["index_kind"] == kind and len(loaded) == 100
    for row in news100[:20]:
        assert [i.id for i in built.recommend(row["id"], k=3)] == \
               [i.id for i in loaded.recommend(row["id"], k=3)]
        assert len(loaded.recommend(row["id"], k=3)) == 3


def test_add_and_remove_take_effect_at_once(tmp_path, news100, news100_vectors, encoder, kind):
    rec = Recommender.build(news100[:60], tmp_path, embeddings=news100_vectors[:60],
                            config=Config(index=IndexConfig(kind=kind)), encoder=encoder)
    source = news100[0]["id"]
    first = rec.recommend(source, k=2)[0].id
    assert rec.remove([first]) == 1 and first not in rec
    assert first not in [i.id for i in rec.recommend(source, k=10)]
    with pytest.raises(UnknownArticleError):
        rec.recommend(first)
    # Re-adding the same text under a new id makes it the top match again.
    twin = dict(next(r for r in news100 if r["id"] == first), id="re-added")
    assert rec.add([twin]) == 1 and "re-added" in rec
    assert rec.recommend(source, k=1)[0].id == "re-added"
    # Adding a known id replaces the old version: one live copy, with the new text.
    replaced = dict(news100[1], title="Lemon cake", body="A recipe for lemon cake with butter.")
    rec.add([replaced])
    assert len(rec) == 60 and replaced["id"] in rec
    unseen = rec.recommend({"id": "q", "title": "Lemon cake recipe", "body": "Bake a lemon cake."}, k=1)
    assert unseen[0].id == replaced["id"] and unseen[0].title == "Lemon cake"
    # The ids an export walks: each live article once, the replaced one included.
    ids = rec.ids()
    assert len(ids) == len(set(ids)) == len(rec) and first not in ids and {"re-added", replaced["id"]} <= set(ids)


def test_hnsw_and_flat_agree_on_real_vectors(tmp_path, news100, news100_vectors, encoder):
    boxes = {}
    for kind in ("flat", "hnsw"):
        rec = Recommender.build(news100, tmp_path / kind, embeddings=news100_vectors,
                                config=Config(index=IndexConfig(kind=kind)), encoder=encoder)
        boxes[kind] = [tuple(i.id for i in rec.recommend(r["id"], k=2)) for r in news100]
    same = np.mean([a == b for a, b in zip(boxes["flat"], boxes["hnsw"])])
    assert same >= 0.95


def test_auto_index_kind_switches_by_size(tmp_path, news100, news100_vectors, encoder):
    small = Config(index=IndexConfig(kind="auto", hnsw_threshold=1000))
    large = Config(index=IndexConfig(kind="auto", hnsw_threshold=50))
    assert Recommender.build(news100, tmp_path / "a", embeddings=news100_vectors, config=small,
                             encoder=encoder).info()["index_kind"] == "flat"
    assert Recommender.build(news100, tmp_path / "b", embeddings=news100_vectors, config=large,
                             encoder=encoder).info()["index_kind"] == "hnsw"


def test_a_large_archive_is_stored_in_half_precision_with_the_same_boxes(tmp_path, news100, news100_vectors,
                                                                        encoder):
    boxes, kinds = {}, {}
    for name, fp16_threshold in (("small", 1000), ("large", 100)):
        config = Config(index=IndexConfig(hnsw_threshold=50, fp16_threshold=fp16_threshold))
        Recommender.build(news100, tmp_path / name, embeddings=news100_vectors, config=config, encoder=encoder)
        rec = Recommender.load(tmp_path / name, encoder=encoder)
        kinds[name] = rec.info()["index_kind"]
        boxes[name] = [[(i.id, i.score) for i in rec.recommend(r["id"], k=2)] for r in news100]
    assert kinds == {"small": "hnsw", "large": "hnsw-fp16"}
    for small, large in zip(boxes["small"], boxes["large"]):
        assert [i for i, _ in small] == [i for i, _ in large]
        assert [s for _, s in small] == pytest.approx([s for _, s in large], abs=1e-3)


# ------------------------------------------------------------------- bad input
def test_duplicate_ids_are_refused_with_both_rows(tmp_path, encoder):
    rows = [{"id": "a", "body": "one"}, {"id": "b", "body": "two"}, {"id": "a", "body": "three"}]
    with pytest.raises(InvalidArticleError, match=r"row 3.*duplicate id \(first seen at row 1\)"):
        Recommender.build(rows, tmp_path, embeddings=np.eye(3, 8), encoder=encoder)


def test_embeddings_must_match_the_rows(tmp_path, encoder):
    rows = [{"id": "a", "body": "one"}, {"id": "b", "body": "two"}]
    with pytest.raises(ConfigError, match="3 rows but there are 2 articles"):
        Recommender.build(rows, tmp_path, embeddings=np.eye(3, 8), encoder=encoder)
    with pytest.raises(ConfigError, match="NaN"):
        Recommender.build(rows, tmp_path, embeddings=np.array([[1.0, np.nan], [1, 0]]), encoder=encoder)


def test_missing_index_says_how_to_build_one(tmp_path):
    with pytest.raises(IndexNotFoundError, match="similar-articles build"):
        Recommender.load(tmp_path / "nothing-here")
    with pytest.raises(IndexNotFoundError, match="holds no index"):
        Recommender.load(tmp_path)


def test_corrupted_index_is_refused(tmp_path, seed_index, encoder):
    copy = tmp_path / "copy"
    shutil.copytree(seed_index, copy, symlinks=True)
    snapshot = (copy / "current").resolve()
    with open(snapshot / "index.faiss", "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    with pytest.raises(IndexCorruptedError, match="does not match its checksum"):
        Recommender.load(copy, encoder=encoder)
    (snapshot / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptedError, match="unreadable"):
        Recommender.load(copy, encoder=encoder)


def test_index_built_with_another_model_is_refused(seed_index):
    other = SentenceTransformerEncoder(EncoderConfig(model="/models/some-other-model"))
    with pytest.raises(ModelMismatchError, match="was built with model 'all-MiniLM-L6-v2"):
        Recommender.load(seed_index, encoder=other)
    with pytest.raises(ModelMismatchError):
        Recommender.load(seed_index, config=Config(encoder=EncoderConfig(long_text="chunks")))


def test_bad_settings_are_refused_when_made():
    with pytest.raises(ConfigError, match="half_life_days=-1 is invalid"):
        RankingConfig(half_life_days=-1)
    with pytest.raises(ConfigError, match="kind='ivf-magic' is invalid"):
        IndexConfig(kind="ivf-magic")


# -------------------------------------------------------------- snapshots and reload
def test_snapshot_is_plain_files_with_manifest(seed_index):
    snapshot = (seed_index / "current").resolve()
    names = {p.name for p in snapshot.iterdir()}
    assert {"manifest.json", "index.faiss", "articles.json", "published.npy", "title_keys.npy",
            "lexical_idf.npy", "term_ids.npy", "term_weights.npy"} <= names
    assert all(name.endswith((".json", ".npy", ".faiss")) for name in names)  # never a pickle
    manifest = json.loads((snapshot / "manifest.json").read_text())
    for key in ("format_version", "library_version", "model_id", "dimensions", "count",
                "created_at", "config", "checksums"):
        assert key in manifest
    assert manifest["dimensions"] == 384 and manifest["count"] == 11


def test_a_new_build_is_picked_up_without_restart(tmp_path, news100, news100_vectors, encoder):
    Recommender.build(news100[:50], tmp_path, embeddings=news100_vectors[:50], encoder=encoder)
    serving = Recommender.load(tmp_path, encoder=encoder, reload_interval=None)
    assert news100[70]["id"] not in serving
    Recommender.build(news100, tmp_path, embeddings=news100_vectors, encoder=encoder)
    assert serving.reload() is True and news100[70]["id"] in serving
    assert serving.reload() is False


def test_a_pinned_view_keeps_serving_its_snapshot_after_a_reload(tmp_path, news100, news100_vectors, encoder):
    """A long job (an export) reads one snapshot from start to end."""
    Recommender.build(news100[:50], tmp_path, embeddings=news100_vectors[:50], encoder=encoder)
    serving = Recommender.load(tmp_path, encoder=encoder, reload_interval=None)
    pinned = serving.pinned()
    before = pinned.recommend(news100[0]["id"], k=2)
    Recommender.build(news100, tmp_path, embeddings=news100_vectors, encoder=encoder)
    assert serving.reload() is True and news100[70]["id"] in serving
    assert pinned.reload() is False and news100[70]["id"] not in pinned and len(pinned) == 50
    assert pinned.recommend(news100[0]["id"], k=2) == before


def test_process_wide_recommend_reads_the_environment(monkeypatch, seed_index):
    import similar_articles.default as module
    from similar_articles import recommend, SimilarArticlesError

    monkeypatch.setattr(module, "_default", None)
    monkeypatch.delenv("SIMILAR_ARTICLES_INDEX", raising=False)
    with pytest.raises(SimilarArticlesError, match="SIMILAR_ARTICLES_INDEX"):
        recommend(INF)
    monkeypatch.setenv("SIMILAR_ARTICLES_INDEX", str(seed_index))
    assert [i.id for i in recommend(INF, k=2)] == ["us-quits-inf", "russia-shows-missile"]
    monkeypatch.setattr(module, "_default", None)


def test_positions_of_many_ids_are_those_of_each_id():
    import numpy as np

    from similar_articles.table import IdPositions

    ids = np.array(["a", "b", "a", "c"], dtype=object)
    positions = IdPositions(ids)  # "a" repeated: the newest row wins
    grown = positions.with_added(np.array(["a", "b", "a", "c", "x", "d"], dtype=object), {"d": 5})
    asked = ["a", "b", "c", "d", "missing", "", 5]
    assert grown.get_many(asked).tolist() == [2, 1, 3, 5, -1, -1, -1]
    assert grown.get_many(asked).tolist() == [-1 if grown.get(i) is None else grown.get(i) for i in asked]
    assert positions.get("d") is None  # the mapping it grew from is unchanged
    assert IdPositions(np.array([], dtype=object)).get_many(["a"]).tolist() == [-1]
