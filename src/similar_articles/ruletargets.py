"""Which boxes a rules edit may change, rule by rule (tracking.py ranks them and
reports those that did change):

- a pin, added, moved or removed, or its article added or replaced: the boxes it targets (one article's, a section's
  articles', a tag's articles');
- a block from one box: that box; a block everywhere: the boxes that showed the
  article (the tracker's map); an unblock everywhere: the article comes back, so the
  boxes it could rank into, found as for an added article (the caller's search);
- a section policy set, changed or removed: that section's boxes; the default policy
  (``*``): the boxes of every section without a policy of its own, before or after.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import ranking
from .rules import DEFAULT_POLICY, Pin, Rules
from .table import ArticleTable


class RuleTargets(NamedTuple):
    """Positions of boxes a rules edit targets; articles blocked everywhere since (the
    boxes showing them changed) and unblocked everywhere since (they may come back)."""

    boxes: np.ndarray
    blocked: np.ndarray
    unblocked: np.ndarray


def rule_targets(old: Rules, new: Rules, table: ArticleTable) -> RuleTargets:
    """What the edit from ``old`` to ``new`` may change in the boxes of ``table``."""
    boxes: list[np.ndarray] = []
    for pin in set(old.pins) ^ set(new.pins):
        boxes.append(_pinned_boxes(pin, table))
    everywhere = {True: [], False: []}  # blocked since: True; unblocked since: False
    for block in set(old.blocks) ^ set(new.blocks):
        if block.source is not None:
            boxes.append(_positions(table, [block.source]))
        else:
            everywhere[block in new.blocks].append(block.article)
    changed = {s for s in set(old.policies) | set(new.policies) if old.policies.get(s) != new.policies.get(s)}
    if DEFAULT_POLICY in changed:
        own = {table.section_code(s) for s in set(old.policies) | set(new.policies) if s != DEFAULT_POLICY}
        boxes.append(np.flatnonzero(~np.isin(table.section_codes, list(own))))
    codes = [table.section_code(s) for s in changed - {DEFAULT_POLICY}]
    codes = [c for c in codes if c != ranking.NO_SECTION]
    if codes:
        boxes.append(np.flatnonzero(np.isin(table.section_codes, codes)))
    found = np.unique(np.concatenate(boxes)) if boxes else np.zeros(0, np.int64)
    return RuleTargets(found[table.alive[found]], _positions(table, everywhere[True]),
                       _positions(table, everywhere[False]))


def pinned_boxes(rules: Rules, table: ArticleTable, article_ids: list[str]) -> np.ndarray:
    """The boxes the pins of ``article_ids`` go into (an article added or replaced may
    be a pin that could not show before)."""
    wanted = set(article_ids)
    found = [_pinned_boxes(pin, table) for pin in rules.pins if pin.article in wanted]
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _pinned_boxes(pin: Pin, table: ArticleTable) -> np.ndarray:
    """The boxes a pin goes into."""
    kind, value = pin.target
    if kind == "into":
        return _positions(table, [value])
    if kind == "section":
        code = table.section_code(value)
        return np.zeros(0, np.int64) if code == ranking.NO_SECTION else np.flatnonzero(table.section_codes == code)
    return table.tagged(value)


def _positions(table: ArticleTable, ids: list[str]) -> np.ndarray:
    """The live positions of those ids the table has."""
    found = table.positions.get_many(ids) if ids else np.zeros(0, np.int64)
    found = found[found >= 0]
    return found[table.alive[found]]
