"""The newsroom's rules applied to a call: the rules document compiled against the
serving state's table once (positions, section codes), then, for each block of
sources, the section policies (settings, sections, kinds, language, k), the blocks
(handed to the ranking's eligibility, so the fallback obeys them too) and the pins
(placed at their slots after the ranking, never past the eligibility).

The ranking itself is pools.rank_block, the one ranking path; this module only chooses
what each block of sources is ranked with and places the pins in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import ranking
from .config import RankingConfig, check_k as check_box_size, replace_ranking
from .pools import RankedBlock, Request, Sources, eligible, rank_block, subset
from .rules import DEFAULT_POLICY, Rules
from .state import ServingState

DEFAULT_K = 2
PINNED_KIND = 3  # RankedBlock.kinds of a pinned item (0 related, 1-2 fallback: pools.FALLBACK_KINDS)
_RANKING_KEYS = ("half_life_days", "max_age_days")


class PinAt(NamedTuple):
    position: int
    slot: int  # 1 = first
    start: float  # epoch seconds, -inf: always
    until: float  # epoch seconds, inf: forever
    order: int  # the pin's place in the document: the later of two pins for one slot goes after


@dataclass(frozen=True)
class Plan:
    """A section's policy against the table: ranking overrides, the section, kind and
    language codes a box may show (None: any) and its k."""

    values: tuple  # (name, value) RankingConfig overrides
    sections: np.ndarray | None
    kinds: np.ndarray | None
    languages: str | np.ndarray | None
    k: int | None


@dataclass(frozen=True)
class Compiled:
    """The rules against one table. ``blocked``: a mask of positions blocked everywhere;
    ``blocked_from``: source position -> positions blocked from its box; pins by the
    source's position, section code and tag; plans by the source's section code."""

    empty: bool
    blocked: np.ndarray | None
    blocked_from: dict[int, np.ndarray]
    pins_into: dict[int, list[PinAt]]
    pins_section: dict[int, list[PinAt]]
    pins_tag: dict[str, list[PinAt]]
    plans: dict[int, Plan]
    default: Plan | None


def compiled(state: ServingState) -> Compiled:
    """The state's rules compiled against its table, made once a state."""
    found = state.rulings.get("compiled")
    if found is None:
        found = state.rulings["compiled"] = _compile(state.rules, state)
    return found


def _compile(rules: Rules, state: ServingState) -> Compiled:
    table = state.table
    if not rules:
        return Compiled(True, None, {}, {}, {}, {}, {}, None)
    blocked = None
    everywhere = [table.position_of(b.article) for b in rules.blocks if b.source is None]
    if any(p is not None for p in everywhere):
        blocked = np.zeros(len(table), dtype=bool)
        blocked[[p for p in everywhere if p is not None]] = True
    blocked_from: dict[int, list[int]] = {}
    for block in rules.blocks:
        source, article = table.position_of(block.source), table.position_of(block.article)
        if block.source is not None and source is not None and article is not None:
            blocked_from.setdefault(source, []).append(article)
    pins_into: dict[int, list[PinAt]] = {}
    pins_section: dict[int, list[PinAt]] = {}
    pins_tag: dict[str, list[PinAt]] = {}
    for order, pin in enumerate(rules.pins):
        position = table.position_of(pin.article)
        if position is None:
            continue  # not in the index (yet): ignored until it is
        at = PinAt(position, pin.slot, pin.start.timestamp() if pin.start else -np.inf,
                   pin.until.timestamp() if pin.until else np.inf, order)
        if pin.into is not None:
            target = table.position_of(pin.into)
            if target is not None:
                pins_into.setdefault(target, []).append(at)
        elif pin.section is not None:
            code = table.section_code(pin.section)
            if code != ranking.NO_SECTION:
                pins_section.setdefault(code, []).append(at)
        else:
            pins_tag.setdefault(pin.tag, []).append(at)
    plans = {table.section_code(name): _plan(values, state) for name, values in rules.policies.items()
             if name != DEFAULT_POLICY and table.section_code(name) != ranking.NO_SECTION}
    default = _plan(rules.policies[DEFAULT_POLICY], state) if DEFAULT_POLICY in rules.policies else None
    return Compiled(False, blocked, {s: np.array(p, dtype=np.int64) for s, p in blocked_from.items()},
                    pins_into, pins_section, pins_tag, plans, default)


def _plan(values: dict[str, Any], state: ServingState) -> Plan:
    table = state.table
    kinds = None
    if "kinds" in values:
        kinds = np.concatenate([table.kind_codes_of(values["kinds"]),
                                [ranking.NO_CODE] if "none" in values["kinds"] else []]).astype(np.int32)
    elif "exclude_kinds" in values:
        kinds = np.array([ranking.NO_CODE] + [code for code, name in enumerate(table.kind_names)
                                               if name not in values["exclude_kinds"]], dtype=np.int32)
    language = values.get("language", "same")
    languages = None if language == "any" else language if language == "same" else \
        np.array([table.language_names.index(n) for n in language if n in table.language_names], dtype=np.int32)
    sections = table.section_codes_of(values["sections"]) if "sections" in values else None
    return Plan(tuple(sorted((k, values[k]) for k in _RANKING_KEYS if k in values)), sections, kinds, languages,
                values.get("k"))


