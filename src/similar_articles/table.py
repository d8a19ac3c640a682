"""The article table: metadata columns aligned with index positions, id -> position,
and which rows are live. Immutable: adding or removing articles makes a new table that
shares every column it does not change.

Text columns are numpy arrays, not lists of str: at a million articles lists cost ~700
bytes an article, these ~370. The two columns every box item shows (titles, urls) hold
str objects, which an item reads ~10x faster than a compact StringDType string.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from .articles import Article
from .errors import UnknownArticleError
from .ranking import NO_CODE, NO_SECTION, recent_first, title_key

COLUMNS = ("ids", "titles", "urls", "sections", "tags", "content_hashes")  # articles.json
OPTIONAL_COLUMNS = ("kinds", "languages")  # articles.json, since issue 28 (older snapshots: none)
# Newsroom arrays (snapshot .npy files, written only when some article has a value):
# embargo and expiry as epoch seconds (NaN: none), do_not_recommend as bool.
NEWSROOM = ("embargo_until", "expires_at", "do_not_recommend")
_SHOWN_COLUMNS = ("titles", "urls")
_TAG_SEP = "\x1f"  # unit separator: never inside a tag after normalisation

try:  # numpy >= 2: compact variable-width strings
    from numpy.dtypes import StringDType

    _TEXT = StringDType(na_object=None)
except ImportError:  # pragma: no cover
    _TEXT = np.dtype(object)


def _column(name: str, values: Iterable[str | None]) -> np.ndarray:
    values = values if isinstance(values, (list, np.ndarray)) else list(values)
    return np.array(values, dtype=np.dtype(object) if name in _SHOWN_COLUMNS else _TEXT)


class IdPositions:
    """Article id -> position. A dict of a million ids costs ~150 bytes an article;
    sorted 64-bit hashes of the id column and their positions cost 12. Ids added since
    the snapshot live in a small dict that wins (a replaced article's new row)."""

    def __init__(self, ids: np.ndarray, added: dict[str, int] | None = None, *, _sorted=None):
        self._ids = ids
        if _sorted is None:
            hashes = np.fromiter((hash(i) for i in ids.tolist()), dtype=np.int64, count=len(ids))
            order = np.argsort(hashes, kind="stable")  # equal hashes keep position order
            _sorted = hashes[order], order.astype(np.int32 if len(ids) < 2**31 else np.int64)
        self._hashes, self._order = _sorted
        self._added = added or {}

    def with_added(self, ids: np.ndarray, added: dict[str, int]) -> "IdPositions":
        """The mapping over the longer column ``ids``, with ``added`` ids at their rows."""
        return IdPositions(ids, {**self._added, **added}, _sorted=(self._hashes, self._order))

    def get(self, article_id: object) -> int | None:
        found = self._added.get(article_id) if isinstance(article_id, str) else None
        if found is not None or not isinstance(article_id, str):
            return found
        h = hash(article_id)
        i = int(np.searchsorted(self._hashes, h))
        while i < len(self._hashes) and self._hashes[i] == h:
            pos = int(self._order[i])
            if self._ids[pos] == article_id:
                found = pos  # the last match is the newest version
            i += 1
        return found

    def get_many(self, ids: Sequence[object]) -> np.ndarray:
        """Positions of ``ids``, -1 for unknown ones: one vectorised lookup."""
        texts = [i if isinstance(i, str) else "" for i in ids]
        positions = np.full(len(texts), -1, dtype=np.int64)
        checked = np.zeros(len(texts), dtype=bool)
        if len(self._hashes) and texts:
            wanted = np.fromiter(map(hash, texts), dtype=np.int64, count=len(texts))
            # The last entry with the hash is the newest article having it; anything
            # else (a collision, an added id, not a string) asks get().
            at = np.maximum(np.searchsorted(self._hashes, wanted, side="right") - 1, 0)
            positions = self._order[at].astype(np.int64)
            checked = (self._hashes[at] == wanted) & (self._ids[positions] == np.array(texts, dtype=self._ids.dtype))
            positions[~checked] = -1
        for i in np.flatnonzero(~checked | bool(self._added)).tolist():
            found = self.get(ids[i])
            positions[i] = -1 if found is None else found
        return positions


@dataclass(frozen=True)
class ArticleTable:
    """Columns by index position (``table.titles[pos]`` is a str or None), the live
    mask and the orders the fallback walks. Build one with :meth:`of` or
    :meth:`from_columns`; never change one in place."""

    ids: np.ndarray
    titles: np.ndarray
    urls: np.ndarray
    sections: np.ndarray
    tags: np.ndarray  # each article's tags joined by _TAG_SEP
    content_hashes: np.ndarray
    published: np.ndarray  # float64 epoch seconds, NaN when undated
    title_keys: np.ndarray  # int64, title_key of each title
    section_names: tuple[str, ...]
    section_codes: np.ndarray  # int32 index into section_names, NO_SECTION for none
    alive: np.ndarray  # bool: False once removed or replaced
    positions: IdPositions
    recent_order: np.ndarray  # positions newest first
    recent_by_section: tuple[np.ndarray, ...]  # the same, per section code
    # Newsroom fields: codes into the names (NO_CODE: none), None when no article has one.
    kind_names: tuple[str, ...] = ()
    kind_codes: np.ndarray | None = None
    language_names: tuple[str, ...] = ()
    language_codes: np.ndarray | None = None
    embargo: np.ndarray | None = None  # float64 epoch seconds, NaN: none
    expires: np.ndarray | None = None  # float64 epoch seconds, NaN: none
    held: np.ndarray | None = None  # bool: do_not_recommend

    @classmethod
    def from_columns(cls, columns: dict[str, Sequence], published: np.ndarray, title_keys: np.ndarray,
                     alive: np.ndarray | None = None, newsroom: dict | None = None) -> "ArticleTable":
        """A table from articles.json's columns and the snapshot's arrays (``newsroom``:
        the NEWSROOM arrays the snapshot has)."""
        made = {name: _column(name, [_TAG_SEP.join(t) for t in columns[name]] if name == "tags" else columns[name])
                for name in COLUMNS}
        sections = made["sections"].tolist()
        names = tuple(sorted({s for s in sections if s}))
        code_of = {name: code for code, name in enumerate(names)}
        codes = np.array([code_of[s] if s else NO_SECTION for s in sections], dtype=np.int32)
        published = np.asarray(published, dtype=np.float64)
        order = recent_first(published)
        kind_names, kind_codes = _coded((), None, columns.get("kinds"), 0)
        language_names, language_codes = _coded((), None, columns.get("languages"), 0)
        newsroom = newsroom or {}
        return cls(**made, published=published, title_keys=np.asarray(title_keys, dtype=np.int64),
                   section_names=names, section_codes=codes,
                   alive=np.ones(len(published), dtype=bool) if alive is None else alive,
                   positions=IdPositions(made["ids"]), recent_order=order,
                   recent_by_section=_by_section(order, codes, len(names)),
                   kind_names=kind_names, kind_codes=kind_codes, language_names=language_names,
                   language_codes=language_codes, embargo=newsroom.get("embargo_until"),
                   expires=newsroom.get("expires_at"), held=newsroom.get("do_not_recommend"))

    @classmethod
    def of(cls, articles: Sequence[Article]) -> "ArticleTable":
        columns, published, title_keys = columns_of(articles)
        return cls.from_columns(columns, published, title_keys, newsroom=newsroom_of(articles))

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ lookups
    def position_of(self, article_id: object) -> int | None:
        """The live row of ``article_id``, or None."""
        pos = self.positions.get(article_id)
        return pos if pos is not None and self.alive[pos] else None

    def require(self, ids: Sequence[object]) -> np.ndarray:
        """Live positions of ``ids``; UnknownArticleError names the first missing one."""
        positions = self.positions.get_many(ids)
        missing = (positions < 0) | ~self.alive[np.maximum(positions, 0)]
        if missing.any():
            raise _unknown(ids[int(np.argmax(missing))])
        return positions

    def require_one(self, article_id: object) -> int:
        """The live position of ``article_id``; UnknownArticleError when there is none."""
        pos = self.position_of(article_id)
        if pos is None:
            raise _unknown(article_id)
        return pos

    def live_positions(self) -> np.ndarray:
        """Positions of live articles, in index order (a replaced row is not live)."""
        return np.flatnonzero(self.alive)

    def section_code(self, name: str | None) -> int:
        if not name:
            return NO_SECTION
        try:
            return self.section_names.index(name)
        except ValueError:
            return NO_SECTION

    def section_codes_of(self, names: Iterable[str]) -> np.ndarray:
        """Codes of the named sections this table has (unknown names match nothing)."""
        return np.array([self.section_names.index(s) for s in names if s in self.section_names], dtype=np.int32)

    def kind_codes_of(self, names: Iterable[str]) -> np.ndarray:
        """Codes of the named kinds this table has (unknown names match nothing)."""
        return np.array([self.kind_names.index(k) for k in names if k in self.kind_names], dtype=np.int32)

    def language_code(self, name: str | None) -> int:
        """The code of a language; NO_CODE for none, -2 (matches no coded article) for
        one this table does not have."""
        if not name:
            return NO_CODE
        return self.language_names.index(name) if name in self.language_names else NO_CODE - 1

    def tags_of(self, position: int) -> list[str]:
        text = self.tags[position]
        return text.split(_TAG_SEP) if text else []

    def tagged(self, tag: str) -> np.ndarray:
        """Positions of the articles with ``tag`` (a pass over every article's tags)."""
        return np.fromiter((i for i, text in enumerate(self.tags.tolist()) if text and tag in text.split(_TAG_SEP)),
                           dtype=np.int64)

    def metadata(self) -> dict[str, list]:
        """The columns articles.json stores."""
        out = {name: getattr(self, name).tolist() for name in COLUMNS}
        out["tags"] = [t.split(_TAG_SEP) if t else [] for t in out["tags"]]
        for name, names, codes in (("kinds", self.kind_names, self.kind_codes),
                                   ("languages", self.language_names, self.language_codes)):
            out[name] = [None] * len(self) if codes is None else [names[c] if c >= 0 else None for c in codes.tolist()]
        return out

    # ------------------------------------------------------------------ new tables
    def with_added(self, articles: Sequence[Article]) -> "ArticleTable":
        """This table with ``articles`` appended; a known id's older row stops being live.
        Costs a copy of each column (tens of ms at a million articles): calls on the old
        table go on meanwhile, since nothing is changed in place."""
        columns, published, title_keys = columns_of(articles)
        start = len(self)
        made = {name: np.concatenate([getattr(self, name), _column(
            name, [_TAG_SEP.join(t) for t in columns[name]] if name == "tags" else columns[name])])
            for name in COLUMNS}
        names = self.section_names + tuple(sorted({s for s in columns["sections"] if s} - set(self.section_names)))
        codes = np.array([names.index(s) if s else NO_SECTION for s in columns["sections"]], dtype=np.int32)
        alive = np.concatenate([self.alive, np.ones(len(articles), dtype=bool)])
        added = {}
        for offset, article in enumerate(articles):
            old = self.positions.get(article.id) if article.id not in added else added[article.id]
            if old is not None:
                alive[old] = False  # the new version replaces it
            added[article.id] = start + offset
        all_published = np.concatenate([self.published, published])
        all_codes = np.concatenate([self.section_codes, codes])
        order = _insert_recent(self.recent_order, all_published, start)
        kind_names, kind_codes = _coded(self.kind_names, self.kind_codes, columns["kinds"], start)
        language_names, language_codes = _coded(self.language_names, self.language_codes, columns["languages"], start)
        news = newsroom_of(articles)
        newsroom = {name: _extended(mine, news[name], start, len(articles))
                    for name, mine in zip(NEWSROOM, (self.embargo, self.expires, self.held))}
        return replace(self, **made, published=all_published, title_keys=np.concatenate([self.title_keys, title_keys]),
                       section_names=names, section_codes=all_codes, alive=alive,
                       positions=self.positions.with_added(made["ids"], added), recent_order=order,
                       recent_by_section=_by_section(order, all_codes, len(names)),
                       kind_names=kind_names, kind_codes=kind_codes, language_names=language_names,
                       language_codes=language_codes, embargo=newsroom["embargo_until"],
                       expires=newsroom["expires_at"], held=newsroom["do_not_recommend"])

    def with_removed(self, positions: Sequence[int]) -> "ArticleTable":
        alive = self.alive.copy()
        alive[np.asarray(positions, dtype=np.int64)] = False
        return replace(self, alive=alive)


def columns_of(articles: Sequence[Article]) -> tuple[dict[str, list], np.ndarray, np.ndarray]:
    """articles.json's columns and the published / title_keys arrays of ``articles``."""
    columns = {
        "ids": [a.id for a in articles], "titles": [a.title for a in articles],
        "urls": [a.url for a in articles], "sections": [a.section for a in articles],
        "tags": [list(a.tags) for a in articles], "content_hashes": [a.content_hash for a in articles],
        "kinds": [a.kind for a in articles], "languages": [a.language for a in articles],
    }
    published = np.array([a.published_at.timestamp() if a.published_at else np.nan for a in articles],
                         dtype=np.float64)
    keys = np.array([title_key(a.title) for a in articles], dtype=np.int64)
    return columns, published, keys


def newsroom_of(articles: Sequence[Article]) -> dict[str, np.ndarray | None]:
    """The NEWSROOM arrays of ``articles``; None for a field no article has."""
    def stamp(when) -> float:
        return when.timestamp() if when is not None else np.nan

    out: dict[str, np.ndarray | None] = {
        "embargo_until": np.array([stamp(a.embargo_until) for a in articles], dtype=np.float64),
        "expires_at": np.array([stamp(a.expires_at) for a in articles], dtype=np.float64),
        "do_not_recommend": np.array([a.do_not_recommend for a in articles], dtype=bool),
    }
    return {name: (None if not len(a) or (a.dtype == bool and not a.any()) or
                   (a.dtype != bool and np.isnan(a).all()) else a) for name, a in out.items()}


def _coded(names: tuple[str, ...], codes: np.ndarray | None, values: Sequence | None,
           start: int) -> tuple[tuple[str, ...], np.ndarray | None]:
    """(names, codes) of a text column: ``codes`` (for ``start`` rows, None: all NO_CODE)
    extended with ``values``; None while no row has a value."""
    values = list(values or ())
    new = tuple(sorted({v for v in values if v} - set(names)))
    names = names + new
    if codes is None and not new:
        return names, None
    index = {name: code for code, name in enumerate(names)}
    added = np.array([index[v] if v else NO_CODE for v in values], dtype=np.int32)
    before = codes if codes is not None else np.full(start, NO_CODE, dtype=np.int32)
    return names, np.concatenate([before, added]) if len(added) else before


def _extended(mine: np.ndarray | None, theirs: np.ndarray | None, start: int, count: int) -> np.ndarray | None:
    """A NEWSROOM array over ``start`` rows extended by ``count`` rows (None: no value)."""
    if mine is None and theirs is None:
        return None
    empty = (lambda n, like: np.zeros(n, bool) if like.dtype == bool else np.full(n, np.nan))
    like = mine if mine is not None else theirs
    return np.concatenate([mine if mine is not None else empty(start, like),
                           theirs if theirs is not None else empty(count, like)])


def _by_section(order: np.ndarray, codes: np.ndarray, n_sections: int) -> tuple[np.ndarray, ...]:
    in_order = codes[order]
    return tuple(order[in_order == code] for code in range(n_sections))


def _insert_recent(order: np.ndarray, published: np.ndarray, start: int) -> np.ndarray:
    """``order`` (newest first over rows before ``start``) with rows from ``start`` on
    placed where they belong: a search and an insert, not a sort of the archive."""
    new = np.arange(start, len(published))
    key = np.where(np.isnan(published), -np.inf, published)
    new = new[np.argsort(-key[new], kind="stable")]
    at = np.searchsorted(key[order][::-1], key[new], side="left")  # ascending view of the order
    return np.insert(order, len(order) - at, new).astype(order.dtype)


def _unknown(article_id: object) -> UnknownArticleError:
    return UnknownArticleError(
        f"article id {article_id!r} is not in the index; pass the article itself (a dict with title "
        "and body) to get a box for an unseen article")
