"""Box items: the Recommendation a box is made of, built from the corpus's columns
for one item (a call) or for a block of boxes at once (recommend_many, the export).

Once a box's ranking is planned at build time, building its two items is most of
what a call costs: a dataclass and a few phrases each. So the phrases are made once
and looked up (ranking.reason_words; a block by one int an item, ReasonTable), a
frozen item is filled as its unfrozen twin instead of through the generated __init__
(new_item), and a block rounds its scores and works out its ages as arrays. The
one-item and block paths give the same items to the bit (tests/test_items.py
compares them).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np

from . import ranking

if TYPE_CHECKING:  # pragma: no cover
    from .many import Boxes
    from .recommender import _Corpus

_SCALE = 10_000.0  # scores and similarities are shown to 4 decimals


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One item of a box. ``similarity`` is the cosine to the source article; ``score``
    adds the freshness bonus; ``reasons`` says why the item is there."""

    id: str
    title: str
    url: str | None
    published_at: datetime | None
    section: str | None
    score: float
    similarity: float
    reasons: tuple[str, ...]
    fallback: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON-ready values, fields in declaration order. Written out
        rather than dataclasses.asdict, which deep-copies every value (~20x slower:
        most of an export's time)."""
        return {"id": self.id, "title": self.title, "url": self.url,
                "published_at": self.published_at.isoformat() if self.published_at else None,
                "section": self.section, "score": self.score, "similarity": self.similarity,
                "reasons": list(self.reasons), "fallback": self.fallback}


class _Unsealed:
    """Recommendation's slots without its frozen ``__setattr__``: new_item fills one
    and then makes it a Recommendation (``__class__`` assignment is allowed between
    classes with the same slots and base). Never seen outside new_item."""

    __slots__ = Recommendation.__slots__


def new_item(id: str, title: str, url: str | None, published_at: datetime | None, section: str | None,
             score: float, similarity: float, reasons: tuple[str, ...], fallback: bool) -> Recommendation:
    """Recommendation(...) with every field given, in a fifth of the time: a frozen
    dataclass's ``__init__`` sets each field through object.__setattr__ (~1.7 us an
    item), its slots' descriptors called one by one take ~1.2; plain attribute stores
    on the unfrozen twin, which CPython turns into direct slot writes, ~0.35.
    tests/test_items.py checks that every field is set and the item is frozen."""
    item = _Unsealed()
    item.id = id
    item.title = title
    item.url = url
    item.published_at = published_at
    item.section = section
    item.score = score
    item.similarity = similarity
    item.reasons = reasons
    item.fallback = fallback
    item.__class__ = Recommendation
    return item


def _shown(value: float) -> float:
    """``value`` to 4 decimals as np.round(value, 4) gives it (multiply, round half
    to even, divide): ~2x faster than round(value, 4), and what a block computes."""
    return round(value * _SCALE) / _SCALE if math.isfinite(value) else value


def _date(published: float) -> datetime | None:
    return None if math.isnan(published) else datetime.fromtimestamp(published, timezone.utc)


def item(article_id: str, title: str, url: str | None, published: float, section: str | None,
         score: float, similarity: float, source_published: float, source_section: str | None,
         now_ts: float, fallback: str | None) -> Recommendation:
    """One box item from its article's columns; the age is counted from the source's
    date, or from now for an undated source."""
    if not math.isnan(source_published):
        age, relative_to = source_published - published, "article"
    else:
        age, relative_to = now_ts - published, "now"
    reasons = ranking.reasons_for(similarity=similarity, section=section, source_section=source_section,
                                  age_seconds=age, age_relative_to=relative_to, fallback=fallback)
    return new_item(article_id, title, url, _date(published), section, _shown(score), _shown(similarity), reasons,
                    fallback is not None)


class ReasonTable(dict):
    """A corpus's reason tuples by packed key (reason_keys): a block looks each item's
    tuple up by one int, ~40 ns, against ~0.4 us for ranking.reason_words' four
    arguments. The keys hold section codes, so a corpus makes a new table whenever it
    renumbers its sections; filled on first use and bounded: 64k tuples, ~160 B each
    (~10 MB). A million-article archive used 51k keys (ages, shared sections and
    similarities); with 16k the table kept filling and clearing, and 30% of a
    recommend_many of every article missed (~2 us a miss)."""

    MAX_SIZE = 1 << 16

    def __init__(self, section_names: list[str]):
        super().__init__()
        self.section_names = section_names

    def __missing__(self, key: int) -> tuple[str, ...]:
        rest, similarity = divmod(key, _SIMILARITY_KEYS)
        age, section = divmod(rest, len(self.section_names) + 1)
        reasons = ranking.reason_words(None if similarity == _NO_SIMILARITY else similarity - _SIMILARITY_ZERO,
                                       self.section_names[section - 1] if section else None,
                                       age - 1 if age else None, None)
        if len(self) >= self.MAX_SIZE:
            self.clear()
        self[key] = reasons
        return reasons


_SIMILARITY_KEYS = 256  # a key's lowest part: hundredths + _SIMILARITY_ZERO, or _NO_SIMILARITY
_SIMILARITY_ZERO = 128
_NO_SIMILARITY = 255


def reason_keys(hundredths: np.ndarray, shared_codes: np.ndarray, ages: np.ndarray, n_sections: int
                ) -> np.ndarray | None:
    """ReasonTable keys of items from their similarity in hundredths (NaN: not
    shown), the section code they share with the source (NO_SECTION: none) and their
    age_code (-1: not shown); None when a similarity lies outside what a key holds
    (|cosine| > 1.27, not seen from normalised vectors)."""
    similarity = np.where(np.isnan(hundredths), _NO_SIMILARITY - _SIMILARITY_ZERO, hundredths) + _SIMILARITY_ZERO
    if not ((similarity >= 0) & (similarity <= _NO_SIMILARITY)).all():
        return None
    section = shared_codes.astype(np.int64) - ranking.NO_SECTION  # 0: none
    return ((ages + 1) * (n_sections + 1) + section) * _SIMILARITY_KEYS + similarity.astype(np.int64)


def _where_shown(values: np.ndarray, shown: np.ndarray) -> list:
    """``values`` as a list, None where not ``shown`` (a reason not given)."""
    out = values.tolist()
    if not shown.all():
        for i in np.flatnonzero(~shown).tolist():
            out[i] = None
    return out


class BlockColumns(NamedTuple):
    """The items of a block's finished boxes as columns, item by item in block order:
    what both the Recommendations (block_items) and the Parquet export's rows
    (export.py) are made from. ``rows``: the item's box in the block; ``ranks``:
    from 1; ``sections``: names (None for none); ``sizes``: items in each finished
    box."""

    rows: np.ndarray
    ranks: np.ndarray
    positions: np.ndarray
    published: np.ndarray
    sections: list[str | None]
    scores: np.ndarray
    similarities: np.ndarray
    reasons: list[tuple[str, ...]]
    sizes: list[int]


def block_columns(corpus: "_Corpus", sources: np.ndarray, ranked: "Boxes", now_ts: float) -> BlockColumns:
    """The items of every finished box of a block, as ``item`` makes them one by one,
    computed as arrays where numpy can (rounding, ages, similarity hundredths) and
    with each reason tuple looked up whole."""
    finished = np.flatnonzero(ranked.finished)
    at = ranked.positions[finished]
    filled = at >= 0
    rows, slots = np.nonzero(filled)  # row-major: block order, then rank
    flat = at[rows, slots]
    source_of = sources[finished][rows]
    scores, sims = ranked.scores[finished][rows, slots], ranked.similarities[finished][rows, slots]

    published, source_published = corpus.published[flat], corpus.published[source_of]
    undated_source = np.isnan(source_published)
    age = np.where(undated_source, now_ts, source_published) - published
    ages = np.where(np.isnan(age), -1, ranking.age_codes(age, undated_source))
    hundredths = np.where(np.isfinite(sims), np.rint(np.nan_to_num(sims) * 100.0), np.nan)
    named = corpus.section_names + [None]  # NO_SECTION (-1) names the last: None
    codes = corpus.section_codes[flat]
    sections = [named[code] for code in codes.tolist()]
    shared = np.where(codes == corpus.section_codes[source_of], codes, ranking.NO_SECTION)
    keys = reason_keys(hundredths, shared, ages, len(corpus.section_names))
    if keys is not None:
        reasons = list(map(corpus.reason_table.__getitem__, keys.tolist()))
    else:
        shown_hundredths = _where_shown(np.nan_to_num(hundredths).astype(np.int64), ~np.isnan(hundredths))
        reasons = list(map(ranking.reason_words, shown_hundredths, [named[code] for code in shared.tolist()],
                           _where_shown(ages, ages >= 0), itertools.repeat(None)))
    return BlockColumns(finished[rows], slots + 1, flat, published, sections, np.round(scores, 4),
                        np.round(sims, 4), reasons, filled.sum(axis=1).tolist())


def _dates(published: np.ndarray) -> list[datetime | None]:
    utc, isnan, fromtimestamp = timezone.utc, math.isnan, datetime.fromtimestamp
    return [None if isnan(date) else fromtimestamp(date, utc) for date in published.tolist()]


def _item_fields(corpus: "_Corpus", columns: BlockColumns) -> tuple[list, ...]:
    """Every item's Recommendation fields but ``fallback``, field by field, in their
    declaration order (a string column is read once for the whole block)."""
    flat = columns.positions
    return (corpus.ids[flat].tolist(), corpus.titles[flat].tolist(), corpus.urls[flat].tolist(),
            _dates(columns.published), columns.sections, columns.scores.tolist(), columns.similarities.tolist(),
            columns.reasons)


def _per_box(made: list, sizes: list[int]) -> list[list]:
    """A block's items, cut into its boxes of ``sizes`` items."""
    return [made[end - size:end] for size, end in zip(sizes, itertools.accumulate(sizes))]


def block_items(corpus: "_Corpus", sources: np.ndarray, ranked: "Boxes", now_ts: float
                ) -> list[list[Recommendation]]:
    """The Recommendations of every finished box of a block, in block order, as
    ``item`` makes them one by one (from block_columns)."""
    columns = block_columns(corpus, sources, ranked, now_ts)
    return _per_box(list(map(new_item, *_item_fields(corpus, columns), itertools.repeat(False))), columns.sizes)


def block_dicts(corpus: "_Corpus", sources: np.ndarray, ranked: "Boxes", now_ts: float
                ) -> list[list[dict[str, Any]]]:
    """block_items' items as dicts with Recommendation's fields, for a JSON encoder
    (the JSONL export): ``published_at`` stays a datetime and ``reasons`` a tuple,
    which the encoder writes as to_dict gives them. orjson writes such a dict in a
    third of the time it takes for the slotted dataclass (0.7 vs 2.2 us an item)."""
    columns = block_columns(corpus, sources, ranked, now_ts)
    made = [{"id": article_id, "title": title, "url": url, "published_at": date, "section": section,
             "score": score, "similarity": similarity, "reasons": reasons, "fallback": False}
            for article_id, title, url, date, section, score, similarity, reasons
            in zip(*_item_fields(corpus, columns))]
    return _per_box(made, columns.sizes)


def boxes_in_order(corpus: "_Corpus", block: np.ndarray, ranked: "Boxes", now_ts: float,
                   alone: dict[int, list[Recommendation]], made_by: Callable = block_items) -> list[list]:
    """A block's boxes in block order: those ranked as arrays (``made_by``:
    block_items, or block_dicts) and those ranked ``alone``, by row
    (Recommender._ranked_blocks' ``make`` for recommend_many)."""
    made = iter(made_by(corpus, block, ranked, now_ts))
    return [alone[row] if row in alone else next(made) for row in range(len(block))]
