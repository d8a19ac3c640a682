"""Metrics and baselines for notebooks and the quality gate.

Every method, ours or a baseline, is reduced to the same plain structure, a
:data:`Boxes` mapping ``source id -> [recommended ids in box order]``, and every metric
reads that structure and returns a plain number or a DataFrame. So TF-IDF, "recent in
section", random and our pipeline are measured by exactly the same code.

Typical use (what the notebooks do)::

    from similar_articles import evaluation as ev

    corpus = ev.load_corpus("bbc")               # rows + cached vectors
    rec = ev.build_recommender(corpus)           # no encoding: vectors are passed in
    ours = ev.recommender_boxes(rec, corpus.ids, k=2)
    tfidf = ev.tfidf_boxes(corpus, corpus.ids, k=2)
    ev.precision_at_k(ours, corpus.labels, 2), ev.precision_at_k(tfidf, corpus.labels, 2)

Vectors always come through the shared embedding cache (model id + content hash), so a
notebook, a test and a CI run encode an article once between them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import ranking
from .articles import Article
from .config import Config

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .items import Recommendation
    from .recommender import Recommender

Boxes = dict[str, list[str]]
"""source article id -> recommended article ids, in box order."""

SECONDS_PER_DAY = ranking.SECONDS_PER_DAY


# ----------------------------------------------------------------------------- corpora
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
        self.title_keys = np.array([ranking.title_key(a.title) for a in self.articles], dtype=np.int64)

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
    from .paths import data_dir
    from .embedding import EmbeddingCache, SentenceTransformerEncoder, embed_articles

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
    from .datasets import load_bbc, load_news_articles

    if name == "bbc":
        loaded = load_bbc()
    elif name in ("news", "news100"):
        loaded = load_news_articles("full" if name == "news" else "news100")
    else:
        raise ValueError(f"corpus must be one of {CORPORA}, got {name!r}")
    return prepare_corpus(loaded.rows, name=name, encoder=encoder, progress=progress,
                          report=loaded.report)


def build_recommender(corpus: EvalCorpus, path: str | Path | None = None, *,
                      config: Config | None = None) -> "Recommender":
    """Index ``corpus`` with its precomputed vectors (nothing is encoded).

    path: where the snapshot goes; a fresh temporary folder by default.
    """
    from .recommender import Recommender

    path = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix=f"eval-{corpus.name}-"))
    return Recommender.build(corpus.articles, path, embeddings=corpus.vectors, config=config)


# ----------------------------------------------------------------------------- methods
def recommend_all(rec: "Recommender", source_ids: Iterable[str], k: int, *,
                  now: datetime | None = None, **overrides: Any) -> dict[str, list["Recommendation"]]:
    """The full Recommendation lists (with reasons and fallback flags) for many sources,
    every call at the same time ``now`` (default: the clock when this starts)."""
    ids = list(source_ids)
    now = now or datetime.now(timezone.utc)
    many = getattr(rec, "recommend_many", None)  # batched: same boxes, faster
    if many is not None:
        return dict(zip(ids, many(ids, k, now=now, **overrides)))
    return {i: rec.recommend(i, k, now=now, **overrides) for i in ids}


def as_boxes(results: Mapping[str, Sequence["Recommendation"]]) -> Boxes:
    return {source: [item.id for item in items] for source, items in results.items()}


def recommender_boxes(rec: "Recommender", source_ids: Iterable[str], k: int, *,
                      now: datetime | None = None, **overrides: Any) -> Boxes:
    """Our pipeline's boxes; ``overrides`` are RankingConfig fields for every call."""
    return as_boxes(recommend_all(rec, source_ids, k, now=now, **overrides))


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest scores, best first (ties by index)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] \
        else np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def similarity_boxes(corpus: EvalCorpus, matrix, source_ids: Sequence[str], k: int, *,
                     block: int = 512) -> Boxes:
    """The k most cosine-similar articles by the rows of ``matrix`` (dense unit vectors or
    an L2-normalised sparse matrix), the source excluded. No other rule applies."""
    boxes: Boxes = {}
    source_ids = list(source_ids)
    for start in range(0, len(source_ids), block):
        part = source_ids[start:start + block]
        rows = [corpus.position[i] for i in part]
        scores = matrix[rows] @ matrix.T
        scores = scores.toarray() if hasattr(scores, "toarray") else np.asarray(scores)
        scores = scores.astype(np.float64, copy=True)
        scores[np.arange(len(rows)), rows] = -np.inf
        top = _top_k_rows(scores, k)
        for source, cols in zip(part, top):
            boxes[source] = [corpus.ids[c] for c in cols]
    return boxes


