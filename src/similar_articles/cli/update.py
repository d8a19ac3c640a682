"""The subcommands that change an index between builds: ``add`` (new or replaced
articles from files) and ``remove`` (ids). Each is journaled as ``Recommender.add`` and
``remove`` are (every process serving the index applies it within half a second) and
prints the boxes it changed as JSON lines (docs/changes.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import EXIT_OK, EXIT_USAGE, add_compare_options, print_changed, tracking_changes


def add_update(sub) -> None:
    add = sub.add_parser("add", help="index new or changed articles now and print the boxes that changed",
                         description="Read articles from files (as build does: bad rows are skipped and "
                                     "named), index them in every process serving the index, and print "
                                     "one JSON line a changed box: {\"id\", \"change\", \"live_update\"}.")
    add.add_argument("sources", nargs="+", metavar="SOURCE", help="JSONL, CSV or Parquet files, globs or folders")
    add.add_argument("--index", type=Path, required=True)
    add.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="default: from each name")
    add.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                     help="take a field from another column (repeatable)")
    add_compare_options(add)
    add.set_defaults(run=_add)

    remove = sub.add_parser("remove", help="hide articles from every box now and print the boxes that changed")
    remove.add_argument("ids", nargs="+", metavar="ID")
    remove.add_argument("--index", type=Path, required=True)
    add_compare_options(remove)
    remove.set_defaults(run=_remove)


def _load(args: argparse.Namespace):
    if args.index.is_dir() and not (args.index / "current").exists():
        raise ConfigError(f"{args.index} is not an index folder (no 'current'): give the folder a build wrote")
    return tracking_changes(args)


def _add(args: argparse.Namespace) -> int:
    from ..sources import ArticleReader, RowError, as_sources, parse_mapping

    reader, articles, skipped = ArticleReader(), [], 0
    for source in as_sources([str(s) for s in args.sources], fmt=args.format, mapping=parse_mapping(args.map)):
        source.check()
        for item in reader.articles(source.name, source.rows()):
            if isinstance(item, RowError):
                skipped += 1
                print(f"skipped: {item}", file=sys.stderr)
            else:
                articles.append(item)
    if not articles:
        print(f"error: no article to add ({skipped} rows skipped)", file=sys.stderr)
        return EXIT_USAGE
    update = _load(args).add(articles)
    print_changed(update.changed)
    print(f"added {int(update)} articles (live update {update.seq}), {skipped} rows skipped; "
          f"{len(update.changed.boxes)} other boxes changed", file=sys.stderr)
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    rec = _load(args)
    unknown = [i for i in args.ids if i not in rec]
    for article_id in unknown:
        print(f"not in the index: {article_id!r}", file=sys.stderr)
    if len(unknown) == len(args.ids):
        return EXIT_USAGE
    update = rec.remove([i for i in args.ids if i not in unknown])
    print_changed(update.changed)
    print(f"removed {int(update)} articles (live update {update.seq}); "
          f"{len(update.changed.boxes)} other boxes changed", file=sys.stderr)
    return EXIT_OK

