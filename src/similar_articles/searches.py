"""The searches that find an update's suspects without ranking every box (tracking.py
uses them): an added article's nearest articles by both retrievers and the score no
other article gives it, the reverse neighbours of removed articles (their candidate
lists), the articles at the edge of a fallback window."""

from __future__ import annotations

import numpy as np

from . import boxrules, ranking
from .config import RankingConfig
from .features.lexical import overlaps
from .pools import MAX_UNLISTED
from .state import ServingState

_NONE = np.zeros(0, np.int64)


def all_searched(state: ServingState) -> bool:
    """Past MAX_UNLISTED articles added since the build, every pool is a search."""
    return len(state.index) - state.listed_count() > MAX_UNLISTED


def listing(state: ServingState, positions: np.ndarray) -> np.ndarray:
    """The reverse neighbours of ``positions``: articles whose candidate list holds one
    (a scan of the lists, ~25 ms at a million articles, instead of a reverse index of
    4 bytes a list slot)."""
    positions = positions[positions < state.listed_count()]
    if not len(positions) or state.neighbours is None:
        return _NONE
    lists, out = state.neighbours.lists, []
    for start in range(0, len(lists), 65536):
        block = lists[start:start + 65536]
        out.append(start + np.flatnonzero(holds(block, positions)))
    return np.concatenate(out)


def holds(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Which rows hold any of ``positions``: compared one by one when they are few
    (np.isin sorts, ~3x slower for a handful)."""
    if len(positions) > 8:
        return np.isin(rows, positions).any(axis=1)
    out = np.zeros(len(rows), bool)
    for p in positions.tolist():
        out |= (rows == p).any(axis=1)
    return out


def nearest(state: ServingState, a: int, s: RankingConfig, width: int) -> tuple[np.ndarray, float, float]:
    """Article ``a``'s ``width`` nearest articles by both retrievers (the searches its
    own box's pool makes: the index keeps the dense answer), a score no other article
    gives it (the dense search's last cosine blended with the least overlap among the
    lexical finds, plus the largest bonuses) and that last cosine (-inf when the
    search held every article). The lexical part is as exact as the lexical retriever (it reads the
    postings of the newcomer's strongest terms), as the build's candidate lists are."""
    vector = state.index.vectors(np.array([a]))
    sims, found = state.index.search_many(vector, width)
    sims, found = sims[0][found[0] >= 0], found[0][found[0] >= 0]
    if len(found) < min(width, len(state.index)) or len(found) == len(state.index):
        return found, -np.inf, -np.inf
    bound = dense = float(sims[-1])
    if state.features.lexical is not None and s.lexical_weight > 0:
        prints = state.features.prints(np.array([a]))
        least = 1.0  # no postings: no bound on the overlap
        if state.postings is not None and len(state.postings.docs):
            finds = state.lexical_finds(prints, width, np.array([a]))[0]
            finds = finds[finds >= 0]
            least = 0.0
            if len(finds):
                theirs = state.features.prints(finds)
                least = float(overlaps(prints.ids, prints.weights, theirs.ids[None], theirs.weights[None]).min())
            found = np.union1d(found, finds)
        # Articles added since the build are in no postings: all of them are scored.
        found = np.union1d(found, np.arange(state.listed_count(), len(state.index)))
        bound = ranking.blend(bound, least, s.lexical_weight)
    return found, bound + s.freshness_margin + s.section_bonus, dense


def edge(state: ServingState, order: np.ndarray, p: int, now: float, k: int, s: RankingConfig) -> np.ndarray | None:
    """The articles around the end of a fallback window in ``order`` (its first
    max(20, 5k) eligible articles less a box's own picks and source), if ``p`` is
    eligible and before that end: the ones that may enter or leave a window when ``p``
    comes or goes. None when ``p`` is beyond it."""
    table = state.table
    need = max(20, 5 * k)
    passed = boxrules.passed_over(state)  # blocked articles a window skips: it may end that much later
    last = need + k + 2 + (passed or 0)
    if s.max_age_days is not None or passed is None:  # eligibility depends on the box: every recent article counts
        last = len(order)
    if not table.alive[p] or table.published[p] > now:
        return None
    eligible: list[int] = []
    for start in range(0, len(order), 256):
        block = order[start:start + 256]
        eligible.extend(block[table.alive[block] & ~(table.published[block] > now)].tolist())
        if len(eligible) > last:
            break
    if p not in eligible[:last + 1]:
        return None
    return np.array(eligible[max(0, need - k - 2):last + 1] + [p], np.int64)
