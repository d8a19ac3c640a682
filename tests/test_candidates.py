"""Candidate lists: each article's nearest others, exact up to exact_lists_max."""

from __future__ import annotations

import numpy as np

from similar_articles.index.neighbours import build_candidate_lists
from similar_articles.config import IndexConfig
from similar_articles.index import FaissIndex

WIDTH = 20


def _unit(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(lists: np.ndarray, vectors: np.ndarray) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    exact = np.argsort(-sims, axis=1)[:, :WIDTH]
    return float(np.mean([len(set(a) & set(b)) / WIDTH for a, b in zip(lists, exact)]))


def test_exact_lists_of_an_hnsw_index_are_every_articles_true_neighbours():
    vectors = _unit(3000)
    # A deliberately weak graph, so that searching it misses neighbours.
    config = IndexConfig(kind="hnsw", hnsw_m=4, ef_construction=8, candidate_lists=WIDTH)
    index = FaissIndex.create("hnsw", vectors.shape[1], config)
    index.add(vectors)
    searched = build_candidate_lists(index, WIDTH)
    exact = build_candidate_lists(index, WIDTH, exact=True)
    assert _recall(searched, vectors) < 0.99  # the graph alone misses some
    assert _recall(exact, vectors) == 1.0
    assert not (exact == np.arange(len(vectors))[:, None]).any()  # never the article itself
    sims = np.take_along_axis(vectors @ vectors.T, exact.astype(np.int64), axis=1)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # most similar first


def test_exact_lists_pad_when_the_index_holds_fewer_than_the_width():
    vectors = _unit(8)
    index = FaissIndex.create("hnsw", vectors.shape[1], IndexConfig())
    index.add(vectors)
    lists = build_candidate_lists(index, 10, exact=True)
    assert lists.shape == (8, 10)
    assert (lists[:, :7] >= 0).all() and (lists[:, 7:] == -1).all()
