"""The exceptions users catch. Every message names the input at fault and the fix."""

from __future__ import annotations

import errno
import sqlite3


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


class StorageError(SimilarArticlesError, OSError):
    """Writing the index or its cache failed: disk full, read-only folder, no permission."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(exc: BaseException, folder: object, doing: str) -> BaseException:
    """``exc`` as a StorageError naming the file and the fix, if it is a disk-full,
    read-only or permission failure (OSError or SQLite's own); anything else unchanged."""
    if isinstance(exc, SimilarArticlesError):
        return exc
    text = str(exc).lower()
    if isinstance(exc, OSError) and (exc.errno in _NO_SPACE or exc.errno in _NOT_WRITABLE):
        where, no_space = exc.filename or folder, exc.errno in _NO_SPACE
    elif isinstance(exc, sqlite3.Error) and ("full" in text or "readonly" in text or "unable to open" in text):
        where, no_space = folder, "full" in text
    else:
        return exc
    if no_space:
        return StorageError(f"no space left on the disk of {where} while {doing}: free space there (or point "
                            "--index or --cache at a bigger disk) and rerun; the snapshot serving now is untouched")
    return StorageError(f"{where} is not writable ({exc}) while {doing}: give the user running the build "
                        f"write access to {folder} (or mount it read-write), or use another --index")
