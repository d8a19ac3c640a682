"""What the subcommands share: exit codes and the ``--set`` option."""

from __future__ import annotations

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
