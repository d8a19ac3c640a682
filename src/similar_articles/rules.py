"""The newsroom's rules as one validated, versioned document: pins, blocks and
per-section policies (docs/editors.md), and the operations that make changed rules
(each validated: a bad rule is refused naming it). Stored in the index folder by
rulesfile.py; applied to calls by boxrules.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .articles import parse_datetime
from .errors import ConfigError, InvalidArticleError

FORMAT = "similar-articles-rules"
DEFAULT_POLICY = "*"  # the policy of boxes whose source's section has none of its own
MAX_SLOT = 100
POLICY_KEYS = ("half_life_days", "max_age_days", "sections", "kinds", "exclude_kinds", "k", "language")


class RuleError(ConfigError):
    """A rule (or the rules document) is invalid; ``rule`` names it, e.g. "pins[2]"."""

    def __init__(self, message: str, *, rule: str | None = None):
        self.rule = rule
        super().__init__(f"{rule}: {message}" if rule else message)


class NoSuchRuleError(RuleError):
    """An unpin, unblock or policy removal found no such rule."""


class RulesConflictError(ConfigError):
    """An edit was based on a version of the rules that is no longer the one in force."""


@dataclass(frozen=True)
class Pin:
    """Article ``article`` at ``slot`` (1 = first) in the boxes of one article
    (``into``), of a section's articles or of a tag's, from ``start`` until ``until``."""

    article: str
    into: str | None = None
    section: str | None = None
    tag: str | None = None
    slot: int = 1
    start: datetime | None = None
    until: datetime | None = None

    @property
    def target(self) -> tuple[str, str]:
        return next((name, value) for name, value in (("into", self.into), ("section", self.section),
                                                      ("tag", self.tag)) if value is not None)

    def describe(self) -> str:
        name, value = self.target
        return f"pin of {self.article!r} into {'the box of ' if name == 'into' else name + ' '}{value!r}"

    def to_dict(self) -> dict[str, Any]:
        name, value = self.target
        return {"article": self.article, name: value, "slot": self.slot,
                "from": self.start.isoformat() if self.start else None,
                "until": self.until.isoformat() if self.until else None}


@dataclass(frozen=True)
class Block:
    """Article ``article`` never shown: everywhere, or only in the box of ``source``."""

    article: str
    source: str | None = None

    def describe(self) -> str:
        return f"block of {self.article!r}" + (f" from the box of {self.source!r}" if self.source else " everywhere")

    def to_dict(self) -> dict[str, Any]:
        return {"article": self.article, "from": self.source}


@dataclass(frozen=True)
class Rules:
    """The rules in force. Make changed ones with the ``with_*`` / ``without_*``
    methods (each validates) and save them through :class:`RulesFile`."""

    version: int = 0
    updated_at: str | None = None
    pins: tuple[Pin, ...] = ()
    blocks: tuple[Block, ...] = ()
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.pins or self.blocks or self.policies)

    # ------------------------------------------------------------------ the document
    def to_document(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "updated_at": self.updated_at,
                "pins": [p.to_dict() for p in self.pins], "blocks": [b.to_dict() for b in self.blocks],
                "policies": {name: dict(values) for name, values in self.policies.items()}}

    @classmethod
    def from_document(cls, document: Any) -> "Rules":
        """Validate a rules document; RuleError names the first bad rule and why."""
        if not isinstance(document, dict):
            raise RuleError("the rules document must be a JSON object with pins, blocks and policies")
        unknown = sorted(set(document) - {"format", "version", "updated_at", "pins", "blocks", "policies"})
        if unknown:
            raise RuleError(f"unknown key(s) {unknown}; a rules document has pins, blocks, policies "
                            "(and format, version, updated_at)")
        if document.get("format", FORMAT) != FORMAT:
            raise RuleError(f"format {document.get('format')!r} is not {FORMAT!r}", rule="format")
        version = document.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise RuleError(f"version={version!r} is invalid: a whole number >= 0", rule="version")
        for name in ("pins", "blocks"):
            if not isinstance(document.get(name, []), list):
                raise RuleError(f"{name} must be a list", rule=name)
        policies = document.get("policies", {})
        if not isinstance(policies, dict):
            raise RuleError("policies must be an object of section -> settings", rule="policies")
        pins = tuple(_pin(p, f"pins[{i}]") for i, p in enumerate(document.get("pins", [])))
        blocks = tuple(_block(b, f"blocks[{i}]") for i, b in enumerate(document.get("blocks", [])))
        rules = cls(version, document.get("updated_at"), pins, blocks,
                    {str(s): _policy(v, f"policies[{s!r}]") for s, v in policies.items()})
        rules.check()
        return rules

    def check(self) -> None:
        """Rules that contradict each other: a pin of an article blocked everywhere, two
        pins of one article into one target, a block given twice."""
        everywhere = {b.article for b in self.blocks if b.source is None}
        seen: dict[tuple, str] = {}
        for i, pin in enumerate(self.pins):
            if pin.article in everywhere:
                raise RuleError(f"{pin.describe()} contradicts the block of {pin.article!r} everywhere; "
                                "unblock it first", rule=f"pins[{i}]")
            key = (pin.article, *pin.target)
            if key in seen:
                raise RuleError(f"{pin.describe()} is given twice (also {seen[key]})", rule=f"pins[{i}]")
            seen[key] = f"pins[{i}]"
        for i, block in enumerate(self.blocks):
            key = ("block", block.article, block.source)
            if key in seen:
                raise RuleError(f"{block.describe()} is given twice (also {seen[key]})", rule=f"blocks[{i}]")
            seen[key] = f"blocks[{i}]"

    # ------------------------------------------------------------------ operations
    def with_pin(self, pin: dict[str, Any] | Pin) -> "Rules":
        """These rules plus a pin (replacing a pin of the same article into the same target)."""
        made = pin if isinstance(pin, Pin) else _pin(pin, "pin")
        kept = tuple(p for p in self.pins if (p.article, p.target) != (made.article, made.target))
        return self._checked(pins=kept + (made,), rule=made.describe())

    def without_pins(self, article: str, target: tuple[str, str] | None = None) -> "Rules":
        """These rules without the pins of ``article`` (into ``target`` only, if given:
        ("into" | "section" | "tag", value)); NoSuchRuleError if there is none."""
        kept = tuple(p for p in self.pins if p.article != article or (target is not None and p.target != target))
        if len(kept) == len(self.pins):
            where = f" into {target[0]} {target[1]!r}" if target else ""
            raise NoSuchRuleError(f"no pin of {article!r}{where}", rule="unpin")
        return replace(self, pins=kept)

    def with_block(self, block: dict[str, Any] | Block) -> "Rules":
        made = block if isinstance(block, Block) else _block(block, "block")
        if made in self.blocks:
            return self
        return self._checked(blocks=self.blocks + (made,), rule=made.describe())

    def without_block(self, article: str, source: str | None = None) -> "Rules":
        """These rules without the block of ``article`` everywhere (``source`` None) or
        from ``source``'s box; NoSuchRuleError if there is none."""
        kept = tuple(b for b in self.blocks if (b.article, b.source) != (article, source))
        if len(kept) == len(self.blocks):
            raise NoSuchRuleError(f"no {Block(article, source).describe()}", rule="unblock")
        return replace(self, blocks=kept)

    def without_policy(self, section: str) -> "Rules":
        if section not in self.policies:
            raise NoSuchRuleError(f"no policy for section {section!r}", rule=f"policies[{section!r}]")
        return replace(self, policies={s: v for s, v in self.policies.items() if s != section})

    def with_policy(self, section: str, values: dict[str, Any]) -> "Rules":
        """These rules with ``values`` set in ``section``'s policy (a None value removes
        the key; an empty policy is removed). ``*`` is the default policy."""
        if not isinstance(section, str) or not section.strip():
            raise RuleError("a policy needs a section name (or * for every section)", rule="policy")
        merged = {k: v for k, v in {**self.policies.get(section, {}), **values}.items() if v is not None}
        policies = {**self.policies, section: _policy(merged, f"policies[{section!r}]")}
        if not policies[section]:
            del policies[section]
        return replace(self, policies=policies)

    def changes_from(self, old: "Rules") -> list[str]:
        """What these rules changed from ``old``, in words, for the history."""
        out = [f"added {p.describe()} at slot {p.slot}" for p in self.pins if p not in old.pins]
        out += [f"removed {p.describe()}" for p in old.pins if p not in self.pins]
        out += [f"added {b.describe()}" for b in self.blocks if b not in old.blocks]
        out += [f"removed {b.describe()}" for b in old.blocks if b not in self.blocks]
        for section in sorted(set(self.policies) | set(old.policies)):
            if self.policies.get(section) != old.policies.get(section):
                values = self.policies.get(section)
                out.append(f"policy of {section!r} " + (f"set to {values}" if values else "removed"))
        return out

    def _checked(self, *, rule: str, **changes: Any) -> "Rules":
        made = replace(self, **changes)
        try:
            made.check()
        except RuleError as exc:
            raise RuleError(str(exc).split(": ", 1)[-1], rule=rule) from None
        return made


