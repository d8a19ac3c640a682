"""The newest records of an append-only JSON-lines file (the rules history, the
changes log), read from its end: a torn last line, cut by a crash, is skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TAIL_BYTES = 1 << 20  # read at most this much of a file's end


def newest_records(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` records of ``path``, newest first ([] without the file; a
    record longer than TAIL_BYTES is left out)."""
    try:
        with open(path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES)
            f.seek(start)
            lines = f.read().splitlines()[1 if start else 0:]  # the first may be cut
    except FileNotFoundError:
        return []
    out = []
    for line in reversed(lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
        if len(out) == limit:
            break
    return out
