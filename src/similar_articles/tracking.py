"""Which boxes a live update changed: after articles are added, replaced or removed,
which existing articles' boxes changed, so a CMS cache, a CDN or an export rewrites
those and no others (the report itself: changes.py).

"Changed" means: the article's default box (``k`` items, default 2; the index's own
ranking settings; no filters) lists other items, in another order, or with other
fallback marks, than the box last known for it; an item that is a replaced article
counts as another item (its title or link may read differently). The last known boxes
are a map of every live article's default box (:class:`BoxMap`), ranked once when
tracking starts (a pass over every box, as an export makes: ~50 s per million articles
on 2 cores) and kept current: each update ranks only its suspects and writes them in.

The suspects of an update, found without ranking every box:

- a removed or replaced article: the boxes that showed it (the map), and its reverse
  neighbours (the articles whose build-time candidate list holds it);
- an added article: the articles it could now rank into. Its nearest articles by the
  dense index and the lexical retriever, and any other whose box takes a newcomer
  scoring below what those nearest allow (each article's entry score is kept in the
  map: its picks' scores less what MMR's diversity term can give a newcomer), are
  scored against it, and those where it would win an MMR step over the box's pick
  there (its score less its redundancy to the earlier picks) or push a pick out of
  its pool are suspects (the searches: searches.py);
- either, near the top of a section's recent articles: the boxes filled with recent
  articles (fallback) that could now show another one.

Every suspect is ranked through the one ranking path and compared with its known box:
the report is the boxes that changed, not every suspect.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from . import boxrules, parallel, ranking, searches
from .changes import ChangedBoxes, append_changes
from .config import RankingConfig
from .features.lexical import overlaps
from .pools import RankedBlock, Request, indexed_sources
from .ruletargets import pinned_boxes, rule_targets
from .state import ServingState

SEARCH_WIDTH = 65  # an added article's nearest, always scored (its own box's pool reuses the searches)
MAX_BOUNDED = 4096  # other articles scored against an added one at most (~0.5 us each)
BLOCK = 1024
_NONE = np.zeros(0, np.int64)


class BoxMap:
    """Every table row's last known default box: picks (NO_PICK past the end), their
    kinds (0 related, else a fallback kind) and similarities; ``bars``: what a newcomer
    must score to be picked at each step (see ChangeTracker._bars); ``entry``: the
    lowest of them (-inf for a lacking box: any related newcomer enters it); ``reach``: the least similarity of its related picks that a newcomer
    can push out of the pool (which keeps the most similar): any pick of an article
    added since the build (its pool is a search), picks added since the build of the
    others (their pools keep the most similar added articles beside the list); ``lacking``: the box is short or holds a fallback item. Rows of dead
    articles hold NO_PICK. Arrays grow by doubling, so an update costs its rows only."""

    def __init__(self, k: int):
        self.k, self.n, self.ranked_at = k, 0, 0.0  # ranked_at: when its boxes were ranked (seconds)
        self.picks = np.full((0, k), ranking.NO_PICK, np.int64)
        self.kinds = np.zeros((0, k), np.int8)
        self.sims = np.zeros((0, k), np.float32)
        self.bars = np.zeros((0, k), np.float32)
        self.entry = np.zeros(0, np.float32)
        self.reach = np.zeros(0, np.float32)
        self.lacking = np.zeros(0, bool)

    def grow(self, n: int) -> None:
        if n > len(self.entry):
            size = max(n, 2 * len(self.entry), 1024)
            for name, fill in (("picks", ranking.NO_PICK), ("kinds", 0), ("sims", 0), ("bars", np.inf), ("entry", np.inf),
                               ("reach", np.inf), ("lacking", False)):
                old = getattr(self, name)
                new = np.full((size, *old.shape[1:]), fill, old.dtype)
                new[:len(old)] = old
                setattr(self, name, new)
        self.n = max(self.n, n)

    def put(self, rows: np.ndarray, block: RankedBlock, bars: np.ndarray, listed: int) -> None:
        self.picks[rows], self.kinds[rows], self.sims[rows] = block.positions, block.kinds, block.similarities
        self.bars[rows] = bars
        self.entry[rows] = np.where(_lacking(block), -np.inf, bars.min(axis=1))
        pushed = (block.kinds == 0) & (block.positions >= 0) & ((rows[:, None] >= listed) | (block.positions >= listed))
        self.reach[rows] = np.where(pushed, block.similarities, np.inf).min(axis=1)
        self.lacking[rows] = _lacking(block)

    def clear(self, rows: np.ndarray) -> None:
        self.picks[rows], self.kinds[rows], self.lacking[rows] = ranking.NO_PICK, 0, False
        self.entry[rows] = self.reach[rows] = np.inf

    def showing(self, positions: np.ndarray) -> np.ndarray:
        """Rows whose box shows any of ``positions``."""
        if not len(positions):
            return _NONE
        picks = self.picks[:self.n]
        return np.flatnonzero(searches.holds(picks, positions))


class ChangeTracker:
    """Follows one recommender's states and reports the boxes each update changed.

    now: the time boxes are ranked for (default: the clock at each update; a fixed
        time gives reproducible reports).
    log: a file (INDEX/changes.jsonl) to append each report of this process's updates to.
    listener: called with each report of this process's updates (the service's webhook).
    """

    def __init__(self, state: ServingState, settings: RankingConfig, k: int, *, now: datetime | None = None,
                 log: Path | None = None, listener: Callable[[ChangedBoxes], None] | None = None, keep: int = 256):
        self.settings, self.k, self.now, self.log, self.listener = settings, k, now, log, listener
        self.recent: deque[ChangedBoxes] = deque(maxlen=keep)
        self.reset(state)

    def _now(self) -> float:
        return (self.now or datetime.now(timezone.utc)).timestamp()

    def reset(self, state: ServingState, boxes: BoxMap | None = None) -> None:
        """Know the boxes of ``state`` (a new snapshot: rows moved): ``boxes`` ranked for
        it (rank_all), or ranked now."""
        self.map = boxes if boxes is not None else self.rank_all(state)

    def rank_all(self, state: ServingState) -> BoxMap:
        """Every live article's box of ``state`` (~25 s a million on 2 cores); changes
        nothing here, so a reload runs it without holding back writes."""
        boxes = BoxMap(self.k)
        boxes.grow(len(state.table))
        now = boxes.ranked_at = self._now()
        for block, ranked, bars in self._ranked_blocks(state, state.table.live_positions(), now):
            boxes.put(block, ranked, bars, state.listed_count())
        return boxes

    def _ranked_blocks(self, state: ServingState, rows: np.ndarray, now: float):
        """(rows, boxes, bars) of ``rows``, BLOCK at a time (a block's pools take ~150 kB
        a row), on every core when there are several blocks; a few rows on one core."""
        if len(rows) <= BLOCK:
            if len(rows):  # most updates' suspects: one block, no pool of threads
                yield rows, *self._rank(state, rows, now, len(rows) > 256)
            return
        blocks = [rows[i:i + BLOCK] for i in range(0, len(rows), BLOCK)]
        with ThreadPoolExecutor(max(1, parallel.worker_count())) as pool:
            yield from ((block, *ranked) for block, ranked in
                        zip(blocks, pool.map(lambda b: self._rank(state, b, now, False), blocks)))

    def _rank(self, state: ServingState, rows: np.ndarray, now: float, all_cores: bool = True
              ) -> tuple[RankedBlock, np.ndarray]:
        """The boxes of ``rows`` as served (``k`` items under the rules in force) and
        their bars."""
        ranked = boxrules.rank(state, indexed_sources(state, rows),
                               Request(self.k, self.settings, now, _NONE, None, all_cores), self.k, self.settings, {})
        return ranked, self._bars(state, ranked)

    def _bars(self, state: ServingState, ranked: RankedBlock) -> np.ndarray:
        """(rows, k): what a newcomer must score to be picked at each MMR step instead of
        the box's pick there: the first pick's score, then each later pick's score less
        its redundancy (its cosine to the earlier picks) times (1 - lambda) / lambda, the
        newcomer's own redundancy added on its side (_beats). -inf with lambda 0."""
        lam = self.settings.mmr_lambda
        picks, bars = ranked.positions, ranked.scores.astype(np.float32).copy()
        if self.k > 1 and lam > 0:
            vectors = state.index.vectors(np.maximum(picks, 0).reshape(-1)).reshape(*picks.shape, -1)
            cosines = np.einsum("bjd,bid->bji", vectors, vectors)
            for j in range(1, self.k):
                bars[:, j] -= (1 - lam) / lam * np.maximum(cosines[:, j, :j].max(axis=1), 0)
        elif self.k > 1:
            bars[:, 1:] = -np.inf
        return bars

    def _beats(self, state: ServingState, a: int, rows: np.ndarray, score: np.ndarray, slack: float) -> np.ndarray:
        """Which boxes of ``rows`` (full of related items) article ``a``, scoring
        ``score`` there, would enter at some MMR step: its score less its redundancy to
        the picks before that step reaches the step's bar. Nothing else it does moves a
        pick (it only closes or pushes out what it is picked over or crowds: _pushing)."""
        lam, bars = self.settings.mmr_lambda, self.map.bars[rows]
        if self.k == 1 or lam <= 0:
            return (score[:, None] >= bars - slack).any(axis=1)
        picks = self.map.picks[rows]
        cosines = (state.index.vectors(picks.reshape(-1)) @ state.index.vectors(np.array([a]))[0]).reshape(picks.shape)
        before = np.maximum.accumulate(np.maximum(cosines, 0), axis=1)  # redundancy to picks 0..j
        redundancy = np.hstack([np.zeros((len(rows), 1), np.float32), before[:, :-1]])
        return (score[:, None] - (1 - lam) / lam * redundancy >= bars - slack).any(axis=1)

    # ------------------------------------------------------------------ an update
    def update(self, before: ServingState, after: ServingState, seq: int, *, own: bool = False,
               report: bool = True) -> ChangedBoxes:
        """The boxes the update from ``before`` to ``after`` changed; the map is brought
        up to date. ``own``: this process made the update (it goes to the log);
        ``report`` False: kept nowhere (a reload catching up with an update reported
        on the snapshot it was made on)."""
        now, table = self._now(), after.table
        old_n, new_n = len(before.table), len(table)
        self.map.grow(new_n)
        added = np.arange(old_n, new_n)
        killed = np.flatnonzero(before.table.alive & ~table.alive[:old_n])
        complete = True
        if searches.all_searched(after) and not searches.all_searched(before):  # every pool just became a search
            suspects = np.arange(old_n)
        else:
            taking, complete = self._taking(after, added, now, old_n)
            suspects = np.unique(np.concatenate([
                self.map.showing(killed), searches.listing(before, killed), *taking,
                pinned_boxes(after.rules, table, table.ids[added]),
                *self._fallback_suspects(before, killed, now, old_n), *self._fallback_suspects(after, added, now, old_n)]))
        new = added[table.alive[added]]
        changed = self._settle(after, suspects, now, new)
        self.map.clear(killed)
        old = before.table.positions.get_many(table.ids[new].tolist()) if len(new) else _NONE
        replaced = (old >= 0) & before.table.alive[np.maximum(old, 0)] if len(new) else np.zeros(0, bool)
        back = set(table.ids[new].tolist())
        changes = ChangedBoxes(
            seq, self.k, after.manifest.get("version"), tuple(table.ids[changed].tolist()),
            tuple(table.ids[new[~replaced]].tolist()), tuple(table.ids[new[replaced]].tolist()),
            tuple(i for i in before.table.ids[killed].tolist() if i not in back), complete)
        return self._publish(changes, own) if report else changes

    def rules_changed(self, before: ServingState, after: ServingState, *, own: bool = False) -> ChangedBoxes:
        """The boxes a rules edit (``before`` to ``after``: the same articles, other
        rules) changed; the map is brought up to date (ruletargets.py says which are
        ranked). ``own``: this process made the edit."""
        now, n, (boxes, blocked, back) = self._now(), len(after.table), rule_targets(before.rules, after.rules, after.table)
        taking, complete = self._taking(after, back, now, n)  # an article unblocked comes back as if added
        changed = self._settle(after, np.unique(np.concatenate([
            boxes, self.map.showing(blocked), *taking, *self._fallback_suspects(before, blocked, now, n),
            *self._fallback_suspects(after, back, now, n)])), now)
        return self._publish(ChangedBoxes(after.journal_seq, self.k, after.manifest.get("version"), tuple(
            after.table.ids[changed].tolist()), complete=complete, rules=(before.rules.version, after.rules.version)), own)

    def _settle(self, state: ServingState, suspects: np.ndarray, now: float, new: np.ndarray = _NONE) -> np.ndarray:
        """Rank the live ``suspects``' boxes, put them in the map, and return those that
        differ from the boxes the map knew. The boxes of ``new`` rows (articles just
        added: nothing to compare) are ranked in the same blocks and put in the map,
        since a block's fixed cost (~0.5 ms) is most of what a few boxes cost."""
        suspects = suspects[state.table.alive[suspects]] if len(suspects) else _NONE
        changed = [_NONE]
        for rows, ranked, bars in self._ranked_blocks(state, np.union1d(suspects, new), now):
            differs = (ranked.positions != self.map.picks[rows]).any(axis=1) | \
                (ranked.kinds != self.map.kinds[rows]).any(axis=1)
            changed.append(rows[differs & ~np.isin(rows, new)])
            self.map.put(rows, ranked, bars, state.listed_count())
        return np.concatenate(changed)

    def _publish(self, report: ChangedBoxes, own: bool) -> ChangedBoxes:
        """Keep ``report``; this process's go to the log and the listener too."""
        self.recent.append(report)
        if own and self.log is not None:
            append_changes(self.log, report)
        if own and self.listener is not None:
            self.listener(report)
        return report

    def _taking(self, state: ServingState, added: np.ndarray, now: float, old_n: int
                ) -> tuple[list[np.ndarray], bool]:
        """For each added article, the existing articles whose box it could rank into;
        and whether every such article was scored (see ChangedBoxes.complete)."""
        out, complete, slack = [], True, self._slack(now)
        for a in added[state.table.alive[added]].tolist():
            found, bound, dense = searches.nearest(state, a, self.settings, max(SEARCH_WIDTH, self._fetch()))
            # Any other article scores the newcomer below ``bound`` and finds it less
            # similar than ``dense``: only boxes whose entry or reach is lower can take
            # it; those are scored too, unless there are too many.
            reachable = self.map.reach[:old_n] <= dense + _SLACK
            wanted = (self.map.entry[:old_n] <= bound + slack) | reachable
            if np.count_nonzero(wanted) > MAX_BOUNDED + len(found):
                complete = False  # boxes any related newcomer enters, and reachable picks, are still scored
                wanted = self.map.lacking[:old_n] | reachable
            wanted[found[found < old_n]] = True
            candidates = np.flatnonzero(wanted)
            candidates = candidates[(candidates < old_n) & state.table.alive[candidates]]
            if len(candidates):
                score, related, cosines = self._newcomer(state, a, candidates, now)
                lacking = self.map.lacking[candidates]
                takes = np.where(lacking, related, related & (score >= self.map.entry[candidates] - slack))
                plain = takes & ~lacking & (self.map.kinds[candidates] == 0).all(axis=1)  # full, nothing pinned
                takes[plain] = self._beats(state, a, candidates[plain], score[plain], slack)
                reaches = cosines >= self.map.reach[candidates] - _SLACK
                reaches[reaches & ~takes] = self._pushing(state, candidates[reaches & ~takes])
                out.append(candidates[takes | reaches])
        return out, complete

    def _slack(self, now: float) -> float:
        """How far a known box's scores may have drifted since it was ranked (when the
        map was, or later): its items' freshness bonuses fade by at most
        freshness_margin * (1 - 2^(-elapsed / half-life)); and float rounding."""
        s = self.settings
        if s.half_life_days is None:
            return _SLACK
        elapsed = abs(now - self.map.ranked_at) / ranking.SECONDS_PER_DAY
        return s.freshness_margin * (1 - 2 ** (-elapsed / s.half_life_days)) + _SLACK

    def _fetch(self) -> int:
        """The nearest articles a pool holds (rank_block's default)."""
        return max(self.settings.candidates, 4 * self.k)

    def _pushing(self, state: ServingState, rows: np.ndarray) -> np.ndarray:
        """Which boxes of ``rows`` (a newcomer is as similar as their reach) could have
        lost a pick out of their pool. A listed pool keeps the ``fetch`` articles added
        since the build most similar to its source: one newcomer pushes a pick out only
        if ``fetch`` others are as similar as it. A searched pool (an article added
        since the build) lost one if a related pick left its search's ``fetch`` nearest
        (the base's answer is kept: only the added articles are searched again)."""
        fetch, listed, index = self._fetch(), state.listed_count(), state.index
        out = np.ones(len(rows), bool)
        searched = np.flatnonzero(rows >= listed)
        if len(searched):
            _, nearest = index.search_many(index.vectors(rows[searched]), fetch)
            picks = self.map.picks[rows[searched]]
            kept = (picks[:, :, None] == nearest[:, None, :]).any(axis=2) | (picks < 0) | (self.map.kinds[rows[searched]] > 0)
            out[searched] = ~kept.all(axis=1)
        if state.neighbours is None or fetch > state.neighbours.width or searches.all_searched(state):
            return out
        mine = np.flatnonzero(rows < listed)
        out[mine] = False  # every article added since the build is in every listed pool
        if len(index) - listed > fetch and len(mine):
            cosines = index.vectors(rows[mine]) @ index.vectors(np.arange(listed, len(index))).T
            out[mine] = (cosines >= self.map.reach[rows[mine], None] - _SLACK).sum(axis=1) > fetch
        return out

    def _newcomer(self, state: ServingState, a: int, sources: np.ndarray, now: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The score article ``a`` gets in each source's box, whether it passes the
        related-item gates there (eligible, min_similarity, the floor), its cosines."""
        s, table = self.settings, state.table
        cosines = state.index.vectors(sources) @ state.index.vectors(np.array([a]))[0]
        relevance = cosines
        if state.features.lexical is not None and s.lexical_weight > 0:
            # The overlap is a cosine of fingerprints: the newcomer's row against all
            # the sources at once costs one table, not one a source.
            theirs, own = state.features.prints(sources), state.features.prints(np.array([a]))
            overlap = overlaps(own.ids, own.weights, theirs.ids[None], theirs.weights[None])[0]
            relevance = ranking.blend(cosines, overlap, s.lexical_weight)
        published = table.published[sources]
        reference = np.where(np.isnan(published), now, published) if s.recency_reference == "article" else \
            np.full(len(sources), now)
        ok = (cosines >= s.min_similarity - _SLACK) & \
            (relevance >= state.relatedness_floor(s.lexical_weight, s.floor_quantile) - _SLACK)
        same = (table.section_codes[sources] == table.section_codes[a]) & (table.section_codes[a] != ranking.NO_SECTION)
        age, score = (reference - table.published[a]) / ranking.SECONDS_PER_DAY, np.zeros(len(sources))
        for rows, policy in boxrules.settings_by_section(state, table.section_codes[sources], s):  # a section's policy
            ok[rows] &= ranking.eligible(np.full(len(rows), a), alive=table.alive, published=table.published, now=now,
                                         reference=reference[rows], max_age_days=policy.max_age_days, excluded=_NONE,
                                         section_codes=table.section_codes, allowed_sections=None)
            score[rows] = ranking.scores(relevance[rows], age[rows], same[rows], freshness_margin=s.freshness_margin,
                                         half_life_days=policy.half_life_days, section_bonus=s.section_bonus)
        return score, ok, cosines

    def _fallback_suspects(self, state: ServingState, moved: np.ndarray, now: float, old_n: int) -> list[np.ndarray]:
        """Lacking boxes whose fallback could show another recent article now that the
        articles at ``moved`` came or went (only those near the top of a recent order
        reach a fallback)."""
        out, table, k = [], state.table, self.k
        if not len(moved) or not self.settings.fallback:
            return out
        lacking = np.flatnonzero(self.map.lacking[:old_n])
        if not len(lacking):
            return out
        slack = (1 - self.settings.mmr_lambda) / max(self.settings.mmr_lambda, 1e-9) + _SLACK
        for p in moved.tolist():
            code = int(table.section_codes[p])
            overall = searches.edge(state, table.recent_order, p, now, k, self.settings)
            if overall is not None:  # boxes reaching into recent articles of any section
                out.append(lacking[(self.map.picks[lacking] < 0).any(axis=1) | (self.map.kinds[lacking] == 2).any(axis=1)])
            edge = None if code == ranking.NO_SECTION else searches.edge(state, table.recent_by_section[code], p, now, k,
                                                                 self.settings)
            if edge is None:
                continue
            mine = lacking[table.section_codes[lacking] == code]
            if not len(mine):
                continue
            shows = np.isin(self.map.picks[mine], edge).any(axis=1) | (self.map.picks[mine] < 0).any(axis=1) | \
                (self.map.kinds[mine] == 2).any(axis=1)
            weakest = np.where(self.map.kinds[mine] == 1, self.map.sims[mine], np.inf).min(axis=1)
            near = (state.index.vectors(mine) @ state.index.vectors(edge).T).max(axis=1)
            out.append(mine[shows | (near >= weakest - slack)])
        return out


_SLACK = 1e-4  # float rounding between a score computed here and the ranking's


def _lacking(ranked: RankedBlock) -> np.ndarray:
    """Boxes that are short or show a fallback item (a pinned item is neither)."""
    kinds = ranked.kinds
    return (ranked.positions < 0).any(axis=1) | ((kinds > 0) & (kinds != boxrules.PINNED_KIND)).any(axis=1)
