"""``similar-articles rules``: list and edit the newsroom's rules of an index (pins,
blocks, section policies) without loading it; serving processes pick a change up within
their refresh interval (docs/editors.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from ..rules import POLICY_KEYS
from ..rulesfile import RulesFile
from ..snapshot import resolve_snapshot_dir
from .common import EXIT_OK, add_compare_options, print_changed, tracking_changes

_LISTS = ("sections", "kinds", "exclude_kinds")


def add_rules(sub) -> None:
    rules = sub.add_parser("rules", help="list or edit pins, blocks and section policies (kept in the index folder)",
                           description="Rules live in INDEX/rules.json beside the snapshots: they survive rebuilds "
                                       "and reach every serving process within a second. See docs/editors.md.")
    rules.add_argument("--index", type=Path, required=True)
    actions = rules.add_subparsers(required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="print the rules in force")
    listing.add_argument("--json", action="store_true", help="print the rules document")
    listing.set_defaults(run=_list)

    pin = actions.add_parser("pin", help="show ARTICLE at a slot in the boxes of an article, a section or a tag")
    pin.add_argument("article")
    _target(pin, required=True)
    pin.add_argument("--slot", type=int, default=1, help="box position, 1 = first (default 1)")
    pin.add_argument("--from", dest="start", metavar="DATE", help="ISO 8601 time the pin starts (default: now)")
    pin.add_argument("--until", metavar="DATE", help="ISO 8601 time the pin ends (default: never)")
    _changed_option(pin)
    pin.set_defaults(run=_pin)

    unpin = actions.add_parser("unpin", help="remove ARTICLE's pins (into one target, or all of them)")
    unpin.add_argument("article")
    _target(unpin, required=False)
    _changed_option(unpin)
    unpin.set_defaults(run=_unpin)

    for name, run, text in (("block", _block, "never show ARTICLE (everywhere, or in one article's box)"),
                            ("unblock", _unblock, "remove a block")):
        action = actions.add_parser(name, help=text)
        action.add_argument("article")
        action.add_argument("--from", dest="source", metavar="ID", help="only the box of this article")
        _changed_option(action)
        action.set_defaults(run=run)

    policy = actions.add_parser(
        "policy", help="set a section's policy: KEY=VALUE for " + ", ".join(POLICY_KEYS),
        description="SECTION is the section of the box's article (* for every section without its own policy). "
                    "Lists are comma-separated (sections=sport,football); KEY=none removes a key; "
                    "language=same|any|en,fr.")
    policy.add_argument("section")
    policy.add_argument("values", nargs="*", metavar="KEY=VALUE")
    policy.add_argument("--clear", action="store_true", help="remove the section's policy")
    _changed_option(policy)
    policy.set_defaults(run=_policy)


def _target(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--into", metavar="ID", help="the box of this article")
    group.add_argument("--section", help="the boxes of this section's articles")
    group.add_argument("--tag", help="the boxes of articles with this tag")


def _changed_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--changed", action="store_true",
                        help="load the index, rank every box first (~50 s a million articles), and print the boxes "
                             "the edit changed as JSON lines (and log them for export --changed)")
    add_compare_options(parser)


def _files(args: argparse.Namespace) -> RulesFile:
    resolve_snapshot_dir(args.index)  # a typo'd --index fails here, not in a new empty folder
    return RulesFile(args.index)


def _edit(args: argparse.Namespace, change, done: str) -> int:
    if not args.changed:
        rules = _files(args).edit(change)
        print(f"rules version {rules.version}: {done}; serving processes apply it within a second")
        return EXIT_OK
    _files(args)
    rec = tracking_changes(args)
    rules = rec.edit_rules(change)
    report = rec.changed_boxes()[-1]
    print_changed(report)
    print(f"rules version {rules.version}: {done}; {len(report.boxes)} boxes changed", file=sys.stderr)
    return EXIT_OK


def _pin(args: argparse.Namespace) -> int:
    name, value = _chosen(args)
    fields = {"article": args.article, name: value, "slot": args.slot, "from": args.start, "until": args.until}
    return _edit(args, lambda rules: rules.with_pin(fields), f"pinned {args.article!r} into {name} {value!r}")


def _unpin(args: argparse.Namespace) -> int:
    target = _chosen(args) if args.into or args.section or args.tag else None
    return _edit(args, lambda rules: rules.without_pins(args.article, target), f"unpinned {args.article!r}")


def _block(args: argparse.Namespace) -> int:
    return _edit(args, lambda rules: rules.with_block({"article": args.article, "from": args.source}),
                 f"blocked {args.article!r}" + (f" from {args.source!r}" if args.source else " everywhere"))


def _unblock(args: argparse.Namespace) -> int:
    return _edit(args, lambda rules: rules.without_block(args.article, args.source), f"unblocked {args.article!r}")


def _policy(args: argparse.Namespace) -> int:
    if args.clear:
        if args.values:
            raise ConfigError("--clear removes the whole policy: give no KEY=VALUE with it")
        return _edit(args, lambda rules: rules.without_policy(args.section), f"removed the policy of {args.section!r}")
    if not args.values:
        raise ConfigError(f"give KEY=VALUE settings for {args.section!r} (keys: {', '.join(POLICY_KEYS)}) or --clear")
    values = parse_policy(args.values)
    return _edit(args, lambda rules: rules.with_policy(args.section, values), f"policy of {args.section!r} set")


def parse_policy(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as policy values: numbers as numbers, ``none`` as None
    (removes the key), comma-separated lists for sections, kinds, exclude_kinds and a
    language list. The values are checked by the rules themselves."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ConfigError(f"{pair!r} is not KEY=VALUE, e.g. half_life_days=3 or sections=sport,football")
        if text.lower() in ("none", "null"):
            values[key] = None
        elif key in _LISTS or (key == "language" and text not in ("same", "any")):
            values[key] = [part.strip() for part in text.split(",") if part.strip()]
        else:
            try:
                values[key] = json.loads(text)
            except ValueError:
                values[key] = text
    return values


def _chosen(args: argparse.Namespace) -> tuple[str, str]:
    return next((name, getattr(args, name)) for name in ("into", "section", "tag") if getattr(args, name))


def _list(args: argparse.Namespace) -> int:
    rules = _files(args).read()
    if args.json:
        print(json.dumps(rules.to_document(), indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"rules version {rules.version} (updated {rules.updated_at or 'never'})")
    for pin in rules.pins:
        window = "".join(f" {word} {when.isoformat()}" for word, when in (("from", pin.start), ("until", pin.until))
                         if when)
        print(f"  {pin.describe()} at slot {pin.slot}{window}")
    for block in rules.blocks:
        print(f"  {block.describe()}")
    for section, values in rules.policies.items():
        print(f"  policy of {section!r}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    if not rules:
        print("  no rules")
    return EXIT_OK
