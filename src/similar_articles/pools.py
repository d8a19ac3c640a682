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
from .articles import Article
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
    # Lexical fingerprints and copy sketches (with shingle counts) of unseen sources;
    # None for indexed ones, whose rows are read from the state when a call needs them
    # (most calls do not: their pairs' overlaps and copy bits are stored).
    prints: Fingerprints | None
    sketches: tuple[np.ndarray, np.ndarray] | None
    listed: np.ndarray  # bool: its neighbour list and stored pair features apply
    languages: np.ndarray | None = None  # int32 language codes (table.language_code); None: no language rule


class Request(NamedTuple):
    """What a call asks besides its sources."""

    k: int
    settings: RankingConfig
    now: float  # epoch seconds
    excluded: np.ndarray  # positions never shown
    sections: np.ndarray | None  # section codes a box may show; None: all
    all_cores: bool = True  # FAISS reads a large block on every core (False: blocks run on threads)
    # Policies and rules (boxrules.py): kind codes a box may show (None: all); "same"
    # (the source's language), None (any) or language codes; blocked positions (a bool
    # mask, None: none); source position -> positions blocked from its box.
    kinds: np.ndarray | None = None
    languages: str | np.ndarray | None = "same"
    blocked: np.ndarray | None = None
    blocked_from: dict | None = None


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
    table = state.table
    return Sources(positions, state.index.vectors(positions), table.published[positions],
                   table.section_codes[positions], table.title_keys[positions], None, None,
                   positions < state.listed_count(),
                   None if table.language_codes is None else table.language_codes[positions])


def unseen_sources(state: ServingState, article: Article, vector: np.ndarray) -> Sources:
    """An unseen article (with its unit ``vector``) as a source: its text features
    made now."""
    features, table = state.features, state.table
    own = table.position_of(article.id)
    return Sources(np.array([-1 if own is None else own]), vector[None, :],
                   np.array([article.published_at.timestamp() if article.published_at else np.nan]),
                   np.array([table.section_code(article.section)], np.int32),
                   np.array([ranking.title_key(article.title)], np.int64),
                   features.lexical.transform([article.text]) if features.lexical is not None else None,
                   tuple(np.asarray(a) for a in copies.sketches([copies.copy_text(article.body, article.title)]))
                   if features.sketches is not None else None,
                   np.zeros(1, dtype=bool), np.array([table.language_code(article.language)], np.int32))


def rank_block(state: ServingState, sources: Sources, request: Request, *, search: bool = False,
               fetch: int | None = None) -> RankedBlock:
    """The boxes of ``sources``. ``search``: pool from the index even for listed
    sources; ``fetch``: how many nearest a pool holds (default: the settings')."""
    settings, k = request.settings, request.k
    fetch = fetch or max(settings.candidates, 4 * k)
    need = min(settings.candidates, 4 * k)
    index, table = state.index, state.table
    listed = _listable(state, sources, fetch, search)
    if 0 < listed.sum() < len(listed):  # a block of one kind at a time
        return _split(state, sources, request, listed, {"fetch": fetch}, {"search": True, "fetch": fetch})
    positions, exhausted = _pool(state, sources, fetch, bool(listed.any()))

    bulk = request.all_cores and len(positions) >= 32  # below that, OpenMP's start costs more than it saves
    rows, where = index.read_rows(positions, all_cores=bulk)
    sims = index.products_at(sources.vectors, rows, where, all_cores=bulk)
    beyond = _beyond(state, sources, positions, sims, fetch, bool(listed.any()))
    order = np.argsort(-sims, axis=1, kind="stable")  # a search's lexical finds are kept whatever their cosine
    if listed.any():
        order = _kept(order, fetch, state.neighbours.width)
    each = np.arange(len(order))[:, None]
    positions, sims, where = positions[each, order], sims[each, order], where[each, order]
    # Each pool member's slot in its source's list, for the stored pair features; -1 if none.
    slots = np.where(order < state.neighbours.width, order, -1) if listed.any() else np.full(order.shape, -1)
    reference = _reference(sources, request)
    ok = eligible(state, request, positions, reference[:, None], sources.positions[:, None],
                  None if sources.languages is None else sources.languages[:, None])
    ok &= sims >= settings.min_similarity
    # Nothing outside a pool reaches the floor when the pool held every article it could,
    # or nothing outside it is as similar as min_similarity.
    complete = exhausted | (beyond < settings.min_similarity)
    short = (ok.sum(axis=1) < need) & ~complete
    if short.any() and (listed.any() or (fetch < MAX_FETCH and fetch < len(index))):
        # Filters left too few: search (four times wider if this already was a search).
        return _split(state, sources, request, short,
                      {"search": True, "fetch": fetch if listed.any() else 4 * fetch},
                      {"search": not listed.any(), "fetch": fetch})

    relevance = sims
    if state.features.lexical is not None and settings.lexical_weight > 0:
        relevance = ranking.blend(sims, _overlap(state, sources, positions, slots, ok), settings.lexical_weight)
    ok &= relevance >= state.relatedness_floor(settings.lexical_weight, settings.floor_quantile)
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


