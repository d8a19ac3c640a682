"""Nightly rebuild: stream the archive, encode only what changed, check quality, publish.

``run_build`` is what ``similar-articles build`` runs. Stages, in order:

read     rows from every source, validated into articles; bad rows are skipped and
         reported (stderr + a JSONL file), a source that cannot be read fails the build
encode   vectors (and the lexical blend's term counts and the copy sketches) from the
         cache by content hash, the model only for new or changed text; interleaved
         with read, chunk by chunk, so article bodies never pile up
index    the FAISS index, the metadata columns and the lexical fingerprints
gate     boxes for a fixed sample of articles, compared with those the replaced
         snapshot stored; refuse a build whose quality regressed past the limits
         (unless forced)
write    the snapshot, into a hidden staging folder
publish  rename it into ``snapshots/`` and switch ``current`` atomically

The whole run holds ``build.lock`` in the index root. A kill at any point leaves the
previous snapshot serving and the cache consistent (SQLite commits per chunk); the
next build clears the stale lock and staging folder and reuses every vector encoded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from . import evaluation, parallel
from .features import copies, lexical
from .articles import Article
from .config import Config
from .embedding import EmbeddingCache, Encoder, SentenceTransformerEncoder, embed_articles, normalise_rows
from .errors import ConfigError, SimilarArticlesError
from .index import create_index
from .features.lexical import Fingerprints, LexicalModel
from .recommender import (CACHE_FILE, Recommender, _Corpus, _Served, _served_from, candidate_arrays,
                          candidate_fields, candidate_lists_for, snapshot_arrays)
from .snapshot import (BuildLock, clean_staging, discard_staged, publish_snapshot, read_snapshot,
                       resolve_snapshot_dir, write_snapshot)
from .sources import ArticleReader, RowError, Source, SourceError, as_sources

log = logging.getLogger(__name__)

STAGES = ("read", "encode", "index", "candidates", "gate", "write", "publish")
EXIT_PUBLISHED, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
ERRORS_FILE = "last-build-errors.jsonl"
REPORT_FILE = "last-build.json"
GATE_FILE = "gate.json"
GATE_BOXES_FILE = "gate-boxes.json"
GATE_VERSION = 1  # bump when a metric's definition changes: stored numbers stop comparing
# Test-only fault injection: the build sleeps at the start of this stage, so a test can
# kill -9 it there. Unset in production.
PAUSE_ENV = "SIMILAR_ARTICLES_TEST_PAUSE_AT"
CHUNK_ROWS = 512  # articles per encode + cache commit: what a kill can cost at most
SHOWN_ERRORS = 20


# ------------------------------------------------------------------ quality gate
@dataclass(frozen=True)
class GateLimits:
    """When a build is not published. Shares are in [0, 1]; None turns a check off.

    The gate fills boxes of ``k`` items for up to ``sample`` articles (a fixed sample:
    the same ids night after night) in the new build and in the snapshot it replaces.
    Relative limits compare the two; absolute ones (off by default) also apply to a
    first build.

    max_coverage_drop: coverage (boxes filled to k without fallback) may fall this much.
    max_duplicate_rise: duplicate-story rate (boxes showing one story twice, or the
        article itself again) may rise this much.
    max_hub_rise: hub share (share of box slots taken by the most recommended 1% of
        articles) may rise this much.
    max_churn: at most this share of boxes (of articles in both builds) may change.
        A night of news changes some boxes; a swapped model or broken text changes most.
    max_removed_share: at most this share of the previous snapshot's articles may be
        missing from the new one: a truncated export or a wrong query looks like this.
    duplicate_similarity: cosine from which the gate calls two articles the same story
        (besides equal text or headline). The gate's own rule, so that a ranking setting
        that lets copies through is caught rather than trusted.
    """

    k: int = 2
    sample: int = 2000
    min_coverage: float | None = None
    max_duplicate_rate: float | None = None
    max_hub_share: float | None = None
    max_coverage_drop: float | None = 0.05
    max_duplicate_rise: float | None = 0.02
    max_hub_rise: float | None = 0.05
    max_churn: float | None = 0.5
    max_removed_share: float | None = 0.2
    duplicate_similarity: float | None = 0.92

    def __post_init__(self) -> None:
        for name in ("k", "sample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"gate {name}={value!r} is invalid: expected a positive integer")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("k", "sample") or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"gate {f.name}={value!r} is invalid: expected a share in [0, 1] or none")

    @classmethod
    def from_overrides(cls, items: Iterable[str], base: "GateLimits | None" = None) -> "GateLimits":
        """``["max_churn=0.8", "min_coverage=none"]`` (the CLI's --gate) applied to ``base``."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for item in items:
            name, sep, raw = str(item).partition("=")
            name, raw = name.strip().replace("-", "_"), raw.strip()
            if not sep or name not in known:
                raise ConfigError(f"--gate {item!r} is invalid: write NAME=VALUE with NAME one of "
                                  f"{', '.join(known)}")
            try:
                values[name] = None if raw.lower() in ("none", "off") else \
                    int(raw) if name in ("k", "sample") else float(raw)
            except ValueError:
                raise ConfigError(f"--gate {item!r}: {raw!r} is not a number (or 'none')") from None
        return dataclasses.replace(base or cls(), **values)


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    passed: bool
    kind: str  # "max" or "min"

    def __str__(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.name:<15} {self.value:7.3f}  (limit: {self.kind} {self.limit:g})"

    def problem(self) -> str:
        """The failed check in a few words: "churn 0.840 > 0.5"."""
        sign = ">" if self.kind == "max" else "<"
        return f"{self.name} {self.value:.3f} {sign} {self.limit:g}"


@dataclass
class GateReport:
    """The numbers behind a publish decision; saved as gate.json in the snapshot."""

    k: int
    new: dict[str, float]
    previous: dict[str, float] | None
    churn: float | None
    churn_sample: int
    removed_share: float | None
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    forced: bool = False
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    # The sample's boxes (id -> item ids): saved beside gate.json so that the next build
    # measures its churn against them instead of recomputing this snapshot's boxes.
    boxes: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["boxes"]
        data["passed"] = self.passed
        return data

    def lines(self) -> list[str]:
        def fmt(m: dict | None) -> str:
            if not m:
                return "-"
            return (f"coverage {m['coverage']:.3f}, duplicate rate {m['duplicate_rate']:.3f}, "
                    f"hub share {m['hub_share']:.3f} ({m['boxes']} boxes)")
        out = [f"new       {fmt(self.new)}", f"previous  {fmt(self.previous)}"]
        if self.churn is not None:
            out.append(f"churn     {self.churn:.3f} of {self.churn_sample} boxes changed")
        out += [str(c) for c in self.checks] + [f"note: {n}" for n in self.notes]
        return out


def _stable_sample(ids: Iterable[str], n: int) -> list[str]:
    """The same ids every night (by a hash of the id), so churn compares like with like."""
    return heapq.nsmallest(n, ids, key=lambda i: hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest())


class _Boxes:
    """Boxes of one snapshot for the gate, each computed once."""

    def __init__(self, rec: Recommender, served: _Served, k: int, now: datetime, threshold: float | None):
        self.rec, self.served, self.k, self.now, self.threshold = rec, served, k, now, threshold
        self._boxes: dict[str, list] = {}

    def boxes(self, ids: Sequence[str], bar) -> list[list]:
        """The boxes of ``ids``, in order, computed in batches (recommend_many)."""
        missing = list(dict.fromkeys(i for i in ids if i not in self._boxes))
        for start in range(0, len(missing), 256):
            part = missing[start:start + 256]
            self._boxes.update(zip(part, self.rec.recommend_many(part, k=self.k, now=self.now)))
            bar.update(len(part))
        return [self._boxes[i] for i in ids]

    def metrics(self, ids: Sequence[str], bar) -> dict[str, float]:
        """Coverage, duplicate-story rate and hub share of the boxes of ``ids``."""
        shown: dict[str, list[str]] = {}
        similar: dict[str, list[str]] = {}
        for article_id, box in zip(ids, self.boxes(ids, bar)):
            shown[article_id] = [item.id for item in box]
            similar[article_id] = [item.id for item in box if not item.fallback]
        slots: dict[str, int] = {}
        for items in shown.values():
            for item in items:
                slots[item] = slots.get(item, 0) + 1
        total = sum(slots.values())
        # Unlike evaluation.hub_concentration (1% of the corpus), 1% of the sample: with
        # a 2,000-box sample of a 1M archive, 1% of the corpus outnumbers the slots.
        top = max(1, math.ceil(0.01 * len(ids)))
        return {"coverage": evaluation.coverage(similar, self.k),
                "duplicate_rate": evaluation.duplicate_rate(shown, self.same_story),
                "hub_share": sum(heapq.nlargest(top, slots.values())) / total if total else 0.0,
                "boxes": len(ids), "articles": self.served.corpus.live_count()}

    def same_story(self, a: str, b: str) -> bool:
        """Same text, same headline or near-identical vectors."""
        corpus = self.served.corpus
        pa, pb = corpus.positions[a], corpus.positions[b]
        if corpus.content_hashes[pa] == corpus.content_hashes[pb]:
            return True
        if corpus.title_keys[pa] and corpus.title_keys[pa] == corpus.title_keys[pb]:
            return True
        if self.threshold is None:
            return False
        va, vb = self.served.index.vectors(np.array([pa, pb]))
        return float(va @ vb) >= self.threshold


def _gate_params(limits: GateLimits) -> dict[str, Any]:
    return {"version": GATE_VERSION, "k": limits.k, "sample": limits.sample,
            "duplicate_similarity": limits.duplicate_similarity}


@dataclass
class _Previous:
    """The snapshot a build replaces, as the gate sees it: the numbers and boxes its own
    gate stored when it was published (cheap), or, failing those, its boxes recomputed."""

    path: Path
    ids: list[str]
    hashes: dict[str, str]
    model_id: str | None
    stored_metrics: dict[str, float] | None = None
    stored_boxes: dict[str, list[str]] | None = None
    live: _Boxes | None = None

    def metrics(self, sample: int, bar) -> dict[str, float]:
        if self.stored_metrics is not None:
            return self.stored_metrics
        return self.live.metrics(self.sample_ids(sample), bar)

    def sample_ids(self, sample: int) -> list[str]:
        return list(self.stored_boxes) if self.stored_boxes is not None else _stable_sample(self.ids, sample)

    def box_ids(self, article_id: str, bar) -> set[str]:
        if self.stored_boxes is not None:
            return set(self.stored_boxes[article_id])
        return {item.id for item in self.live.boxes([article_id], bar)[0]}


def evaluate_gate(new: _Boxes, previous: "_Previous | None", limits: GateLimits, *, removed: int,
                  bar=None, notes: Sequence[str] = ()) -> GateReport:
    """Measure the new build against the limits and the snapshot it replaces."""
    bar = bar or _NullBar()
    started = time.perf_counter()
    sample = _stable_sample(new.served.corpus.ids, limits.sample)
    new_metrics = new.metrics(sample, bar)
    prev_metrics = churn = removed_share = None
    churn_sample = 0
    if previous is not None:
        prev_metrics = previous.metrics(limits.sample, bar)
        in_new = new.served.corpus.positions
        both = [i for i in previous.sample_ids(limits.sample) if i in in_new]
        changed = sum({i.id for i in box} != previous.box_ids(article_id, bar)
                      for article_id, box in zip(both, new.boxes(both, bar)))
        churn, churn_sample = (changed / len(both) if both else 0.0), len(both)
        removed_share = removed / max(len(previous.ids), 1)
    checks: list[Check] = []

    def check(name: str, value: float | None, limit: float | None, kind: str) -> None:
        if value is None or limit is None:
            return
        ok = value <= limit + 1e-12 if kind == "max" else value >= limit - 1e-12
        checks.append(Check(name, round(float(value), 6), limit, bool(ok), kind))

    check("coverage", new_metrics["coverage"], limits.min_coverage, "min")
    check("duplicate rate", new_metrics["duplicate_rate"], limits.max_duplicate_rate, "max")
    check("hub share", new_metrics["hub_share"], limits.max_hub_share, "max")
    if prev_metrics is not None:
        check("coverage drop", prev_metrics["coverage"] - new_metrics["coverage"], limits.max_coverage_drop, "max")
        check("duplicate rise", new_metrics["duplicate_rate"] - prev_metrics["duplicate_rate"],
              limits.max_duplicate_rise, "max")
        check("hub rise", new_metrics["hub_share"] - prev_metrics["hub_share"], limits.max_hub_rise, "max")
        check("churn", churn, limits.max_churn, "max")
        check("removed", removed_share, limits.max_removed_share, "max")
    report = GateReport(k=limits.k, new=new_metrics, previous=prev_metrics, churn=churn,
                        churn_sample=churn_sample, removed_share=removed_share, checks=checks,
                        notes=list(notes), seconds=round(time.perf_counter() - started, 3))
    report.params = _gate_params(limits)
    report.boxes = {i: [item.id for item in box] for i, box in zip(sample, new.boxes(sample, bar))}
    return report


# ------------------------------------------------------------------ the report
@dataclass
class BuildReport:
    """What a build did. ``status``: published, dry_run, refused (gate) or failed."""

    status: str
    index_root: str
    snapshot: str | None = None
    previous_snapshot: str | None = None
    sources: list[str] = field(default_factory=list)
    rows_read: int = 0
    articles: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    errors_path: str | None = None
    encoded: int = 0
    reused: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    gate: GateReport | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return {"published": EXIT_PUBLISHED, "dry_run": EXIT_PUBLISHED,
                "refused": EXIT_REFUSED}.get(self.status, EXIT_FAILED)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["gate"] = self.gate.to_dict() if self.gate else None
        data["exit_code"] = self.exit_code
        return data

    def summary(self) -> str:
        """The lines an operator reads in the job's log."""
        counts = (f"{self.articles} articles ({self.encoded} encoded, {self.reused} from cache; "
                  f"{self.skipped} rows skipped)")
        head = {
            "published": f"published {counts} as {self.snapshot}",
            "dry_run": f"dry run: would publish {counts}; nothing was published",
            "refused": (f"refused: {counts} failed the quality gate "
                        f"({', '.join(c.problem() for c in self.gate.failed)}); "
                        "nothing was published. Rerun with --force to publish anyway, or adjust "
                        "the limits with --gate NAME=VALUE") if self.gate else "refused",
            "failed": f"failed: {self.error}; nothing was published",
        }[self.status]
        skipped = ", ".join(f"{reason} {n}" for reason, n in
                            sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]))
        lines = [head,
                 f"  rows read   {self.rows_read} from {len(self.sources)} source(s)",
                 f"  skipped     {self.skipped}" + (f": {skipped} (rows: {self.errors_path})" if self.skipped else ""),
                 f"  encoded     {self.encoded}, reused {self.reused} (cache or identical text)",
                 f"  vs previous +{self.added} added, {self.changed} changed, -{self.removed} removed"
                 + (f" ({Path(self.previous_snapshot).name})" if self.previous_snapshot else " (first build)")]
        if self.gate:
            lines += [f"  gate        {'passed' if self.gate.passed else 'FAILED'}"
                      + (" (overridden by --force)" if self.gate.forced and not self.gate.passed else "")]
            lines += [f"    {line}" for line in self.gate.lines()]
        stages = ", ".join(f"{name} {self.seconds[name]:.1f} s" for name in STAGES if name in self.seconds)
        lines.append(f"  time        {stages}; total {self.seconds.get('total', 0):.1f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------ progress and logs
class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _LogBar:
    """Plain progress lines for logs: one every ``every`` seconds and one at the end."""

    def __init__(self, stage: str, unit: str, total: int | None, every: float = 15.0):
        self.stage, self.unit, self.total, self.every = stage, unit, total, every
        self.n, self.postfix = 0, ""
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line("")

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        self._line("done, ")

    def _line(self, prefix: str) -> None:
        elapsed = time.monotonic() - self.started
        of = f"/{self.total}" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        log.info("%s: %s%d%s %s in %.1f s%s", self.stage, prefix, self.n, of, self.unit, elapsed, extra)


class _Stages:
    """Per-stage timing and a progress display: tqdm bars on a terminal, log lines otherwise."""

    def __init__(self, progress: bool | str):
        self.quiet = progress is False or progress == "none"
        self.bars = progress is True or progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        self.seconds: dict[str, float] = {}

    def bar(self, stage: str, unit: str, total: int | None = None, position: int = 0):
        if self.quiet:
            return _NullBar()
        if self.bars:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, position=position,
                        leave=True, dynamic_ncols=True)
        return _LogBar(stage, unit, total)

    @contextlib.contextmanager
    def stage(self, name: str, unit: str | None = None, total: int | None = None) -> Iterator[Any]:
        """Time a stage; with a ``unit`` (plural: "articles") also show its progress."""
        pause_if_testing(name)
        bar = self.bar(name, unit, total) if unit else _NullBar()
        started = time.perf_counter()
        try:
            yield bar
        finally:
            self.add(name, time.perf_counter() - started)
            bar.close()
            if not unit and not self.quiet:
                log.info("%s: done in %.1f s", name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)


