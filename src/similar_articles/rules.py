"""The newsroom's rules, kept in the index folder beside the snapshots (so they survive
rebuilds and rollbacks): ``rules.json``, one validated, versioned document of pins,
blocks and per-section policies (docs/editors.md); and the watcher that notices it (and
``labels.json``, labels.py) changed.

Every edit is an operation applied under ``rules.lock`` to the document found there,
validated, numbered (version + 1) and written by atomic rename: two processes editing at
once both get their change in; a bad rule is refused naming it and the file in force is
untouched. Processes serving the index notice a new file with one ``stat`` at each
refresh (:class:`Watcher`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .articles import parse_datetime
from .errors import ConfigError, InvalidArticleError, StorageError
from .journal import FileLock
from .labels import LABELS_FILE, read_labels

RULES_FILE = "rules.json"
RULES_LOCK = "rules.lock"
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


class RulesFile:
    """``rules.json`` and ``labels.json`` of the index at ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / RULES_FILE
        self.labels_path = self.root / LABELS_FILE

    def read(self) -> Rules:
        """The rules in force (none when there is no file)."""
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return Rules()
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise RuleError(f"{self.path} is not JSON ({exc}); restore it from a backup or delete it") from None
        try:
            return Rules.from_document(document)
        except RuleError as exc:
            raise RuleError(f"{self.path}: {exc}") from None

    def read_labels(self) -> dict[str, str]:
        return read_labels(self.labels_path)

    def edit(self, change: Callable[[Rules], Rules], *, based_on: int | None = None) -> Rules:
        """Apply ``change`` to the rules in force, under the lock, and save the result
        as the next version. ``based_on``: the version the edit was made from; another
        version in force raises RulesConflictError (nothing is written)."""
        try:
            return self._edit(change, based_on)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path} ({exc.strerror}): the rules in force are unchanged; make "
                               "the index folder writable and free space, then retry") from None

    def _edit(self, change: Callable[[Rules], Rules], based_on: int | None) -> Rules:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / RULES_LOCK):
            current = self.read()
            if based_on is not None and based_on != current.version:
                raise RulesConflictError(f"the edit was based on rules version {based_on}, but version "
                                         f"{current.version} is in force now; reload the rules and redo the edit")
            made = change(current)
            made.check()
            made = replace(made, version=current.version + 1,
                           updated_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
            temporary = self.path.with_name(f".{RULES_FILE}.{os.getpid()}.tmp")
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump(made.to_document(), f, ensure_ascii=False, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
            return made

    def replace_document(self, document: Any, *, based_on: int | None = None) -> Rules:
        """Put a whole document in force (validated first; its version is ignored)."""
        made = Rules.from_document(document)
        return self.edit(lambda current: replace(made, version=current.version), based_on=based_on)


class Watcher(RulesFile):
    """The rules and labels files of an index, read again when one ``stat`` each says
    one changed."""

    def __init__(self, root: str | os.PathLike):
        super().__init__(root)
        self._seen: tuple = ("unread",)

    def read_if_changed(self) -> tuple[Rules, dict[str, str]] | None:
        """(rules, labels) if either file changed since the last read, else None. A file
        that cannot be read raises (once: it is read again when it changes)."""
        stamps = tuple(_stamp(p) for p in (self.path, self.labels_path))
        if stamps == self._seen:
            return None
        self._seen = stamps  # a bad file is reported once, and read again when it changes
        return self.read(), self.read_labels()


def _stamp(path: Path) -> tuple | None:
    try:
        s = os.stat(path)
    except FileNotFoundError:
        return None
    return (s.st_ino, s.st_mtime_ns, s.st_size)
