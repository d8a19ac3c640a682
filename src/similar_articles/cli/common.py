"""What the subcommands share: exit codes and the ``--set`` option."""

from __future__ import annotations

from typing import Sequence

from ..config import parse_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_set(parser, scope: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help=f"a ranking setting (RankingConfig field, e.g. min_similarity=0.35; repeatable) {scope}")


def with_settings(rec, pairs: Sequence[str]):
    """``rec`` ranking with the ``--set`` pairs for this run."""
    settings = parse_settings(pairs)
    return rec.with_settings(**settings) if settings else rec
