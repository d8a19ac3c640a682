"""Pure functions that turn nearest neighbours into a box: filters, recency, story
dedup, MMR diversity, fallback fill and reasons. Arrays in, arrays out; no I/O."""

from __future__ import annotations

import functools
import math
import re
import zlib
from typing import Callable, Iterable

import numpy as np

SECONDS_PER_DAY = 86_400.0
NO_SECTION = -1

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


def eligible(positions: np.ndarray, *, alive: np.ndarray, published: np.ndarray, now: float,
             reference: float, max_age_days: float | None, excluded: np.ndarray,
             section_codes: np.ndarray, allowed_sections: np.ndarray | None) -> np.ndarray:
    """Which candidate positions may be shown at all.

    published holds epoch seconds (NaN for undated articles, which are never treated as
    scheduled or too old). ``now`` hides articles not yet published, so scheduled posts
    never leak; ``reference`` is the point max age is measured from.
    """
    pub = published[positions]
    mask = alive[positions] & ~(pub > now)
    if max_age_days is not None:
        mask &= ~(np.abs(reference - pub) > max_age_days * SECONDS_PER_DAY)
    if excluded.size:
        mask &= ~np.isin(positions, excluded)
    if allowed_sections is not None:
        mask &= np.isin(section_codes[positions], allowed_sections)
    return mask


