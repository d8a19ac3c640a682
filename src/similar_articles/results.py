"""What a box holds: ``Recommendation`` items as frozen data, each with a structured
``Reason`` rendered to words in one place (:meth:`Reason.words` for editors,
:meth:`Reason.label` for readers)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np

from .boxrules import PINNED_KIND
from .pools import FALLBACK_KINDS, RankedBlock
from .ranking import SECONDS_PER_DAY
from .labels import DEFAULT_LABELS
from .table import ArticleTable


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One item of a box. ``similarity`` is the cosine to the source article; ``score``
    adds the term overlap and the freshness and section bonuses; ``reasons`` says why
    the item is there, for editors; ``fallback`` marks an item filled in because too few
    related articles passed the filters; ``label`` is a short line for readers, without
    numbers ("Earlier coverage", "Editor's pick"), from the index's labels.json."""

    id: str
    title: str
    url: str | None
    published_at: datetime | None
    section: str | None
    score: float
    similarity: float
    reasons: tuple[str, ...]
    fallback: bool = False
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON-ready values, fields in declaration order."""
        return {"id": self.id, "title": self.title, "url": self.url,
                "published_at": self.published_at.isoformat() if self.published_at else None,
                "section": self.section, "score": self.score, "similarity": self.similarity,
                "reasons": list(self.reasons), "fallback": self.fallback, "label": self.label}


class Reason(NamedTuple):
    """Why an item is in a box, as data. ``age_seconds``: the source's date minus the
    item's (or now minus the item's, ``relative_to_now``, for an undated source); NaN
    when the item is undated. ``fallback``: "" for a related item, else what filled it."""

    similarity: float
    shared_section: str | None
    age_seconds: float
    relative_to_now: bool
    fallback: str
    pinned: bool = False  # an editor's pick (a rule)

    def words(self) -> tuple[str, ...]:
        """The reasons an editor reads: ("similarity 0.64", "same section: world",
        "published 7 days later"), or ("fallback: recent article", ...), or ("editor's
        pick", "similarity 0.41", ...)."""
        out = ["editor's pick"] if self.pinned else []
        if self.fallback:
            out.append(f"fallback: {self.fallback}")
        elif math.isfinite(self.similarity):
            out.append(f"similarity {round(self.similarity * 100.0) / 100:.2f}")
        if self.shared_section:
            out.append(f"same section: {self.shared_section}")
        if not math.isnan(self.age_seconds):
            out.append(age_words(self.age_seconds, self.relative_to_now))
        return tuple(out)


    def label(self, labels: dict[str, str], section: str | None) -> str:
        """The words a reader sees: an editor's pick, earlier or later coverage of the
        story, more from the section or the latest news (``labels``: name -> words)."""
        if self.pinned:
            return labels["pinned"]
        if self.fallback:
            if self.fallback.startswith(FALLBACK_KINDS[1]) and section:
                return labels["section"].format(section=section[:1].upper() + section[1:])
            return labels["recent"]
        if math.isnan(self.age_seconds) or self.relative_to_now or self.age_seconds == 0:
            return labels["related"]
        return labels["earlier"] if self.age_seconds > 0 else labels["later"]


def age_words(delta_seconds: float, relative_to_now: bool) -> str:
    """"published 3 days earlier" / "published 2 months ago" style wording."""
    days = abs(delta_seconds) / SECONDS_PER_DAY
    if days < 1:
        span = "less than a day"
    elif days < 60:
        count = round(days)
        span = f"{count} day{'s' if count != 1 else ''}"
    elif days < 730:
        span = f"{round(days / 30.4)} months"
    else:
        span = f"{round(days / 365.25)} years"
    if relative_to_now:
        return f"published {span} ago"
    if days < 1:
        return "published the same day"
    return f"published {span} {'earlier' if delta_seconds > 0 else 'later'}"


def recommendations(table: ArticleTable, ranked: RankedBlock, source_published: np.ndarray,
                    source_sections: list[str | None], now: float,
                    labels: dict[str, str] = DEFAULT_LABELS) -> list[list[Recommendation]]:
    """The Recommendations of every box of a ranked block, in block order. The items'
    columns are read as lists first (a numpy element read costs more than the rest of
    an item)."""
    rows, ranks = np.nonzero(ranked.positions >= 0)  # block order, then rank
    at = ranked.positions[rows, ranks]
    similarities = ranked.similarities[rows, ranks].astype(np.float64)
    columns = zip(rows.tolist(), table.ids[at].tolist(), table.titles[at].tolist(), table.urls[at].tolist(),
                  table.published[at].tolist(), table.sections[at].tolist(),
                  np.round(ranked.scores[rows, ranks].astype(np.float64), 4).tolist(),
                  np.round(similarities, 4).tolist(), similarities.tolist(), ranked.kinds[rows, ranks].tolist())
    sources = source_published.tolist()
    boxes: list[list[Recommendation]] = [[] for _ in range(len(ranked.positions))]
    for row, article_id, title, url, published, section, score, shown, similarity, kind in columns:
        undated = math.isnan(sources[row])
        pinned = kind == PINNED_KIND
        fallback = "" if pinned else FALLBACK_KINDS[kind]
        if kind == 1:
            fallback = f"{fallback} {section}"
        reason = Reason(similarity, section if section and section == source_sections[row] else None,
                        (now if undated else sources[row]) - published, undated, fallback, pinned)
        boxes[row].append(Recommendation(article_id, title, url, _date(published), section, score, shown,
                                         reason.words(), bool(fallback), reason.label(labels, section)))
    return boxes


def _date(published: float) -> datetime | None:
    return None if math.isnan(published) else datetime.fromtimestamp(published, timezone.utc)
