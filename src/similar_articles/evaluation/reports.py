"""Headline tables: precision@k and nDCG per method (:func:`relevance_table`,
:func:`bbc_report` on BBC News) and box health per method (:func:`health_row`,
:func:`news_report` on NewsArticles)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from ..recommender import Recommender
from .corpus import Boxes, EvalCorpus, build_recommender, load_corpus
from .methods import (encoder_boxes, random_boxes, recent_in_section_boxes, recommender_boxes,
                      section_bonus_boxes, tfidf_boxes, tfidf_matrix)
from .metrics import (age_summary, coverage, duplicate_rate, event_groups, event_halves, event_recall,
                      hub_concentration, intra_list_diversity, mean_similarity, ndcg_at_k,
                      precision_at_k, same_story_checker)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


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
        tuning, held_out = event_halves(groups)
        row["event_hit_tuning_half"] = event_recall(boxes, tuning, k)["hit_rate"]
        row["event_hit_held_out"] = event_recall(boxes, held_out, k)["hit_rate"]
    return row


def bbc_report(corpus: EvalCorpus | None = None, ks: Sequence[int] = (2, 5, 10), *,
               rec: Recommender | None = None, section_bonus: float | None = None) -> "pd.DataFrame":
    """The headline relevance table on BBC News, text only: our pipeline with no
    section bonus, the raw encoder, TF-IDF, recent-in-section and random, precision@k
    and nDCG; then our defaults (same-section bonus) as a separate row.

    section_bonus: the bonus of that separate row (default: the library's); on BBC the
        section is the topic label, so that row uses the label at query time, as a
        site's section preference would, and is no text-only figure.
    """
    corpus = corpus or load_corpus("bbc")
    rec = rec or build_recommender(corpus)
    ids = corpus.ids
    matrix = tfidf_matrix(corpus)
    bonus = rec.config.ranking.section_bonus if section_bonus is None else section_bonus
    methods: dict[str, Callable[[int], Boxes]] = {
        "ours, text only": lambda k: recommender_boxes(rec, ids, k, section_bonus=0),
        "raw encoder cosine": lambda k: encoder_boxes(corpus, ids, k),
        "TF-IDF cosine": lambda k: tfidf_boxes(corpus, ids, k, matrix=matrix),
        "recent in section*": lambda k: recent_in_section_boxes(corpus, ids, k),
        "random": lambda k: random_boxes(corpus, ids, k),
    }
    if bonus:
        methods[f"ours + same-section bonus {bonus:g}*"] = \
            lambda k: section_bonus_boxes(rec, corpus, ids, k, bonus)
    return relevance_table(methods, corpus.labels, ks)


def news_report(corpus: EvalCorpus | None = None, k: int = 2, *, rec: Recommender | None = None,
                events: "pd.DataFrame | None" = None) -> "pd.DataFrame":
    """The headline box-health table on NewsArticles at the time of its newest article:
    our pipeline text only and with its defaults (same-section bonus: here the outlet),
    raw encoder, TF-IDF, recent-in-section (= same outlet) and random. Event labels,
    when given, add labelled copies to the duplicate test and event hit rates (all
    events, the tuning half and the held-out half: metrics.event_halves)."""
    import pandas as pd

    corpus = corpus or load_corpus("news")
    rec = rec or build_recommender(corpus)
    now = corpus.last_published()
    ids = corpus.ids
    copies = event_groups(events, "copy", ids).values() if events is not None else ()
    groups = event_groups(events, None, ids) if events is not None else None
    same = same_story_checker(corpus, copy_groups=copies)
    methods = {
        "ours, text only": recommender_boxes(rec, ids, k, now=now, section_bonus=0),
        "ours (defaults, section bonus)": recommender_boxes(rec, ids, k, now=now),
        "raw encoder cosine": encoder_boxes(corpus, ids, k),
        "TF-IDF cosine": tfidf_boxes(corpus, ids, k),
        "recent in section (outlet)": recent_in_section_boxes(corpus, ids, k, now=now),
        "random": random_boxes(corpus, ids, k),
    }
    return pd.DataFrame.from_dict(
        {name: health_row(boxes, corpus, k, is_same_story=same, now=now, groups=groups)
         for name, boxes in methods.items()}, orient="index")
