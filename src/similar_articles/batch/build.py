"""The nightly build: stream the archive, encode only what changed, find each article's
neighbours, check quality, publish. One build path: ``similar-articles build`` runs
:func:`run_build`, ``Recommender.build`` runs :func:`build_articles`, which is the same
build over rows in memory.

Stages: read + encode (chunk by chunk, see encode.py), index, candidates (neighbour
lists and pair features), gate (see gate.py), write (a hidden staging folder), publish
(renamed into ``snapshots/``, ``current`` switched atomically). The whole run holds
``build.lock``. A kill at any point leaves the previous snapshot serving and the caches
consistent (SQLite commits per chunk); the next build clears the stale lock and staging
folder and reuses every vector encoded.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__, parallel
from ..articles import Article
from ..artifacts import Artifacts, write_artifacts
from ..buildlock import BuildLock
from ..config import Config
from ..embedding import EmbeddingCache, Encoder, SentenceTransformerEncoder
from ..embedding.cache import PRUNE_AFTER_BUILDS
from ..errors import ConfigError, IndexNotFoundError, SimilarArticlesError, storage_error
from ..features import copies
from ..features import retrieval
from ..features.lexical import Fingerprints, LexicalModel
from ..index import FaissIndex, create_index
from ..journal import Folded, Journal, fold
from ..snapshot import MANIFEST, clean_staging, discard_staged, list_snapshots, publish_snapshot, resolve_snapshot_dir
from ..sources import UNREADABLE_KINDS, RowsSource, Source, SourceError, as_sources
from ..state import ServingState
from .candidates import CandidateInputs, random_pairs
from .encode import Gathered, read_and_encode
from .engine import Engine, make_engine
from .features import FeatureCache, LexicalPass
from .gate import GATE_BOXES_FILE, GATE_FILE, GateLimits, GateReport, GateSample, evaluate_gate, open_previous
from .report import BuildReport, ErrorSink, Stages, log, save_report

CACHE_FILE = "embeddings.sqlite"
ERRORS_FILE = "last-build-errors.jsonl"
REPORT_FILE = "last-build.json"
DRY_RUN_ERRORS_FILE = "last-dry-run-errors.jsonl"
DRY_RUN_REPORT_FILE = "last-dry-run.json"
CHUNK_ROWS = 512  # articles per encode + cache commit: what a kill can cost at most


def run_build(sources: Any, index_root: str | os.PathLike, *, config: Config | None = None,
              force: bool = False, dry_run: bool = False, keep: int = 3,
              gate: GateLimits | None = None, progress: bool | str = "auto",
              errors_path: str | os.PathLike | None = None, fmt: str | None = None,
              mapping: dict[str, str] | Sequence[str] | None = None, vector_column: str | None = None,
              encoder: Encoder | None = None, cache: bool | str | os.PathLike = True,
              chunk_rows: int = CHUNK_ROWS, vectors: np.ndarray | None = None,
              gated: bool = True, prune_cache_after: int | None = PRUNE_AFTER_BUILDS,
              engine: "str | Engine" = "local", ray_address: str | None = None,
              ray_actors: int | None = None) -> BuildReport:
    """Rebuild the index under ``index_root`` from ``sources`` and publish it if it passes
    the quality gate. Returns the report; ``report.exit_code`` is what the CLI exits with.

    sources: paths, globs, folders, Source objects (e.g. ``SqlSource``), a pandas
        DataFrame or a list of dict rows; see :func:`similar_articles.sources.as_sources`.
    force: publish even if the gate fails (the report keeps the failed checks).
    dry_run: do everything (the snapshot is written and deleted) but publish.
    keep: snapshots kept for rollback, the current one included.
    gate: the quality limits (:class:`GateLimits`).
    progress: "auto" shows tqdm bars on a terminal and log lines otherwise; True/False.
    errors_path: JSONL file of skipped rows (default ``<index_root>/last-build-errors.jsonl``).
    mapping: canonical field -> source column, e.g. ``{"body": "article_text"}``.
    vector_column: take each article's vector from this column (made elsewhere with the
        configured model) instead of the cache and the model.
    cache: True keeps the embedding cache in ``<index_root>/embeddings.sqlite``; a path
        shares one cache; False encodes everything.
    vectors: one unit vector per row, in order (rows already validated: see
        :func:`build_articles`), instead of the cache and the model.
    gated: False publishes without the quality gate (``Recommender.build``).
    prune_cache_after: delete cache entries that none of this many builds (this one
        included) used: texts gone from the archive, old edits, other models. A text that
        comes back after that is encoded again. None or 0 keeps every entry.
    engine: where reading, encoding and the candidate lists run: "local" (this process)
        or "ray" (a Ray cluster: ``ray_address``, None for the one this process is
        connected to or a new local one; ``ray_actors`` encoding actors, default every
        CPU; docs/scale.md). Both build the same snapshot.
    Raises SourceError (unreadable source, no valid article), BuildLockedError (another
    build runs) or ConfigError (bad settings); nothing is published then.
    """
    config = config or Config()
    gate = gate or GateLimits()
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"keep={keep!r} is invalid: keep at least 1 snapshot (the current one)")
    if prune_cache_after is not None and (isinstance(prune_cache_after, bool) or not isinstance(
            prune_cache_after, int) or prune_cache_after < 0):
        raise ConfigError(f"prune_cache_after={prune_cache_after!r} is invalid: a number of builds (0: never prune)")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows!r} is invalid: expected a positive integer")
    root = Path(index_root)
    runner = make_engine(engine, ray_address=ray_address, ray_actors=ray_actors)
    source_list = as_sources(sources, fmt=fmt, mapping=mapping)
    if not source_list:
        raise ConfigError("no sources given: name files, a glob, a folder or a SQL source")
    report = BuildReport(status="failed", index_root=str(root), sources=[s.name for s in source_list])
    try:
        return _locked_build(report, source_list, root, config, encoder, cache, gate, force=force,
                             dry_run=dry_run, keep=keep, progress=progress, errors_path=errors_path,
                             vector_column=vector_column, chunk_rows=chunk_rows, vectors=vectors, gated=gated,
                             prune_cache_after=prune_cache_after, engine=runner)
    except (OSError, sqlite3.Error) as exc:
        raise storage_error(exc, root, "building the index") from exc
    finally:
        runner.close()


def _locked_build(report: BuildReport, source_list: list[Source], root: Path, config: Config,
                  encoder: Encoder | None, cache: bool | str | os.PathLike, gate: GateLimits, *, force: bool,
                  dry_run: bool, keep: int, progress: bool | str, errors_path: str | os.PathLike | None,
                  vector_column: str | None, chunk_rows: int, vectors: np.ndarray | None,
                  gated: bool, prune_cache_after: int | None, engine: Engine) -> BuildReport:
    """run_build under build.lock: the stages, then last-build.json whatever happened."""
    started = time.perf_counter()
    with BuildLock(root) as lock:
        if lock.cleared:
            log.warning("cleared a stale lock left by pid %s on %s (started %s): that build is gone",
                        lock.cleared.get("pid"), lock.cleared.get("host"), lock.cleared.get("started_at"))
        for leftover in clean_staging(root):
            log.warning("removed %s, left by a build that did not finish", leftover.name)
        for partial in [*root.glob(".last-*.jsonl.*.tmp"), *root.glob(".last-*.json.*.tmp")]:
            partial.unlink(missing_ok=True)  # only builds write these, and we hold the lock
        stages = Stages(progress)
        # A dry run reports beside, not over, what monitoring reads of the last real build.
        errors = ErrorSink(Path(errors_path) if errors_path else root / (DRY_RUN_ERRORS_FILE if dry_run else ERRORS_FILE))
        report.errors_path = str(errors.path)
        try:
            with parallel.workers():  # each chunk's term counts and copy sketches on every core
                _build(report, source_list, root, config, encoder, cache, stages, errors, gate=gate,
                       force=force, dry_run=dry_run, keep=keep, vector_column=vector_column,
                       chunk_rows=chunk_rows, vectors=vectors, gated=gated, prune_cache_after=prune_cache_after,
                       engine=engine)
        except BaseException as exc:
            report.status = "failed"
            report.error = str(storage_error(exc, root, "building the index")) or type(exc).__name__
            raise
        finally:
            errors.close()
            report.skipped, report.skipped_by_reason = errors.count, errors.by_reason
            report.seconds = {**stages.seconds, "total": round(time.perf_counter() - started, 3)}
            save_report(root / (DRY_RUN_REPORT_FILE if dry_run else REPORT_FILE), report)
    return report




def build_articles(articles: Sequence[Article], index_root: str | os.PathLike, *, config: Config | None = None,
                   encoder: Encoder | None = None, cache: bool | str | os.PathLike = True,
                   vectors: np.ndarray | None = None, progress: bool = False, keep: int = 3) -> BuildReport:
    """The build of :func:`run_build` over articles already in memory and validated,
    published without the quality gate: what ``Recommender.build`` runs."""
    report = run_build(RowsSource(articles), index_root, config=config, keep=keep, progress=progress, encoder=encoder,
                       cache=cache, vectors=vectors, gated=False)
    if report.status != "published":
        raise SimilarArticlesError(f"the build did not publish: {report.error or report.status}")
    return report


def _build(report: BuildReport, sources: Sequence[Source], root: Path, config: Config,
           encoder: Encoder | None, cache: bool | str | os.PathLike, stages: Stages, errors: ErrorSink,
           *, gate: GateLimits, force: bool, dry_run: bool, keep: int, vector_column: str | None,
           chunk_rows: int, vectors: np.ndarray | None, gated: bool, prune_cache_after: int | None,
           engine: Engine) -> None:
    for source in sources:
        source.check()  # a typo in the last path fails now, not after hours of encoding
    encoder = encoder or SentenceTransformerEncoder(config.encoder)
    precomputed = vector_column is not None or vectors is not None
    with tempfile.TemporaryDirectory(prefix="similar-articles-") if cache is False \
            else contextlib.nullcontext() as scratch:
        # Without a cache, term counts still need a place between the two passes.
        path = Path(scratch) / CACHE_FILE if cache is False else root / CACHE_FILE if cache is True else Path(cache)
        store, features = EmbeddingCache(path), FeatureCache(path)
        try:
            store.start_build()
            folded = _live_updates(root, store, encoder.model_id)
            report.live_updates = {"through": folded.last_seq, "added": len(folded.added),
                                   "removed": len(folded.removed)}
            terms = LexicalPass(features)
            gathered, report.rows_read, report.encoded = read_and_encode(
                sources, encoder, None if cache is False else store, features, terms, stages, errors,
                vector_column=vector_column, chunk_rows=chunk_rows, vectors=vectors, folded=folded, engine=engine)
            report.cache_repaired = store.damaged_rows
            if prune_cache_after:
                report.cache_pruned = store.prune(prune_cache_after)
            report.articles = len(gathered)
            report.reused = report.articles - report.encoded
            if not len(gathered):
                raise SourceError(f"{', '.join(report.sources)}: no valid articles ({errors.count} rows "
                                  f"skipped, see {errors.path}); nothing was published")
            with stages.stage("index", "articles", total=len(gathered)) as bar:
                lexical_model, prints = terms.fingerprints()
                index = _index(gathered, config, bar)
            with stages.stage("candidates", "articles", total=len(index)) as bar:
                artifacts = _artifacts(gathered, index, lexical_model, prints, config, bar, engine)
                pairs = random_pairs(index, prints)
                del gathered, prints, terms
        finally:
            store.close()
            features.close()
    manifest = {
        "library_version": __version__, "model_id": encoder.model_id, "dimensions": int(index.dim),
        "count": len(artifacts.published), "index_kind": index.kind, "config": config.to_dict(),
        "embeddings": "precomputed" if precomputed else "encoded",
        "encoded": report.encoded, "reused": report.reused, "journal_seq": folded.last_seq, "random_pairs": pairs,
    }
    extra_files = None
    if gated:
        with stages.stage("gate", "boxes") as bar:
            unreadable = sum(n for kind, n in errors.by_reason.items() if kind in UNREADABLE_KINDS)
            result = _gate(report, root, artifacts, index, manifest, config, gate, encoder, force, bar,
                           unreadable_share=unreadable / max(report.rows_read, 1))
        if not result.passed and not force:
            report.status = "refused"
            return
        extra_files = {GATE_FILE: result.to_dict(), GATE_BOXES_FILE: json.dumps(result.boxes)}
    with stages.stage("write"):
        staged = write_artifacts(root, write_index=index.save, artifacts=artifacts, manifest=manifest, keep=keep,
                                 publish=False, extra_files=extra_files)
    if dry_run:
        discard_staged(staged)
        report.status = "dry_run"
        return
    try:
        with stages.stage("publish"):
            final = publish_snapshot(root, staged, keep=keep)
    except BaseException:
        discard_staged(staged)
        raise
    _compact_journal(root)
    report.snapshot = str(final)
    report.status = "published"


def _live_updates(root: Path, store: EmbeddingCache, model_id: str) -> Folded:
    """The journal's records since the snapshot served now was built, folded into one
    net change; their vectors go into the cache, so nothing journaled is re-encoded."""
    try:
        after = int(json.loads((resolve_snapshot_dir(root) / MANIFEST).read_text("utf-8")).get("journal_seq", 0))
    except IndexNotFoundError:
        after = 0
    folded = fold(Journal(root).follow(after, from_start=True), after)
    journaled = [(a, v) for a, v in folded.added.values()]
    if journaled:
        store.put_many(model_id, [a.content_hash for a, _ in journaled], np.vstack([v for _, v in journaled]))
    return folded


def _compact_journal(root: Path) -> None:
    """Drop the records every kept snapshot has folded in: a rollback to the oldest
    still replays what came after its build."""
    seqs = [int(json.loads((folder / MANIFEST).read_text("utf-8")).get("journal_seq", 0))
            for folder in list_snapshots(root)]
    if seqs:
        Journal(root).compact(min(seqs))


def _index(gathered: Gathered, config: Config, bar) -> FaissIndex:
    """The FAISS index, filled in slabs whose parts are freed as they go in, so the
    vectors are held once."""
    index = create_index(gathered.vectors[0].shape[1], len(gathered), config.index)
    while gathered.vectors:
        slab = []
        while gathered.vectors and sum(len(v) for v in slab) < 16_384:
            slab.append(gathered.vectors.pop(0))
        index.add(np.vstack(slab))
        bar.update(sum(len(v) for v in slab))
    return index


def _artifacts(gathered: Gathered, index: FaissIndex, lexical_model: LexicalModel, prints: Fingerprints,
               config: Config, bar, engine: Engine) -> Artifacts:
    """Everything the snapshot stores besides the index: the columns, the text features,
    each article's neighbour list (exact up to IndexConfig.exact_lists_max articles)
    and, for each listed pair, what a call would otherwise compute: the term overlap
    (float16) and whether the listed one copies the article (a bit, for the configured
    copy_containment). The lists fuse the dense and the lexical retrievers
    (candidates.py); the lexical postings are kept for calls on unseen articles."""
    sketches = (np.concatenate([rows for rows, _ in gathered.sketches]),
                np.concatenate([counts for _, counts in gathered.sketches]))
    lists = overlap = copy_bits = beyond = None
    width = config.index.candidate_lists
    if width:
        exact = not index.kind.startswith("flat") and len(index) <= config.index.exact_lists_max
        lists, overlap, beyond = engine.candidate_lists(CandidateInputs(
            index, prints, width, config.ranking.lexical_weight, config.ranking.min_similarity, exact=exact), bar)
        if config.ranking.copy_containment is not None:
            copy_bits = copies.list_copy_bits(*sketches, lists, config.ranking.copy_containment)
    postings = retrieval.build_postings(prints)
    return Artifacts(metadata=gathered.columns, published=np.concatenate(gathered.published),
                     title_keys=np.concatenate(gathered.title_keys), lexical_idf=lexical_model.idf,
                     term_ids=prints.ids, term_weights=prints.weights, copy_sketches=sketches[0],
                     copy_shingles=sketches[1], neighbour_lists=lists, neighbour_overlap=overlap,
                     neighbour_copies=copy_bits, neighbour_beyond=beyond, lexical_offsets=postings.offsets,
                     lexical_docs=postings.docs, lexical_weights=postings.weights, **gathered.newsroom_arrays())


def _gate(report: BuildReport, root: Path, artifacts: Artifacts, index: FaissIndex, manifest: dict,
          config: Config, gate: GateLimits, encoder: Encoder, force: bool, bar, *,
          unreadable_share: float) -> GateReport:
    """The quality gate over the new build, served from memory as a load would serve it."""
    state = ServingState.from_parts(artifacts, index, manifest, config)
    now = datetime.now(timezone.utc)
    notes: list[str] = []
    previous = open_previous(root, gate, now, notes=notes)
    ids, hashes = artifacts.metadata["ids"], artifacts.metadata["content_hashes"]
    if previous is not None:
        report.previous_snapshot = str(previous.path)
        prev_hashes, now_ids = previous.hashes, set(ids)
        report.removed = sum(1 for i in prev_hashes if i not in now_ids)
        report.changed = sum(1 for i, h in zip(ids, hashes) if i in prev_hashes and prev_hashes[i] != h)
        report.added = sum(1 for i in ids if i not in prev_hashes)
        if previous.model_id != encoder.model_id:
            notes.append(f"model changed from {previous.model_id} to {encoder.model_id}: expect high churn")
    else:
        report.added = len(ids)
    result = evaluate_gate(GateSample(state, config.ranking, gate.k, now, gate.duplicate_similarity),
                           previous, gate, removed=report.removed, unreadable_share=unreadable_share, bar=bar,
                           notes=notes)
    result.forced = force and not result.passed
    report.gate = result
    log.info("gate: %s%s", "passed" if result.passed else "FAILED: " + ", ".join(
        c.problem() for c in result.failed), " (forced)" if result.forced else "")
    return result