def rank(state: ServingState, sources: Sources, call: Request, k: int | None, base: RankingConfig,
         overrides: dict[str, Any]) -> RankedBlock:
    """The boxes of ``sources`` under the state's rules: ``call`` is the call's request
    (its settings ``base`` with ``overrides``), ``k`` the call's box size (None: the
    policy's, else DEFAULT_K). Settings: the index's, then the policy's, then the call's."""
    rules = compiled(state)
    if rules.empty:
        return rank_block(state, sources, call._replace(k=k or DEFAULT_K))
    call = call._replace(blocked=rules.blocked, blocked_from=rules.blocked_from or None)
    plans = [rules.plans.get(code, rules.default) for code in sources.section_codes.tolist()]
    pins = [_pins(state, rules, sources, b, call.now) for b in range(len(plans))]
    # Sources ranked together share a plan and a pin count: a box is ranked the same
    # whichever call asks for it (k items, the pins placed; k + pins items when a pin's
    # story took ranked items the box needs).
    groups: dict[tuple, list[int]] = {}
    for row, plan in enumerate(plans):
        groups.setdefault((id(plan), len(pins[row])), []).append(row)
    parts = []
    for (_, extra), rows in groups.items():
        at = np.array(rows)
        part = sources if len(rows) == len(plans) else subset(sources, at)
        request, size = _request(call, plans[rows[0]], k, base, overrides)
        ranked = rank_block(state, part, request._replace(k=size))
        if extra:
            mine = [pins[r] for r in rows]
            ranked, short = _place(state, part, request, ranked, mine, size)
            if short.any():  # a pin's story took ranked items the box needs: rank those boxes deeper
                deeper = np.flatnonzero(short)
                again = rank_block(state, subset(part, deeper), request._replace(k=size + extra))
                again = _cut(_place(state, subset(part, deeper), request, again, [mine[i] for i in deeper], size)[0],
                             size)
                for whole, fixed in zip(ranked, again):
                    whole[deeper] = fixed
        parts.append((at, _cut(ranked, size)))
    if len(parts) == 1:
        return parts[0][1]
    width = max(r.positions.shape[1] for _, r in parts)
    out = RankedBlock(np.full((len(plans), width), ranking.NO_PICK), np.zeros((len(plans), width)),
                      np.zeros((len(plans), width)), np.zeros((len(plans), width), np.int8))
    for at, ranked in parts:
        for mine, theirs in zip(out, ranked):
            mine[at, :theirs.shape[1]] = theirs
    return out


def settings_by_section(state: ServingState, section_codes: np.ndarray, base: RankingConfig
                        ) -> list[tuple[np.ndarray, RankingConfig]]:
    """Rows of ``section_codes`` grouped by the ranking settings (``base`` with their
    section's policy: half-life, maximum age) the rules give their boxes."""
    rules = compiled(state)
    if rules.empty:
        return [(np.arange(len(section_codes)), base)]
    codes, inverse = np.unique(section_codes, return_inverse=True)
    groups: dict[tuple, list[int]] = {}
    for i, code in enumerate(codes.tolist()):
        plan = rules.plans.get(code, rules.default)
        groups.setdefault(plan.values if plan else (), []).append(i)
    return [(np.flatnonzero(np.isin(inverse, members)), replace_ranking(base, dict(values)))
            for values, members in groups.items()]


def passed_over(state: ServingState) -> int | None:
    """How many recent articles a box's fallback may skip under the rules (the blocked
    ones), or None when it depends on the box: a policy that filters sections, kinds,
    languages or age, or one source language among several. Worked out once a state."""
    if "passed_over" not in state.rulings:
        state.rulings["passed_over"] = _passed_over(compiled(state), state.table.language_codes)
    return state.rulings["passed_over"]


def _passed_over(rules: Compiled, languages: np.ndarray | None) -> int | None:
    plans = [*rules.plans.values(), *([rules.default] if rules.default else [])]
    if any(p.sections is not None or p.kinds is not None or dict(p.values).get("max_age_days") is not None
           or not (p.languages is None or isinstance(p.languages, str)) for p in plans):
        return None
    boxes_own_language = not plans or any(isinstance(p.languages, str) for p in plans)
    if boxes_own_language and languages is not None and len(np.unique(languages[languages >= 0])) > 1:
        return None
    return (0 if rules.blocked is None else int(rules.blocked.sum())) + sum(map(len, rules.blocked_from.values()))


