"""similar-articles: fill the "Similar articles" box under a news article."""

__version__ = "0.2.0"

from .articles import Article
from .config import Config, EncoderConfig, IndexConfig, RankingConfig
from .errors import (ConfigError, IndexCorruptedError, IndexNotFoundError, InvalidArticleError,
                     ModelMismatchError, SimilarArticlesError, StorageError, UnknownArticleError)
from .results import Recommendation
from .default import recommend
from .recommender import Recommender

__all__ = [
    "Article", "Config", "EncoderConfig", "IndexConfig", "RankingConfig",
    "Recommendation", "Recommender", "recommend",
    "SimilarArticlesError", "ConfigError", "IndexCorruptedError", "IndexNotFoundError",
    "InvalidArticleError", "ModelMismatchError", "StorageError", "UnknownArticleError",
]
