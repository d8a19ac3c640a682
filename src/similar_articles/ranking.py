"""The ranking as pure functions over (sources x candidates) arrays: eligibility,
scores, same-story rules, MMR selection and the fallback order. Arrays in, arrays out;
no I/O, no index, no article table. A single box is a block of one source.
"""

from __future__ import annotations

import re
import zlib
from typing import Callable, Iterable

import numpy as np

SECONDS_PER_DAY = 86_400.0
NO_SECTION = -1  # the section code of an article without a section
NO_PICK = -1  # a box slot left empty
NO_CODE = -1  # the kind or language code of an article without one (table.NO_CODE)

_TITLE_KEY_RE = re.compile(r"[^0-9a-z]+")


def title_key(title: str) -> int:
    """A number equal for titles that differ only in case, punctuation and spacing.

    Syndicated copies keep the headline while the body is trimmed or re-edited, so an
    equal key marks the same story even when the vectors drift apart. 0 means no title.
    """
    folded = _TITLE_KEY_RE.sub(" ", title.lower()).strip()
    if len(folded) < 12:  # "Photos", "Live updates": too short to identify a story
        return 0
    return zlib.crc32(folded.encode("utf-8")) + 1


def recent_first(published: np.ndarray) -> np.ndarray:
    """Positions from newest to oldest, undated last (int32 below 2**31 articles)."""
    key = np.where(np.isnan(published), -np.inf, published)
    order = np.argsort(-key, kind="stable")
    return order.astype(np.int32) if len(order) < 2**31 else order


def eligible(positions: np.ndarray, *, alive: np.ndarray, published: np.ndarray, now: float,
             reference: np.ndarray | float, max_age_days: float | None, excluded: np.ndarray,
             section_codes: np.ndarray, allowed_sections: np.ndarray | None,
             hidden: tuple[np.ndarray | None, ...] = (), embargo: np.ndarray | None = None,
             expires: np.ndarray | None = None, kind_codes: np.ndarray | None = None,
             allowed_kinds: np.ndarray | None = None, language_codes: np.ndarray | None = None,
             source_languages: np.ndarray | int | None = None,
             allowed_languages: np.ndarray | None = None) -> np.ndarray:
    """Which candidates may be shown at all: live, not published after ``now`` (scheduled
    posts never leak), within ``max_age_days`` of ``reference`` (a source's point in
    time, broadcast against ``positions``), not ``excluded``, in an allowed section.
    Negative positions (empty pool slots) are never eligible. Undated articles are never
    treated as scheduled or too old.

    Newsroom fields, each skipped when None: ``hidden`` (bool masks by position: held
    articles, rules' blocks), ``embargo`` / ``expires`` (epoch seconds, NaN: none; shown
    from the embargo on, never from the expiry on), ``allowed_kinds`` (codes of
    ``kind_codes``), ``source_languages`` (each source's language code, broadcast like
    ``reference``) or ``allowed_languages``. An article without a kind passes any kind
    filter only if NO_CODE is allowed; one without a language (NO_CODE) passes any
    language rule, and so does every article in the box of a source without one."""
    valid = positions >= 0
    at = np.where(valid, positions, 0)
    pub = published[at]
    mask = valid & alive[at] & ~(pub > now)
    if max_age_days is not None:
        mask &= ~(np.abs(reference - pub) > max_age_days * SECONDS_PER_DAY)
    if excluded.size:
        # A call excludes a few articles: comparing with each beats np.isin's sort (~40 us).
        mask &= ~((positions[..., None] == excluded).any(axis=-1) if excluded.size <= 32 else
                  np.isin(positions, excluded))
    if allowed_sections is not None:
        mask &= np.isin(section_codes[at], allowed_sections)
    for held in hidden:
        if held is not None:
            mask &= ~held[at]
    if embargo is not None:
        mask &= ~(embargo[at] > now)
    if expires is not None:
        mask &= ~(expires[at] <= now)
    if allowed_kinds is not None:
        mask &= np.isin(kind_codes[at] if kind_codes is not None else np.full(at.shape, NO_CODE), allowed_kinds)
    if language_codes is not None and (source_languages is not None or allowed_languages is not None):
        language = language_codes[at]
        if allowed_languages is not None:
            mask &= (language == NO_CODE) | np.isin(language, allowed_languages)
        else:
            mask &= (language == NO_CODE) | (language == source_languages) | (source_languages == NO_CODE)
    return mask


def top_columns(sims: np.ndarray, n: int) -> np.ndarray:
    """Each row's ``n`` columns of largest ``sims`` (n <= columns), ties by lower
    column as a stable sort keeps them, in column order: a partition, not a sort."""
    part = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    least = np.take_along_axis(sims, part, axis=1).min(axis=1, keepdims=True)
    above, tied = sims > least, sims == least
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= n - above.sum(axis=1, keepdims=True)))
    return np.nonzero(chosen)[1].reshape(len(sims), n)


