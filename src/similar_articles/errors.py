"""The exceptions users catch. Every message names the input at fault and the fix."""

from __future__ import annotations


class SimilarArticlesError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidArticleError(SimilarArticlesError, ValueError):
    """A row could not become an Article. Carries where it came from."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None,
                 source: str | None = None, article_id: str | None = None):
        self.row, self.field, self.source, self.article_id = row, field, source, article_id
        where = []
        if source:
            where.append(str(source))
        if row is not None:
            where.append(f"row {row}")
        if article_id:
            where.append(f"id {article_id!r}")
        if field:
            where.append(f"field {field!r}")
        self.reason = message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(SimilarArticlesError, ValueError):
    """A setting has a value it cannot take."""


class UnknownArticleError(SimilarArticlesError, KeyError):
    """An article id is not in the index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class IndexNotFoundError(SimilarArticlesError, FileNotFoundError):
    """No index at the given path."""


class IndexCorruptedError(SimilarArticlesError):
    """An index exists but its files do not match its manifest."""


class ModelMismatchError(SimilarArticlesError):
    """The index was built with another embedding model than the one configured."""
