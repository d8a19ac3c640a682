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

The package is split by job: :mod:`.corpus` (the corpus and its vectors, the
recommender built from it, :data:`Boxes`), :mod:`.methods` (our boxes and the
baselines'), :mod:`.metrics` (numbers over boxes) and :mod:`.reports` (headline tables).
Every public name is re-exported here, so ``ev.precision_at_k`` etc. work as before.
"""

from __future__ import annotations

from ..ranking import SECONDS_PER_DAY
from .corpus import CORPORA, Boxes, EvalCorpus, build_recommender, load_corpus, prepare_corpus
from .methods import (recommend_all, as_boxes, recommender_boxes, section_bonus_boxes,
                      similarity_boxes, encoder_boxes, tfidf_matrix, tfidf_boxes,
                      recent_in_section_boxes, random_boxes)
from .metrics import (per_source_precision, precision_at_k, per_label_precision, ndcg_at_k,
                      coverage, fallback_share, same_story_checker, duplicate_pairs,
                      duplicate_rate, gini, exposure_counts, hub_concentration,
                      intra_list_diversity, mean_similarity, ages, age_summary, churn,
                      box_agreement, event_groups, event_halves, event_recall)
from .reports import bbc_report, health_row, news_report, relevance_table

__all__ = [
    "SECONDS_PER_DAY", "Boxes", "EvalCorpus", "prepare_corpus", "CORPORA", "load_corpus",
    "build_recommender", "recommend_all", "as_boxes", "recommender_boxes",
    "section_bonus_boxes", "similarity_boxes", "encoder_boxes", "tfidf_matrix", "tfidf_boxes",
    "recent_in_section_boxes", "random_boxes", "per_source_precision", "precision_at_k",
    "per_label_precision", "ndcg_at_k", "coverage", "fallback_share", "same_story_checker",
    "duplicate_pairs", "duplicate_rate", "gini", "exposure_counts", "hub_concentration",
    "intra_list_diversity", "mean_similarity", "ages", "age_summary", "churn", "box_agreement",
    "event_groups", "event_halves", "event_recall", "relevance_table", "health_row", "bbc_report", "news_report",
]
