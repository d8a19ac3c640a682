"""The process-wide default index: ``recommend(article)`` for a site that serves one
index, loaded once from ``$SIMILAR_ARTICLES_INDEX``."""

from __future__ import annotations

import os
import threading
from typing import Any

from .errors import SimilarArticlesError
from .recommender import ArticleLike, Recommender
from .results import Recommendation

_default: Recommender | None = None
_default_lock = threading.Lock()
INDEX_ENV = "SIMILAR_ARTICLES_INDEX"


def default_recommender() -> Recommender:
    """The process-wide Recommender, loaded once from $SIMILAR_ARTICLES_INDEX."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                path = os.environ.get(INDEX_ENV)
                if not path:
                    raise SimilarArticlesError(
                        f"set {INDEX_ENV} to an index folder built with `similar-articles build`, "
                        "or use Recommender.load(path).recommend(...)")
                _default = Recommender.load(path)
    return _default


def recommend(article: str | ArticleLike, k: int = 2, **options: Any) -> list[Recommendation]:
    """Fill a box from the process-wide index ($SIMILAR_ARTICLES_INDEX)."""
    return default_recommender().recommend(article, k, **options)
