"""Reader labels: the short words above each box item ("Earlier coverage", "Editor's
pick", "More from World"), English by default, translated by a site in ``labels.json``
in the index folder (docs/editors.md). Validated here; rendered in results.py."""

from __future__ import annotations

import json
from pathlib import Path
from string import Formatter
from typing import Any

from .errors import ConfigError

LABELS_FILE = "labels.json"
# What a reader sees above an item, by why it is there. {section} is the item's section.
DEFAULT_LABELS = {
    "pinned": "Editor's pick",
    "earlier": "Earlier coverage",  # related, published before the source
    "later": "Latest on this story",  # related, published after it
    "related": "Related",  # related, the source or the item undated
    "section": "More from {section}",  # fallback: recent in the source's section
    "recent": "Latest news",  # fallback: recent anywhere
}


def check_labels(labels: Any, where: str = LABELS_FILE) -> dict[str, str]:
    """The default labels overridden by ``labels``; ConfigError names a bad entry."""
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}: must be a JSON object of label name -> words")
    out = dict(DEFAULT_LABELS)
    for name, words in labels.items():
        if name not in DEFAULT_LABELS:
            raise ConfigError(f"{where}: unknown label {name!r}; known: {', '.join(DEFAULT_LABELS)}")
        if not isinstance(words, str) or not words.strip():
            raise ConfigError(f"{where}: label {name!r} must be non-empty text")
        try:
            fields = {f for _, f, _, _ in Formatter().parse(words) if f is not None}
        except ValueError as exc:
            raise ConfigError(f"{where}: label {name!r} ({words!r}) is malformed ({exc}); write {{section}} "
                              "for the section and {{{{ }}}} for a brace") from None
        if fields - {"section"}:
            raise ConfigError(f"{where}: label {name!r} uses {sorted(fields - {'section'})}; only {{section}} "
                              "may be used")
        out[name] = words
    return out


def read_labels(path: Path) -> dict[str, str]:
    """The labels of ``path`` (a labels.json) over the defaults; the defaults when it is
    missing; ConfigError naming the file and the entry when it is bad."""
    try:
        return check_labels(json.loads(path.read_text("utf-8")), str(path))
    except FileNotFoundError:
        return dict(DEFAULT_LABELS)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}); fix it or delete it (English labels then)") from None