def pause_if_testing(stage: str) -> None:
    """Fault injection for the crash tests: sleep (to be killed) at the named stage."""
    if os.environ.get(PAUSE_ENV) == stage:
        print(f"similar-articles: test hook: paused at {stage} (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(3600)


class _ErrorSink:
    """Skipped rows: counted by reason, the first few logged, all written to a JSONL file
    (written beside and renamed at the end, so the file always describes one whole build)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._file = open(self._partial, "w", encoding="utf-8")
        self.count = 0
        self.by_reason: dict[str, int] = {}

    def add(self, error: RowError) -> None:
        self.count += 1
        key = error.summary_key
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        self._file.write(json.dumps(error.to_dict(), ensure_ascii=False) + "\n")
        if self.count <= SHOWN_ERRORS:
            log.warning("skipped: %s", error)
        elif self.count == SHOWN_ERRORS + 1:
            log.warning("skipped: more rows; all of them are listed in %s", self.path)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            os.replace(self._partial, self.path)


# ------------------------------------------------------------------ read + encode
class _Columns:
    """What the index needs of each article, gathered chunk by chunk (no bodies)."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in _Corpus.COLUMNS}
        self.published: list[np.ndarray] = []
        self.title_keys: list[np.ndarray] = []
        self.vectors: list[np.ndarray] = []
        self.copy_sketches: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, articles: Sequence[Article], vectors: np.ndarray,
            copy_sketches: tuple[np.ndarray, np.ndarray]) -> None:
        columns, published, title_keys = _Corpus.columns_of(articles)
        for name, values in columns.items():
            self.columns[name].extend(values)
        self.published.append(published)
        self.title_keys.append(title_keys)
        self.vectors.append(vectors)
        self.copy_sketches.append(copy_sketches)

    def __len__(self) -> int:
        return len(self.columns["ids"])

    def corpus(self, lexical_model: LexicalModel, prints: Fingerprints) -> _Corpus:
        sketches = (np.concatenate([rows for rows, _ in self.copy_sketches]),
                    np.concatenate([counts for _, counts in self.copy_sketches]))
        return _Corpus(self.columns, np.concatenate(self.published), np.concatenate(self.title_keys),
                       lexical_model, prints, sketches)


