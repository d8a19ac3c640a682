"""Errors as ``application/problem+json`` (RFC 9457): each names the field at fault and
the fix, with the status a client can act on. No input reaches a 500."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..errors import (ConfigError, IndexNotFoundError, InvalidArticleError, ModelMismatchError,
                      SimilarArticlesError, StorageError, UnknownArticleError)
from ..journal import JournalError

PROBLEM_TYPE = "application/problem+json"


class Problem(Exception):
    """An error answered as a problem document."""

    def __init__(self, status: int, title: str, detail: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.field, self.headers = status, title, detail, field, headers


def problem_response(status: int, title: str, detail: str, instance: str, *, field: str | None = None,
                     errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail,
                            "instance": instance}
    if field:
        body["field"] = field
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type=PROBLEM_TYPE,
                    headers=headers)


# The library's errors, by what a client can do about them.
LIBRARY_ERRORS: list[tuple[type[Exception], int, str]] = [
    (UnknownArticleError, 404, "Unknown article"),
    (InvalidArticleError, 422, "Invalid article"),
    (ConfigError, 422, "Invalid parameter"),
    (ModelMismatchError, 422, "Vectors from another model"),
    (JournalError, 503, "Live update not recorded"),
    (StorageError, 503, "Not saved"),
    (IndexNotFoundError, 503, "No index loaded"),
    (SimilarArticlesError, 422, "Request refused"),
]


def install(app: FastAPI) -> None:
    """Answer every error the routes raise, FastAPI's own validation included, as a
    problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc.status, exc.title, exc.detail, request.url.path, field=exc.field,
                                headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "body")) or "body",
                   "in": (e.get("loc") or ("body",))[0], "reason": e.get("msg", "invalid")} for e in exc.errors()]
        detail = "; ".join(f"{e['in']} parameter {e['field']!r}: {e['reason']}" for e in errors)
        return problem_response(422, "Invalid request", detail + "; see /docs for the expected values",
                                request.url.path, field=errors[0]["field"] if errors else None, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs for the routes"
        return problem_response(exc.status_code, "Not found" if exc.status_code == 404 else "HTTP error", detail,
                                request.url.path, headers=getattr(exc, "headers", None))

    for error_type, status, title in LIBRARY_ERRORS:
        app.add_exception_handler(error_type, _library_handler(status, title))


def _library_handler(status: int, title: str):
    async def handle(request: Request, exc: Exception) -> Response:
        # A setting's error starts with "name=value is invalid": name the field.
        named = re.match(r"(\w+)=", str(exc))
        field = getattr(exc, "field", None) or (named.group(1) if named else None)
        return problem_response(status, title, str(exc), request.url.path, field=field)
    return handle
