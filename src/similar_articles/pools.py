"""Boxes for a block of sources: each source's candidate pool read from the serving
state as (sources x candidates) arrays, ranked by the pure functions of ranking.py.

This is the one ranking path. ``recommend(id)`` is a block of one source,
``recommend_many`` and the export rank blocks of a few hundred, the build's quality gate
ranks its sample: all through :func:`rank_block`.

A pool is an indexed source's neighbour list (found at build time) plus the articles
added since, or, for an unseen article or when the call's filters leave too few of the
list, a search of the index, widened until enough related articles pass the filters.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import ranking
from .config import RankingConfig
from .features import copies
from .features.lexical import Fingerprints, overlaps
from .state import ServingState

MAX_UNLISTED = 4096  # articles added since the build that a listed pool scores directly
MAX_FETCH = 4096  # the widest search a call makes for filters that leave too few
FALLBACK_KINDS = ("", "recent in section", "recent article")  # RankedBlock.kinds: 0 related
_FALLBACK_DROP = 10.0  # a fallback's rank is its similarity minus this per kind: after every related one


class Sources(NamedTuple):
    """The articles whose boxes are ranked together, one row each."""

    positions: np.ndarray  # int64: table row, -1 for an unseen article
    vectors: np.ndarray  # float32 (B, d)
    published: np.ndarray  # float64 epoch seconds, NaN when undated
    section_codes: np.ndarray  # int32, ranking.NO_SECTION when none (or unknown to the table)
    title_keys: np.ndarray  # int64
    prints: Fingerprints | None  # lexical fingerprints, None without lexical features
    sketches: tuple[np.ndarray, np.ndarray] | None  # copy sketches and shingle counts
    listed: np.ndarray  # bool: its neighbour list and stored pair features apply


class Request(NamedTuple):
    """What a call asks besides its sources."""

    k: int
    settings: RankingConfig
    now: float  # epoch seconds
    excluded: np.ndarray  # positions never shown
    sections: np.ndarray | None  # section codes a box may show; None: all


class RankedBlock(NamedTuple):
    """Each source's box, item j of source b at [b, j]: ``positions`` (NO_PICK past
    a box's end), ``scores``, ``similarities`` (cosine to the source) and ``kinds``
    (0 related, else the FALLBACK_KINDS index)."""

    positions: np.ndarray
    scores: np.ndarray
    similarities: np.ndarray
    kinds: np.ndarray


def indexed_sources(state: ServingState, positions: np.ndarray) -> Sources:
    """Sources for indexed articles at ``positions``."""
    table, features = state.table, state.features
    return Sources(positions, state.index.vectors(positions), table.published[positions],
                   table.section_codes[positions], table.title_keys[positions],
                   features.prints(positions) if features.term_ids is not None else None,
                   (features.sketches.take(positions), features.shingles.take(positions))
                   if features.sketches is not None else None,
                   positions < state.listed_count())


def rank_block(state: ServingState, sources: Sources, request: Request, *, search: bool = False,
               fetch: int | None = None) -> RankedBlock:
    """The boxes of ``sources``. ``search``: pool from the index even for listed
    sources; ``fetch``: how many nearest a pool holds (default: the settings')."""
    settings, k = request.settings, request.k
    fetch = fetch or max(settings.candidates, 4 * k)
    need = min(settings.candidates, 4 * k)
    index, table = state.index, state.table
    positions, slots, exhausted = _pool(state, sources, fetch, search)

    rows, where = index.read_rows(positions, all_cores=len(positions) >= 32)
    sims = index.products_at(sources.vectors, rows, where, all_cores=len(positions) >= 32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :fetch]
    positions, slots, sims, where = (np.take_along_axis(a, order, 1) for a in (positions, slots, sims, where))
    valid = positions >= 0
    reference = _reference(sources, request)
    ok = ranking.eligible(positions, alive=table.alive, published=table.published, now=request.now,
                          reference=reference[:, None], max_age_days=settings.max_age_days,
                          excluded=request.excluded, section_codes=table.section_codes,
                          allowed_sections=request.sections)
    ok &= (positions != sources.positions[:, None]) & (sims >= settings.min_similarity)
    # Nothing outside a pool reaches the floor when the pool held every article it could,
    # or its least similar member already misses it.
    lowest = np.where(valid, sims, np.inf).min(axis=1, initial=np.inf)
    complete = exhausted | (lowest < settings.min_similarity)
    short = (ok.sum(axis=1) < need) & ~complete
    if short.any() and (not search or (fetch < MAX_FETCH and fetch < len(index))):
        return _rerank(state, sources, request, short, search, fetch)

    relevance = sims
    if sources.prints is not None and settings.lexical_weight > 0:
        relevance = ranking.blend(sims, _overlap(state, sources, positions, slots, ok), settings.lexical_weight)
    age_days = (reference[:, None] - table.published[np.maximum(positions, 0)]) / ranking.SECONDS_PER_DAY
    same_section = (table.section_codes[np.maximum(positions, 0)] == sources.section_codes[:, None]) & \
        (sources.section_codes[:, None] != ranking.NO_SECTION)
    scores = ranking.scores(relevance, age_days, same_section, freshness_margin=settings.freshness_margin,
                            half_life_days=settings.half_life_days, section_bonus=settings.section_bonus)
    title_keys = table.title_keys[np.maximum(positions, 0)]
    open_ = ok & ranking.not_the_source_story(sims, title_keys, sources.title_keys,
                                              _copies_source(state, sources, positions, slots, ok, settings),
                                              settings.duplicate_similarity)
    kinds = np.zeros(positions.shape, np.int8)
    block = _select(state, request, positions, rows, where, scores, open_, title_keys, sources, kinds, sims)
    if settings.fallback:
        lacking = (block.positions < 0).any(axis=1)
        if lacking.any():
            block = _with_fallback(state, sources, request, block, lacking, positions, scores, sims, open_)
    return block


def _pool(state: ServingState, sources: Sources, fetch: int, search: bool
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, list slots (-1: not from the list), exhausted) of each source's pool:
    its list and the articles added since, or a search."""
    lists = state.neighbours.lists if state.neighbours is not None else None
    unlisted = len(state.index) - state.listed_count()
    listed = sources.listed & (not search) & (lists is not None) & (unlisted <= MAX_UNLISTED)
    if lists is not None:
        listed &= fetch <= lists.shape[1]
    width = max(lists.shape[1] + unlisted if listed.any() else 0, fetch if (~listed).any() else 0)
    positions = np.full((len(listed), width), -1, dtype=np.int64)
    slots = np.full((len(listed), width), -1, dtype=np.int64)
    exhausted = np.zeros(len(listed), dtype=bool)
    if listed.any():
        at = np.flatnonzero(listed)
        rows = lists[sources.positions[at]]
        positions[at, :rows.shape[1]] = rows
        slots[at, :rows.shape[1]] = np.where(rows >= 0, np.arange(rows.shape[1]), -1)
        positions[at, rows.shape[1]:rows.shape[1] + unlisted] = np.arange(state.listed_count(), len(state.index))
        exhausted[at] = (rows < 0).any(axis=1)  # a short list held every article there was
    if (~listed).any():
        at = np.flatnonzero(~listed)
        _, found = state.index.search_many(sources.vectors[at], fetch)
        positions[at, :found.shape[1]] = found
        exhausted[at] = (found < 0).any(axis=1) | (found.shape[1] < fetch)
    return positions, slots, exhausted


def _rerank(state: ServingState, sources: Sources, request: Request, short: np.ndarray, searched: bool,
            fetch: int) -> RankedBlock:
    """Rank the ``short`` sources again from a search (four times wider if this already
    was one), the others as they are; the boxes in the sources' order."""
    def part(mask: np.ndarray, **how) -> RankedBlock:
        return rank_block(state, Sources(*(None if f is None else (tuple(a[mask] for a in f)) if isinstance(f, tuple)
                                           else f.take(np.flatnonzero(mask)) if isinstance(f, Fingerprints)
                                           else f[mask] for f in sources)), request, **how)

    widened = part(short, search=True, fetch=fetch * 4 if searched else fetch)
    rest = part(~short, search=searched, fetch=fetch) if (~short).any() else None
    out = RankedBlock(*(np.empty((len(short), request.k), a.dtype) for a in widened))
    for block, mask in ((widened, short), (rest, ~short)):
        if block is not None:
            for mine, theirs in zip(out, block):
                mine[mask] = theirs
    return out


def _reference(sources: Sources, request: Request) -> np.ndarray:
    """The time ages are measured from: the call's, or each dated source's own."""
    if request.settings.recency_reference == "article":
        return np.where(np.isnan(sources.published), request.now, sources.published)
    return np.full(len(sources.published), request.now)


def _overlap(state: ServingState, sources: Sources, positions: np.ndarray, slots: np.ndarray,
             ok: np.ndarray) -> np.ndarray:
    """Term overlap of each source with its pool: stored for listed pairs, computed for
    the rest (only rows with an eligible unlisted member are computed)."""
    stored = state.neighbours.overlap if state.neighbours is not None else None
    out = np.zeros(positions.shape, np.float32)
    from_list = (slots >= 0) & sources.listed[:, None] & (stored is not None)
    if from_list.any():
        b, w = np.nonzero(from_list)
        out[b, w] = stored[sources.positions[b], slots[b, w]]
    todo = np.flatnonzero((ok & ~from_list).any(axis=1))
    if len(todo):
        pool = state.features.prints(np.maximum(positions[todo], 0))
        computed = overlaps(sources.prints.ids[todo], sources.prints.weights[todo], pool.ids, pool.weights)
        out[todo] = np.where(from_list[todo], out[todo], computed)
    return out


def _copies_source(state: ServingState, sources: Sources, positions: np.ndarray, slots: np.ndarray,
                   ok: np.ndarray, settings: RankingConfig) -> np.ndarray:
    """Which pool members copy their source's text: stored bits for listed pairs (when
    built with this threshold), estimated from the sketches for the rest."""
    out = np.zeros(positions.shape, dtype=bool)
    threshold = settings.copy_containment
    if threshold is None or sources.sketches is None:
        return out
    neighbours = state.neighbours
    from_list = np.zeros(positions.shape, dtype=bool)
    if neighbours is not None and neighbours.copy_bits is not None and neighbours.copy_threshold == threshold:
        from_list = (slots >= 0) & sources.listed[:, None]
        rows = np.flatnonzero(from_list.any(axis=1))
        if len(rows):
            flags = copies.copy_flags(neighbours.copy_bits[sources.positions[rows]], neighbours.width)
            out[rows] = np.take_along_axis(flags, np.maximum(slots[rows], 0), 1) & from_list[rows]
    b, w = np.nonzero(ok & ~from_list)
    if len(b):
        rows, counts = sources.sketches
        at = positions[b, w]
        out[b, w] = copies.copies_pairwise(rows[b], counts[b], state.features.sketches.take(at),
                                           state.features.shingles.take(at), threshold)
    return out


def _select(state: ServingState, request: Request, positions: np.ndarray, rows: np.ndarray, where: np.ndarray,
            rank: np.ndarray, open_: np.ndarray, title_keys: np.ndarray, sources: Sources, kinds: np.ndarray,
            sims: np.ndarray, scores: np.ndarray | None = None) -> RankedBlock:
    """ranking.select over a pool whose vectors are ``rows``/``where``; the picks' values."""
    settings, index = request.settings, state.index
    everyone = np.arange(len(positions))
    features = state.features
    copy_rule = settings.copy_containment is not None and features.sketches is not None

    def cosines_to(picks: np.ndarray) -> np.ndarray:
        return index.products_at(rows[np.maximum(where[everyone, picks], 0)], rows, where)

    def copies_any(candidates: np.ndarray, picked: np.ndarray) -> np.ndarray:
        b, w = candidates[:, 0], candidates[:, 1]
        a = np.repeat(positions[b, w], picked.shape[1])
        p = positions[b[:, None], picked].reshape(-1)
        pairs = copies.copies_pairwise(features.sketches.take(a), features.shingles.take(a),
                                       features.sketches.take(p), features.shingles.take(p),
                                       settings.copy_containment)
        return pairs.reshape(len(b), -1).any(axis=1)

    chosen = ranking.select(rank, open_, request.k, mmr_lambda=settings.mmr_lambda,
                            duplicate_similarity=settings.duplicate_similarity, title_keys=title_keys,
                            cosines_to=cosines_to, copies_any=copies_any if copy_rule else None)
    has = chosen >= 0
    at = np.maximum(chosen, 0)
    scores = rank if scores is None else scores
    return RankedBlock(np.where(has, np.take_along_axis(positions, at, 1), ranking.NO_PICK),
                       np.take_along_axis(scores, at, 1), np.take_along_axis(sims, at, 1),
                       np.where(has, np.take_along_axis(kinds, at, 1), 0))


def _with_fallback(state: ServingState, sources: Sources, request: Request, block: RankedBlock,
                   lacking: np.ndarray, positions: np.ndarray, scores: np.ndarray, sims: np.ndarray,
                   open_: np.ndarray) -> RankedBlock:
    """Boxes of the ``lacking`` sources ranked again over their pool plus recent
    articles (of the source's section, then of any), which rank after every related
    one, most similar first; the same story rules hold across both."""
    table, settings, k = state.table, request.settings, request.k
    at = np.flatnonzero(lacking)
    reference = _reference(sources, request)
    extra = []
    for b in at.tolist():
        def is_eligible(candidates: np.ndarray, b: int = b) -> np.ndarray:
            return ranking.eligible(candidates, alive=table.alive, published=table.published, now=request.now,
                                    reference=reference[b], max_age_days=settings.max_age_days,
                                    excluded=request.excluded, section_codes=table.section_codes,
                                    allowed_sections=request.sections) & (candidates != sources.positions[b])

        taken = set(block.positions[b][block.positions[b] >= 0].tolist())
        code = int(sources.section_codes[b])
        found = []
        for kind, order in ((1, table.recent_by_section[code] if code != ranking.NO_SECTION else None),
                            (2, table.recent_order)):
            if order is not None:
                found += [(p, kind) for p in ranking.fallback_order([order], max(20, 5 * k), is_eligible, taken)]
        extra.append(found)
    width = max(len(e) for e in extra)
    fall = np.full((len(at), width), -1, dtype=np.int64)
    fall_kinds = np.zeros((len(at), width), dtype=np.int8)
    for i, found in enumerate(extra):
        fall[i, :len(found)] = [p for p, _ in found]
        fall_kinds[i, :len(found)] = [kind for _, kind in found]
    pool = np.hstack([positions[at], fall])
    rows, where = state.index.read_rows(pool)
    part = Sources(*(None if f is None else tuple(a[at] for a in f) if isinstance(f, tuple)
                     else f.take(at) if isinstance(f, Fingerprints) else f[at] for f in sources))
    fall_sims = state.index.products_at(part.vectors, rows, where)[:, positions.shape[1]:]
    title_keys = table.title_keys[np.maximum(pool, 0)]
    fall_open = (fall >= 0) & ranking.not_the_source_story(
        fall_sims, title_keys[:, positions.shape[1]:], part.title_keys,
        _copies_source(state, part, fall, np.full(fall.shape, -1), fall >= 0, settings),
        settings.duplicate_similarity)
    rank = np.hstack([scores[at], fall_sims - _FALLBACK_DROP * fall_kinds])
    shown = np.hstack([scores[at], fall_sims])  # a fallback's score is its similarity
    ranked = _select(state, request, pool, rows, where, rank, np.hstack([open_[at], fall_open]), title_keys,
                     part, np.hstack([np.zeros(positions[at].shape, np.int8), fall_kinds]),
                     np.hstack([sims[at], fall_sims]), shown)
    out = RankedBlock(*(a.copy() for a in block))
    for mine, theirs in zip(out, ranked):
        mine[at] = theirs
    return out
