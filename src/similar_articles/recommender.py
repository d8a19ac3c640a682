"""Recommender: build or load an index, fill boxes, apply adds and removals at once."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from . import items, many, parallel, ranking
from .features import copies
from .articles import Article
from .index.neighbours import build_candidate_lists
from .config import Config, replace_ranking
from .embedding import EmbeddingCache, Encoder, SentenceTransformerEncoder, embed_articles, normalise_rows
from .errors import (ConfigError, IndexCorruptedError, InvalidArticleError, ModelMismatchError,
                     SimilarArticlesError, UnknownArticleError)
from .index import FaissIndex, create_index
from .items import Recommendation
from .features.lexical import Fingerprints, LexicalModel, PoolTerms, list_overlaps, overlaps
from .snapshot import CURRENT, read_snapshot, resolve_snapshot_dir, write_snapshot

log = logging.getLogger(__name__)

MAX_K = 100
# recommend_many calls this large pause the cyclic garbage collector (_collector_paused).
# Below it the pause saves nothing measurable (2,000 ids: the same in ten serves; the
# collection it defers runs at its end), and a server's calls leave the collector alone.
PAUSE_COLLECTOR_AT = 10_000
UNSEEN_VECTORS_KEPT = 1024  # unseen articles whose vectors a Recommender remembers (1.5 MB)
UNSEEN_SOURCES_KEPT = 1024  # and whose text work and search a snapshot remembers (~8 MB: mostly bodies)
_NO_POSITIONS = np.empty(0, dtype=np.int64)
CACHE_FILE = "embeddings.sqlite"
CANDIDATE_LISTS = "candidate_lists"
CANDIDATE_OVERLAP = "candidate_overlap"  # float16 [built, width]: term overlap with each listed one
CANDIDATE_COPIES = "candidate_copies"  # uint64 [built]: bit j set when listed one j is a copy
BOX_PLAN = "box_plan"  # uint8 [built, many.PLAN_DEPTH]: list slots of the default box (many.box_plans)
BOX_PLAN_WINDOW = "box_plan_window"  # float64 [2]: the epoch seconds between which the plans hold
PLAN_DAYS = 7  # how long after its build an index's planned boxes hold (a missed nightly build or two)
# Read by calls only on the live-search path (unseen articles, narrow filters, adds):
# memory-mapped, so they cost resident memory only as far as such calls touch them.
_MAPPED_ARRAYS = ("lexical_ids", "lexical_weights")
ArticleLike = Article | Mapping[str, Any]
T = TypeVar("T")


try:  # numpy >= 2: compact variable-width strings; older numpy: object arrays (as lists)
    from numpy.dtypes import StringDType

    _TEXT = StringDType(na_object=None)
except ImportError:  # pragma: no cover
    _TEXT = np.dtype(object)
_TAG_SEP = "\x1f"  # unit separator: never inside a tag after normalisation


# The columns every box item reads (items.py): Python str objects in an object array.
# Reading 512 of them at random takes ~30-55 ns an item against ~430-540 from
# StringDType (which copies each string into a new array, then decodes it): a batch
# article ~29% faster. It costs ~54 B an article for the two at 1M (benchmarks/README).
_SHOWN_COLUMNS = ("titles", "urls")


def _text_column(values: Iterable[str | None], dtype: np.dtype = _TEXT) -> np.ndarray:
    return np.array(list(values) if not isinstance(values, (list, np.ndarray)) else values, dtype=dtype)


def _column(name: str, values: Iterable[str | None]) -> np.ndarray:
    """Corpus column ``name`` as its array: object for the shown ones, else compact."""
    return _text_column(values, np.dtype(object) if name in _SHOWN_COLUMNS else _TEXT)


class _Positions:
    """Article id -> position, for a column of ids held as one numpy string array.

    A dict of a million ids costs ~150 bytes an article (the dict, its int values and
    the id strings it keeps alive); sorted 64-bit hashes and their positions cost 12.
    Ids added after load go to a small dict that wins (a later position replaces).
    """

    def __init__(self, ids: np.ndarray):
        self._ids = ids
        hashes = np.fromiter((hash(i) for i in ids.tolist()), dtype=np.int64, count=len(ids))
        order = np.argsort(hashes, kind="stable")  # equal hashes keep position order
        self._hashes = hashes[order]
        self._order = order.astype(np.int32 if len(ids) < 2**31 else np.int64)
        self._added: dict[str, int] = {}

    def get(self, article_id, default=None):
        found = self._added.get(article_id)
        if found is not None:
            return found
        if not isinstance(article_id, str):
            return default
        h = hash(article_id)
        i = int(np.searchsorted(self._hashes, h))
        found = default
        while i < len(self._hashes) and self._hashes[i] == h:
            pos = int(self._order[i])
            if self._ids[pos] == article_id:
                found = pos  # the last match is the newest version
            i += 1
        return found

    def get_many(self, ids: list) -> np.ndarray:
        """Positions of ``ids`` (-1 for unknown ones), as ``get`` gives them; one
        vectorised lookup instead of a search per id."""
        ids = list(ids)
        positions = np.full(len(ids), -1, dtype=np.int64)
        checked = np.zeros(len(ids), dtype=bool)
        texts = [i if isinstance(i, str) else "" for i in ids]
        if len(self._ids) and ids:
            wanted = np.fromiter(map(hash, texts), dtype=np.int64, count=len(ids))
            # The last entry with the hash is the newest article having it: when it
            # holds the id, it is get()'s answer; otherwise (another id with the same
            # hash, an id added since load, not a string, or none) ask get().
            at = np.maximum(np.searchsorted(self._hashes, wanted, side="right") - 1, 0)
            positions = self._order[at].astype(np.int64)
            checked = (self._hashes[at] == wanted) & (self._ids[positions] == np.array(texts, dtype=self._ids.dtype))
            positions[~checked] = -1
        for i in np.flatnonzero(~checked | bool(self._added)).tolist():
            found = self.get(ids[i])
            positions[i] = -1 if found is None else found
        return positions

    def __contains__(self, article_id) -> bool:
        return self.get(article_id) is not None

    def __getitem__(self, article_id) -> int:
        pos = self.get(article_id)
        if pos is None:
            raise KeyError(article_id)
        return pos

    def __setitem__(self, article_id: str, pos: int) -> None:
        self._added[article_id] = pos


class _Tags:
    """Tags per article as one string column: list-like access, a fraction of the memory."""

    def __init__(self, joined: np.ndarray):
        self.joined = joined

    @classmethod
    def of(cls, tags: Sequence[Sequence[str]]) -> "_Tags":
        return cls(_text_column([_TAG_SEP.join(t) for t in tags]))

    def __len__(self) -> int:
        return len(self.joined)

    def __getitem__(self, pos: int) -> list[str]:
        value = self.joined[pos]
        return value.split(_TAG_SEP) if value else []

    def extend(self, tags: Sequence[Sequence[str]]) -> None:
        self.joined = np.concatenate([self.joined, _Tags.of(tags).joined])

    def tolist(self) -> list[list[str]]:
        return [t.split(_TAG_SEP) if t else [] for t in self.joined.tolist()]


class _Corpus:
    """Columnar article metadata aligned with index positions, plus the tombstone mask.

    Text columns are numpy arrays (``corpus.titles[pos]`` is a str or None), not Python
    lists: at a million articles lists of str cost ~700 bytes an article, these ~370,
    which is what keeps a large index within its memory budget. Most are compact
    StringDType arrays; the two every box item shows hold str objects (_SHOWN_COLUMNS).
    """

    COLUMNS = ("ids", "titles", "urls", "sections", "tags", "content_hashes")

    def __init__(self, columns: dict[str, list], published: np.ndarray, title_keys: np.ndarray,
                 lexical: LexicalModel | None = None, prints: Fingerprints | None = None,
                 copy_sketches: tuple[np.ndarray, np.ndarray] | None = None):
        self.ids = _column("ids", columns["ids"])
        self.titles = _column("titles", columns["titles"])
        self.urls = _column("urls", columns["urls"])
        self.sections = _column("sections", columns["sections"])
        self.tags = _Tags.of(columns["tags"])
        self.content_hashes = _column("content_hashes", columns["content_hashes"])
        self.published = np.asarray(published, dtype=np.float64)
        self.title_keys = np.asarray(title_keys, dtype=np.int64)
        self.lexical, self.prints = lexical, prints  # None in indexes built without text
        # copies.py's sketches and shingle counts; None in indexes built before them
        self.copy_sketch, self.copy_shingles = copy_sketches or (None, None)
        self.alive = np.ones(len(self.ids), dtype=bool)
        self.all_alive = True  # until retire(): lets a planned call skip checking its list
        self.positions = _Positions(self.ids)
        self._index_derived()

    @classmethod
    def from_articles(cls, articles: Sequence[Article]) -> "_Corpus":
        lexical, prints = LexicalModel.fit([a.text for a in articles])
        return cls(*cls.columns_of(articles), lexical, prints, cls.copy_sketches_of(articles))

    @staticmethod
    def copy_sketches_of(articles: Sequence[Article]) -> tuple[np.ndarray, np.ndarray]:
        return copies.sketches([copies.copy_text(a.body, a.title) for a in articles])

    @staticmethod
    def columns_of(articles: Sequence[Article]) -> tuple[dict[str, list], np.ndarray, np.ndarray]:
        columns = {
            "ids": [a.id for a in articles], "titles": [a.title for a in articles],
            "urls": [a.url for a in articles], "sections": [a.section for a in articles],
            "tags": [list(a.tags) for a in articles],
            "content_hashes": [a.content_hash for a in articles],
        }
        published = np.array([a.published_at.timestamp() if a.published_at else np.nan
                              for a in articles], dtype=np.float64)
        title_keys = np.array([ranking.title_key(a.title) for a in articles], dtype=np.int64)
        return columns, published, title_keys

    def _index_derived(self) -> None:
        """Everything a call needs that does not depend on the call, computed once."""
        sections = self.sections.tolist()
        self.section_names = sorted({s for s in sections if s})
        self.section_codes_by_name = {name: i for i, name in enumerate(self.section_names)}
        self.reason_table = items.ReasonTable(self.section_names)  # its keys hold these codes
        self.section_codes = np.array(
            [self.section_codes_by_name.get(s, ranking.NO_SECTION) if s else ranking.NO_SECTION
             for s in sections], dtype=np.int32)
        self.recent_order = ranking.recent_first(self.published)
        codes_in_order = self.section_codes[self.recent_order]
        self.recent_by_section = {code: self.recent_order[codes_in_order == code]
                                  for code in range(len(self.section_names))}

    def extend(self, articles: Sequence[Article]) -> None:
        columns, published, title_keys = self.columns_of(articles)
        for name in self.COLUMNS:
            if name == "tags":
                self.tags.extend(columns[name])
            else:
                setattr(self, name, np.concatenate([getattr(self, name), _column(name, columns[name])]))
        self.positions._ids = self.ids
        start = len(self.published)
        self.published = np.concatenate([self.published, published])
        self.title_keys = np.concatenate([self.title_keys, title_keys])
        if self.lexical is not None:
            self.prints = self.prints.extend(self.lexical.transform([a.text for a in articles]))
        if self.copy_sketch is not None:
            rows, counts = self.copy_sketches_of(articles)
            self.copy_sketch = np.concatenate([self.copy_sketch, rows])
            self.copy_shingles = np.concatenate([self.copy_shingles, counts])
        self.alive = np.concatenate([self.alive, np.ones(len(articles), dtype=bool)])
        for offset, article in enumerate(articles):
            old = self.positions.get(article.id)
            if old is not None:
                self.retire([old])  # the new version replaces it
            self.positions[article.id] = start + offset
        self._index_derived()

    def retire(self, positions: Sequence[int]) -> None:
        """Mark the articles at ``positions`` removed (their rows stay)."""
        self.alive[list(positions)] = False
        self.all_alive = False

    def metadata(self) -> dict[str, list]:
        return {name: getattr(self, name).tolist() for name in self.COLUMNS}

    def arrays(self) -> dict[str, np.ndarray]:
        """What the snapshot stores as .npy files."""
        arrays = {"published": self.published, "title_keys": self.title_keys}
        if self.lexical is not None:
            arrays.update(lexical_idf=self.lexical.idf, lexical_ids=self.prints.ids,
                          lexical_weights=self.prints.weights)
        if self.copy_sketch is not None:
            arrays[copies.SKETCH_ARRAY] = self.copy_sketch
            arrays[copies.SHINGLES_ARRAY] = self.copy_shingles
        return arrays

    def live_count(self) -> int:
        return int(self.alive.sum())


@dataclass
class _Served:
    """One loaded snapshot (plus adds and removals since): what a call reads.

    A reload builds a new one and swaps it in whole, so a call never sees half of each.
    """

    index: FaissIndex
    corpus: _Corpus
    manifest: dict
    path: Path | None
    lock: threading.RLock = None  # guards FAISS and the columns against concurrent add()
    candidate_lists: np.ndarray | None = None  # int32 [built articles, width], see candidates.py
    # What ranking needs of each (article, listed candidate) pair, computed at build
    # (see candidate_arrays): None in indexes built without them.
    candidate_overlap: np.ndarray | None = None
    candidate_copies: np.ndarray | None = None
    candidate_copy_threshold: float | None = None  # the copy_containment the bits were made with
    # Unseen articles' sources (their text work and searches), by _unseen_key: valid
    # for this snapshot only, so a reload starts afresh.
    unseen_sources: "_Recent" = field(default_factory=lambda: _Recent(UNSEEN_SOURCES_KEPT), init=False, repr=False)
    box_plan: np.ndarray | None = None  # for calls with the serving settings (many.box_plans)
    box_plan_window: np.ndarray | None = None  # [first, last] time of a call the plans hold for

    # (the box_plan they are for, many.plan_similarities of it): see plan_similarities()
    _plan_similarities: tuple = field(default=(None, None), init=False, repr=False)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.plan_similarities()  # on load, not on the first call

    def plan_similarities(self) -> np.ndarray | None:
        """many.plan_similarities of the current plans (recomputed if they are replaced)."""
        if self._plan_similarities[0] is not self.box_plan:
            self._plan_similarities = (self.box_plan, many.plan_similarities(self))
        return self._plan_similarities[1]


class Recommender:
    """Fills "Similar articles" boxes from a FAISS index of article vectors.

    Build one with :meth:`build` or open a published index with :meth:`load`;
    :meth:`recommend` is safe to call from many threads.
    """

    def __init__(self, *, served: "_Served", config: Config, encoder: Encoder | None = None,
                 root: Path | None = None, reload_interval: float | None = None):
        self._served = served
        self.config = config
        self._encoder = encoder
        self._root = root
        self.reload_interval = reload_interval
        self._next_check = time.monotonic() + (reload_interval or 0)
        self._reloading = threading.Lock()
        self._unseen_vectors = _Recent(UNSEEN_VECTORS_KEPT)

    @property
    def manifest(self) -> dict:
        return self._served.manifest

    @property
    def path(self) -> Path | None:
        """The snapshot folder being served."""
        return self._served.path

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, rows: Iterable[ArticleLike], path: str | os.PathLike, *,
              embeddings: np.ndarray | None = None, config: Config | None = None,
              encoder: Encoder | None = None, cache: bool | str | os.PathLike = True,
              progress: bool = False,
              keep: int = 3) -> "Recommender":
        """Index ``rows`` (dicts or Articles) and publish the snapshot under ``path``.

        embeddings: one vector per row, same order, made elsewhere with the configured
            model; nothing is encoded then. Otherwise the model encodes every article
            the embedding cache does not already hold.
        cache: True keeps the cache in ``path/embeddings.sqlite``; a file path shares one
            cache between indexes; False encodes everything.
        keep: snapshots kept on disk for rollback.
        Raises InvalidArticleError for the first bad row (the CLI skips bad rows instead).
        """
        config = config or Config()
        articles = parse_articles(rows)
        if not articles:
            raise InvalidArticleError("no articles to index: the source gave no rows")
        root = Path(path)
        encoder = encoder or SentenceTransformerEncoder(config.encoder)
        if embeddings is not None:
            vectors = normalise_rows(embeddings)
            if len(vectors) != len(articles):
                raise ConfigError(
                    f"embeddings has {len(vectors)} rows but there are {len(articles)} "
                    "articles; give one row per article, in the same order")
            encoded = 0
        else:
            store = None if cache is False else \
                EmbeddingCache(root / CACHE_FILE if cache is True else Path(cache))
            try:
                vectors, encoded = embed_articles(articles, encoder, cache=store, progress=progress)
            finally:
                if store is not None:
                    store.close()
        # The text work first, on every core: forked before FAISS starts its own threads.
        with parallel.workers():
            corpus = _Corpus.from_articles(articles)
        index = create_index(vectors.shape[1], len(articles), config.index)
        index.add(vectors)
        candidates = candidate_arrays(corpus, candidate_lists_for(index, config, progress=progress), config,
                                      index)
        manifest = {
            "library_version": _library_version(), "model_id": encoder.model_id,
            "dimensions": int(vectors.shape[1]), "count": len(articles),
            "index_kind": index.kind, "config": config.to_dict(),
            "embeddings": "precomputed" if embeddings is not None else "encoded",
            "encoded": encoded,
        }
        folder = write_snapshot(
            root, write_index=index.save, metadata=corpus.metadata(),
            arrays=snapshot_arrays(corpus, candidates),
            manifest=manifest, keep=keep)
        manifest = read_snapshot(folder, verify=False).manifest
        return cls(served=_Served(index, corpus, manifest, folder,
                                  **candidate_fields(candidates, config.ranking.copy_containment)),
                   config=config, encoder=encoder,
                   root=root if (root / CURRENT).exists() else None)

    @classmethod
    def load(cls, path: str | os.PathLike, *, config: Config | None = None,
             encoder: Encoder | None = None, verify: bool = True,
             reload_interval: float | None = 5.0) -> "Recommender":
        """Open the snapshot that ``path`` serves (an index root or a snapshot folder).

        config: ranking settings to use instead of the saved ones; its encoder must
            match the one the index was built with (else ModelMismatchError).
        verify: check every file against the manifest's checksums (about 1 s per GB).
        reload_interval: seconds between checks for a newer published snapshot (an
            index root only); the new one loads in a background thread while calls
            keep being served from the old. None turns hot reload off.
        """
        root = Path(path)
        snapshot = read_snapshot(path, verify=verify, mapped=_MAPPED_ARRAYS)
        config = config or Config.from_dict(snapshot.manifest.get("config") or {})
        encoder = encoder or SentenceTransformerEncoder(config.encoder)
        served = _served_from(snapshot, config, encoder)
        watch = root if (root / CURRENT).exists() else None
        return cls(served=served, config=config, encoder=encoder, root=watch,
                   reload_interval=reload_interval)

    def reload(self) -> bool:
        """Serve the snapshot that the index root now points to, if it is another one.

        Adds and removals made in this process since the last load are dropped: the
        new snapshot is the source of truth. Returns whether a new snapshot was loaded.
        """
        if self._root is None:
            return False
        folder = resolve_snapshot_dir(self._root)
        if self._served.path is not None and folder == self._served.path.resolve():
            return False
        served = _served_from(read_snapshot(folder, mapped=_MAPPED_ARRAYS), self.config, self.encoder)
        self._served = served  # one reference swap: calls in flight keep the old one
        log.info("similar-articles: now serving %s", folder)
        return True

    def _served_now(self) -> _Served:
        """The snapshot to serve this call; at most every reload_interval seconds,
        start a background reload if a newer snapshot was published."""
        if self.reload_interval is not None and self._root is not None:
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + self.reload_interval
                if self._reloading.acquire(blocking=False):
                    threading.Thread(target=self._reload_quietly, daemon=True,
                                     name="similar-articles-reload").start()
        return self._served

    def pinned(self) -> "Recommender":
        """A view of the snapshot served now that never reloads: long jobs (an export)
        see one snapshot from start to end while this recommender moves on. It shares
        the snapshot's memory; adds and removals through either are seen by both."""
        return Recommender(served=self._served_now(), config=self.config, encoder=self._encoder)

    def _serving_lock(self) -> threading.RLock:
        """Held by every call on the served snapshot (and by add and remove)."""
        return self._served.lock

    def _reload_quietly(self) -> None:
        try:
            self.reload()
        except Exception:  # keep serving the old snapshot; the next check tries again
            log.exception("similar-articles: reload from %s failed", self._root)
        finally:
            self._reloading.release()

    # ---------------------------------------------------------------- serving
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = SentenceTransformerEncoder(self.config.encoder)
        return self._encoder

    def __len__(self) -> int:
        return self._served.corpus.live_count()

    def ids(self) -> list[str]:
        """The ids of the live articles, in index order (an export walks these)."""
        return self._served.corpus.ids[self._live_positions()].tolist()

    def _live_positions(self) -> np.ndarray:
        """The positions of the live articles, in index order."""
        corpus = self._served.corpus
        # A replaced article's older row is dead, or its id now points at a newer row.
        current = corpus.alive & (corpus.positions.get_many(corpus.ids.tolist()) == np.arange(len(corpus.ids)))
        return np.flatnonzero(current)

    def __contains__(self, article_id: object) -> bool:
        corpus = self._served.corpus
        pos = corpus.positions.get(article_id)  # type: ignore[arg-type]
        return pos is not None and bool(corpus.alive[pos])

    def recommend(self, article: str | ArticleLike, k: int = 2, *, now: datetime | None = None,
                  exclude_ids: Iterable[str] = (), sections: Iterable[str] | None = None,
                  **overrides: Any) -> list[Recommendation]:
        """The ``k`` most useful related articles for an indexed id or an unseen article.

        now: the time of the call (default: the clock); articles published after it
            are hidden and ages are measured from it.
        exclude_ids: ids never to show (the article itself is always excluded).
        sections: show only articles of these sections.
        overrides: any RankingConfig field for this call, e.g. max_age_days=30.
        """
        k = _check_k(k)
        settings = replace_ranking(self.config.ranking, overrides)
        served = self._served_now()
        if not isinstance(article, str):
            query, source = self._unseen_query(served, article)
            with served.lock:
                return self._box(served, query, source, k, settings, now, exclude_ids, sections)
        source = _indexed_source(served.corpus, article, _position_of(served.corpus, article))
        with served.lock:
            if served.box_plan is not None and settings is self.config.ranking and not exclude_ids \
                    and sections is None:
                # The usual call: its box was planned at build time and needs no query vector.
                box = _planned_box(served, source, k, settings, (now or datetime.now(timezone.utc)).timestamp())
                if box is not None:
                    return box
            query = served.index.vectors(np.array([source["position"]]))[0]
            return self._box(served, query, source, k, settings, now, exclude_ids, sections)

    def recommend_many(self, ids: Iterable[str], k: int = 2, *, now: datetime | None = None,
                       exclude_ids: Iterable[str] = (), sections: Iterable[str] | None = None,
                       batch_size: int = 256, all_cores: bool = True,
                       **overrides: Any) -> list[list[Recommendation]]:
        """The boxes of many indexed articles, in order: the same boxes as calling
        :meth:`recommend` for each id with the same ``now``, several times faster per
        article. Articles with a candidate list are ranked ``batch_size`` at a time as
        arrays (many.py); the rest (added since the build, or calls whose filters
        leave too little of a list) go one by one and share one FAISS search per batch.

        now: the time of every call (default: the clock when this starts).
        batch_size: sources ranked together; memory ~ batch_size x 5 KB.
        all_cores: read the candidates' vectors on every core (~1.4x faster per
            article on 2 cores: the reads wait on memory); False keeps the call on one
            core, for a server that calls it from several request threads. A process
            forked after loading uses one core either way (index/faiss_index.py).
        Raises UnknownArticleError for the first id not in the index. A call of
        PAUSE_COLLECTOR_AT ids or more pauses Python's cyclic garbage collector while
        it runs (it is on again after, if it was on before): its passes over the
        growing result cost 15-40% of the time at 100k ids.
        """
        ids = list(ids)
        with _collector_paused(len(ids) >= PAUSE_COLLECTOR_AT):
            return [box for block in self._ranked_blocks(ids, k, items.boxes_in_order, now=now,
                                                        exclude_ids=exclude_ids, sections=sections,
                                                        batch_size=batch_size, all_cores=all_cores, **overrides)
                    for box in block]

    def _ranked_blocks(self, sources: Sequence[str] | np.ndarray, k: int, make: Callable[..., T], *,
                       now: datetime | None = None, exclude_ids: Iterable[str] = (),
                       sections: Iterable[str] | None = None, batch_size: int = 256, all_cores: bool = True,
                       **overrides: Any) -> list[T]:
        """recommend_many's work up to the items: ``make(corpus, block, ranked,
        now_ts, alone)`` turns each block of ``batch_size`` sources (their positions),
        its many.Boxes and the boxes of its rows ranked alone (a dict of row ->
        Recommendations) into what is returned for it, one per block;
        items.boxes_in_order makes recommend_many's, the Parquet export makes
        columns. ``sources``: ids, or an integer array of live positions (the
        export's, from _live_positions: no id lookups)."""
        k = _check_k(k)
        settings = replace_ranking(self.config.ranking, overrides)
        served = self._served_now()
        corpus = served.corpus
        now = now or datetime.now(timezone.utc)
        exclude_ids = tuple(exclude_ids)
        sections = None if sections is None else tuple(sections)
        if isinstance(sources, np.ndarray) and sources.dtype.kind in "iu":
            positions = sources.astype(np.int64, copy=False)
        else:
            positions = _positions_of(corpus, sources)
        excluded = np.array([corpus.positions[i] for i in exclude_ids if i in corpus.positions], dtype=np.int64)
        allowed = _section_codes(corpus, sections)
        fetch = max(settings.candidates, 4 * k)
        lists = served.candidate_lists
        listed = lists is not None and fetch <= lists.shape[1]
        planned = settings is self.config.ranking and not exclude_ids and sections is None
        made: list[T] = []
        with served.lock:
            now_ts = now.timestamp()
            for start in range(0, len(positions), batch_size):
                block = positions[start:start + batch_size]
                ranked = many.boxes(served, block, k, settings, now_ts=now_ts, excluded=excluded, allowed=allowed,
                                    planned=planned, all_cores=all_cores)
                # The rest go alone; those without a list share one search.
                alone = np.flatnonzero(~ranked.finished).tolist()
                searched = [row for row in alone if not listed or block[row] >= len(lists)]
                found = dict(zip(searched, zip(*served.index.search_many(
                    served.index.vectors(block[searched]), fetch)))) if searched else {}
                alone_boxes = {row: self._box(served, served.index.vectors(block[row:row + 1])[0],
                                              _indexed_source(corpus, corpus.ids[block[row]], int(block[row])), k,
                                              settings, now, exclude_ids, sections, prefetched=found.get(row))
                               for row in alone}
                made.append(make(corpus, block, ranked, now_ts, alone_boxes))
        return made

    def _unseen_query(self, served: "_Served", article: ArticleLike) -> tuple[np.ndarray, dict]:
        """An unseen article's vector (encoded, or remembered by content hash) and
        source. A repeat call (a new article's next page views) reuses the source
        made for its first, until the index grows: the text work (fingerprint, copy
        sketch) and the search (_search). At 1M a repeat took 5.7 ms p50, 0.7 with it."""
        parsed = Article.from_row(article)
        key = _unseen_key(parsed)
        known = served.unseen_sources.get(key)
        if known is not None and known[0] == len(served.index):
            return known[1], known[2]
        text_hash = key[0]  # a sha256 of the text: made once
        vector = self._unseen_vectors.get(text_hash)
        if vector is None:
            vector = self.encoder.encode_articles([parsed])[0]
            self._unseen_vectors.put(text_hash, vector)
        if vector.shape[0] != served.index.dim:
            raise ModelMismatchError(
                f"the encoder makes {vector.shape[0]}-dimensional vectors but the index holds "
                f"{served.index.dim}-dimensional ones; load the index with the model it was built with")
        corpus = served.corpus
        published = parsed.published_at.timestamp() if parsed.published_at else np.nan
        source = {"id": parsed.id, "position": corpus.positions.get(parsed.id),
                  "published": published, "section": parsed.section,
                  "title_key": ranking.title_key(parsed.title),
                  "print": corpus.lexical.transform([parsed.text]) if corpus.lexical else None,
                  "copy_text": copies.copy_text(parsed.body, parsed.title), "searches": {}}
        served.unseen_sources.put(key, (len(served.index), vector, source))
        return vector, source

    def _box(self, served: "_Served", query: np.ndarray, source: dict, k: int, settings, now: datetime | None,
             exclude_ids: Iterable[str], sections: Iterable[str] | None,
             prefetched: tuple[np.ndarray, np.ndarray] | None = None) -> list[Recommendation]:
        """``prefetched``: (similarities, positions) of the first search, done in a
        batch by recommend_many; the same as this method would fetch itself."""
        corpus = served.corpus
        now_ts = (now or datetime.now(timezone.utc)).timestamp()
        by_article = settings.recency_reference == "article" and not np.isnan(source["published"])
        reference = source["published"] if by_article else now_ts
        excluded = [corpus.positions[i] for i in exclude_ids if i in corpus.positions]
        if source["position"] is not None:
            excluded.append(source["position"])
        allowed = _section_codes(corpus, sections)

        # A box excludes a handful of positions (usually just the source): comparing
        # against each is several times cheaper per call than np.isin's set machinery.
        few = len(excluded) <= 8
        excluded_array = _NO_POSITIONS if few else np.asarray(excluded, dtype=np.int64)

        def is_eligible(positions: np.ndarray) -> np.ndarray:
            mask = ranking.eligible(
                positions, alive=corpus.alive, published=corpus.published, now=now_ts,
                reference=reference, max_age_days=settings.max_age_days,
                excluded=excluded_array, section_codes=corpus.section_codes,
                allowed_sections=allowed)
            if few:
                for pos in excluded:
                    mask &= positions != pos
            return mask

        sims, positions, slots = self._candidates(served, query, source, k, settings, is_eligible, prefetched)
        if source.get("copy_text") is not None:
            slots = None  # an unseen text under an indexed id: the stored pairs are the old text's
        overlap = _pool_overlap(served, source, positions, slots) \
            if corpus.prints is not None and settings.lexical_weight > 0 and len(positions) else None
        if settings.neighbours > 0 and settings.neighbour_weight != 0:
            relevance = _neighbour_relevance(corpus, source, query, sims, positions,
                                             served.index.vectors(positions), overlap, settings)
        else:
            relevance = sims if overlap is None else ranking.blend(sims, overlap, settings.lexical_weight)
        age_days = (reference - corpus.published[positions]) / ranking.SECONDS_PER_DAY
        scores = ranking.freshness_scores(
            relevance, age_days, margin=settings.freshness_margin, half_life_days=settings.half_life_days)
        source_code = corpus.section_codes_by_name.get(source["section"]) if source["section"] else None
        if settings.section_bonus and source_code is not None:
            scores = ranking.section_scores(scores, corpus.section_codes[positions], source_code,
                                            settings.section_bonus)
        chosen, _ = ranking.select_box(
            scores, None, k, cosines_to=_cosines_to(served.index, positions), mmr_lambda=settings.mmr_lambda,
            duplicate_similarity=settings.duplicate_similarity,
            title_keys=corpus.title_keys[positions], query_title_key=source["title_key"],
            source_similarity=sims, **_copy_rule(served, source, positions, slots, settings.copy_containment))
        box = [self._item(served, int(positions[i]), float(scores[i]), float(sims[i]), source, now_ts, None)
               for i in chosen]
        if len(box) < k and settings.fallback:
            box += self._fallback(served, query, source, k - len(box), chosen_positions=positions[chosen],
                                  is_eligible=is_eligible, settings=settings, now_ts=now_ts)
        return box

    def _candidates(self, served: "_Served", query: np.ndarray, source: dict, k: int, settings,
                    is_eligible, prefetched) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The pool a box is chosen from: eligible articles at least min_similarity to
        the source, most similar first, as (cosines, positions, list slots or None).
        An indexed source reads its precomputed
        candidate list; otherwise, or when the call's filters leave too few of the
        list, it searches (and the pool has no slots)."""
        fetch = max(settings.candidates, 4 * k)
        need = min(settings.candidates, 4 * k)
        listed = _listed_candidates(served, query, source["position"], fetch, settings.min_similarity)
        if listed is not None:
            sims, positions, slots, complete = listed
            ok = is_eligible(positions) & (sims >= settings.min_similarity)
            if ok.sum() >= need or complete:
                return sims[ok], positions[ok], slots[ok]
        # Search; widen while filters leave too few related ones.
        while True:
            if prefetched is not None:
                (sims, positions), prefetched = prefetched, None
            else:
                sims, positions = _search(served, query, source, fetch)
            keep = positions >= 0
            sims, positions = sims[keep], positions[keep]
            ok = is_eligible(positions) & (sims >= settings.min_similarity)
            exhausted = fetch >= len(served.index) or (len(sims) and sims[-1] < settings.min_similarity)
            if ok.sum() >= need or exhausted or fetch >= 4096:
                break
            fetch *= 4
        positions = positions[ok]
        # Exact cosines, as a listed pool has (the search's own are approximate for
        # quantised stores and summed in another order).
        return served.index.inner_products(query, positions[None])[0], positions, None

    def _fallback(self, served: "_Served", query, source, need, *, chosen_positions, is_eligible, settings, now_ts):
        """Recent articles of the source's section, then recent overall, never a copy of
        the source or of an item already in the box. Among the most recent few, the
        more similar come first: a fallback should still be as related as it can."""
        corpus = served.corpus
        shown_vectors = np.vstack([query, served.index.vectors(chosen_positions)]) \
            if len(chosen_positions) else query[None, :]
        shown_keys = ({source["title_key"]} | set(corpus.title_keys[chosen_positions].tolist())) - {0}
        taken = {int(p) for p in chosen_positions}
        check_copies = settings.copy_containment is not None and corpus.copy_sketch is not None
        # (sketch, shingle count) of what is shown, the source and the chosen items:
        # no copy of them is added.
        shown = [(corpus.copy_sketch[p], int(corpus.copy_shingles[p])) for p in chosen_positions] \
            if check_copies else []
        if check_copies and _source_sketch(corpus, source)[0] is not None:
            shown.append(_source_sketch(corpus, source))

        def is_new_story(block: np.ndarray) -> np.ndarray:
            return is_eligible(block) & ~np.isin(corpus.title_keys[block], list(shown_keys))

        orders = []
        code = corpus.section_codes_by_name.get(source["section"]) if source["section"] else None
        if code is not None:
            orders.append((corpus.recent_by_section[code], f"recent in section {source['section']}"))
        orders.append((corpus.recent_order, "recent article"))
        picked: list[Recommendation] = []
        for order, label in orders:
            pool = np.array(ranking.fallback_positions([order], max(20, 5 * need), is_new_story, taken),
                            dtype=np.int64)
            if not len(pool):
                continue
            vectors = served.index.vectors(pool)
            similarity = served.index.inner_products(query, pool[None])[0]
            for i in np.argsort(-similarity, kind="stable"):
                if len(picked) == need:
                    return picked
                key = int(corpus.title_keys[pool[i]])
                if (key and key in shown_keys) or \
                        float(ranking.cosines(shown_vectors, vectors[i]).max()) >= settings.duplicate_similarity:
                    continue
                candidate = (corpus.copy_sketch[pool[i]], int(corpus.copy_shingles[pool[i]])) \
                    if check_copies else None
                if shown and copies.copies_of(*candidate, np.vstack([row for row, _ in shown]),
                                              np.array([count for _, count in shown]),
                                              settings.copy_containment).any():
                    continue
                shown_vectors = np.vstack([shown_vectors, vectors[i]])
                shown_keys.add(key)
                if candidate is not None:
                    shown.append(candidate)
                picked.append(self._item(served, int(pool[i]), float(similarity[i]), float(similarity[i]),
                                         source, now_ts, label))
        return picked

    def _item(self, served: "_Served", pos: int, score: float, similarity: float, source: dict, now_ts: float,
              fallback: str | None) -> Recommendation:
        corpus = served.corpus
        return items.item(corpus.ids[pos], corpus.titles[pos], corpus.urls[pos], float(corpus.published[pos]),
                          corpus.sections[pos], score, similarity, source["published"], source["section"], now_ts,
                          fallback)

    # ------------------------------------------------------------ between rebuilds
    def add(self, rows: Iterable[ArticleLike], *, embeddings: np.ndarray | None = None) -> int:
        """Index new or changed articles now (in this process; the next build makes it
        permanent). A known id is replaced. Returns how many were added."""
        articles = parse_articles(rows)
        if not articles:
            return 0
        if embeddings is not None:
            vectors = normalise_rows(embeddings)
            if len(vectors) != len(articles):
                raise ConfigError(f"embeddings has {len(vectors)} rows for {len(articles)} articles")
        else:
            vectors = self.encoder.encode_articles(articles)
        if vectors.shape[1] != self._served.index.dim:
            raise ModelMismatchError(
                f"new vectors have {vectors.shape[1]} dimensions, the index {self._served.index.dim}")
        served = self._served
        with served.lock:
            served.index.add(vectors)
            served.corpus.extend(articles)
        return len(articles)

    def remove(self, ids: Iterable[str]) -> int:
        """Hide articles now (tombstones until the next build). Unknown ids are ignored.
        Returns how many were removed."""
        if isinstance(ids, str):
            ids = [ids]
        served = self._served
        with served.lock:
            positions = [served.corpus.positions[i] for i in ids if i in served.corpus.positions]
            live = [p for p in positions if served.corpus.alive[p]]
            served.corpus.retire(live)
        return len(live)

    def info(self) -> dict[str, Any]:
        """What an operator asks first: where, which model, how many, how old."""
        m = self.manifest
        return {
            "path": str(self.path) if self.path else None, "version": m.get("version"),
            "created_at": m.get("created_at"), "model_id": m.get("model_id"),
            "dimensions": m.get("dimensions"), "index_kind": m.get("index_kind"),
            "articles": m.get("count"), "live_articles": len(self),
            "sections": len(self._served.corpus.section_names),
            "library_version": m.get("library_version"),
        }


def _served_from(snapshot, config: Config, encoder: Encoder) -> _Served:
    """Check a snapshot against the configured model and open its index and columns."""
    manifest = snapshot.manifest
    if encoder.model_id != manifest.get("model_id"):
        raise ModelMismatchError(
            f"{snapshot.path} was built with model {manifest.get('model_id')!r} but "
            f"{encoder.model_id!r} is configured; rebuild the index with this model or "
            "load it without overriding the encoder")
    columns = snapshot.metadata
    missing = [name for name in _Corpus.COLUMNS if name not in columns]
    if missing:
        raise IndexCorruptedError(f"{snapshot.path}: metadata lacks {missing}; rebuild the index")
    index = FaissIndex.load(snapshot.index_path, manifest["index_kind"], config.index)
    count = manifest.get("count")
    if not (len(index) == len(columns["ids"]) == count):
        raise IndexCorruptedError(
            f"{snapshot.path}: the manifest counts {count} articles, the index holds "
            f"{len(index)} and the metadata {len(columns['ids'])}; rebuild the index")
    arrays = snapshot.arrays
    lexical = prints = None
    if "lexical_idf" in arrays:
        lexical = LexicalModel(arrays["lexical_idf"])
        prints = Fingerprints(arrays["lexical_ids"], arrays["lexical_weights"])
    sketches = None
    if copies.SKETCH_ARRAY in arrays and copies.SHINGLES_ARRAY in arrays:
        sketches = arrays[copies.SKETCH_ARRAY], arrays[copies.SHINGLES_ARRAY]
        if sketches[0].shape != (count, copies.SLOTS) or sketches[1].shape != (count,):
            raise IndexCorruptedError(
                f"{snapshot.path}: the copy sketches have shape {sketches[0].shape}, not "
                f"({count}, {copies.SLOTS}); rebuild the index")
    corpus = _Corpus(columns, arrays["published"], arrays["title_keys"], lexical, prints, sketches)
    stored = (CANDIDATE_LISTS, CANDIDATE_OVERLAP, CANDIDATE_COPIES, BOX_PLAN, BOX_PLAN_WINDOW)
    candidates = {name: arrays[name] for name in stored if name in arrays} if config.index.candidate_lists else {}
    lists = candidates.get(CANDIDATE_LISTS)
    if lists is None:
        candidates = {}
    elif lists.ndim != 2 or len(lists) != count:
        raise IndexCorruptedError(
            f"{snapshot.path}: the candidate lists cover {len(lists)} articles, not {count}; "
            "rebuild the index")
    for name in (CANDIDATE_OVERLAP, CANDIDATE_COPIES, BOX_PLAN):
        if name in candidates and candidates[name].shape[0] != count:
            raise IndexCorruptedError(f"{snapshot.path}: {name} covers {len(candidates[name])} articles, "
                                      f"not {count}; rebuild the index")
    built_with = ((manifest.get("config") or {}).get("ranking") or {}).get("copy_containment")
    if BOX_PLAN in candidates and (BOX_PLAN_WINDOW not in candidates or
                                   Config.from_dict(manifest.get("config") or {}).ranking != config.ranking):
        del candidates[BOX_PLAN]  # the plans are the boxes of the build's settings, not these
    return _Served(index, corpus, manifest, snapshot.path, **candidate_fields(candidates, built_with))


def candidate_lists_for(index: FaissIndex, config: Config, *, progress: bool | Any = False) -> np.ndarray | None:
    """The index's candidate lists (see candidates.py), or None when the config turns
    them off. ``progress``: True for a tqdm bar, or a bar to advance."""
    width = config.index.candidate_lists
    if not width:
        return None
    exact = not index.kind.startswith("flat") and len(index) <= config.index.exact_lists_max
    if progress is True:
        from tqdm.auto import tqdm

        with tqdm(total=len(index), desc="candidate lists", unit="article") as bar:
            return build_candidate_lists(index, width, exact=exact, bar=bar)
    return build_candidate_lists(index, width, exact=exact, bar=progress or None)


def candidate_arrays(corpus: "_Corpus", lists: np.ndarray | None, config: Config,
                     index: FaissIndex | None = None) -> dict[str, np.ndarray]:
    """The candidate lists and, for each (article, listed candidate) pair, what a call
    would otherwise compute for it: their term overlap (float16, 2 bytes a pair) and
    whether the candidate is a copy of the article (one bit a pair, for the build's
    copy_containment). A call then reads one row of each (~40 and ~50 us a call at
    100k: most of what ranking cost; ~8 s of a 100k build). Given the ``index``, also
    each article's default box for calls in the PLAN_DAYS from now (many.box_plans:
    ~10 s at 100k). Empty when the lists are off.
    """
    if lists is None:
        return {}
    arrays = {CANDIDATE_LISTS: lists}
    if corpus.prints is not None:
        arrays[CANDIDATE_OVERLAP] = list_overlaps(corpus.prints, lists)
    threshold = config.ranking.copy_containment
    if corpus.copy_sketch is not None and threshold is not None and lists.shape[1] <= 64:
        arrays[CANDIDATE_COPIES] = copies.list_copy_bits(corpus.copy_sketch, corpus.copy_shingles, lists,
                                                         threshold)
    if index is not None:
        start = time.time()
        window = np.array([start, start + PLAN_DAYS * ranking.SECONDS_PER_DAY])
        plans = many.box_plans(_Served(index, corpus, {}, None, **candidate_fields(arrays, threshold)),
                               config.ranking, (float(window[0]), float(window[1])))
        if plans is not None:
            arrays[BOX_PLAN], arrays[BOX_PLAN_WINDOW] = plans, window
    return arrays


def candidate_fields(arrays: Mapping[str, np.ndarray], copy_threshold: float | None) -> dict[str, Any]:
    """``_Served``'s candidate fields from :func:`candidate_arrays`' arrays."""
    return {"candidate_lists": arrays.get(CANDIDATE_LISTS),
            "candidate_overlap": arrays.get(CANDIDATE_OVERLAP),
            "candidate_copies": arrays.get(CANDIDATE_COPIES),
            "candidate_copy_threshold": copy_threshold if CANDIDATE_COPIES in arrays else None,
            "box_plan": arrays.get(BOX_PLAN), "box_plan_window": arrays.get(BOX_PLAN_WINDOW)}


def snapshot_arrays(corpus: "_Corpus", candidates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every .npy array a snapshot stores."""
    return {**corpus.arrays(), **candidates}