def _listable(state: ServingState, sources: Sources, fetch: int, search: bool) -> np.ndarray:
    """Which sources' pools are their neighbour lists (plus the articles added since)."""
    neighbours = state.neighbours
    if search or neighbours is None or fetch > neighbours.width or \
            len(state.index) - state.listed_count() > MAX_UNLISTED:
        return np.zeros(len(sources.positions), dtype=bool)
    return sources.listed


def _pool(state: ServingState, sources: Sources, fetch: int, listed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(positions, exhausted) of each source's pool: its list and then the articles added
    since (``listed``), or a search. A listed pool's column j < the list width is slot j."""
    if not listed:
        _, positions = state.index.search_many(sources.vectors, fetch)
        exhausted = (positions < 0).any(axis=1) | (positions.shape[1] < fetch)
        return _with_lexical(state, sources, positions.astype(np.int64), fetch), exhausted
    rows = state.neighbours.lists[sources.positions]
    exhausted = (rows < 0).any(axis=1)  # a short list held every article there was
    added = np.arange(state.listed_count(), len(state.index))
    # A pool keeps its ``fetch`` most similar added articles (_kept): one product with the
    # added rows chooses them, so a call reads ``fetch`` rows, not every added one.
    chosen = added[ranking.top_columns(state.index.added_products(sources.vectors), fetch)] if len(added) > fetch \
        else np.broadcast_to(added, (len(rows), len(added)))
    return np.hstack([rows, chosen]).astype(np.int64), exhausted


def _kept(order: np.ndarray, fetch: int, width: int) -> np.ndarray:
    """The columns a listed pool keeps, most similar first: its ``fetch`` most similar
    list members and ``fetch`` most similar articles added since the build, so that an
    added article never pushes a list member (a lexical find may have a low cosine)
    out of the pool: one article added changed 1.7% of all boxes at 100k that way."""
    listed = order < width
    rank = np.where(listed, np.cumsum(listed, axis=1), np.cumsum(~listed, axis=1)) - 1
    count = min(width, fetch) + min(order.shape[1] - width, fetch)
    if count == order.shape[1]:
        return order
    return np.take_along_axis(order, np.argsort(rank >= fetch, axis=1, kind="stable")[:, :count], axis=1)


def _beyond(state: ServingState, sources: Sources, positions: np.ndarray, sims: np.ndarray, fetch: int,
            listed: bool) -> np.ndarray:
    """A cosine no article outside each pool exceeds: stored for fused lists; else the
    least similar member the dense retriever found (everything it did not find is less
    similar; lexical finds say nothing about the rest)."""
    if listed and state.neighbours.beyond is not None:
        return state.neighbours.beyond[sources.positions].astype(np.float32)
    dense = slice(None) if listed else slice(0, fetch)
    return np.where(positions[:, dense] >= 0, sims[:, dense], np.inf).min(axis=1, initial=np.inf)


def _with_lexical(state: ServingState, sources: Sources, positions: np.ndarray, fetch: int) -> np.ndarray:
    """A searched pool with the lexical retriever's ``fetch`` best appended (those the
    dense search found already, and articles added since the build, are not repeated)."""
    if state.postings is None or not len(state.postings.docs):
        return positions
    prints = sources.prints if sources.prints is not None else state.features.prints(np.maximum(sources.positions, 0))
    found = state.lexical_finds(prints, fetch, sources.positions)
    for row in range(len(found)):
        found[row, np.isin(found[row], positions[row])] = -1
    return np.hstack([positions, found])


def _split(state: ServingState, sources: Sources, request: Request, mask: np.ndarray, first: dict,
           rest: dict) -> RankedBlock:
    """The boxes of sources[mask] ranked with the options ``first``, the others with
    ``rest``, in the sources' order."""
    def part(which: np.ndarray, how: dict) -> RankedBlock:
        return rank_block(state, subset(sources, np.flatnonzero(which)), request, **how)

    out = RankedBlock(np.full((len(mask), request.k), ranking.NO_PICK), np.zeros((len(mask), request.k)),
                      np.zeros((len(mask), request.k)), np.zeros((len(mask), request.k), np.int8))
    for which, how in ((mask, first), (~mask, rest)):
        if which.any():
            for mine, theirs in zip(out, part(which, how)):
                mine[which] = theirs
    return out


def subset(sources: Sources, at: np.ndarray) -> Sources:
    """The sources at rows ``at``."""
    return Sources(*(None if f is None else tuple(a[at] for a in f) if isinstance(f, tuple)
                     else f.take(at) if isinstance(f, Fingerprints) else f[at] for f in sources))


def eligible(state: ServingState, request: Request, positions: np.ndarray, reference, source,
             languages=None) -> np.ndarray:
    """ranking.eligible under the call's filters, the articles' newsroom fields and the
    rules, never the source itself. ``source`` / ``languages``: each source's position
    and language code, broadcast against ``positions``."""
    table = state.table
    same = isinstance(request.languages, str)
    mask = ranking.eligible(
        positions, alive=table.alive, published=table.published, now=request.now, reference=reference,
        max_age_days=request.settings.max_age_days, excluded=request.excluded, section_codes=table.section_codes,
        allowed_sections=request.sections, hidden=(table.held, request.blocked), embargo=table.embargo,
        expires=table.expires, kind_codes=table.kind_codes, allowed_kinds=request.kinds,
        language_codes=table.language_codes, source_languages=languages if same else None,
        allowed_languages=None if same else request.languages) & (positions != source)
    if request.blocked_from:
        for row, own in enumerate(np.atleast_1d(source).reshape(-1).tolist()):
            blocked = request.blocked_from.get(own)
            if blocked is not None:
                where = mask[row] if mask.ndim == 2 else mask
                where &= ~((positions[row] if positions.ndim == 2 else positions)[:, None] == blocked).any(axis=1)
    return mask


def _reference(sources: Sources, request: Request) -> np.ndarray:
    """The time ages are measured from: the call's, or each dated source's own."""
    if request.settings.recency_reference == "article":
        return np.where(np.isnan(sources.published), request.now, sources.published)
    return np.full(len(sources.published), request.now)


def _overlap(state: ServingState, sources: Sources, positions: np.ndarray, slots: np.ndarray,
             ok: np.ndarray) -> np.ndarray:
    """Term overlap of each source with its pool: stored for listed pairs, computed for
    the eligible rest, pair by pair (0 for the others, which are never shown: a listed
    pool's added members are often a few of its hundred)."""
    stored = state.neighbours.overlap if state.neighbours is not None else None
    from_list = (slots >= 0) & (stored is not None)
    out = np.where(from_list, stored[sources.positions[:, None], np.maximum(slots, 0)], 0).astype(np.float32) \
        if from_list.any() else np.zeros(positions.shape, np.float32)
    b, w = np.nonzero(ok & ~from_list)
    if len(b):
        pool = state.features.prints(positions[b, w])
        own = sources.prints.take(b) if sources.prints is not None else state.features.prints(sources.positions[b])
        out[b, w] = overlaps(own.ids, own.weights, pool.ids[:, None], pool.weights[:, None])[:, 0]
    return out


def _copies_source(state: ServingState, sources: Sources, positions: np.ndarray, slots: np.ndarray,
                   ok: np.ndarray, settings: RankingConfig) -> np.ndarray:
    """Which pool members copy their source's text: stored bits for listed pairs (when
    built with this threshold), estimated from the sketches for the rest."""
    out = np.zeros(positions.shape, dtype=bool)
    threshold = settings.copy_containment
    features = state.features
    if threshold is None or features.sketches is None:
        return out
    neighbours = state.neighbours
    from_list = np.zeros(positions.shape, dtype=bool)
    if neighbours is not None and neighbours.copy_bits is not None and neighbours.copy_threshold == threshold:
        from_list = slots >= 0
        bits = neighbours.copy_bits[sources.positions] if from_list.any() else None
        if bits is not None and bits.any():  # most articles are copied by none of their list
            flags = copies.copy_flags(bits, neighbours.width)
            out = flags[np.arange(len(flags))[:, None], np.maximum(slots, 0)] & from_list
    b, w = np.nonzero(ok & ~from_list)
    if len(b):
        if sources.sketches is not None:
            rows, counts = sources.sketches[0][b], sources.sketches[1][b]
        else:
            rows, counts = features.sketches.take(sources.positions[b]), features.shingles.take(sources.positions[b])
        at = positions[b, w]
        out[b, w] = copies.copies_pairwise(rows, counts, features.sketches.take(at), features.shingles.take(at),
                                           threshold)
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

    def copies_any(b: np.ndarray, w: np.ndarray, picked: np.ndarray) -> np.ndarray:
        steps = picked.shape[1]
        both = np.concatenate([np.repeat(positions[b, w], steps), positions[b[:, None], picked].reshape(-1)])
        rows, counts = features.sketches.take(both), features.shingles.take(both)
        half = len(both) // 2
        pairs = copies.copies_pairwise(rows[:half], counts[:half], rows[half:], counts[half:],
                                       settings.copy_containment)
        return pairs.reshape(len(b), steps).any(axis=1)

    chosen = ranking.select(rank, open_, request.k, mmr_lambda=settings.mmr_lambda,
                            duplicate_similarity=settings.duplicate_similarity, title_keys=title_keys,
                            cosines_to=cosines_to, copies_any=copies_any if copy_rule else None)
    has = chosen >= 0
    at = everyone[:, None], np.maximum(chosen, 0)
    scores = rank if scores is None else scores
    return RankedBlock(np.where(has, positions[at], ranking.NO_PICK), scores[at], sims[at],
                       np.where(has, kinds[at], 0))


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
            return eligible(state, request, candidates, reference[b], sources.positions[b],
                             None if sources.languages is None else sources.languages[b])

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
    part = subset(sources, at)
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
