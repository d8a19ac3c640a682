"""Where the library keeps what it downloads or derives once: wheels of the corpora,
ONNX exports of the model, the shared embedding cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when run from one
DATA_ENV = "SIMILAR_ARTICLES_DATA"


def data_dir() -> Path:
    """Where downloaded wheels are cached.

    ``$SIMILAR_ARTICLES_DATA`` if set; else ``data/cache`` in the source checkout this
    module runs from; else ``~/.cache/similar-articles`` (installed package, or a
    checkout we cannot write to).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    if (REPO_ROOT / "src" / "similar_articles").is_dir() and os.access(REPO_ROOT, os.W_OK):
        return REPO_ROOT / "data" / "cache"
    return Path.home() / ".cache" / "similar-articles"