def _fields(value: Any, rule: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RuleError(f"must be an object, got {type(value).__name__}", rule=rule)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise RuleError(f"unknown key(s) {unknown}; known: {', '.join(allowed)}", rule=rule)
    return value


def _text(value: Any, rule: str, name: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RuleError(f"{name}={value!r} is invalid: give a non-empty text", rule=rule)
    return value.strip()


def _when(value: Any, rule: str, name: str) -> datetime | None:
    try:
        return parse_datetime(value, field=name)
    except InvalidArticleError:
        raise RuleError(f"{name}={value!r} is not an ISO 8601 time, e.g. 2026-12-24 or 2026-12-24T18:00:00Z "
                        "(naive times are UTC)", rule=rule) from None


def _pin(value: Any, rule: str) -> Pin:
    given = _fields(value, rule, ("article", "into", "section", "tag", "slot", "from", "until"))
    article = _text(given.get("article"), rule, "article", required=True)
    targets = {name: _text(given.get(name), rule, name) for name in ("into", "section", "tag")}
    named = [name for name, target in targets.items() if target is not None]
    if len(named) != 1:
        raise RuleError(f"a pin of {article!r} needs exactly one of into, section, tag (got {named or 'none'})",
                        rule=rule)
    slot = given.get("slot", 1)
    if isinstance(slot, bool) or not isinstance(slot, int) or not 1 <= slot <= MAX_SLOT:
        raise RuleError(f"slot={slot!r} is invalid: a box position from 1 (the first) to {MAX_SLOT}", rule=rule)
    start, until = _when(given.get("from"), rule, "from"), _when(given.get("until"), rule, "until")
    if start and until and until <= start:
        raise RuleError(f"until={until.isoformat()} is not after from={start.isoformat()}", rule=rule)
    if targets["into"] == article:
        raise RuleError(f"a pin of {article!r} into its own box: an article never shows in its own box", rule=rule)
    return Pin(article, targets["into"], targets["section"], targets["tag"], slot, start, until)


def _block(value: Any, rule: str) -> Block:
    given = _fields(value, rule, ("article", "from"))
    article = _text(given.get("article"), rule, "article", required=True)
    source = _text(given.get("from"), rule, "from")
    if source == article:
        raise RuleError(f"a block of {article!r} from its own box: it never shows there anyway", rule=rule)
    return Block(article, source)


def _policy(value: Any, rule: str) -> dict[str, Any]:
    given = _fields(value, rule, POLICY_KEYS)
    out: dict[str, Any] = {}
    for key, item in given.items():
        if item is None:
            continue
        if key in ("half_life_days", "max_age_days"):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 < item < 1e6:
                raise RuleError(f"{key}={item!r} is invalid: a positive number of days", rule=rule)
        elif key == "k":
            if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= MAX_SLOT:
                raise RuleError(f"k={item!r} is invalid: a box of 1 to {MAX_SLOT} items", rule=rule)
        elif key == "language":
            if not (item in ("same", "any") or _names(item)):
                raise RuleError(f"language={item!r} is invalid: 'same' (the source's), 'any', or a list of "
                                "language codes", rule=rule)
        elif not _names(item):
            raise RuleError(f"{key}={item!r} is invalid: a non-empty list of names", rule=rule)
        out[key] = [n.strip().lower() if key != "sections" else n.strip() for n in item] \
            if isinstance(item, list) else item
    if "kinds" in out and "exclude_kinds" in out:
        raise RuleError("give kinds (the kinds shown) or exclude_kinds (the kinds never shown), not both",
                        rule=rule)
    return out


def _names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(n, str) and n.strip() for n in value)