class _Recent:
    """The last ``size`` values put, by key; thread-safe.

    Recommender keeps the vectors of unseen articles by content hash: a site asks for
    a new article's box on every page view until the nightly build indexes it, and
    encoding is ~40 ms of such a call. An edited text has a new hash, so it is
    encoded again (``size`` * 1.5 KB at 384 dims). _Served keeps their sources.
    """

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Any:
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)


def _unseen_key(article: Article) -> tuple:
    """What an unseen article's source is made of: its text (by hash; with the title
    it fixes the body) and the fields the box reads."""
    return (article.content_hash, article.id, article.title, article.section,
            article.published_at.timestamp() if article.published_at else None)


def _search(served: "_Served", query: np.ndarray, source: dict, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """served.index.search(query, fetch), remembered in an unseen article's source
    (its "searches"): a 1M-article HNSW search is ~5 ms, and _unseen_query gives a
    repeat call the same source only while the index has not grown. Removals need no
    new search: eligibility is checked after it."""
    searches = source.get("searches")
    if searches is None:
        return served.index.search(query, fetch)
    found = searches.get(fetch)
    if found is None:
        found = served.index.search(query, fetch)
        for array in found:
            array.flags.writeable = False  # shared by the calls that reuse it
        searches[fetch] = found
    return found


_MAX_UNLISTED = 4096  # articles added since the build that a listed box scores directly


def _listed_candidates(served: "_Served", query: np.ndarray, position: int | None, fetch: int,
                       min_similarity: float):
    """(cosines, positions, slots, complete) of the source's precomputed
    candidate list plus the articles added since the build, most similar first; None
    when there is no usable list. ``slots``: each one's place in the list row (to read
    the pair arrays), -1 for those added since. ``complete``: no article outside these
    reaches min_similarity."""
    lists = served.candidate_lists
    if lists is None or position is None or position >= len(lists) or fetch > lists.shape[1]:
        return None
    unlisted = len(served.index) - len(lists)
    if unlisted > _MAX_UNLISTED:
        return None
    row = lists[position]
    slots = np.flatnonzero(row >= 0)
    row = row[slots]
    listed = len(row)
    if unlisted:
        row = np.concatenate([row, np.arange(len(lists), len(served.index), dtype=row.dtype)])
        slots = np.concatenate([slots, np.full(unlisted, -1, dtype=slots.dtype)])
    sims = served.index.inner_products(query, row[None])[0]
    order = np.argsort(-sims, kind="stable")[:fetch]
    # Articles outside the list are less similar than every listed one: when the
    # least similar listed one returned misses min_similarity, so does everything
    # not returned. A short list held every article the index had.
    returned_listed = sims[order[order < listed]]
    complete = (listed < lists.shape[1] and len(order) == len(row)) or \
        (len(returned_listed) > 0 and float(returned_listed.min()) < min_similarity)
    return sims[order], row[order].astype(np.int64), slots[order], complete


def _planned_box(served: "_Served", source: dict, k: int, settings, now_ts: float) -> list[Recommendation] | None:
    """The source's box read from its build-time plan (many.planned_boxes), or None
    where the plan may not hold (the call then ranks in full)."""
    planned = many.planned_box(served, source["position"], k, settings, now_ts=now_ts)
    if planned is None:
        return None
    corpus = served.corpus
    return [items.item(corpus.ids[p], corpus.titles[p], corpus.urls[p], float(corpus.published[p]),
                       corpus.sections[p], score, similarity, source["published"], source["section"], now_ts,
                       None)
            for p, score, similarity in zip(*planned)]


def _cosines_to(index, positions: np.ndarray):
    """``ranking.select_box``'s cosines_to for a pool whose vectors stay in the index:
    only the pick's row is read."""
    pool = positions[None, :]
    return lambda i: index.inner_products(index.vectors(positions[i:i + 1]), pool)[0]


def _pool_overlap(served: "_Served", source: dict, positions: np.ndarray, slots: np.ndarray | None) -> np.ndarray:
    """Term overlap of the source with each pool article: read from the stored pair
    overlaps where the pool came from the source's list, computed for the rest."""
    corpus = served.corpus
    if slots is not None and served.candidate_overlap is not None:
        overlap = served.candidate_overlap[source["position"], slots].astype(np.float32)
        todo = slots < 0  # added since the build: in no list
    else:
        overlap, todo = np.empty(len(positions), dtype=np.float32), np.ones(len(positions), dtype=bool)
    if todo.any():
        own = _source_print(corpus, source)
        overlap[todo] = overlaps(own.ids, own.weights, corpus.prints.ids[positions[todo]][None],
                                 corpus.prints.weights[positions[todo]][None])[0]
    return overlap


def _neighbour_relevance(corpus: "_Corpus", source: dict, query: np.ndarray, sims: np.ndarray,
                         positions: np.ndarray, vectors: np.ndarray, overlap: np.ndarray | None, settings):
    """``ranking.relevance`` with the neighbour blend on (off by default): rows of the
    pool's cosine and term-overlap matrices, the source's in row 0."""
    pool = np.vstack([query[None, :], vectors])

    def embedding_rows(which: np.ndarray) -> np.ndarray:
        if np.array_equal(which, [0]):  # the source's row: the pool's cosines, already known
            return np.concatenate([[1.0], sims]).astype(np.float32)[None, :]
        return np.einsum("id,jd->ij", pool[which], pool)

    def lexical_rows(which: np.ndarray) -> np.ndarray:
        if np.array_equal(which, [0]):
            return np.concatenate([[1.0], overlap]).astype(np.float32)[None, :]
        own = _source_print(corpus, source)
        return PoolTerms(Fingerprints(np.vstack([own.ids, corpus.prints.ids[positions]]),
                                      np.vstack([own.weights, corpus.prints.weights[positions]]))).rows(which)

    return ranking.relevance(embedding_rows, None if overlap is None else lexical_rows,
                             lexical_weight=settings.lexical_weight, neighbours=settings.neighbours,
                             neighbour_weight=settings.neighbour_weight)


def _source_print(corpus: "_Corpus", source: dict) -> Fingerprints:
    """The source's fingerprint: made from an unseen article's text, read for an
    indexed one (only when a call needs it: the stored overlaps usually stand in)."""
    if source.get("print") is None:
        source["print"] = corpus.prints.take(np.array([source["position"]]))
    return source["print"]


def _copy_rule(served: "_Served", source: dict, positions: np.ndarray, slots: np.ndarray | None,
               threshold: float | None) -> dict:
    """``ranking.select_box``'s copy arguments for a pool: which candidates copy the
    source (read from the stored pair bits where the pool came from the source's list
    and the threshold is the one they were made with, else estimated) and a check of
    whether a candidate copies chosen ones; nothing when the rule is off or the index
    has no sketches."""
    corpus = served.corpus
    if threshold is None or corpus.copy_sketch is None or not len(positions):
        return {}
    if slots is not None and served.candidate_copies is not None and \
            served.candidate_copy_threshold == threshold:
        bits = served.candidate_copies[source["position"]]
        source_copies = (bits >> slots.astype(np.uint64)) & np.uint64(1) == 1
        todo = slots < 0  # added since the build: in no list (what slot -1 read is cleared)
        source_copies &= ~todo
    else:
        source_copies, todo = np.zeros(len(positions), dtype=bool), np.ones(len(positions), dtype=bool)
    row, count = _source_sketch(corpus, source)
    if row is not None and todo.any():
        at = positions[todo]
        source_copies[todo] = copies.copies_of(row, count, corpus.copy_sketch[at], corpus.copy_shingles[at],
                                               threshold)

    def is_copy(i: int, chosen: list[int]) -> bool:
        at = positions[chosen]
        return bool(copies.copies_of(corpus.copy_sketch[positions[i]], int(corpus.copy_shingles[positions[i]]),
                                     corpus.copy_sketch[at], corpus.copy_shingles[at], threshold).any())
    return {"source_copies": source_copies, "is_copy": is_copy}


def _source_sketch(corpus: "_Corpus", source: dict) -> tuple[np.ndarray | None, int]:
    """The source's copy sketch and shingle count: stored for an indexed article,
    made on first use for an unseen one (only calls with the copy rule on pay for it)."""
    if source.get("copy_text") is not None:
        if "copy_sketch" not in source:
            source["copy_sketch"] = copies.sketch(source["copy_text"])
        return source["copy_sketch"]
    if source["position"] is not None and corpus.copy_sketch is not None:
        pos = source["position"]
        return corpus.copy_sketch[pos], int(corpus.copy_shingles[pos])
    return None, 0


def _section_codes(corpus: "_Corpus", sections: Iterable[str] | None) -> np.ndarray | None:
    """The codes of the named sections a box may show (None: every section)."""
    return None if sections is None else np.array(
        [corpus.section_codes_by_name[s] for s in sections if s in corpus.section_codes_by_name], dtype=np.int32)


def _position_of(corpus: "_Corpus", article_id: str) -> int:
    pos = corpus.positions.get(article_id)
    if pos is None or not corpus.alive[pos]:
        raise UnknownArticleError(
            f"article id {article_id!r} is not in the index; pass the article itself "
            "(a dict with title and body) to get a box for an unseen article")
    return pos


@contextlib.contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Python's cyclic garbage collector off while a large result is built (when
    ``pause`` and it is on), as it was after. Its passes walk every tracked object
    that survived the earlier ones, so a growing result of boxes is walked again and
    again: for every id of a 100k index, 20 -> 12 us an article while the result is
    held, 27 -> 22 with dropping it (medians of 3-4 alternating rounds). Boxes hold no
    reference cycles; reference counting frees them as ever."""
    if not (pause and gc.isenabled()):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _positions_of(corpus: "_Corpus", ids: list[str]) -> np.ndarray:
    """``_position_of`` for many ids at once."""
    positions = corpus.positions.get_many(ids)
    missing = (positions < 0) | ~corpus.alive[np.maximum(positions, 0)]
    if missing.any():
        _position_of(corpus, ids[int(np.argmax(missing))])  # raises, naming the id
    return positions


def _indexed_source(corpus: "_Corpus", article_id: str, pos: int) -> dict:
    """What ranking needs to know about an indexed source article (its fingerprint is
    read when a call needs it: see _source_print)."""
    return {"id": article_id, "position": pos, "published": corpus.published[pos],
            "section": corpus.sections[pos], "title_key": int(corpus.title_keys[pos]), "print": None}


def parse_articles(rows: Iterable[ArticleLike]) -> list[Article]:
    """Rows -> Articles, refusing a bad row or a repeated id with the row number."""
    if isinstance(rows, (str, bytes, Mapping)):
        raise InvalidArticleError(
            "rows must be an iterable of dicts or Articles (not a single row or a path); "
            "to read a file use similar_articles.sources.read_rows(path)")
    articles: list[Article] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        article = Article.from_row(row, row_number=number)
        if article.id in seen:
            raise InvalidArticleError(
                f"duplicate id (first seen at row {seen[article.id]}); ids must be unique",
                row=number, field="id", article_id=article.id)
        seen[article.id] = number
        articles.append(article)
    return articles


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"k={k!r} is invalid: give the number of articles as an integer")
    if k < 1:
        raise ConfigError(f"k={k} is invalid: a box holds at least 1 article")
    if k > MAX_K:
        raise ConfigError(
            f"k={k} is more than a box can show (at most {MAX_K}); for every article's "
            "box at once use the `similar-articles export` command")
    return int(k)


def _library_version() -> str:
    from . import __version__

    return __version__


# ------------------------------------------------------------------ process-wide default
_default: Recommender | None = None
_default_lock = threading.Lock()
INDEX_ENV = "SIMILAR_ARTICLES_INDEX"


def default_recommender() -> Recommender:
    """The process-wide Recommender, loaded once from $SIMILAR_ARTICLES_INDEX."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                path = os.environ.get(INDEX_ENV)
                if not path:
                    raise SimilarArticlesError(
                        f"set {INDEX_ENV} to an index folder built with `similar-articles build`, "
                        "or use Recommender.load(path).recommend(...)")
                _default = Recommender.load(path)
    return _default


def recommend(article: str | ArticleLike, k: int = 2, **options: Any) -> list[Recommendation]:
    """Fill a box from the process-wide index ($SIMILAR_ARTICLES_INDEX)."""
    return default_recommender().recommend(article, k, **options)
