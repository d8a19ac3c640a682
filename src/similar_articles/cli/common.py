"""What the subcommands share: exit codes, the ``--set`` option, and printing changed boxes."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Sequence

from ..config import parse_settings
from ..errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_set(parser, scope: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help=f"a ranking setting (RankingConfig field, e.g. min_similarity=0.35; repeatable) {scope}")


def with_settings(rec, pairs: Sequence[str]):
    """``rec`` ranking with the ``--set`` pairs for this run."""
    settings = parse_settings(pairs)
    return rec.with_settings(**settings) if settings else rec


def parse_now(text: str | None) -> datetime:
    """``--now``: an ISO 8601 time (naive: UTC), or the clock when not given."""
    if not text:
        return datetime.now(timezone.utc)
    try:
        now = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--now={text!r} is not an ISO 8601 time, e.g. 2024-05-01T12:00:00+00:00") from None
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now


def add_compare_options(parser) -> None:
    """-k and --now of the commands that print the boxes they changed."""
    parser.add_argument("-k", type=int, default=2, help="box size compared (default 2)")
    parser.add_argument("--now", default=None, help="ISO 8601 time the boxes are compared at (default: now)")


def tracking_changes(args):
    """The index of ``args.index``, loaded and tracking changed boxes (ranks every box:
    ~50 s a million articles)."""
    from ..recommender import Recommender

    return Recommender.load(args.index, reload_interval=None).track_changes(args.k, now=parse_now(args.now))


def print_changed(report) -> None:
    """One JSON line a changed box of ``report`` (a ChangedBoxes)."""
    for record in report.records():
        print(json.dumps(record, ensure_ascii=False))
