"""Metrics over :data:`Boxes`, each returning a plain number, dict or DataFrame.

Relevance (precision@k, nDCG@k), coverage and fallback share, duplicate stories in a
box, exposure concentration (Gini, hubs), diversity and similarity, the age of what is
shown, churn between snapshots, and recall of labelled events.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..results import Recommendation
from ..ranking import SECONDS_PER_DAY
from .corpus import Boxes, EvalCorpus

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def per_source_precision(boxes: Boxes, labels: Mapping[str, str], k: int) -> dict[str, float]:
    """Share of the first k slots holding an article with the source's label; a box
    shorter than k counts its empty slots as misses."""
    return {source: sum(labels.get(item) == labels.get(source) for item in items[:k]) / k
            for source, items in boxes.items()}


def precision_at_k(boxes: Boxes, labels: Mapping[str, str], k: int) -> float:
    """Mean precision@k over the sources of ``boxes`` (topic labels: same label = relevant)."""
    values = per_source_precision(boxes, labels, k)
    return float(np.mean(list(values.values()))) if values else float("nan")


def per_label_precision(boxes: Boxes, labels: Mapping[str, str], k: int) -> dict[str, float]:
    """precision@k averaged within each source label (e.g. per BBC topic)."""
    values = per_source_precision(boxes, labels, k)
    by_label: dict[str, list[float]] = {}
    for source, value in values.items():
        by_label.setdefault(labels.get(source), []).append(value)
    return {label: float(np.mean(v)) for label, v in sorted(by_label.items())}


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


def fallback_share(results: Mapping[str, Sequence[Recommendation]]) -> float:
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


def event_halves(groups: Mapping[str, Sequence[str]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(tuning, held_out): the labelled events split in two by a hash of the event id,
    the same split on every run and machine. Settings are tuned on the first half and
    reported on the second, so a reported figure was not fitted to its own labels."""
    import zlib

    halves: tuple[dict, dict] = ({}, {})
    for event_id, members in groups.items():
        halves[zlib.crc32(str(event_id).encode("utf-8")) % 2][event_id] = list(members)
    return halves


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
