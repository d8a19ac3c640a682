"""The immutable serving state: everything a call reads, made from one snapshot.

Adding, removing and reloading never change a state: they make a new one, which the
Recommender swaps in with one reference assignment. A call takes the reference once and
reads a consistent state to the end, with no lock; an add does its work (encoding,
copying columns) before the swap, so no call waits for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .articles import Article
from .artifacts import Artifacts, LoadedSnapshot
from .config import Config
from .errors import IndexCorruptedError, ModelMismatchError
from .features import copies
from .features.lexical import Fingerprints, LexicalModel
from .features import retrieval
from .features.retrieval import Postings
from .ranking import blend
from .features.store import Rows, TextFeatures
from .index import FaissIndex, LayeredIndex
from .journal import Record
from .labels import DEFAULT_LABELS
from .rules import Rules
from .table import NEWSROOM, ArticleTable


@dataclass(frozen=True)
class NeighbourLists:
    """Each built article's nearest others, found once at build time, and what a call
    would otherwise compute for each listed pair: their term overlap and whether the
    listed one copies the article (packed bits, for the build's ``copy_threshold``)."""

    lists: np.ndarray  # int32 (built articles, width), -1 pads
    overlap: np.ndarray | None  # float16 (built articles, width)
    copy_bits: np.ndarray | None  # uint8 (built articles, ceil(width / 8))
    copy_threshold: float | None
    beyond: np.ndarray | None = None  # float16 (built articles,): no unlisted article has a higher cosine

    @property
    def width(self) -> int:
        return self.lists.shape[1]


@dataclass(frozen=True)
class ServingState:
    table: ArticleTable
    index: LayeredIndex
    features: TextFeatures
    neighbours: NeighbourLists | None
    manifest: dict[str, Any]
    path: Path | None
    journal_seq: int = 0  # the last live-update record this state includes
    postings: Postings | None = None  # the lexical retriever (snapshot articles only)
    # (weight, quantile) -> floor: read from the snapshot's random pairs, so the states
    # made from this one by live updates share it.
    floors: dict = field(default_factory=dict, compare=False)
    rules: Rules = field(default_factory=Rules)  # the newsroom's rules (rules.json), applied at call time
    labels: dict = field(default_factory=lambda: dict(DEFAULT_LABELS))  # reader labels (labels.json)
    rulings: dict = field(default_factory=dict, compare=False)  # the rules compiled for this table, made once
    # The lexical retriever's answers (lexical_finds), kept: the postings never
    # change until the next snapshot, so the states made from this one share them.
    finds: dict = field(default_factory=dict, compare=False)

    def with_rules(self, rules: Rules, labels: dict) -> "ServingState":
        """This state under other rules and labels (compiled again on the next call)."""
        return replace(self, rules=rules, labels=labels, rulings={})

    def relatedness_floor(self, lexical_weight: float, quantile: float | None) -> float:
        """The blended score (ranking.blend) that ``quantile`` of this index's random
        pairs of articles stay below (the build's sample, in the manifest): a floor
        that passes the same share of chance pairs on any archive. -inf for None, or
        an index built without the sample."""
        key = (lexical_weight, quantile)
        floor = self.floors.get(key)
        if floor is None:
            pairs = self.manifest.get("random_pairs") or {}
            if quantile is None or not pairs.get("cosine"):
                floor = -np.inf
            else:
                weight = lexical_weight if self.features.lexical is not None else 0.0
                scores = blend(np.asarray(pairs["cosine"]), np.asarray(pairs["overlap"]), weight)
                floor = float(np.quantile(scores, quantile))
            self.floors[key] = floor
        return floor

    @classmethod
    def from_snapshot(cls, snapshot: LoadedSnapshot, config: Config, model_id: str) -> "ServingState":
        """Open a snapshot checked against the configured model."""
        manifest = snapshot.manifest
        if model_id != manifest.get("model_id"):
            raise ModelMismatchError(
                f"{snapshot.path} was built with model {manifest.get('model_id')!r} but {model_id!r} is "
                "configured; rebuild the index with this model or load it without overriding the encoder")
        index = FaissIndex.load(snapshot.index_path, manifest["index_kind"], config.index)
        if len(index) != manifest["count"]:
            raise IndexCorruptedError(f"{snapshot.path}: the manifest counts {manifest['count']} articles, the "
                                      f"index holds {len(index)}; rebuild the index")
        return cls.from_parts(snapshot.artifacts, index, manifest, config, snapshot.path)

    @classmethod
    def from_parts(cls, art: Artifacts, index: FaissIndex, manifest: dict[str, Any], config: Config,
                   path: Path | None = None) -> "ServingState":
        """A state over a snapshot's parts (loaded, or just built and not yet written)."""
        table = ArticleTable.from_columns(art.metadata, art.published, art.title_keys,
                                          newsroom={name: getattr(art, name) for name in NEWSROOM})
        features = TextFeatures(
            LexicalModel(art.lexical_idf) if art.lexical_idf is not None else None,
            *(Rows.of(a) if a is not None else None
              for a in (art.term_ids, art.term_weights, art.copy_sketches, art.copy_shingles)))
        neighbours = None
        if art.neighbour_lists is not None and config.index.candidate_lists:
            built = ((manifest.get("config") or {}).get("ranking") or {}).get("copy_containment")
            neighbours = NeighbourLists(art.neighbour_lists, art.neighbour_overlap, art.neighbour_copies,
                                        built if art.neighbour_copies is not None else None,
                                        art.neighbour_beyond)
        postings = Postings(art.lexical_offsets, art.lexical_docs, art.lexical_weights) \
            if art.lexical_docs is not None else None
        return cls(table, LayeredIndex(index), features, neighbours, manifest, path,
                   int(manifest.get("journal_seq", 0)), postings)

    def with_added(self, articles: Sequence[Article], vectors: np.ndarray) -> "ServingState":
        """A new state with ``articles`` (and their unit ``vectors``) added; a known id's
        older version is replaced. They are in no neighbour list: boxes of listed
        articles score them directly, and their own boxes search."""
        if vectors.shape[1] != self.index.dim:
            raise ModelMismatchError(f"new vectors have {vectors.shape[1]} dimensions, the index {self.index.dim}")
        texts = [a.text for a in articles]
        prints = self.features.lexical.transform(texts) if self.features.lexical is not None else None
        sketches = copies.sketches([copies.copy_text(a.body, a.title) for a in articles]) \
            if self.features.sketches is not None else None
        return replace(self, table=self.table.with_added(articles), index=self.index.with_rows(vectors),
                       features=self.features.with_rows(prints, sketches), rulings={})

    def with_removed(self, ids: Sequence[object]) -> tuple["ServingState", int]:
        """A new state without the live articles among ``ids`` (unknown ids are
        ignored), and how many were removed."""
        positions = [p for p in (self.table.position_of(i) for i in ids) if p is not None]
        if not positions:
            return self, 0
        return replace(self, table=self.table.with_removed(positions), rulings={}), len(set(positions))

    def with_record(self, record: Record, model_id: str) -> tuple["ServingState", int]:
        """A new state with one journal record applied, and how many articles it added
        or removed. A record made with another model (before a model change) is skipped."""
        if record.op == "add":
            if record.model_id != model_id:
                return replace(self, journal_seq=record.seq), 0
            state, changed = self.with_added(record.articles, record.vectors), len(record.articles)
        else:
            state, changed = self.with_removed(record.ids)
        return replace(state, journal_seq=record.seq), changed

    def lexical_finds(self, prints: Fingerprints, k: int, exclude: np.ndarray) -> np.ndarray:
        """retrieval.search over the postings, each answer kept (the latest 4,096; a
        kept answer serves a narrower search as its first ``k``): an added article's
        box, ranked again, reads no postings."""
        keys = [(prints.ids[b].tobytes(), prints.weights[b].tobytes(), int(exclude[b])) for b in range(len(prints))]
        got = [self.finds.get(key) for key in keys]
        missing = [b for b, found in enumerate(got) if found is None or len(found) < k]
        if missing:
            found = retrieval.search(self.postings, prints.take(np.array(missing)), k, exclude=exclude[missing])
            if len(self.finds) + len(missing) > 4096:
                self.finds.clear()
            for row, b in enumerate(missing):
                got[b] = self.finds[keys[b]] = found[row].copy()
        return np.stack([found[:k] for found in got]) if got else np.full((0, k), -1, np.int64)

    def listed_count(self) -> int:
        """Articles with a neighbour list: those of the snapshot (0 without lists)."""
        return 0 if self.neighbours is None else len(self.neighbours.lists)