def blend(similarity: np.ndarray, overlap: np.ndarray, lexical_weight: float) -> np.ndarray:
    """Embedding cosine and term overlap mixed: (1 - w) * cosine + w * overlap (w = 1:
    the overlap alone, also where the cosine is -inf, an empty pool slot)."""
    if lexical_weight == 1.0:
        return np.asarray(overlap, dtype=np.result_type(similarity, overlap))
    return (1.0 - lexical_weight) * similarity + lexical_weight * overlap


def recency_decay(age_days: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """1 for an article of age 0, 0.5 at one half-life; 0 for undated or no half-life."""
    age = np.asarray(age_days, dtype=np.float64)
    if half_life_days is None:
        return np.zeros_like(age)
    decay = np.exp2(-np.abs(age) / half_life_days)
    return np.where(np.isnan(decay), 0.0, decay)


def scores(relevance: np.ndarray, age_days: np.ndarray, same_section: np.ndarray, *, freshness_margin: float,
           half_life_days: float | None, section_bonus: float) -> np.ndarray:
    """Relevance plus a freshness bonus below ``freshness_margin`` and ``section_bonus``
    for the source's section. Both bonuses are a few hundredths, so they only reorder
    candidates of nearly equal relevance: an article less relevant by more than the
    bonuses never outranks a more relevant one, however fresh or close to home."""
    return (relevance + freshness_margin * recency_decay(age_days, half_life_days)
            + section_bonus * same_section)


def not_the_source_story(similarity: np.ndarray, title_keys: np.ndarray, source_title_keys: np.ndarray,
                         copies_source: np.ndarray, duplicate_similarity: float) -> np.ndarray:
    """Candidates that are not the source's own story: below ``duplicate_similarity``,
    not under the source's headline (key 0: no headline), not a text copy of it."""
    same_title = (source_title_keys[:, None] != 0) & (title_keys == source_title_keys[:, None])
    return (similarity < duplicate_similarity) & ~same_title & ~copies_source


def select(rank: np.ndarray, open_: np.ndarray, k: int, *, mmr_lambda: float, duplicate_similarity: float,
           title_keys: np.ndarray, cosines_to: Callable[[np.ndarray], np.ndarray],
           copies_any: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Greedy MMR with same-story collapse, for every source at once.

    rank: (B, W) what a candidate is worth (score); open_: (B, W) which may be picked.
    Each step picks, per source, the open candidate with the best
    ``mmr_lambda * rank - (1 - mmr_lambda) * max cosine to the picks so far``, then
    closes every candidate of the pick's story: cosine to it at least
    ``duplicate_similarity`` (``cosines_to(picks)`` gives each source's pool against
    its pick, (B,) pool columns -> (B, W)) or the same headline key.
    ``copies_any(sources, candidates, picks)``: for each of those sources, whether its
    candidate (a pool column) copies any of its earlier picks (sources x step pool
    columns) — the costly check, so it is only
    made for the candidate about to be picked, which is dropped when it is a copy.
    Returns the picked pool columns, (B, k), NO_PICK where a box ran out.
    """
    open_ = open_.copy()
    rank = rank.astype(np.float64)
    n = len(rank)
    redundancy = np.zeros_like(rank)
    chosen = np.full((n, k), NO_PICK, dtype=np.int64)
    everyone = np.arange(n)
    for step in range(k):
        worth = mmr_lambda * rank - (1.0 - mmr_lambda) * redundancy if step else rank
        waiting = everyone[open_.any(axis=1)]
        while len(waiting):
            best = np.argmax(np.where(open_[waiting], worth[waiting], -np.inf), axis=1)
            open_[waiting, best] = False
            if step and copies_any is not None:
                copy = copies_any(waiting, best, chosen[waiting, :step])
                chosen[waiting[~copy], step] = best[~copy]
                waiting = waiting[copy]
                waiting = waiting[open_[waiting].any(axis=1)]  # try their next best
            else:
                chosen[waiting, step] = best
                break
        if step == k - 1:
            break  # nothing is picked after the last item: its story need not be closed
        picked = chosen[:, step] >= 0
        if not picked.any():
            break
        cosine = cosines_to(np.maximum(chosen[:, step], 0))
        keys = title_keys[everyone, np.maximum(chosen[:, step], 0)][:, None]
        same_story = (cosine >= duplicate_similarity) | ((keys != 0) & (title_keys == keys))
        open_ &= ~(same_story & picked[:, None])
        redundancy = np.where(picked[:, None], np.maximum(redundancy, cosine), redundancy)
    return chosen


def fallback_order(orders: Iterable[np.ndarray], need: int, is_eligible: Callable[[np.ndarray], np.ndarray],
                   taken: set[int]) -> list[int]:
    """The first ``need`` eligible positions not ``taken``, walking each order in turn
    (recent in the source's section, then recent overall). ``is_eligible`` maps a block
    of positions to a mask, so a long archive is scanned in blocks, not one by one."""
    picked: list[int] = []
    for positions in orders:
        for start in range(0, len(positions), 256):
            block = positions[start:start + 256]
            for pos in block[is_eligible(block)].tolist():
                if pos not in taken:
                    picked.append(pos)
                    taken.add(pos)
                    if len(picked) == need:
                        return picked
    return picked