def encoder_boxes(corpus: EvalCorpus, source_ids: Sequence[str], k: int) -> Boxes:
    """The raw encoder: exact cosine top-k over the same vectors our index holds."""
    return similarity_boxes(corpus, corpus.vectors, source_ids, k)


def tfidf_matrix(corpus: EvalCorpus, **vectorizer_options: Any):
    """L2-normalised TF-IDF rows over title + body, as YARPP or Elasticsearch
    more_like_this users get: English stop words removed, sublinear term frequency,
    terms in at least 2 articles."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    options = {"stop_words": "english", "sublinear_tf": True, "min_df": 2, "max_df": 0.5}
    options.update(vectorizer_options)
    return TfidfVectorizer(**options).fit_transform([a.text for a in corpus.articles]).tocsr()


def tfidf_boxes(corpus: EvalCorpus, source_ids: Sequence[str], k: int, *, matrix=None,
                **vectorizer_options: Any) -> Boxes:
    """TF-IDF cosine over title and body (see :func:`tfidf_matrix`)."""
    matrix = matrix if matrix is not None else tfidf_matrix(corpus, **vectorizer_options)
    return similarity_boxes(corpus, matrix, source_ids, k)


def recent_in_section_boxes(corpus: EvalCorpus, source_ids: Iterable[str], k: int, *,
                            now: datetime | None = None) -> Boxes:
    """The newest articles of the source's section (then newest overall), the source
    and anything published after ``now`` excluded. Uses no text at all; on an undated
    corpus "newest" is corpus order. On BBC News the section is the topic label, so
    this baseline scores precision 1.0 there by construction."""
    order = ranking.recent_first(corpus.published)
    if now is not None:
        ts = now.timestamp()
        order = order[~(corpus.published[order] > ts)]
    by_section: dict[str, np.ndarray] = {}
    for section in set(corpus.sections.tolist()):
        by_section[section] = order[corpus.sections[order] == section]
    boxes: Boxes = {}
    for source in source_ids:
        pos = corpus.position[source]
        picked: list[int] = []
        for candidates in (by_section[corpus.sections[pos]][:k + 1], order[:2 * k + 1]):
            for c in candidates.tolist():
                if c != pos and c not in picked:
                    picked.append(c)
                if len(picked) == k:
                    break
            if len(picked) == k:
                break
        boxes[source] = [corpus.ids[c] for c in picked]
    return boxes


def random_boxes(corpus: EvalCorpus, source_ids: Iterable[str], k: int, *, seed: int = 0) -> Boxes:
    """k distinct random other articles per source (a floor every method must clear)."""
    rng = np.random.default_rng(seed)
    n = len(corpus)
    boxes: Boxes = {}
    for source in source_ids:
        pos = corpus.position[source]
        picks = rng.choice(n - 1, size=min(k, n - 1), replace=False)
        picks = np.where(picks >= pos, picks + 1, picks)  # skip the source itself
        boxes[source] = [corpus.ids[c] for c in picks]
    return boxes


def section_bonus_boxes(rec: "Recommender", corpus: EvalCorpus, source_ids: Sequence[str], k: int,
                        bonus: float, *, now: datetime | None = None, **overrides: Any) -> Boxes:
    """Our pipeline with the same-section bonus at ``bonus`` (the library's
    ``RankingConfig.section_bonus``) and any other RankingConfig ``overrides``.
    ``corpus`` is not needed any more; it stays so that existing calls keep working."""
    return recommender_boxes(rec, source_ids, k, now=now, section_bonus=bonus, **overrides)


# ----------------------------------------------------------------------------- metrics
def per_source_precision(boxes: Boxes, labels: Mapping[str, str], k: int) -> dict[str, float]:
    """Share of the first k slots holding an article with the source's label; a box
    shorter than k counts its empty slots as misses."""
    return {source: sum(labels.get(item) == labels.get(source) for item in items[:k]) / k
            for source, items in boxes.items()}


def precision_at_k(boxes: Boxes, labels: Mapping[str, str], k: int) -> float:
    """Mean precision@k over the sources of ``boxes`` (topic labels: same label = relevant)."""
    values = per_source_precision(boxes, labels, k)
    return float(np.mean(list(values.values()))) if values else float("nan")


def ndcg_at_k(boxes: Boxes, k: int, *, labels: Mapping[str, str] | None = None,
              grades: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """Mean nDCG@k. Either ``labels`` (binary: same label = gain 1; the ideal box is k
    same-label articles, or all there are) or graded ``grades[source][item] = gain``
    (items not listed have gain 0; the ideal box holds the source's best grades)."""
    if (labels is None) == (grades is None):
        raise ValueError("give exactly one of labels= (topic labels) or grades= (graded relevance)")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    if labels is not None:
        sizes: dict[str, int] = {}
        for label in labels.values():
            sizes[label] = sizes.get(label, 0) + 1
    values = []
    for source, items in boxes.items():
        if labels is not None:
            gains = [float(labels.get(i) == labels.get(source)) for i in items[:k]]
            ideal = [1.0] * min(k, sizes.get(labels.get(source), 1) - 1)
        else:
            table = grades.get(source, {})
            gains = [float(table.get(i, 0.0)) for i in items[:k]]
            ideal = sorted((float(g) for i, g in table.items() if i != source), reverse=True)[:k]
        idcg = float(np.dot(ideal, discounts[:len(ideal)]))
        if idcg > 0:
            values.append(float(np.dot(gains, discounts[:len(gains)])) / idcg)
    return float(np.mean(values)) if values else float("nan")


def coverage(boxes: Boxes, k: int) -> float:
    """Share of sources whose box is full (k items)."""
    return float(np.mean([len(items) >= k for items in boxes.values()])) if boxes else float("nan")


def fallback_share(results: Mapping[str, Sequence["Recommendation"]]) -> float:
    """Share of shown items that came from the fallback, not from similarity."""
    flags = [item.fallback for items in results.values() for item in items]
    return float(np.mean(flags)) if flags else 0.0


def same_story_checker(corpus: EvalCorpus, *, cosine: float | None = 0.92, titles: bool = True,
                       copy_groups: Iterable[Iterable[str]] = ()) -> Callable[[str, str], bool]:
    """A test "are a and b the same story?" that does not trust the pipeline's own rule
    blindly: labelled copies (event labels of kind "copy"), equal normalised titles, or
    cosine at least ``cosine`` (None: skip the vector test)."""
    group_of: dict[str, int] = {}
    for number, group in enumerate(copy_groups):
        for article_id in group:
            group_of[article_id] = number

    def same(a: str, b: str) -> bool:
        if a in group_of and group_of.get(b) == group_of[a]:
            return True
        pa, pb = corpus.position[a], corpus.position[b]
        if titles and corpus.title_keys[pa] and corpus.title_keys[pa] == corpus.title_keys[pb]:
            return True
        return cosine is not None and float(corpus.vectors[pa] @ corpus.vectors[pb]) >= cosine

    return same


def duplicate_pairs(boxes: Boxes, is_same_story: Callable[[str, str], bool]) -> list[tuple[str, str, str]]:
    """Every (source, a, b) where a box shows the same story twice: an item that is a
    copy of the source, or two items that are copies of each other."""
    found = []
    for source, items in boxes.items():
        shown = [source, *items]
        for i in range(len(shown)):
            for j in range(max(i + 1, 1), len(shown)):
                if is_same_story(shown[i], shown[j]):
                    found.append((source, shown[i], shown[j]))
    return found


def duplicate_rate(boxes: Boxes, is_same_story: Callable[[str, str], bool]) -> float:
    """Share of boxes that show the same story twice (see :func:`duplicate_pairs`)."""
    if not boxes:
        return float("nan")
    return len({source for source, _, _ in duplicate_pairs(boxes, is_same_story)}) / len(boxes)


def gini(counts: Sequence[float]) -> float:
    """Gini coefficient: 0 when every article is shown equally often, near 1 when a
    few articles fill every box."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def exposure_counts(boxes: Boxes, all_ids: Sequence[str]) -> np.ndarray:
    """How often each article of ``all_ids`` is shown across all boxes (0 included)."""
    index = {article_id: i for i, article_id in enumerate(all_ids)}
    counts = np.zeros(len(all_ids), dtype=np.int64)
    for items in boxes.values():
        for item in items:
            counts[index[item]] += 1
    return counts


def hub_concentration(boxes: Boxes, all_ids: Sequence[str]) -> dict[str, float]:
    """How unequally boxes spread attention over the corpus: Gini of times shown,
    share of all slots taken by the most shown 1% of articles, the most any article
    is shown, and the share of articles never shown."""
    counts = exposure_counts(boxes, all_ids)
    total = counts.sum()
    top = max(1, int(np.ceil(len(counts) * 0.01)))
    return {
        "gini": gini(counts),
        "top1pct_share": float(np.sort(counts)[::-1][:top].sum() / total) if total else 0.0,
        "max_shown": int(counts.max()) if len(counts) else 0,
        "never_shown": float(np.mean(counts == 0)) if len(counts) else 0.0,
    }


def intra_list_diversity(boxes: Boxes, corpus: EvalCorpus) -> float:
    """Mean pairwise cosine distance (1 - cos) between the items of a box, averaged over
    boxes with at least two items. Higher = boxes less repetitive."""
    values = []
    for items in boxes.values():
        if len(items) < 2:
            continue
        v = corpus.vectors_of(items)
        sims = v @ v.T
        iu = np.triu_indices(len(items), 1)
        values.append(float(np.mean(1.0 - sims[iu])))
    return float(np.mean(values)) if values else float("nan")


def mean_similarity(boxes: Boxes, corpus: EvalCorpus) -> float:
    """Mean cosine between a source and its items (how related boxes look to the model)."""
    values = [float(corpus.vectors[corpus.position[s]] @ corpus.vectors[corpus.position[i]])
              for s, items in boxes.items() for i in items]
    return float(np.mean(values)) if values else float("nan")


def ages(boxes: Boxes, corpus: EvalCorpus, *, now: datetime | None = None) -> "pd.DataFrame":
    """One row per shown item: ``days_from_source`` (item date minus source date:
    negative = older than the source) and ``days_before_now`` (age at the call time
    ``now``, default the corpus's newest date). NaN where a date is missing."""
    import pandas as pd

    now_ts = (now.timestamp() if now else float(np.nanmax(corpus.published))
              if not np.isnan(corpus.published).all() else np.nan)
    records = []
    for source, items in boxes.items():
        ps = corpus.published[corpus.position[source]]
        for rank, item in enumerate(items, start=1):
            pi = corpus.published[corpus.position[item]]
            records.append((source, item, rank, (pi - ps) / SECONDS_PER_DAY, (now_ts - pi) / SECONDS_PER_DAY))
    return pd.DataFrame(records, columns=["source", "item", "rank", "days_from_source", "days_before_now"])


def age_summary(boxes: Boxes, corpus: EvalCorpus, *, now: datetime | None = None) -> dict[str, float]:
    """Median |days between source and item|, share of items published after their
    source, and median age at the call time."""
    frame = ages(boxes, corpus, now=now)
    return {
        "median_abs_days_from_source": float(frame["days_from_source"].abs().median()),
        "share_newer_than_source": float((frame["days_from_source"] > 0).mean()),
        "median_days_before_now": float(frame["days_before_now"].median()),
    }


def churn(before: Boxes, after: Boxes) -> float:
    """Share of box slots whose article changed between two snapshots, over the sources
    both have (order within a box ignored). 0 = identical boxes, 1 = all new."""
    common = [s for s in before if s in after]
    if not common:
        return float("nan")
    changed = []
    for source in common:
        a, b = set(before[source]), set(after[source])
        slots = max(len(a), len(b))
        changed.append(1 - len(a & b) / slots if slots else 0.0)
    return float(np.mean(changed))


def box_agreement(a: Boxes, b: Boxes, *, ordered: bool = True) -> float:
    """Share of the sources both have whose boxes are identical (as lists, or as sets
    when not ``ordered``)."""
    common = [s for s in a if s in b]
    if not common:
        return float("nan")
    same = [(a[s] == b[s]) if ordered else (set(a[s]) == set(b[s])) for s in common]
    return float(np.mean(same))


def event_groups(events: "pd.DataFrame", kind: str | None = None,
                 ids: Iterable[str] | None = None) -> dict[str, list[str]]:
    """event_id -> article ids from the event-label table (optionally one ``kind``,
    restricted to ``ids``, e.g. the articles the loader kept)."""
    frame = events if kind is None else events[events["kind"] == kind]
    keep = set(ids) if ids is not None else None
    groups: dict[str, list[str]] = {}
    for event_id, article_id in zip(frame["event_id"].astype(str), frame["article_id"].astype(str)):
        if keep is None or article_id in keep:
            groups.setdefault(event_id, []).append(article_id)
    return {e: members for e, members in groups.items() if len(members) >= 2}


def event_recall(boxes: Boxes, groups: Mapping[str, Sequence[str]], k: int) -> dict[str, float]:
    """Over labelled articles whose box was computed: ``hit_rate`` = share of boxes
    showing at least one other article of the same event, ``recall`` = other event
    articles found / min(k, event size - 1)."""
    hits, recalls = [], []
    for members in groups.values():
        member_set = set(members)
        for source in members:
            if source not in boxes:
                continue
            found = len(member_set & set(boxes[source][:k]) - {source})
            hits.append(found > 0)
            recalls.append(found / min(k, len(member_set) - 1))
    return {"hit_rate": float(np.mean(hits)) if hits else float("nan"),
            "recall": float(np.mean(recalls)) if recalls else float("nan"),
            "sources": len(hits)}


# ----------------------------------------------------------------------------- reports
def relevance_table(methods: Mapping[str, Callable[[int], Boxes]], labels: Mapping[str, str],
                    ks: Sequence[int] = (2, 5, 10)) -> "pd.DataFrame":
    """precision@k for each k and nDCG@max(k) per method. ``methods`` maps a name to a
    function k -> Boxes."""
    import pandas as pd

    rows = {}
    for name, make in methods.items():
        row = {}
        for k in ks:
            boxes = make(k)
            row[f"precision@{k}"] = precision_at_k(boxes, labels, k)
        row[f"nDCG@{max(ks)}"] = ndcg_at_k(boxes, max(ks), labels=labels)
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def per_label_precision(boxes: Boxes, labels: Mapping[str, str], k: int) -> dict[str, float]:
    """precision@k averaged within each source label (e.g. per BBC topic)."""
    values = per_source_precision(boxes, labels, k)
    by_label: dict[str, list[float]] = {}
    for source, value in values.items():
        by_label.setdefault(labels.get(source), []).append(value)
    return {label: float(np.mean(v)) for label, v in sorted(by_label.items())}


def health_row(boxes: Boxes, corpus: EvalCorpus, k: int, *,
               is_same_story: Callable[[str, str], bool], now: datetime | None = None,
               groups: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """Box health of one method on a dated corpus: coverage, duplicate rate, hub
    concentration, diversity, age and (with event ``groups``) event recall."""
    hubs = hub_concentration(boxes, corpus.ids)
    row = {
        "coverage": coverage(boxes, k),
        "duplicate_rate": duplicate_rate(boxes, is_same_story),
        "hub_gini": hubs["gini"],
        "top1pct_share": hubs["top1pct_share"],
        "max_shown": hubs["max_shown"],
        "diversity": intra_list_diversity(boxes, corpus),
        "mean_similarity": mean_similarity(boxes, corpus),
    }
    if not np.isnan(corpus.published).all():
        row.update(age_summary(boxes, corpus, now=now))
    if groups:
        row["event_hit_rate"] = event_recall(boxes, groups, k)["hit_rate"]
    return row


def bbc_report(corpus: EvalCorpus | None = None, ks: Sequence[int] = (2, 5, 10), *,
               rec: "Recommender | None" = None, section_bonus: float | None = None) -> "pd.DataFrame":
    """The headline relevance table on BBC News: our pipeline (defaults), the raw
    encoder, TF-IDF, recent-in-section and random, precision@k and nDCG.

    section_bonus: also report the pipeline with the same-section bonus at this value
        (see :func:`section_bonus_boxes`); on BBC the section is the topic label, so that
        row uses the label at query time, as a site's section preference would.
    """
    corpus = corpus or load_corpus("bbc")
    rec = rec or build_recommender(corpus)
    ids = corpus.ids
    matrix = tfidf_matrix(corpus)
    methods: dict[str, Callable[[int], Boxes]] = {
        "ours (defaults)": lambda k: recommender_boxes(rec, ids, k),
        "raw encoder cosine": lambda k: encoder_boxes(corpus, ids, k),
        "TF-IDF cosine": lambda k: tfidf_boxes(corpus, ids, k, matrix=matrix),
        "recent in section*": lambda k: recent_in_section_boxes(corpus, ids, k),
        "random": lambda k: random_boxes(corpus, ids, k),
    }
    if section_bonus:
        methods[f"ours + same-section bonus {section_bonus:g}*"] = \
            lambda k: section_bonus_boxes(rec, corpus, ids, k, section_bonus)
    return relevance_table(methods, corpus.labels, ks)


def news_report(corpus: EvalCorpus | None = None, k: int = 2, *, rec: "Recommender | None" = None,
                events: "pd.DataFrame | None" = None) -> "pd.DataFrame":
    """The headline box-health table on NewsArticles at the time of its newest article:
    our pipeline, raw encoder, TF-IDF, recent-in-section (= same outlet) and random.
    Event labels, when given, add labelled copies to the duplicate test and event recall."""
    import pandas as pd

    corpus = corpus or load_corpus("news")
    rec = rec or build_recommender(corpus)
    now = corpus.last_published()
    ids = corpus.ids
    copies = event_groups(events, "copy", ids).values() if events is not None else ()
    groups = event_groups(events, None, ids) if events is not None else None
    same = same_story_checker(corpus, copy_groups=copies)
    methods = {
        "ours (defaults)": recommender_boxes(rec, ids, k, now=now),
        "raw encoder cosine": encoder_boxes(corpus, ids, k),
        "TF-IDF cosine": tfidf_boxes(corpus, ids, k),
        "recent in section (outlet)": recent_in_section_boxes(corpus, ids, k, now=now),
        "random": random_boxes(corpus, ids, k),
    }
    return pd.DataFrame.from_dict(
        {name: health_row(boxes, corpus, k, is_same_story=same, now=now, groups=groups)
         for name, boxes in methods.items()}, orient="index")