def cosines(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``vectors @ query`` over the last axis, for one pool (W, d) x (d,) or a stack of
    pools (B, W, d) x (B, d). One summation order for both (einsum's own loop, not a
    BLAS kernel chosen by shape), so a box ranked alone and in a batch agree to the bit.
    """
    return np.einsum("...wd,...d->...w", vectors, query)


def blend(similarity: np.ndarray, overlap: np.ndarray, lexical_weight: float) -> np.ndarray:
    """Embedding cosine and term overlap mixed: (1 - w) * cosine + w * overlap, the
    relevance of a pool to its source (float32 in, float32 out, whatever the batch)."""
    return (1.0 - lexical_weight) * similarity + lexical_weight * overlap


def recency_decay(age_days: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """1 for an article of age 0, 0.5 at one half-life; 0 for undated or no half-life."""
    age = np.asarray(age_days, dtype=np.float64)
    if half_life_days is None:
        return np.zeros_like(age)
    decay = np.exp2(-np.abs(age) / half_life_days)
    return np.where(np.isnan(decay), 0.0, decay)


def relevance(embedding_rows: Callable[[np.ndarray], np.ndarray],
              lexical_rows: Callable[[np.ndarray], np.ndarray] | None, *,
              lexical_weight: float, neighbours: int, neighbour_weight: float) -> np.ndarray:
    """Relevance of each candidate to the source.

    The pool is the source (row 0) and its candidates; ``*_rows(which)`` return those
    rows of the pool's embedding-cosine and term-overlap matrices, so only the rows
    needed are computed. Relevance blends embedding cosine with term overlap, then
    mixes in the candidate's mean blended similarity to the source's ``neighbours`` best
    candidates: an article the whole neighbourhood agrees on is more likely on the
    source's topic than one close to the source alone.
    """
    def blended(which: np.ndarray) -> np.ndarray:
        if lexical_rows is None or lexical_weight == 0:
            return embedding_rows(which)[:, 1:]
        return blend(embedding_rows(which), lexical_rows(which), lexical_weight)[:, 1:]

    direct = blended(np.array([0]))[0]
    if neighbours <= 0 or neighbour_weight == 0 or len(direct) == 0:
        return direct
    best = np.argsort(-direct, kind="stable")[:neighbours] + 1
    consensus = blended(best).mean(axis=0)
    return (1.0 - neighbour_weight) * direct + neighbour_weight * consensus


def freshness_scores(relevance: np.ndarray, age_days: np.ndarray, *, margin: float,
                     half_life_days: float | None) -> np.ndarray:
    """Relevance plus a freshness bonus below ``margin``.

    Because the bonus never reaches the margin, an article less relevant by more than
    the margin can never outrank a more relevant one, however fresh: the relevance floor.
    """
    return relevance + margin * recency_decay(age_days, half_life_days)


def section_scores(scores: np.ndarray, section_codes: np.ndarray, source_code: int,
                   bonus: float) -> np.ndarray:
    """Scores plus ``bonus`` for candidates of the source's section. Like freshness, a
    small bonus only reorders candidates of nearly equal relevance."""
    return scores + bonus * (section_codes == source_code)


def select_box(scores: np.ndarray, vectors: np.ndarray | None, k: int, *, mmr_lambda: float,
               duplicate_similarity: float, title_keys: np.ndarray,
               query_vector: np.ndarray | None = None, query_title_key: int = 0,
               source_similarity: np.ndarray | None = None,
               source_copies: np.ndarray | None = None,
               is_copy: Callable[[int, list[int]], bool] | None = None,
               cosines_to: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, int]:
    """Greedy MMR over a candidate pool with same-story collapse.

    Returns the chosen pool indices in box order and how many candidates were dropped
    as copies of the source article or of an item already chosen. ``vectors`` are the
    pool's unit vectors; ``scores`` its relevance (similarity + freshness). A caller
    that has the pool's cosine to the source passes it as ``source_similarity``
    instead of ``query_vector``. Only the chosen items' rows of the pool's cosine
    matrix are computed: k small products, not a pool x pool one. A caller whose
    vectors stay in the index passes ``cosines_to(i)`` (the pool's cosines to item i)
    and no ``vectors``.

    Same story: cosine at least ``duplicate_similarity``, an equal headline key, or a
    near-verbatim copy whatever the cosine (``copies.py``): ``source_copies`` marks the
    pool's copies of the source, ``is_copy(i, chosen)`` says whether pool item i copies
    any of the chosen items. That check is the costly one, so it is made lazily: only
    for the item about to be picked, which is dropped (and the next best tried) when
    it is a copy. ``dropped`` counts the copies met on the way, not every copy in the
    pool.
    """
    n = len(scores)
    if n == 0 or k <= 0:
        return np.empty(0, dtype=np.int64), 0
    open_ = np.ones(n, dtype=bool)
    if source_similarity is None and query_vector is not None:
        source_similarity = cosines(vectors, query_vector)
    if source_similarity is not None:
        open_ &= source_similarity < duplicate_similarity
    if query_title_key:
        open_ &= title_keys != query_title_key
    if source_copies is not None:
        open_ &= ~source_copies
    scores = np.asarray(scores, dtype=np.float64)
    redundancy = np.zeros(n, dtype=np.float64)  # max(0, cosine to the chosen items)
    chosen: list[int] = []
    dropped = n - int(open_.sum())
    while len(chosen) < k and open_.any():
        mmr = mmr_lambda * scores - (1.0 - mmr_lambda) * redundancy if chosen else scores
        best = int(np.argmax(np.where(open_, mmr, -np.inf)))
        open_[best] = False
        if chosen and is_copy is not None and is_copy(best, chosen):
            dropped += 1
            continue
        chosen.append(best)
        if len(chosen) == k:
            break  # nothing is picked after the last item: its story need not be closed
        cosine = cosines_to(best) if cosines_to is not None else cosines(vectors, vectors[best])
        same_story = cosine >= duplicate_similarity
        if title_keys[best]:
            same_story |= title_keys == title_keys[best]
        dropped += int((same_story & open_).sum())
        open_ &= ~same_story
        np.maximum(redundancy, cosine, out=redundancy)
    return np.asarray(chosen, dtype=np.int64), dropped


def recent_first(published: np.ndarray) -> np.ndarray:
    """Positions from newest to oldest, undated last. Computed once per snapshot."""
    key = np.where(np.isnan(published), -np.inf, published)
    order = np.argsort(-key, kind="stable")
    # int32 halves what the order and its per-section copies hold (8 B an article).
    return order.astype(np.int32) if len(order) < 2**31 else order


def fallback_positions(order: Iterable[np.ndarray], need: int, is_eligible, taken: set[int]
                       ) -> list[int]:
    """The first ``need`` eligible positions not yet ``taken``, walking each order in turn.

    ``is_eligible`` maps a block of positions to a boolean mask (the same filters as
    the candidates), so a long archive is scanned in blocks, not one by one.
    """
    picked: list[int] = []
    for positions in order:
        for start in range(0, len(positions), 256):
            block = positions[start:start + 256]
            for pos in block[is_eligible(block)].tolist():
                if pos not in taken:
                    picked.append(pos)
                    taken.add(pos)
                    if len(picked) == need:
                        return picked
    return picked


# The words of a reason repeat from item to item (an age in days, months or years, a
# similarity to two decimals, a section), so each phrase is formatted once and looked
# up after: an f-string costs ~0.5 us, a lookup ~0.1, and a box item pays for three.
_AGE_UNITS = (None, "day", "months", "years")  # by age kind: less than a day, days, months, years


def age_code(delta_seconds: float, relative_to_now: bool) -> int:
    """A number naming the words of describe_age(delta_seconds): the age's kind and
    count and which way it points. age_codes computes the same for arrays."""
    days = abs(delta_seconds) / SECONDS_PER_DAY
    if days < 1:
        kind, count = 0, 0
    elif days < 60:
        kind, count = 1, round(days)
    elif days < 730:
        kind, count = 2, round(days / 30.4)
    else:
        kind, count = 3, round(days / 365.25)
    return ((count * 4 + kind) * 2 + (delta_seconds > 0)) * 2 + relative_to_now


_AGE_EDGES = np.array([1.0, 60.0, 730.0])  # days at which age_code's kind changes
_AGE_UNIT_DAYS = np.array([np.inf, 1.0, 30.4, 365.25])  # by kind; less than a day counts 0


def age_codes(delta_seconds: np.ndarray, relative_to_now: np.ndarray) -> np.ndarray:
    """age_code of every element (NaN deltas give meaningless codes): np.rint rounds
    half to even like round(), on the same float64 quotients (days / 1.0 is days)."""
    days = np.abs(delta_seconds) / SECONDS_PER_DAY
    kind = np.searchsorted(_AGE_EDGES, days, side="right")  # NaN sorts last: kind 3, count 0
    count = np.rint(days / _AGE_UNIT_DAYS[kind])
    count = np.nan_to_num(count, nan=0.0, posinf=0.0).astype(np.int64)
    return ((count * 4 + kind) * 2 + (delta_seconds > 0)) * 2 + relative_to_now.astype(np.int64)


@functools.cache
def age_words(code: int) -> str:
    """"published 3 days earlier" style wording of an age_code."""
    relative_to_now, later = code & 1, not (code >> 1) & 1
    kind, count = (code >> 2) & 3, code >> 4
    if kind == 0:
        span = "less than a day"
    elif kind == 1:
        span = f"{count} day{'s' if count != 1 else ''}"
    else:
        span = f"{count} {_AGE_UNITS[kind]}"
    if relative_to_now:
        return f"published {span} ago"
    if kind == 0:
        return "published the same day"
    return f"published {span} {'later' if later else 'earlier'}"


def describe_age(delta_seconds: float, relative_to: str) -> str:
    """"published 3 days earlier" style wording; ``relative_to`` is "article" or "now"."""
    return age_words(age_code(delta_seconds, relative_to == "now"))


@functools.cache
def similarity_words(hundredths: int) -> str:
    """The reason for a cosine of ``hundredths`` / 100 (the cosine to two decimals,
    rounded half to even from its float64 product by 100, as np.rint does)."""
    return f"similarity {hundredths / 100:.2f}"


@functools.cache
def section_words(section: str) -> str:
    return f"same section: {section}"


def reasons_for(*, similarity: float | None, section: str | None, source_section: str | None,
                age_seconds: float, age_relative_to: str, fallback: str | None) -> tuple[str, ...]:
    """Why an item is in the box, in words an editor reads at a glance."""
    hundredths = round(similarity * 100.0) if similarity is not None and math.isfinite(similarity) else None
    age = None if math.isnan(age_seconds) else age_code(age_seconds, age_relative_to == "now")
    return reason_words(hundredths, section if section == source_section else None, age, fallback)


# Whole reason tuples repeat (a few hundred similarities and ages, a few sections), so
# each is made once: a cached lookup costs ~0.15 us against ~0.7 to build the tuple.
# Bounded, as a server runs for weeks: 16k tuples are ~3 MB.
@functools.lru_cache(maxsize=1 << 14)
def reason_words(similarity_hundredths: int | None, shared_section: str | None, age: int | None,
                 fallback: str | None) -> tuple[str, ...]:
    """reasons_for from an item's similarity in hundredths, its section where it is
    the source's (else None) and its age_code (None: not shown), which a block of
    items computes as arrays."""
    reasons = []
    if fallback:
        reasons.append(f"fallback: {fallback}")
    elif similarity_hundredths is not None:
        reasons.append(similarity_words(similarity_hundredths))
    if shared_section:
        reasons.append(section_words(shared_section))
    if age is not None:
        reasons.append(age_words(age))
    return tuple(reasons)
