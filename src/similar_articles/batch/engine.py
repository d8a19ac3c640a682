"""Where a build runs its heavy work: reading sources, encoding, candidate lists.

The build has one path (build.py, encode.py). It asks an engine for a source's rows,
for each chunk's vectors, and for the candidate lists; the engine decides where that
work runs. :class:`LocalEngine` runs it in this process (and its forked workers);
``RayEngine`` (ray_engine.py, ``pip install "similar-articles[ray]"``) runs it on a Ray
cluster. Both call the same functions on the same blocks (``plan_embedding``,
``candidate_block``), so they build the same snapshot.
"""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence

import numpy as np

from ..articles import Article
from ..embedding import EmbeddingCache, Encoder, embed_articles
from ..errors import ConfigError
from ..sources import Row, Source
from .candidates import CandidateInputs, FusedLists, fused_lists

ENGINES = ("local", "ray")


class Engine(Protocol):
    """What the build asks of an engine. ``embed`` may defer the encoding: what it
    returns is made whole by ``vectors`` once ``finish`` has run."""

    name: str

    def rows(self, source: Source) -> Iterator[Row]:
        ...

    def embed(self, articles: Sequence[Article], encoder: Encoder, cache: EmbeddingCache | None) -> tuple[object, int]:
        """A chunk's vectors (or a promise of them) and how many texts it encodes."""

    def finish(self, encoder: Encoder, cache: EmbeddingCache | None, bar) -> None:
        """Encode whatever ``embed`` deferred; ``bar`` advances per article encoded."""

    def vectors(self, chunk: object, cache: EmbeddingCache | None) -> np.ndarray:
        """A chunk's vectors from what ``embed`` returned, after ``finish``."""

    def candidate_lists(self, inputs: CandidateInputs, bar) -> FusedLists:
        ...

    def close(self) -> None:
        ...


class LocalEngine:
    """Everything in this process, chunk by chunk: the build as it always ran."""

    name = "local"

    def rows(self, source: Source) -> Iterator[Row]:
        return source.rows()

    def embed(self, articles: Sequence[Article], encoder: Encoder, cache: EmbeddingCache | None) -> tuple[object, int]:
        return embed_articles(articles, encoder, cache=cache)

    def finish(self, encoder: Encoder, cache: EmbeddingCache | None, bar) -> None:
        pass

    def vectors(self, chunk: object, cache: EmbeddingCache | None) -> np.ndarray:
        return chunk

    def candidate_lists(self, inputs: CandidateInputs, bar) -> FusedLists:
        return fused_lists(inputs, bar=bar)

    def close(self) -> None:
        pass


def make_engine(engine: "str | Engine | None" = "local", *, ray_address: str | None = None,
                ray_actors: int | None = None) -> Engine:
    """An engine by name ("local", "ray"), or the engine object given."""
    if engine is None or engine == "local":
        if ray_address or ray_actors:
            raise ConfigError("--ray-address and --ray-actors need --engine ray")
        return LocalEngine()
    if engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(address=ray_address, actors=ray_actors)
    if isinstance(engine, str):
        raise ConfigError(f"engine {engine!r} is unknown; use one of {', '.join(ENGINES)}")
    return engine
