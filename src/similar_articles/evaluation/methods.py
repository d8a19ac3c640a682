"""Every method's boxes, ours and the baselines', as :data:`Boxes`.

Ours: :func:`recommender_boxes` (the library's own calls, with any RankingConfig
overrides) and :func:`section_bonus_boxes`. Baselines: the raw encoder's cosine,
TF-IDF cosine, the newest articles of the source's section, and random picks.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..recommender import Recommender
from ..results import Recommendation
from ..ranking import recent_first
from .corpus import Boxes, EvalCorpus

def recommend_all(rec: Recommender, source_ids: Iterable[str], k: int, *,
                  now: datetime | None = None, **overrides: Any) -> dict[str, list[Recommendation]]:
    """The full Recommendation lists (with reasons and fallback flags) for many sources,
    every call at the same time ``now`` (default: the clock when this starts)."""
    ids = list(source_ids)
    now = now or datetime.now(timezone.utc)
    many = getattr(rec, "recommend_many", None)  # batched: same boxes, faster
    if many is not None:
        return dict(zip(ids, many(ids, k, now=now, **overrides)))
    return {i: rec.recommend(i, k, now=now, **overrides) for i in ids}


def as_boxes(results: Mapping[str, Sequence[Recommendation]]) -> Boxes:
    return {source: [item.id for item in items] for source, items in results.items()}


def recommender_boxes(rec: Recommender, source_ids: Iterable[str], k: int, *,
                      now: datetime | None = None, **overrides: Any) -> Boxes:
    """Our pipeline's boxes; ``overrides`` are RankingConfig fields for every call."""
    return as_boxes(recommend_all(rec, source_ids, k, now=now, **overrides))


def section_bonus_boxes(rec: Recommender, corpus: EvalCorpus, source_ids: Sequence[str], k: int,
                        bonus: float, *, now: datetime | None = None, **overrides: Any) -> Boxes:
    """Our pipeline with the same-section bonus at ``bonus`` (the library's
    ``RankingConfig.section_bonus``) and any other RankingConfig ``overrides``.
    ``corpus`` is not needed any more; it stays so that existing calls keep working."""
    return recommender_boxes(rec, source_ids, k, now=now, section_bonus=bonus, **overrides)


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
    order = recent_first(corpus.published)
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
