"""One contract for every index kind: exact and approximate; float, half-precision and
8-bit stores."""

from __future__ import annotations

import numpy as np
import pytest

from similar_articles.config import IndexConfig
from similar_articles.errors import ConfigError, IndexCorruptedError
from similar_articles.index import KINDS, FaissIndex, create_index

DIM = 32


def _tolerance(kind: str) -> float:
    """How far a stored row may be from the vector given (the store's rounding)."""
    return {"sq8": 0.02, "fp16": 1e-3}.get(kind.partition("-")[2], 1e-5)


def _unit(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return _unit(2000, 0)


@pytest.fixture(params=KINDS)
def built(request, data) -> FaissIndex:
    index = FaissIndex.create(request.param, DIM, IndexConfig(ivf_nprobe=64))
    index.add(data[:1500])
    index.add(data[1500:])  # a second add appends after training on the first
    return index


def test_len_dim_and_kind(built, data):
    assert len(built) == len(data) and built.dim == DIM and built.kind in KINDS


def test_search_finds_each_row_first(built, data):
    for pos in (0, 777, 1999):
        sims, positions = built.search(data[pos], 5)
        assert positions[0] == pos
        assert sims[0] == pytest.approx(1.0, abs=0.02)
        assert np.all(np.diff(sims) <= 1e-6)  # best first


def test_search_matches_exact_neighbours(built, data):
    queries = data[:50]
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    _, found = built.search_many(queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.9


def test_search_caps_n_at_size(data):
    index = FaissIndex.create("flat", DIM, IndexConfig())
    index.add(data[:3])
    sims, positions = index.search(data[0], 10)
    assert len(positions) == 3


def test_vectors_are_the_stored_rows(built, data):
    positions = np.array([5, 1999, 0, 5])
    rows = built.vectors(positions)
    assert rows.shape == (4, DIM)
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, data[positions], atol=_tolerance(built.kind))


@pytest.mark.parametrize("kind", ["flat-fp16", "hnsw-fp16", "flat-sq8", "hnsw-sq8"])
def test_quantised_rows_are_read_as_faiss_reconstructs_them(data, kind):
    """A large read widens the codes by FAISS's decoder, a small one (half precision)
    by numpy's cast: either way the bits FAISS's own reconstruct gives, so a box and a
    batch of boxes rank from the same cosines; after an add too (the codes move)."""
    index = FaissIndex.create(kind, DIM, IndexConfig())
    index.add(data[:1000])
    index.vectors(np.array([0]))  # caches a view of the codes
    index.add(data[1000:])
    positions = np.array([5, 1999, 0, 5, *range(100, 160)])
    expected = index._index.reconstruct_batch(positions)
    np.testing.assert_array_equal(index.vectors(positions), expected)
    np.testing.assert_array_equal(index.vectors(positions, all_cores=True), expected)
    np.testing.assert_array_equal(np.vstack([index.vectors(positions[i:i + 1]) for i in range(len(positions))]),
                                  expected)


@pytest.mark.parametrize("kind", ["hnsw", "flat-fp16", "hnsw-fp16"])
def test_vectors_follow_adds(data, kind):
    index = FaissIndex.create(kind, DIM, IndexConfig())
    index.add(data[:10])
    index.vectors(np.array([0]))  # caches a view of the buffer
    index.add(data[10:2000])  # the buffer moves
    np.testing.assert_allclose(index.vectors(np.array([1999, 3])), data[[1999, 3]], atol=_tolerance(kind))


def test_half_precision_halves_the_vectors_memory(data):
    sizes = {}
    for kind in ("flat", "flat-fp16"):
        index = FaissIndex.create(kind, DIM, IndexConfig())
        index.add(data)
        sizes[kind] = index.memory_bytes()
    assert sizes["flat-fp16"] == pytest.approx(sizes["flat"] / 2, rel=0.01)


def test_save_load_round_trip(built, data, tmp_path):
    path = tmp_path / "index.faiss"
    built.save(path)
    loaded = FaissIndex.load(path, built.kind, IndexConfig(ivf_nprobe=64))
    assert len(loaded) == len(built) and loaded.kind == built.kind
    a = built.search(data[42], 5)
    b = loaded.search(data[42], 5)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(loaded.vectors(np.array([7])), built.vectors(np.array([7])))


def test_corrupted_file_is_refused(tmp_path):
    path = tmp_path / "index.faiss"
    path.write_bytes(b"not an index")
    with pytest.raises(IndexCorruptedError, match="rebuild"):
        FaissIndex.load(path, "flat", IndexConfig())


def test_auto_kind_by_size_and_store():
    config = IndexConfig(hnsw_threshold=100)
    assert config.resolve_kind(99) == "flat"
    assert config.resolve_kind(100) == "hnsw"
    assert IndexConfig(store="sq8", hnsw_threshold=100).resolve_kind(1000) == "hnsw-sq8"
    assert IndexConfig(store="fp16", hnsw_threshold=100).resolve_kind(99) == "flat-fp16"
    assert IndexConfig(kind="ivf").resolve_kind(10) == "ivf"
    assert create_index(DIM, 5, IndexConfig()).kind == "flat"


def test_auto_store_is_half_precision_for_large_archives():
    config = IndexConfig(hnsw_threshold=100, fp16_threshold=1000)
    assert config.resolve_kind(999) == "hnsw"
    assert config.resolve_kind(1000) == "hnsw-fp16"
    assert IndexConfig(fp16_threshold=10).resolve_kind(10) == "flat-fp16"
    assert IndexConfig(store="float", fp16_threshold=10).resolve_kind(10**6) == "hnsw"  # asked for: kept
    assert IndexConfig().resolve_kind(10**6) == "hnsw-fp16"  # the default at 1M
    assert IndexConfig().resolve_kind(100_000) == "hnsw"


def test_bad_settings_say_what_to_use():
    with pytest.raises(ConfigError, match="store"):
        IndexConfig(store="int4")
    with pytest.raises(ConfigError, match="kind"):
        FaissIndex.create("annoy", DIM, IndexConfig())


def test_ivf_on_few_vectors_still_works(data):
    index = FaissIndex.create("ivf", DIM, IndexConfig())
    index.add(data[:20])  # fewer than one list's worth of training vectors
    assert index.search(data[3], 1)[1][0] == 3


def test_inner_products_are_the_cosines_of_the_stored_rows(built, data):
    queries = data[[3, 4, 5]]
    positions = np.array([[0, 7, -1], [1999, 3, 3], [5, -1, 0]])
    found = built.inner_products(queries, positions)
    expected = np.einsum("bwd,bd->bw", data[np.maximum(positions, 0)], queries)
    np.testing.assert_allclose(found[positions >= 0], expected[positions >= 0], atol=_tolerance(built.kind))
    assert np.all(found[positions < 0] == -np.inf)  # an empty list slot never ranks
    # One query alone, or a batch on every core, gives the same bits: recommend and
    # recommend_many rank from these and must agree.
    alone = np.vstack([built.inner_products(queries[b], positions[b]) for b in range(3)])
    np.testing.assert_array_equal(alone, found)
    np.testing.assert_array_equal(built.inner_products(queries, positions, all_cores=True), found)
    with pytest.raises(IndexError, match="past the index"):
        built.inner_products(queries[:1], np.array([[len(data)]]))
    # No queries (an empty batch) give no rows, not a reshape error.
    none = built.inner_products(np.empty((0, DIM), np.float32), np.empty((0, 3), np.int64))
    assert none.shape == (0, 3)
    assert built.products_at(np.empty((0, DIM)), *built.read_rows(np.empty((0, 3), np.int64))).shape == (0, 3)


def test_a_layered_index_answers_kept_queries_as_it_searched_them(data):
    """The base's answer to a query is kept (an added article's box ranked again reads
    no graph): a batch mixing kept and new queries, on a layered index with rows added
    since, gets what a fresh index searches, and a caller editing an answer changes no
    later one."""
    from similar_articles.index import LayeredIndex

    base = FaissIndex.create("hnsw", DIM, IndexConfig())
    base.add(data[:1500])
    layered = LayeredIndex(base).with_rows(data[1500:1600])
    first = layered.search_many(data[1500:1510], 20)
    first[1][:] = -7  # a caller's edit of its copy
    later = layered.with_rows(data[1600:1700])  # shares the kept answers
    mixed = data[1495:1515]  # half kept, half new
    fresh = LayeredIndex(base, later.added).search_many(mixed, 20)
    for got, want in zip(later.search_many(mixed, 20), fresh):
        np.testing.assert_array_equal(got, want)
    assert (later.search_many(data[1500:1501], 20)[1][0, 0] == 1500)
    # A wider answer kept serves a narrower search (the change tracker's 65, then a pool's 50).
    later.search_many(data[1530:1540], 40)
    for got, want in zip(later.search_many(data[1530:1540], 20), LayeredIndex(base, later.added).search_many(
            data[1530:1540], 20)):
        np.testing.assert_array_equal(got, want)
