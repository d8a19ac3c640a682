"""Recommender: build or load an index, fill boxes, add and remove articles between
builds. It holds one reference to an immutable ServingState; a call reads the state it
found when it started, and add, remove and reload swap in a new one."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from . import boxrules, parallel
from .articles import Article, parse_articles
from .artifacts import read_artifacts
from .batch import build_articles
from .changes import CHANGES_FILE, ChangedBoxes, Update
from .config import Config, as_utc, check_k, replace_ranking
from .embedding import Encoder, RememberedVectors, SentenceTransformerEncoder, given_vectors
from .errors import ConfigError, InvalidArticleError, ModelMismatchError
from .journal import Journal, Record, add_record, as_record, remove_record
from .pools import Request, Sources, indexed_sources, unseen_sources
from .results import Recommendation, recommendations
from .rules import Rules
from .rulesfile import Watcher
from .snapshot import CURRENT, resolve_snapshot_dir
from .state import ServingState
from .tracking import ChangeTracker

log = logging.getLogger(__name__)

ArticleLike = Article | Mapping[str, Any]


class Recommender:
    """Fills "Similar articles" boxes. Build one with :meth:`build` or open a published
    index with :meth:`load`. Safe to call from many threads: reads take no lock."""

    def __init__(self, state: ServingState, config: Config, *, encoder: Encoder | None = None,
                 root: Path | None = None, reload_interval: float | None = None):
        self._state = state
        self.config = config
        self._encoder = encoder
        self._root = root
        self._journal = Journal(root) if root is not None else None
        self._rules = Watcher(root) if root is not None else None  # rules.json, labels.json
        self.reload_interval = reload_interval
        self._next_check = time.monotonic() + (reload_interval or 0)
        self._reloading = threading.Lock()
        self._writing = threading.Lock()  # add/remove/reload: one new state at a time
        self._unseen_vectors = RememberedVectors()
        self._tracker: ChangeTracker | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, rows: Iterable[ArticleLike], path: str | os.PathLike, *, embeddings: np.ndarray | None = None,
              config: Config | None = None, encoder: Encoder | None = None,
              cache: bool | str | os.PathLike = True, progress: bool = False, keep: int = 3) -> "Recommender":
        """Index ``rows`` (dicts or Articles), publish the snapshot under ``path`` and load it.

        embeddings: one vector per row, same order, made elsewhere with the configured
            model; nothing is encoded then. Otherwise the model encodes every article
            the embedding cache does not already hold (~30 articles/s on 2 cores).
        cache: True keeps the cache in ``path/embeddings.sqlite``; a file path shares one
            cache between indexes; False encodes everything.
        keep: snapshots kept on disk for rollback.
        Raises InvalidArticleError for the first bad row (the CLI skips bad rows instead).
        """
        config = config or Config()
        articles = parse_articles(rows)
        if not articles:
            raise InvalidArticleError("no articles to index: the source gave no rows")
        vectors = None if embeddings is None else given_vectors(embeddings, len(articles))
        encoder = encoder or SentenceTransformerEncoder(config.encoder)
        build_articles(articles, path, config=config, encoder=encoder, cache=cache, vectors=vectors,
                       progress=progress, keep=keep)
        return cls.load(path, config=config, encoder=encoder, verify=False, reload_interval=None)

    @classmethod
    def load(cls, path: str | os.PathLike, *, config: Config | None = None, encoder: Encoder | None = None,
             verify: bool = True, reload_interval: float | None = 0.5) -> "Recommender":
        """Open the snapshot that ``path`` serves (an index root or a snapshot folder).

        config: ranking settings to use instead of the saved ones; its encoder must
            match the one the index was built with (else ModelMismatchError).
        verify: check every file against the manifest's checksums (about 1 s per GB).
        reload_interval: seconds between checks (a ``readlink`` and a ``stat``) for a
            newer published snapshot and for live updates other processes made (an
            index root only); they load in a background thread while calls keep being
            served. None turns following off (call :meth:`refresh` yourself).
        """
        snapshot = read_artifacts(path, verify=verify)
        config = config or Config.from_dict(snapshot.manifest.get("config") or {})
        encoder = encoder or SentenceTransformerEncoder(config.encoder)
        state = ServingState.from_snapshot(snapshot, config, encoder.model_id)
        root = Path(path)
        recommender = cls(state, config, encoder=encoder, root=root if (root / CURRENT).exists() else None,
                          reload_interval=reload_interval)
        recommender.refresh()  # the live updates made since the snapshot was built
        return recommender

    def reload(self) -> bool:
        """Serve the snapshot the index root now points to, if it is another one, with
        the live updates its build did not fold in replayed on top. Returns whether a
        new snapshot was loaded."""
        if self._root is None:
            return False
        folder = resolve_snapshot_dir(self._root)
        if self._state.path is not None and folder == self._state.path.resolve():
            return False
        state = ServingState.from_snapshot(read_artifacts(folder), self.config, self.encoder.model_id)
        with self._writing:
            state = state.with_rules(self._state.rules, self._state.labels)  # they live beside the snapshots
            state = self._applied(state, self._journal.follow(state.journal_seq, from_start=True), tracked=False)[0]
            tracker = self._tracker
        # Rows moved: every box is ranked again, without holding back writes; the map then
        # follows what they did meanwhile (reported already, on the old snapshot).
        boxes = tracker.rank_all(state) if tracker is not None else None
        with self._writing:
            if self._state.rules.version != state.rules.version or tracker is not self._tracker:
                state, boxes = state.with_rules(self._state.rules, self._state.labels), None  # edited meanwhile
            if self._tracker is not None:
                self._tracker.reset(state, boxes)
            records = self._journal.follow(state.journal_seq, from_start=True)  # ours and refresh's read it on
            self._state = self._applied(state, records, report=False)[0]
        log.info("similar-articles: now serving %s", folder)
        return True

    def refresh(self) -> bool:
        """Load a newer snapshot if one was published, apply the live updates other
        processes appended since, and the rules and labels if their files changed.
        Returns whether the state changed."""
        if self._root is None:
            return False
        with self._writing:
            ruled = self._read_rules()
        if self.reload():
            return True
        with self._writing:
            records = self._journal.follow(self._state.journal_seq)
            if records:
                self._state = self._applied(self._state, records)[0]
        return bool(records) or ruled

    def _read_rules(self, *, own: bool = False) -> bool:
        """Under ``_writing``: swap in the rules and labels if their files changed (a
        ``stat`` each; an unreadable file leaves those in force). ``own``: our edit."""
        rules = self._rules.read_if_changed()
        if rules is not None:
            state = self._state.with_rules(*rules)
            boxrules.compiled(state)  # before calls ask for it
            if self._tracker is not None and state.rules.version != self._state.rules.version:
                self._tracker.rules_changed(self._state, state, own=own)
            self._state = state
        return rules is not None

    def edit_rules(self, change, *, based_on: int | None = None) -> Rules:
        """Apply ``change`` (Rules -> Rules, e.g. ``lambda r: r.with_block({"article": "a7"})``)
        to the index's rules.json under its lock, and serve the result at once (other
        processes within ``reload_interval``). RuleError names a bad rule (nothing is
        written); RulesConflictError when ``based_on`` is not the version in force."""
        if self._rules is None:
            raise ConfigError("rules live in an index folder: load the index root, not a snapshot folder")
        with self._writing:  # no refresh takes this edit for another process's
            made = self._rules.edit(change, based_on=based_on)
            self._read_rules(own=True)
        return made

    def _applied(self, state: ServingState, records: list[Record], *, own: int = -1, tracked: bool = True,
                 report: bool = True) -> tuple[ServingState, dict[int, Update]]:
        """``state`` with ``records`` applied in order, and each record's Update (with
        the boxes it changed when tracking; ``own``: the seq this process wrote)."""
        updates, tracker = {}, self._tracker if tracked else None
        for record in (r for r in records if r.seq > state.journal_seq):
            new, count = state.with_record(record, self.encoder.model_id)
            updates[record.seq] = Update(count, record.seq, tracker and tracker.update(
                state, new, record.seq, own=record.seq == own, report=report))
            state = new
        boxrules.compiled(state)  # the rules compiled now, off the calls' path
        return state, updates

    def _serving(self) -> ServingState:
        """The state this call reads; at most every reload_interval seconds, a check for
        a newer snapshot or live updates starts in a background thread."""
        if self.reload_interval is not None and self._root is not None:
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + self.reload_interval
                if self._reloading.acquire(blocking=False):
                    threading.Thread(target=self._reload_quietly, daemon=True, name="similar-articles-reload").start()
        return self._state

    def _reload_quietly(self) -> None:
        try:
            self.refresh()
        except Exception:  # keep serving the old snapshot; the next check tries again
            log.exception("similar-articles: reload from %s failed", self._root)
        finally:
            self._reloading.release()

    def warm_up(self) -> None:
        """Load now what a first unseen article, add or live update would otherwise
        load mid-request: the model and the text features' code (1-5 s, once a
        process). A service calls it before it reports ready."""
        warm = Article.from_row({"id": "warm-up", "title": "Warm up the model"})
        unseen_sources(self._state, warm, self._vector_of(self._state, warm))

    def track_changes(self, k: int = 2, *, now: datetime | None = None,
                      on_change: Callable[[ChangedBoxes], None] | None = None) -> "Recommender":
        """Work out the ``k``-item boxes each update or rules edit changes (docs/changes.md).
        Ranks every box now and after a reload (23-50 s a million articles on 2 cores;
        a reload's does not hold back writes).
        now: a fixed time (default: the clock); on_change: gets this process's reports."""
        with self._writing:
            self._tracker = ChangeTracker(self._state, self.config.ranking, check_k(k), now=now and as_utc(now),
                                          log=self._root and self._root / CHANGES_FILE, listener=on_change)
        return self

    def changed_boxes(self) -> list[ChangedBoxes]:
        """The latest 256 updates' changed boxes, oldest first (this process's and followed ones)."""
        return list(self._tracker.recent) if self._tracker is not None else []

    def pinned(self) -> "Recommender":
        """A view of the state served now that never reloads: a long job (an export)
        sees one snapshot from start to end while this recommender moves on."""
        return Recommender(self._serving(), self.config, encoder=self._encoder)

    def with_settings(self, **ranking: Any) -> "Recommender":
        """A view of the state served now, never reloading, whose calls rank with
        these RankingConfig fields instead of the index's (the CLI's ``--set``)."""
        config = dataclasses.replace(self.config, ranking=replace_ranking(self.config.ranking, ranking))
        return Recommender(self._serving(), config, encoder=self._encoder)

    # ---------------------------------------------------------------- serving
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = SentenceTransformerEncoder(self.config.encoder)
        return self._encoder

    manifest = property(lambda self: self._state.manifest, doc="The served snapshot's manifest.")
    root = property(lambda self: self._root, doc="The index folder (None for a snapshot folder).")

    @property
    def path(self) -> Path | None:
        """The snapshot folder being served."""
        return self._state.path

    @property
    def state(self) -> ServingState:
        """The immutable state serving calls now."""
        return self._serving()

    def __len__(self) -> int:
        return int(self._state.table.alive.sum())

    def __contains__(self, article_id: object) -> bool:
        return self._state.table.position_of(article_id) is not None

    def ids(self) -> list[str]:
        """The ids of the live articles, in index order."""
        table = self._state.table
        return table.ids[table.live_positions()].tolist()

    def recommend(self, article: str | ArticleLike, k: int | None = None, *, now: datetime | None = None,
                  exclude_ids: Iterable[str] = (), sections: Iterable[str] | None = None,
                  **overrides: Any) -> list[Recommendation]:
        """The ``k`` most useful related articles for an indexed id or an unseen article
        (k None: the source section's policy's k, else 2), under the index's rules.

        now: the time of the call (default: the clock); articles published after it
            are hidden and ages are measured from it.
        exclude_ids: ids never to show (the article itself is always excluded).
        sections: show only articles of these sections.
        overrides: any RankingConfig field for this call, e.g. max_age_days=30.
        """
        state = self._serving()
        if isinstance(article, str):
            position = state.table.require_one(article)
            sources = indexed_sources(state, np.array([position]))
            section = [state.table.sections[position]]
        else:
            parsed = Article.from_row(article)
            sources, section = unseen_sources(state, parsed, self._vector_of(state, parsed)), [parsed.section]
        return self._boxes(state, sources, section, k, now, exclude_ids, sections, overrides)[0]

    def recommend_many(self, ids: Iterable[str], k: int | None = None, *, now: datetime | None = None,
                       exclude_ids: Iterable[str] = (), sections: Iterable[str] | None = None,
                       batch_size: int = 256, all_cores: bool = True, **overrides: Any) -> list[list[Recommendation]]:
        """The boxes of many indexed articles, in order: the boxes ``recommend`` gives
        each id with the same ``now``, ranked ``batch_size`` at a time as arrays (several
        times faster per article; memory ~ batch_size x 100 KB a thread).

        all_cores: rank blocks on a thread per core (numpy and FAISS release the GIL for
            most of a block: ~1.3x on 2 cores at 1M); False keeps the call on one core,
            for a server that calls it from several request threads.
        Raises UnknownArticleError for the first id not in the index.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} is invalid: give a positive number of articles")
        boxrules.check_k(k)
        state = self._serving()
        positions = state.table.require(list(ids))
        now = as_utc(now)
        # Iterables are read once, for every block.
        exclude_ids = exclude_ids if isinstance(exclude_ids, str) else tuple(exclude_ids)
        sections = sections if sections is None or isinstance(sections, str) else tuple(sections)
        threads = parallel.worker_count() if all_cores else 1
        blocks = [positions[start:start + batch_size] for start in range(0, len(positions), batch_size)]

        def boxes_of(block: np.ndarray) -> list[list[Recommendation]]:
            return self._boxes(state, indexed_sources(state, block), state.table.sections[block].tolist(), k, now,
                               exclude_ids, sections, overrides, all_cores=threads == 1)

        if threads > 1 and len(blocks) > 1:
            with ThreadPoolExecutor(threads, thread_name_prefix="similar-articles") as pool:
                return [box for boxes in pool.map(boxes_of, blocks) for box in boxes]
        return [box for block in blocks for box in boxes_of(block)]

    def _boxes(self, state: ServingState, sources: Sources, source_sections: list, k: int, now: datetime | None,
               exclude_ids: Iterable[str], sections: Iterable[str] | None, overrides: dict, *,
               all_cores: bool = True) -> list[list]:
        """The one ranking path, from a call's arguments to its Recommendations."""
        k = boxrules.check_k(k)
        settings = replace_ranking(self.config.ranking, overrides)
        now_ts = as_utc(now).timestamp()
        if isinstance(exclude_ids, str):
            raise ConfigError(f"exclude_ids={exclude_ids!r} is a single string: give a list of ids")
        if isinstance(sections, str):
            raise ConfigError(f"sections={sections!r} is a single string: give a list of section names")
        table = state.table
        excluded = np.array([p for p in (table.position_of(i) for i in exclude_ids) if p is not None], np.int64)
        allowed = None if sections is None else table.section_codes_of(sections)
        ranked = boxrules.rank(state, sources, Request(k, settings, now_ts, excluded, allowed, all_cores), k,
                               self.config.ranking, overrides)
        return recommendations(table, ranked, sources.published, source_sections, now_ts, state.labels)

    def _vector_of(self, state: ServingState, article: Article) -> np.ndarray:
        """An unseen article's vector, encoded or remembered."""
        vector = self._unseen_vectors.of(article, self.encoder)
        if vector.shape[0] != state.index.dim:
            raise ModelMismatchError(
                f"the encoder makes {vector.shape[0]}-dimensional vectors but the index holds {state.index.dim}-"
                "dimensional ones; load the index with the model it was built with")
        return vector

    # ------------------------------------------------------------ between rebuilds
    def add(self, rows: Iterable[ArticleLike], *, embeddings: np.ndarray | None = None) -> Update:
        """Index new or changed articles now (a known id is replaced); returns how many, an
        :class:`Update`. With an index root it is journaled (durable on return), every
        process serving the index applies it within ``reload_interval``, and the next
        build folds it in."""
        articles = parse_articles(rows)
        if not articles:
            return Update(0, self._state.journal_seq)
        vectors = self.encoder.encode_articles(articles) if embeddings is None else \
            given_vectors(embeddings, len(articles))
        if vectors.shape[1] != self._state.index.dim:
            raise ModelMismatchError(f"new vectors have {vectors.shape[1]} dimensions, the index "
                                     f"{self._state.index.dim}; make them with the index's model")
        return self._write(add_record(articles, vectors, self.encoder.model_id))

    def remove(self, ids: Iterable[str]) -> Update:
        """Hide articles now, in every process serving the index (journaled like
        :meth:`add`), and in the next build. A build after that takes the source as it
        is then: delete the article from the source too. Unknown ids are ignored.
        Returns how many were removed (an :class:`Update`, as add)."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        bad = next((i for i in ids if not isinstance(i, str)), None)
        if bad is not None:
            raise ConfigError(f"remove() takes article ids (strings), got {type(bad).__name__} {bad!r}")
        return self._write(remove_record(ids))

    def _write(self, body: dict[str, Any]) -> Update:
        """Journal one update (when serving an index root) and apply it with every
        record before it; returns its Update."""
        with self._writing:
            if self._journal is None:  # a snapshot folder opened directly: this process only
                record = as_record(body, self._state.journal_seq + 1)
                self._state, updates = self._applied(self._state, [record], own=record.seq)
                return updates[record.seq]
            seq = self._journal.append(body)
            self._state, updates = self._applied(self._state, self._journal.follow(self._state.journal_seq), own=seq)
        return updates.get(seq, Update(0, seq))

    def info(self) -> dict[str, Any]:
        """What an operator asks first: where, which model, how many, how old."""
        m, state = self.manifest, self._state
        return {"path": str(self.path) if self.path else None, "version": m.get("version"),
                "created_at": m.get("created_at"), "model_id": m.get("model_id"), "dimensions": m.get("dimensions"),
                "index_kind": m.get("index_kind"), "articles": m.get("count"), "live_articles": len(self),
                "sections": len(state.table.section_names), "library_version": m.get("library_version"),
                "ranking_settings": self.config.ranking.changed_from_defaults()}