# Lexical fingerprints need the IDF of the whole archive before any article's top terms
# can be picked, so they take two passes: while reading, each article's hashed term
# counts go to the embedding cache under their own key (like the vectors, so an
# unchanged article is never tokenised twice) and document frequencies are summed;
# after reading, the counts come back from the cache, in order, to make the fingerprints.
# A row of the cache holds a float32 vector: the term ids (< 2**20, exact in float32)
# followed by their counts.
_TERM_SCHEME = f"terms|hashing|{lexical.N_FEATURES}|{lexical.TEXT_CHARS}|english"


class _Lexical:
    """Pass one (per chunk): term counts from the cache or the tokenizer, document
    frequencies summed. Pass two (:meth:`fingerprints`): IDF, then every article's
    fingerprint, the same as ``LexicalModel.fit`` over all texts at once."""

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache
        self.df = np.zeros(lexical.N_FEATURES, dtype=np.int64)
        self.hashes: list[str] = []
        self.tokenised = 0

    def _counts(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        rows = self.cache.get_many(_TERM_SCHEME, hashes)
        return {h: (row[:len(row) // 2].astype(np.int32), row[len(row) // 2:]) for h, row in rows.items()}

    def add(self, articles: Sequence[Article]) -> None:
        hashes = [a.content_hash for a in articles]
        counts = self._counts(hashes)
        missing = {h: a for h, a in zip(hashes, articles) if h not in counts}
        if missing:
            matrix = lexical.term_counts([a.text for a in missing.values()])
            fresh = {h: (matrix.indices[matrix.indptr[i]:matrix.indptr[i + 1]].astype(np.int32),
                         matrix.data[matrix.indptr[i]:matrix.indptr[i + 1]].astype(np.float32))
                     for i, h in enumerate(missing)}
            self.cache.put_many(_TERM_SCHEME, list(fresh),
                                [np.concatenate([ids.astype(np.float32), c]) for ids, c in fresh.values()])
            counts.update(fresh)
            self.tokenised += len(fresh)
        self.df += np.bincount(np.concatenate([counts[h][0] for h in hashes]), minlength=lexical.N_FEATURES)
        self.hashes.extend(hashes)

    def fingerprints(self, block: int = 4096) -> tuple[LexicalModel, Fingerprints]:
        from scipy.sparse import csr_matrix

        # LexicalModel.fit's IDF, from frequencies summed over the stream.
        model = LexicalModel.from_document_frequencies(self.df, len(self.hashes))
        parts = []
        for start in range(0, len(self.hashes), block):
            hashes = self.hashes[start:start + block]
            counts = self._counts(hashes)
            rows = [counts[h] for h in hashes]
            indptr = np.concatenate([[0], np.cumsum([len(ids) for ids, _ in rows])])
            matrix = csr_matrix((np.concatenate([c for _, c in rows]) if rows else np.zeros(0, np.float32),
                                 np.concatenate([i for i, _ in rows]) if rows else np.zeros(0, np.int32),
                                 indptr), shape=(len(rows), lexical.N_FEATURES))
            parts.append(model.fingerprints(matrix))
        return model, Fingerprints(np.concatenate([p.ids for p in parts]),
                                   np.concatenate([p.weights for p in parts]))


# Copy sketches (copies.py) cost ~0.3 ms an article to compute, so like term counts
# they are kept in the embedding cache by content hash: an unchanged article is not
# shingled twice. A row holds the sketch and the shingle count as uint32, stored as the
# float32 the cache holds (bit patterns, never used as numbers).
_COPY_SCHEME = f"copies|v{copies.SCHEME}|{copies.SLOTS}"


class _CopySketches:
    """Each chunk's copy sketches, from the cache or computed (and then cached)."""

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache

    def of(self, articles: Sequence[Article]) -> tuple[np.ndarray, np.ndarray]:
        hashes = [a.content_hash for a in articles]
        cached = {h: row.view(np.uint32) for h, row in self.cache.get_many(_COPY_SCHEME, hashes).items()}
        missing = {h: a for h, a in zip(hashes, articles) if h not in cached}
        if missing:
            rows, counts = _Corpus.copy_sketches_of(list(missing.values()))
            fresh = np.hstack([rows, counts.astype(np.uint32)[:, None]])
            self.cache.put_many(_COPY_SCHEME, list(missing), fresh.view(np.float32))
            cached.update(zip(missing, fresh))
        table = np.stack([cached[h] for h in hashes])
        return np.ascontiguousarray(table[:, :copies.SLOTS]), table[:, copies.SLOTS].astype(np.int32)


def _vector_rows(rows: Iterable, column: str, last: list) -> Iterator:
    """Take each row's precomputed vector out of the row. ArticleReader turns exactly one
    row into one item before it asks for the next, so ``last`` (vector, row number)
    belongs to that item."""
    for number, row in rows:
        last[:] = [None if isinstance(row, RowError) else row.pop(column, None), number]
        yield number, row


def _as_vector(value: Any, dim: int | None) -> np.ndarray | str:
    """A row's vector as float32, or the reason it cannot be one."""
    if value is None:
        return "no vector in the vector column"
    try:
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        return f"the vector is not a list of numbers ({type(value).__name__})"
    if dim is not None and len(vector) != dim:
        return f"the vector has {len(vector)} numbers, earlier rows {dim}"
    if not np.isfinite(vector).all() or not vector.any():
        return "the vector has NaN, infinite or only zero values"
    return vector


def _read_and_encode(sources: Sequence[Source], encoder: Encoder, cache: EmbeddingCache | None,
                     terms: _Lexical, sketches: _CopySketches, stages: _Stages, errors: _ErrorSink, *,
                     vector_column: str | None, chunk_rows: int) -> tuple[_Columns, int, int]:
    """Stream every source, chunk by chunk: validate, then vectors from the cache (or
    the rows) and the model for what is missing, term counts and copy sketches. Returns
    the columns, rows read and articles encoded."""
    reader, table = ArticleReader(), _Columns()
    encoded = 0
    read_bar = stages.bar("read", "rows")
    encode_bar = stages.bar("encode", "articles", position=1)
    pending: list[Article] = []
    pending_vectors: list[np.ndarray] = []
    dim: list[int | None] = [None]
    encode_seconds = 0.0
    chunks = [0]
    started = time.perf_counter()

    def flush() -> None:
        nonlocal encoded, encode_seconds
        if not pending:
            return
        t0 = time.perf_counter()
        chunks[0] += 1
        if chunks[0] == 1:
            pause_if_testing("encode")
        pause_if_testing(f"encode#{chunks[0]}")  # e.g. encode#2: after one chunk is committed
        if vector_column is not None:
            vectors, fresh = normalise_rows(np.vstack(pending_vectors)), 0
        else:
            vectors, fresh = embed_articles(pending, encoder, cache=cache)
        encoded += fresh
        terms.add(pending)
        table.add(pending, vectors, sketches.of(pending))
        encode_bar.update(len(pending))
        encode_bar.set_postfix_str(f"{encoded} encoded, {len(table) - encoded} reused")
        pending.clear()
        pending_vectors.clear()
        encode_seconds += max(time.perf_counter() - t0, 1e-9)

    try:
        for source in sources:
            last: list = [None, 0]
            rows = source.rows()
            if vector_column is not None:
                rows = _vector_rows(rows, vector_column, last)
            for item in reader.articles(source.name, rows):
                read_bar.update(1)
                if isinstance(item, RowError):
                    errors.add(item)
                    continue
                if vector_column is not None:
                    vector = _as_vector(last[0], dim[0])
                    if isinstance(vector, str):
                        errors.add(RowError(source.name, last[1], vector, item.id,
                                            vector_column, kind="bad vector"))
                        continue
                    dim[0] = len(vector)
                    pending_vectors.append(vector)
                pending.append(item)
                if len(pending) >= chunk_rows:
                    flush()
        flush()
    finally:
        read_bar.close()
        encode_bar.close()
    stages.add("read", time.perf_counter() - started - encode_seconds)
    stages.add("encode", encode_seconds)
    return table, reader.rows_read, encoded


# ------------------------------------------------------------------ the build
def run_build(sources: Any, index_root: str | os.PathLike, *, config: Config | None = None,
              force: bool = False, dry_run: bool = False, keep: int = 3,
              gate: GateLimits | None = None, progress: bool | str = "auto",
              errors_path: str | os.PathLike | None = None, fmt: str | None = None,
              mapping: dict[str, str] | Sequence[str] | None = None, vector_column: str | None = None,
              encoder: Encoder | None = None, cache: bool | str | os.PathLike = True,
              chunk_rows: int = CHUNK_ROWS) -> BuildReport:
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
    Raises SourceError (unreadable source, no valid article), BuildLockedError (another
    build runs) or ConfigError (bad settings); nothing is published then.
    """
    config = config or Config()
    gate = gate or GateLimits()
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"keep={keep!r} is invalid: keep at least 1 snapshot (the current one)")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows!r} is invalid: expected a positive integer")
    root = Path(index_root)
    source_list = as_sources(sources, fmt=fmt, mapping=mapping)
    if not source_list:
        raise ConfigError("no sources given: name files, a glob, a folder or a SQL source")
    report = BuildReport(status="failed", index_root=str(root), sources=[s.name for s in source_list])
    started = time.perf_counter()
    with BuildLock(root) as lock:
        if lock.cleared:
            log.warning("cleared a stale lock left by pid %s on %s (started %s): that build is gone",
                        lock.cleared.get("pid"), lock.cleared.get("host"), lock.cleared.get("started_at"))
        for leftover in clean_staging(root):
            log.warning("removed %s, left by a build that did not finish", leftover.name)
        for partial in [*root.glob(f".{ERRORS_FILE}.*.tmp"), *root.glob(f".{REPORT_FILE}.*.tmp")]:
            partial.unlink(missing_ok=True)  # only builds write these, and we hold the lock
        stages = _Stages(progress)
        errors = _ErrorSink(Path(errors_path) if errors_path else root / ERRORS_FILE)
        report.errors_path = str(errors.path)
        try:
            with parallel.workers():  # each chunk's term counts and copy sketches on every core
                _build(report, source_list, root, config, encoder, cache, stages, errors, gate=gate,
                       force=force, dry_run=dry_run, keep=keep, vector_column=vector_column,
                       chunk_rows=chunk_rows)
        except BaseException as exc:
            report.status = "failed"
            report.error = str(exc) or type(exc).__name__
            raise
        finally:
            errors.close()
            report.skipped, report.skipped_by_reason = errors.count, errors.by_reason
            report.seconds = {**stages.seconds, "total": round(time.perf_counter() - started, 3)}
            _save_report(root / REPORT_FILE, report)
    return report


def _build(report: BuildReport, sources: Sequence[Source], root: Path, config: Config,
           encoder: Encoder | None, cache: bool | str | os.PathLike, stages: _Stages, errors: _ErrorSink,
           *, gate: GateLimits, force: bool, dry_run: bool, keep: int, vector_column: str | None,
           chunk_rows: int) -> None:
    pause_if_testing("read")
    for source in sources:
        source.check()  # a typo in the last path fails now, not after hours of encoding
    encoder = encoder or SentenceTransformerEncoder(config.encoder)
    with tempfile.TemporaryDirectory(prefix="similar-articles-") if cache is False \
            else contextlib.nullcontext() as scratch:
        # Without a cache, term counts still need a place between the two passes.
        store = EmbeddingCache(Path(scratch) / CACHE_FILE if cache is False else
                               root / CACHE_FILE if cache is True else Path(cache))
        try:
            lexical_terms = _Lexical(store)
            table, report.rows_read, report.encoded = _read_and_encode(
                sources, encoder, None if cache is False or vector_column else store, lexical_terms,
                _CopySketches(store), stages, errors, vector_column=vector_column, chunk_rows=chunk_rows)
            report.articles = len(table)
            report.reused = report.articles - report.encoded
            if not table.columns["ids"]:
                raise SourceError(f"{', '.join(report.sources)}: no valid articles ({errors.count} rows "
                                  f"skipped, see {errors.path}); nothing was published")
            with stages.stage("index", "articles", total=len(table)) as bar:
                lexical_model, prints = lexical_terms.fingerprints()
                index, corpus = _index(table, config, lexical_model, prints, bar)
                del table, prints, lexical_terms
            with stages.stage("candidates", "articles", total=len(index)) as bar:
                candidates = candidate_arrays(corpus, candidate_lists_for(index, config, progress=bar), config,
                                              index)
        finally:
            store.close()
    manifest = {
        "library_version": _library_version(), "model_id": encoder.model_id, "dimensions": int(index.dim),
        "count": len(corpus.ids), "index_kind": index.kind, "config": config.to_dict(),
        "embeddings": "precomputed" if vector_column else "encoded",
        "encoded": report.encoded, "reused": report.reused,
    }

    with stages.stage("gate", "boxes") as bar:
        served = _Served(index, corpus, manifest, None,
                         **candidate_fields(candidates, config.ranking.copy_containment))
        new = Recommender(served=served, config=config, encoder=encoder)
        now = datetime.now(timezone.utc)
        notes: list[str] = []
        previous = _open_previous(root, gate, now, notes=notes)
        if previous is not None:
            report.previous_snapshot = str(previous.path)
            prev_hashes = previous.hashes
            report.removed = sum(1 for i in prev_hashes if i not in corpus.positions)
            report.changed = sum(1 for i, h in zip(corpus.ids, corpus.content_hashes)
                                 if i in prev_hashes and prev_hashes[i] != h)
            report.added = sum(1 for i in corpus.ids if i not in prev_hashes)
            if previous.model_id != encoder.model_id:
                notes.append(f"model changed from {previous.model_id} to "
                             f"{encoder.model_id}: expect high churn")
        else:
            report.added = len(corpus.ids)
        result = evaluate_gate(_Boxes(new, served, gate.k, now, gate.duplicate_similarity),
                               previous, gate, removed=report.removed, bar=bar, notes=notes)
        result.forced = force and not result.passed
        report.gate = result
        del previous
    log.info("gate: %s%s", "passed" if result.passed else "FAILED: " + ", ".join(
        c.problem() for c in result.failed), " (forced)" if result.forced else "")
    if not result.passed and not force:
        report.status = "refused"
        return

    with stages.stage("write"):
        def write_index(path: Path) -> None:
            index.save(path)
            pause_if_testing("write")  # the index is on disk, the manifest is not

        staged = write_snapshot(
            root, write_index=write_index, metadata=corpus.metadata(),
            arrays=snapshot_arrays(corpus, candidates),
            manifest=manifest, keep=keep, publish=False,
            extra_files={GATE_FILE: result.to_dict(), GATE_BOXES_FILE: json.dumps(result.boxes)})
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
    report.snapshot = str(final)
    report.status = "published"


def _index(table: _Columns, config: Config, lexical_model: LexicalModel, prints: Fingerprints, bar):
    """The FAISS index, filled in slabs whose parts are freed as they go in, so the
    vectors are held once, and the columns the ranking reads."""
    index = create_index(table.vectors[0].shape[1], len(table), config.index)
    while table.vectors:
        slab = []
        while table.vectors and sum(len(v) for v in slab) < 16_384:
            slab.append(table.vectors.pop(0))
        index.add(np.vstack(slab))
        bar.update(sum(len(v) for v in slab))
    return index, table.corpus(lexical_model, prints)


def _open_previous(root: Path, gate: GateLimits, now: datetime, *, notes: list[str]) -> _Previous | None:
    """The snapshot now serving. Missing: a first build. Unreadable: say so and let the
    new build replace it. Its stored gate boxes are used when measured the same way;
    otherwise it is opened as its servers rank (its own saved config) and measured."""
    try:
        folder = resolve_snapshot_dir(root)
    except SimilarArticlesError:
        return None
    try:
        snapshot = read_snapshot(folder, verify=False)
        ids = list(snapshot.metadata["ids"])
        previous = _Previous(folder, ids, dict(zip(ids, snapshot.metadata["content_hashes"])),
                             snapshot.manifest.get("model_id"))
        stored = _stored_gate(folder, gate)
        if stored is not None:
            previous.stored_metrics, previous.stored_boxes = stored
            return previous
        config = Config.from_dict(snapshot.manifest.get("config") or {})
        # The model is never loaded: boxes of indexed ids need no encoding.
        encoder = SentenceTransformerEncoder(config.encoder)
        served = _served_from(snapshot, config, encoder)
    except (SimilarArticlesError, OSError, ValueError, KeyError) as exc:
        notes.append(f"the current snapshot {folder.name} is unreadable ({exc}); relative checks skipped")
        return None
    rec = Recommender(served=served, config=config, encoder=encoder)
    previous.live = _Boxes(rec, served, gate.k, now, gate.duplicate_similarity)
    return previous


def _stored_gate(folder: Path, gate: GateLimits) -> tuple[dict, dict] | None:
    """(metrics, boxes) the snapshot's own gate saved, if measured with these settings."""
    try:
        report = json.loads((folder / GATE_FILE).read_text(encoding="utf-8"))
        if report.get("params") != _gate_params(gate):
            return None
        boxes = json.loads((folder / GATE_BOXES_FILE).read_text(encoding="utf-8"))
        return report["new"], boxes
    except (OSError, ValueError, KeyError):
        return None


def _save_report(path: Path, report: BuildReport) -> None:
    """``last-build.json``: what monitoring reads after every build, whatever happened."""
    try:
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)


def _library_version() -> str:
    from . import __version__

    return __version__
