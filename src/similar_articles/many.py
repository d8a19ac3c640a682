"""Boxes for many indexed articles at once: what recommend_many and the export run.

A call for an indexed article with a candidate list is the same few array steps
whatever the article: read its list, recompute the cosines, filter, score, pick by MMR.
Here those steps run for a block of sources together, as (sources x list width)
arrays, so numpy's fixed cost per step (a microsecond or two, most of a single call)
is paid once per block instead of once per article.

A source this cannot finish comes back unfinished, for ``Recommender`` to do alone: a
pool too small for the box (the fallback fills it), filters that leave too little of
the list (a live search), articles added since the build, or settings this path does
not cover (the neighbour blend). Every step is the single path's, element by
element, so the boxes are the same to the bit (the tests compare them).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from . import ranking
from .features import copies

if TYPE_CHECKING:  # pragma: no cover
    from .config import RankingConfig
    from .recommender import _Served

PLAN_DEPTH = 2  # items of the box planned at build: the default box; larger k rank in full
NO_PLAN = 255  # a box_plans entry for a source without a plan


class Boxes(NamedTuple):
    """The boxes of a block of sources, item j of source b at [b, j]: ``positions``
    (-1 past a box's end), their ``slots`` in the source's candidate list,
    ``scores``, ``similarities``; ``finished`` is False where the source needs the
    single path (its row is then meaningless)."""

    positions: np.ndarray
    slots: np.ndarray
    scores: np.ndarray
    similarities: np.ndarray
    finished: np.ndarray


def _unfinished(n: int, k: int) -> Boxes:
    return Boxes(np.full((n, k), -1, dtype=np.int64), np.full((n, k), -1, dtype=np.int64), np.zeros((n, k)),
                 np.zeros((n, k)), np.zeros(n, dtype=bool))


def box_plans(served: "_Served", settings: "RankingConfig", window: tuple[float, float], depth: int = PLAN_DEPTH,
              block: int = 256) -> np.ndarray | None:
    """Each built article's box under ``settings`` for any call in ``window`` (epoch
    seconds) with no filter, as the list slots of its items: uint8 (articles, depth),
    NO_PLAN where the article has none. None when the settings filter by age, there
    are no lists, or no article has a plan.

    What time changes in such a box is the freshness bonus: with every listed article
    dated before the window, each one's bonus is margin * 2^(-age / half-life), the same
    factor times its value at the window's start, so every score MMR compares is linear
    in that factor. A pick that wins at both ends of the window then wins all through
    it, and so does the next given the first (greedy MMR fixes item j before item j + 1,
    which also makes a plan's first k items the box of k). An article gets a plan when
    the box is the same at both ends, full, and drawn from a list dated before the
    window. Costs the build two recommend_many passes (~0.1 ms an article each) and a
    server 2 bytes an article; recommender._planned_box says when a call may use it.
    """
    lists = served.candidate_lists
    if lists is None or settings.max_age_days is not None or lists.shape[1] >= NO_PLAN:
        return None
    plans = np.full((len(lists), depth), NO_PLAN, dtype=np.uint8)
    published = served.corpus.published
    for start in range(0, len(lists), block):
        sources = np.arange(start, min(start + block, len(lists)))
        ends = [listed_boxes(served, sources, depth, settings, now_ts=at, visible_at=np.inf,
                             excluded=np.empty(0, np.int64), allowed=None, all_cores=True) for at in window]
        rows = lists[sources]
        settled = ~((rows >= 0) & (published[np.maximum(rows, 0)] > window[0])).any(axis=1)  # undated: NaN
        planned = settled & ends[0].finished & ends[1].finished & (ends[0].positions >= 0).all(axis=1) & \
            (ends[0].positions == ends[1].positions).all(axis=1)
        plans[sources[planned]] = ends[0].slots[planned]
    return plans if (plans != NO_PLAN).any() else None


def plan_similarities(served: "_Served", block: int = 4096) -> np.ndarray | None:
    """float32 (articles, depth): the cosine of each article to each item of its plan
    (box_plans), computed once when a snapshot is served so that a planned call reads
    them instead of running FAISS (a fixed ~20 us of a ~0.25 ms call). Costs 4 bytes per
    plan item (8 B an article) and ~0.1 s at 100k on load. Entries without a plan are
    meaningless. None without plans."""
    plan, lists, index = served.box_plan, served.candidate_lists, served.index
    if plan is None or lists is None:
        return None
    sims = np.zeros(plan.shape, np.float32)
    for start in range(0, len(plan), block):
        sources = np.arange(start, min(start + block, len(plan)))
        slots = plan[sources].astype(np.int64)
        slots[slots == NO_PLAN] = 0
        picks = lists[sources[:, None], slots]
        sims[sources] = index.inner_products(index.vectors(sources), picks, all_cores=True)
    return sims


def _plans_hold(served: "_Served", k: int, now_ts: float) -> bool:
    """Whether the plans may answer calls for boxes of ``k`` at ``now_ts`` at all."""
    plan, window = served.box_plan, served.box_plan_window
    return plan is not None and k <= plan.shape[1] and len(served.index) == len(served.candidate_lists) \
        and float(window[0]) <= now_ts <= float(window[1])


def planned_boxes(served: "_Served", positions: np.ndarray, k: int, settings: "RankingConfig", *,
                  now_ts: float) -> Boxes:
    """The boxes of calls at ``now_ts`` with the serving settings and no filter, read
    from the build's plans (box_plans) where they hold; unfinished elsewhere: a call
    outside the plans' window, k beyond them, articles added since the build, an
    article without a plan or with a removed article in its list. Only the items'
    scores are computed, as listed_boxes computes them."""
    if not _plans_hold(served, k, now_ts):
        return _unfinished(len(positions), k)
    plan, lists, corpus = served.box_plan, served.candidate_lists, served.corpus
    slots = plan[positions, :k].astype(np.int64)
    rows = lists[positions]
    held = (slots != NO_PLAN).all(axis=1)
    if not corpus.all_alive:  # a removed article anywhere in a list voids its plan
        held &= (corpus.alive[rows] | (rows < 0)).all(axis=1)
    slots[~held] = 0  # read, not used
    picks = rows[np.arange(len(rows))[:, None], slots].astype(np.int64)
    picks[~held] = -1
    sims = served.plan_similarities()[positions, :k]
    relevance = _planned_relevance(served, positions[:, None], slots, sims, settings)
    scores = _scores(corpus, positions, picks, relevance, settings, now_ts)
    slots[~held] = -1
    return Boxes(positions=picks, slots=slots, scores=scores.astype(np.float64), similarities=sims.astype(np.float64),
                 finished=held)


def planned_box(served: "_Served", position: int, k: int, settings: "RankingConfig", *, now_ts: float
                ) -> tuple[list[int], list[float], list[float]] | None:
    """planned_boxes for one source, as (positions, scores, similarities) of its items,
    or None where the plan may not hold: the same values in a third of the time, for
    the call a site makes on every page view (2-D fancy indexing and its checks are
    most of a one-row block's cost)."""
    if not _plans_hold(served, k, now_ts):
        return None
    slots = served.box_plan[position, :k].astype(np.int64)
    row = served.candidate_lists[position]
    corpus = served.corpus
    if NO_PLAN in slots.tolist() or not (corpus.all_alive or (corpus.alive[row] | (row < 0)).all()):
        return None
    picks = row[slots].tolist()
    sims = served.plan_similarities()[position, :k]
    relevance = _planned_relevance(served, position, slots, sims, settings)
    return picks, _scores_of_one(corpus, position, picks, relevance.tolist(), settings, now_ts), sims.tolist()


def _planned_relevance(served: "_Served", sources, slots: np.ndarray, sims: np.ndarray, settings) -> np.ndarray:
    """The cosines ``sims`` of planned items blended with their stored term overlap,
    as listed_boxes blends them."""
    if served.corpus.prints is None or settings.lexical_weight <= 0:
        return sims
    overlap = served.candidate_overlap[sources, slots].astype(np.float32)
    return ranking.blend(sims, overlap, settings.lexical_weight)


def _scores(corpus, positions: np.ndarray, rows: np.ndarray, relevance: np.ndarray, settings, now_ts: float
            ) -> np.ndarray:
    """Relevance plus the freshness bonus and the section bonus, as Recommender._box
    scores, for (sources, pool) arrays."""
    published = corpus.published[positions]
    by_article = settings.recency_reference == "article"
    reference = np.where(by_article & ~np.isnan(published), published, now_ts)[:, None]
    age_days = (reference - corpus.published[rows]) / ranking.SECONDS_PER_DAY
    scores = ranking.freshness_scores(relevance, age_days, margin=settings.freshness_margin,
                                      half_life_days=settings.half_life_days)
    if settings.section_bonus:
        own = corpus.section_codes[positions][:, None]
        scores = np.where(own != ranking.NO_SECTION,
                          ranking.section_scores(scores, corpus.section_codes[rows], own, settings.section_bonus),
                          scores)
    return scores


def _scores_of_one(corpus, position: int, rows: list[int], relevance: list[float], settings, now_ts: float
                   ) -> list[float]:
    """_scores for one source, in Python floats: the same operations on the same
    float64 values (tests/test_perf_paths.py compares them), without numpy's fixed
    cost per step (~40 us of a planned call's ~0.1 ms as arrays of one row)."""
    published = float(corpus.published[position])
    by_article = settings.recency_reference == "article"
    reference = published if by_article and not math.isnan(published) else now_ts
    own = int(corpus.section_codes[position]) if settings.section_bonus else ranking.NO_SECTION
    margin, half_life = settings.freshness_margin, settings.half_life_days
    if half_life is not None:
        # numpy's exp2 as the arrays use it, in one call: math.exp2 differs from it in
        # the last bit for ~5% of arguments (numpy 2.4 on this machine), which shows
        # as another score, or another box, than the same call ranked in full.
        decays = np.exp2([-abs((reference - float(corpus.published[row])) / ranking.SECONDS_PER_DAY) / half_life
                          for row in rows]).tolist()
    else:
        decays = [0.0] * len(rows)
    scores = []
    for row, score, decay in zip(rows, relevance, decays):
        score = score + margin * (0.0 if math.isnan(decay) else decay)
        if own != ranking.NO_SECTION:
            score = score + settings.section_bonus * (1.0 if corpus.section_codes[row] == own else 0.0)
        scores.append(score)
    return scores


def boxes(served: "_Served", positions: np.ndarray, k: int, settings: "RankingConfig", *, now_ts: float,
          excluded: np.ndarray, allowed: np.ndarray | None, planned: bool, all_cores: bool = False) -> Boxes:
    """planned_boxes where ``planned`` (the call has the serving settings and no
    filter) and the plans hold, listed_boxes for the rest."""
    done = planned_boxes(served, positions, k, settings, now_ts=now_ts) if planned else None
    if done is None or not done.finished.any():
        return listed_boxes(served, positions, k, settings, now_ts=now_ts, excluded=excluded, allowed=allowed,
                            all_cores=all_cores)
    todo = np.flatnonzero(~done.finished)
    if len(todo):
        ranked = listed_boxes(served, positions[todo], k, settings, now_ts=now_ts, excluded=excluded,
                              allowed=allowed, all_cores=all_cores)
        for mine, theirs in zip(done, ranked):
            mine[todo] = theirs
    return done


def listed_boxes(served: "_Served", positions: np.ndarray, k: int, settings: "RankingConfig", *,
                 now_ts: float, excluded: np.ndarray, allowed: np.ndarray | None, all_cores: bool = False,
                 visible_at: float | None = None) -> Boxes:
    """The chosen items of each source's box (see Boxes). ``excluded``: positions
    never shown (besides each source itself); ``allowed``: section codes a box may
    show (None: all); ``all_cores``: read vectors on every core for blocks worth it;
    ``visible_at``: the time that hides later-dated articles, if not ``now_ts``."""
    lists = served.candidate_lists
    fetch = max(settings.candidates, 4 * k)
    if lists is None or fetch > lists.shape[1] or len(served.index) != len(lists) \
            or (settings.neighbours > 0 and settings.neighbour_weight != 0):
        return _unfinished(len(positions), k)
    corpus = served.corpus
    fetch = min(fetch, lists.shape[1])
    need = min(settings.candidates, 4 * k)

    # The list, most similar first (invalid slots last), cut at ``fetch``.
    rows = lists[positions].astype(np.int64)
    valid = rows >= 0
    index = served.index
    bulk = all_cores and len(positions) >= 32  # worth every core (see FaissIndex.inner_products)
    # The listed rows are read once, for the cosines to the sources and to each pick
    # (half-precision and 8-bit stores widen a copy: at 1M, reading it twice was ~77% of
    # a block ranked in full).
    pool_rows, where = index.read_rows(rows, all_cores=bulk)
    sims = index.products_at(index.vectors(positions), pool_rows, where, all_cores=bulk)  # -inf: invalid
    order = np.argsort(-sims, axis=1, kind="stable")[:, :fetch]
    slots = order  # each pool item's place in the list row (to read the pair arrays)
    rows, valid = np.take_along_axis(rows, order, 1), np.take_along_axis(valid, order, 1)
    sims, where = np.take_along_axis(sims, order, 1), np.take_along_axis(where, order, 1)

    # Filters, as Recommender._box's is_eligible, per source.
    published = corpus.published[positions]
    by_article = settings.recency_reference == "article"
    reference = np.where(by_article & ~np.isnan(published), published, now_ts)[:, None]
    ok = valid & ranking.eligible(
        rows, alive=corpus.alive, published=corpus.published, now=now_ts if visible_at is None else visible_at,
        reference=reference,
        max_age_days=settings.max_age_days, excluded=excluded, section_codes=corpus.section_codes,
        allowed_sections=allowed)
    ok &= rows != positions[:, None]
    ok &= sims >= settings.min_similarity
    # "complete": no article outside the returned ones reaches min_similarity (see
    # recommender._listed_candidates): a short list held every article, or the least
    # similar returned one already misses the floor.
    listed = valid.sum(axis=1)
    returned = np.minimum(listed, fetch)
    lowest = sims[np.arange(len(rows)), np.maximum(returned - 1, 0)]
    complete = ((listed < lists.shape[1]) & (returned == listed)) | \
        ((returned > 0) & (lowest < settings.min_similarity))
    usable = (ok.sum(axis=1) >= need) | complete

    # Scores: relevance (cosine blended with the stored term overlap), freshness, section.
    relevance = sims
    if corpus.prints is not None and settings.lexical_weight > 0:
        if served.candidate_overlap is None:
            return _unfinished(len(positions), k)
        overlap = served.candidate_overlap[positions[:, None], slots].astype(np.float32)
        relevance = ranking.blend(sims, overlap, settings.lexical_weight)
    scores = _scores(corpus, positions, rows, relevance, settings, now_ts)

    # Same-story rules against the source, then MMR with the rules against each pick.
    title_keys = corpus.title_keys[rows]
    own_keys = corpus.title_keys[positions][:, None]
    open_ = ok & usable[:, None] & (sims < settings.duplicate_similarity) & \
        ((own_keys == 0) | (title_keys != own_keys))
    copy_rule = settings.copy_containment is not None and corpus.copy_sketch is not None
    if copy_rule:
        if served.candidate_copies is None or served.candidate_copy_threshold != settings.copy_containment:
            return _unfinished(len(positions), k)
        bits = served.candidate_copies[positions][:, None]
        open_ &= ((bits >> slots.astype(np.uint64)) & np.uint64(1)) == 0
    chosen = _mmr(scores, index, rows, (pool_rows, where), open_, k, settings, title_keys, corpus, copy_rule, bulk)

    # A box short of k goes to the single path, whose fallback fills it.
    has = chosen >= 0
    at = np.maximum(chosen, 0)
    return Boxes(positions=np.where(has, np.take_along_axis(rows, at, 1), -1),
                 slots=np.where(has, np.take_along_axis(slots, at, 1), -1),
                 scores=np.take_along_axis(scores, at, 1).astype(np.float64),
                 similarities=np.take_along_axis(sims, at, 1).astype(np.float64),
                 finished=usable & (has.all(axis=1) | (not settings.fallback)))


def _mmr(scores: np.ndarray, index, rows: np.ndarray, pool: tuple[np.ndarray, np.ndarray], open_: np.ndarray,
         k: int, settings, title_keys, corpus, copy_rule: bool, bulk: bool) -> np.ndarray:
    """``ranking.select_box`` for every source at once: chosen pool indices (-1 where
    a box ran out of candidates), shape (sources, k). ``rows``: the pool's positions
    (-1 for empty slots); ``pool``: their vectors as index.read_rows gives them (rows,
    where), in the same order. ``copy_rule``: a pick is checked against the earlier
    picks' texts."""
    pool_rows, where = pool
    n = len(scores)
    scores = scores.astype(np.float64)
    redundancy = np.zeros_like(scores)
    chosen = np.full((n, k), -1, dtype=np.int64)
    everyone = np.arange(n)
    lam = settings.mmr_lambda
    for step in range(k):
        mmr = lam * scores - (1.0 - lam) * redundancy if step else scores
        waiting = everyone[open_.any(axis=1)]
        while len(waiting):
            best = np.argmax(np.where(open_[waiting], mmr[waiting], -np.inf), axis=1)
            open_[waiting, best] = False
            if step and copy_rule:
                copy = _copies_any_pick(corpus, rows[waiting, best], rows[waiting[:, None], chosen[waiting, :step]],
                                        settings.copy_containment)
                chosen[waiting[~copy], step] = best[~copy]
                waiting = waiting[copy]
                waiting = waiting[open_[waiting].any(axis=1)]  # try their next best
            else:
                chosen[waiting, step] = best
                waiting = waiting[:0]
        if step == k - 1:
            break
        # Every source's pool against its pick (a source without one compares against
        # its first slot, or row 0, and is left alone: it has no open candidate anyway).
        best = np.maximum(chosen[:, step], 0)
        picks = pool_rows[np.maximum(where[everyone, best], 0)]  # the rows the vectors were read into
        cosine = index.products_at(picks, pool_rows, where, all_cores=bulk)
        same_story = cosine >= settings.duplicate_similarity
        keys = title_keys[everyone, best][:, None]
        same_story |= (keys != 0) & (title_keys == keys)
        picked = chosen[:, step] >= 0
        open_ &= ~(same_story & picked[:, None])
        redundancy = np.where(picked[:, None], np.maximum(redundancy, cosine), redundancy)
    return chosen


def _copies_any_pick(corpus, candidates: np.ndarray, picks: np.ndarray, threshold: float) -> np.ndarray:
    """For each source, whether its candidate (position) copies any of its earlier
    picks (positions, one column per pick)."""
    n, steps = picks.shape
    a = np.repeat(candidates, steps)
    b = picks.reshape(-1)
    pairs = copies.copies_pairwise(corpus.copy_sketch[a], corpus.copy_shingles[a],
                                   corpus.copy_sketch[b], corpus.copy_shingles[b], threshold)
    return pairs.reshape(n, steps).any(axis=1)