def check_k(k: Any) -> int | None:
    """A call's box size, checked (None: the policy's)."""
    return None if k is None else check_box_size(k)


def _request(call: Request, plan: Plan | None, k: int | None, base: RankingConfig,
             overrides: dict[str, Any]) -> tuple[Request, int]:
    """The request of sources under ``plan`` and their box size."""
    if plan is None:
        return call, k or DEFAULT_K
    settings = replace_ranking(replace_ranking(base, dict(plan.values)), overrides) if plan.values else call.settings
    return call._replace(settings=settings, sections=call.sections if call.sections is not None else plan.sections,
                         kinds=plan.kinds, languages=plan.languages), k or plan.k or DEFAULT_K


def _pins(state: ServingState, rules: Compiled, sources: Sources, b: int, now: float) -> list[PinAt]:
    """The pins in force now for source ``b``, by slot (the earlier rule first)."""
    found: list[PinAt] = []
    position = int(sources.positions[b])
    if rules.pins_into and position >= 0:
        found += rules.pins_into.get(position, ())
    if rules.pins_section:
        found += rules.pins_section.get(int(sources.section_codes[b]), ())
    if rules.pins_tag and position >= 0:
        for tag in state.table.tags_of(position):
            found += rules.pins_tag.get(tag, ())
    found = [p for p in found if p.start <= now < p.until and p.position != position]
    return sorted(found, key=lambda p: (p.slot, p.order))


def _place(state: ServingState, sources: Sources, request: Request, ranked: RankedBlock,
           pins: list[list[PinAt]], size: int) -> tuple[RankedBlock, np.ndarray]:
    """``ranked`` with each source's pins at their slots, and which boxes ran short: a
    pin is shown only while it passes the eligibility that no filter or policy relaxes
    (live, published, not embargoed, expired, held, blocked or excluded by the call, not
    the source); the ranked items of its story (the same headline, or a cosine at or
    above duplicate_similarity) make way, and a full ranked box that then has too few
    items is short (ranked again deeper by the caller)."""
    out = RankedBlock(*(a.copy() for a in ranked))
    short = np.zeros(len(pins), dtype=bool)
    hard = request._replace(sections=None, kinds=None, languages=None,
                            settings=replace_ranking(request.settings, {"max_age_days": None}))
    table, index = state.table, state.index
    for b, wanted in enumerate(pins):
        if not wanted:
            continue
        positions = np.array([p.position for p in wanted], dtype=np.int64)
        ok = eligible(state, hard, positions, request.now, int(sources.positions[b]),
                      None if sources.languages is None else sources.languages[b])
        wanted = [p for p, shown in zip(wanted, ok.tolist()) if shown]
        if not wanted:
            continue
        pinned = np.array([p.position for p in wanted], dtype=np.int64)
        row = [(int(p), float(s), float(m), int(kd)) for p, s, m, kd in zip(*(a[b] for a in ranked)) if p >= 0]
        full = len(row) == ranked.positions.shape[1]
        at = np.array([r[0] for r in row], dtype=np.int64)
        vectors = index.vectors(np.concatenate([pinned, at]))  # one read for the pins and the ranked
        similarity = vectors[:len(pinned)] @ sources.vectors[b]
        if row:
            keys = table.title_keys[pinned]
            close = (vectors[len(pinned):] @ vectors[:len(pinned)].T) >= request.settings.duplicate_similarity
            same = close | (at[:, None] == pinned) | ((table.title_keys[at][:, None] == keys) & (keys != 0))
            row = [r for r, drop in zip(row, same.any(axis=1).tolist()) if not drop]
        short[b] = full and len(row) < size - min(sum(p.slot <= size for p in wanted), size)
        items = _merge(row, [(int(p.position), float(s), float(s), PINNED_KIND, p.slot)
                             for p, s in zip(wanted, similarity.tolist())], size)
        out.positions[b] = ranking.NO_PICK
        for j, (p, score, sim, kind) in enumerate(items[:out.positions.shape[1]]):
            out.positions[b, j], out.scores[b, j], out.similarities[b, j], out.kinds[b, j] = p, score, sim, kind
    return out, short


def _merge(ranked: list[tuple], pins: list[tuple], size: int) -> list[tuple]:
    """The box: each pin at its slot (or the first free one after it), ranked items in
    order around them; pins past ``size`` are not shown; a short box shows its pins
    after its ranked items."""
    out: list[tuple] = []
    waiting = [p for p in pins if p[4] <= size]
    ranked = list(ranked)
    while len(out) < size and (waiting or ranked):
        if waiting and (waiting[0][4] <= len(out) + 1 or not ranked):
            out.append(waiting.pop(0)[:4])
        else:
            out.append(ranked.pop(0))
    return out


def _cut(ranked: RankedBlock, size: int) -> RankedBlock:
    return RankedBlock(*(a[:, :size] for a in ranked)) if ranked.positions.shape[1] > size else ranked
