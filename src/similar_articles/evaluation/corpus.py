"""The corpus under evaluation and the structure every method is reduced to.

:class:`EvalCorpus` holds a corpus's articles with their unit vectors (same order) and
lookups by id; :func:`prepare_corpus` and :func:`load_corpus` get the vectors through
the shared embedding cache; :func:`build_recommender` indexes a corpus with them (nothing
is encoded). :data:`Boxes` is what every method, ours or a baseline, returns.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..articles import Article
from ..config import Config
from ..recommender import Recommender
from ..ranking import title_key


Boxes = dict[str, list[str]]
"""source article id -> recommended article ids, in box order."""


@dataclass
class EvalCorpus:
    """Articles of one corpus, their unit vectors (same order) and lookups by id."""

    name: str
    articles: list[Article]
    vectors: np.ndarray
    report: dict[str, int] = field(default_factory=dict)
    encoded: int = 0

    def __post_init__(self) -> None:
        self.ids = [a.id for a in self.articles]
        self.position = {article_id: i for i, article_id in enumerate(self.ids)}
        self.sections = np.array([a.section or "" for a in self.articles], dtype=object)
        self.titles = [a.title for a in self.articles]
        self.published = np.array([a.published_at.timestamp() if a.published_at else np.nan
                                   for a in self.articles], dtype=np.float64)
        self.title_keys = np.array([title_key(a.title) for a in self.articles], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.articles)

    @property
    def labels(self) -> dict[str, str]:
        """id -> section. On BBC News the section *is* the topic label."""
        return dict(zip(self.ids, self.sections.tolist()))

    def subset(self, keep: Sequence[bool] | np.ndarray, name: str | None = None) -> "EvalCorpus":
        """The articles where ``keep`` is true (e.g. an older snapshot of the corpus)."""
        rows = np.flatnonzero(np.asarray(keep, dtype=bool))
        return EvalCorpus(name=name or f"{self.name}-subset", articles=[self.articles[i] for i in rows],
                          vectors=self.vectors[rows], report=dict(self.report))

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        return self.vectors[[self.position[i] for i in ids]]

    def last_published(self) -> datetime | None:
        """The newest publication time: "now" for a call simulated at the corpus end."""
        if np.isnan(self.published).all():
            return None
        return datetime.fromtimestamp(float(np.nanmax(self.published)), timezone.utc)


def prepare_corpus(rows: Iterable[Mapping[str, Any] | Article], *, name: str = "corpus",
                   encoder=None, cache_path: str | Path | None = None, progress: bool = False,
                   report: dict[str, int] | None = None) -> EvalCorpus:
    """Parse rows and get their vectors through the shared embedding cache.

    encoder: defaults to the library's default sentence-transformers encoder.
    cache_path: the SQLite embedding cache; defaults to ``data_dir()/embeddings.sqlite``,
        shared by notebooks, tests, CI and the CLI, so an article is encoded once.
    """
    from ..embedding import EmbeddingCache, SentenceTransformerEncoder, embed_articles
    from ..paths import data_dir

    articles = [a if isinstance(a, Article) else Article.from_row(a) for a in rows]
    encoder = encoder or SentenceTransformerEncoder()
    cache = EmbeddingCache(Path(cache_path) if cache_path else data_dir() / "embeddings.sqlite")
    try:
        vectors, encoded = embed_articles(articles, encoder, cache=cache, progress=progress)
    finally:
        cache.close()
    return EvalCorpus(name=name, articles=articles, vectors=vectors, report=dict(report or {}),
                      encoded=encoded)


CORPORA = ("bbc", "news", "news100")


def load_corpus(name: str, *, encoder=None, progress: bool = False) -> EvalCorpus:
    """A real corpus with cached vectors: "bbc" (BBC News, 5 topics, duplicates removed,
    no dates), "news" (NewsArticles, 9 outlets, dated) or "news100" (its clean subset)."""
    from ..datasets import load_bbc, load_news_articles

    if name == "bbc":
        loaded = load_bbc()
    elif name in ("news", "news100"):
        loaded = load_news_articles("full" if name == "news" else "news100")
    else:
        raise ValueError(f"corpus must be one of {CORPORA}, got {name!r}")
    return prepare_corpus(loaded.rows, name=name, encoder=encoder, progress=progress,
                          report=loaded.report)


def build_recommender(corpus: EvalCorpus, path: str | Path | None = None, *,
                      config: Config | None = None) -> Recommender:
    """Index ``corpus`` with its precomputed vectors (nothing is encoded).

    path: where the snapshot goes; a fresh temporary folder by default.
    """
    path = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix=f"eval-{corpus.name}-"))
    return Recommender.build(corpus.articles, path, embeddings=corpus.vectors, config=config)
