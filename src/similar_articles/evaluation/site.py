"""Box health of any built index, with no labels: what an editor reads before choosing
settings for their own archive (``similar-articles evaluate --index DIR``).

Every live article's box is ranked as a server would rank it, then measured: coverage
(full boxes), fallback share, duplicate-story share (an item under the source's
headline, or cosine >= 0.92 to the source or to another item: the notebooks' test
without labelled copies), hub concentration (Gini of times shown), the similarity of
shown items, and a sample of boxes with their reasons, as Markdown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import replace_ranking
from ..recommender import Recommender
from ..results import Recommendation
from .methods import as_boxes, recommend_all
from .metrics import coverage, fallback_share, hub_concentration

SAME_STORY_COSINE = 0.92  # as the notebooks' judge (metrics.same_story_checker)


def index_report(rec: Recommender, k: int = 2, *, now: datetime | None = None, sample: int = 10,
                 seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """{"summary": plain numbers, "sample": Markdown of ``sample`` random boxes} for
    every live article of ``rec`` at ``now`` (default: the clock). ``overrides``:
    RankingConfig fields for every box, as ``recommend`` takes them."""
    ids = rec.ids()
    ranking = replace_ranking(rec.config.ranking, overrides)
    results = recommend_all(rec, ids, k, now=now, **overrides)
    boxes = as_boxes(results)
    related = [item.similarity for items in results.values() for item in items if not item.fallback]
    summary = {
        "articles": len(ids),
        "k": k,
        "coverage": coverage(boxes, k),
        "fallback_share": fallback_share(results),
        "duplicate_story_share": duplicate_story_share(rec, boxes),
        "hub_gini": hub_concentration(boxes, ids)["gini"],
        "top1pct_share": hub_concentration(boxes, ids)["top1pct_share"],
        "similarity_shown_mean": float(np.mean(related)) if related else float("nan"),
        "similarity_shown_p10": float(np.quantile(related, 0.1)) if related else float("nan"),
        "similarity_shown_p50": float(np.quantile(related, 0.5)) if related else float("nan"),
        "relatedness_floor": rec.state.relatedness_floor(ranking.lexical_weight, ranking.floor_quantile),
    }
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(ids), size=min(sample, len(ids)), replace=False).tolist()) if ids else []
    return {"summary": summary, "sample": boxes_markdown(rec, {ids[i]: results[ids[i]] for i in picked})}


def duplicate_story_share(rec: Recommender, boxes: Mapping[str, Sequence[str]]) -> float:
    """Share of boxes showing one story twice: an item with the source's headline, or
    two of (source, items...) at cosine >= SAME_STORY_COSINE."""
    if not boxes:
        return float("nan")
    state = rec.state
    table = state.table
    flagged = 0
    for source, items in boxes.items():
        positions = np.array([table.position_of(i) for i in (source, *items)], dtype=np.int64)
        vectors = state.index.vectors(positions).astype(np.float32)
        cosine = vectors @ vectors.T
        keys = table.title_keys[positions]
        same = (cosine >= SAME_STORY_COSINE) | ((keys[:, None] == keys[None, :]) & (keys[:, None] != 0))
        flagged += bool(np.triu(same, 1).any())
    return flagged / len(boxes)


def boxes_markdown(rec: Recommender, results: Mapping[str, Sequence[Recommendation]]) -> str:
    """Markdown: each source's title, then its items' titles and reasons."""
    table = rec.state.table
    lines = []
    for source, items in results.items():
        lines.append(f"### {table.titles[table.position_of(source)] or source} ({source})")
        for item in items:
            lines.append(f"- {item.title or item.id}: {'; '.join(item.reasons)}")
        lines.append("")
    return "\n".join(lines)
