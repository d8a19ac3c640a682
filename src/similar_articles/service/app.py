"""The service's routes over one :class:`Recommender`: boxes by id or for an unseen
article, live updates behind a bearer token, health, readiness, metrics.

A box answer carries an ``ETag`` made of the snapshot version and the live-update
position, and ``Cache-Control: max-age`` (a setting), so a CDN or a CMS cache can hold
it. A background thread picks up new snapshots and other workers' live updates every
``refresh_interval`` seconds, with or without traffic.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Path as PathParam, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response

from .. import __version__
from ..recommender import Recommender
from . import editor, metrics, problems, rules_routes
from .guard import authorise, json_body
from .problems import Problem
from .webhook import DEAD_LETTER_FILE, Webhook

log = logging.getLogger(__name__)
JSON = "application/json"


@dataclass(frozen=True)
class ServiceSettings:
    """What ``similar-articles serve`` is given.

    cache_max_age: seconds a CDN or browser may keep a box (``Cache-Control``); a box
        may then lag a live update by that long. 0 sends ``no-cache``.
    max_body_bytes: larger request bodies are refused with 413 (an article is ~5 KB).
    max_put_articles: articles a PUT may carry (413 past it): each is encoded before the
        answer, ~25 ms an article on 2 cores.
    refresh_interval: seconds between checks for a new snapshot or live updates (one
        ``readlink`` and one ``stat``); live updates reach every worker within it.
    webhook: a URL to POST the boxes each accepted PUT, DELETE or rules edit changed to (from a
        background thread; retried ``webhook_attempts`` times with backoff from
        ``webhook_backoff`` seconds, then kept in INDEX/webhook-dead-letter.jsonl).
        Implies ``track_changes``.
    track_changes: work out the boxes each write and rules edit changes, and log them
        to INDEX/changes.jsonl (for ``export --changed`` and the editors' page). Each
        worker then ranks every box at start-up and after a new snapshot (23-50 s a
        million articles, writes going on; ~33 MB a million) and a write takes ~10-60
        ms more at 1M.
    """

    index: Path
    token: str | None = None
    cache_max_age: int = 60
    max_body_bytes: int = 10 * 1024 * 1024
    max_put_articles: int = 1000
    refresh_interval: float = 0.5
    webhook: str | None = None
    webhook_attempts: int = 5
    webhook_backoff: float = 0.5
    track_changes: bool = False


def create_app(settings: ServiceSettings, recommender: Recommender | None = None) -> FastAPI:
    """The ASGI application. ``recommender``: one already loaded (tests); otherwise the
    index is loaded at start-up, and a missing or damaged index stops the start."""
    holder: dict[str, Recommender] = {}
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rec = recommender or Recommender.load(settings.index, reload_interval=None)
        rec.warm_up()  # a first unseen article or live update would pay for it otherwise
        if settings.webhook:
            holder["hook"] = Webhook(settings.webhook, settings.index / DEAD_LETTER_FILE,
                                     attempts=settings.webhook_attempts, backoff=settings.webhook_backoff)
        if settings.webhook or settings.track_changes:  # each worker sends its own writes' and edits' reports
            hook = holder.get("hook")
            await run_in_threadpool(rec.track_changes, on_change=hook and (lambda report: hook.send(report.to_dict())))
        holder["rec"] = rec
        _update_gauges(rec)
        follower = threading.Thread(target=_follow, args=(rec, settings.refresh_interval, stop), daemon=True,
                                    name="similar-articles-follow")
        follower.start()
        yield
        stop.set()
        if "hook" in holder:
            holder["hook"].close()

    app = FastAPI(title="similar-articles", version=__version__, lifespan=lifespan,
                  description="Related-article boxes for any site backend. Errors are application/problem+json.")
    problems.install(app)
    app.add_middleware(metrics.MetricsMiddleware)

    def rec() -> Recommender:
        return holder["rec"]

    def box_response(article_id: str, boxes_state, items) -> Response:
        etag = _etag(boxes_state)
        headers = {"ETag": etag, "Cache-Control": f"max-age={settings.cache_max_age}"
                   if settings.cache_max_age else "no-cache"}
        metrics.count_box(any(i.fallback for i in items))
        body = {"id": article_id, "snapshot": boxes_state.manifest.get("version"),
                "box": [i.to_dict() for i in items]}
        return Response(orjson.dumps(body), media_type=JSON, headers=headers)

    def indexed_box(article_id: str, query: QueryParams, if_none_match: str | None) -> Response:
        state = rec().state
        etag = _etag(state)
        if _matches(if_none_match, etag) and article_id in rec():
            return Response(status_code=304, headers={"ETag": etag})
        k, options = _box_query(query)
        return box_response(article_id, state, rec().recommend(article_id, k, **options))

    @app.get(BOX_ROUTE, summary="The box of an indexed article", openapi_extra={"parameters": BOX_PARAMETERS},
             responses={404: {"description": "Unknown article id"}, 422: {"description": "Bad parameter"}})
    async def similar(request: Request, article_id: str = PathParam(max_length=1000)) -> Response:
        return indexed_box(article_id, request.query_params, request.headers.get("if-none-match"))

    @app.post("/v1/similar", summary="The box of an unseen article (title, body, ...)",
              openapi_extra={"parameters": BOX_PARAMETERS,
                             "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object"}}}}},
              responses={413: {"description": "Body too large"}, 422: {"description": "Bad article"}})
    async def similar_unseen(request: Request) -> Response:
        k, options = _box_query(request.query_params)
        article = await json_body(request, settings.max_body_bytes)
        if not isinstance(article, dict):
            raise Problem(422, "Invalid article", "the body must be one article as a JSON object "
                          '(e.g. {"id": "a1", "title": "...", "body": "..."})', field="body")
        state = rec().state
        items = await run_in_threadpool(rec().recommend, article, k, **options)
        return box_response(str(article.get("id", "")), state, items)

    @app.put("/v1/articles", summary="Add or replace articles (bearer token)", status_code=200,
             responses={401: {"description": "Missing or wrong token"}, 403: {"description": "Writes are off"}})
    async def put_articles(request: Request) -> Response:
        authorise(request, settings.token)
        rows = await json_body(request, settings.max_body_bytes)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise Problem(422, "Invalid articles", "the body must be a JSON list of articles (objects)", field="body")
        if len(rows) > settings.max_put_articles:
            raise Problem(413, "Too many articles", f"{len(rows)} articles in one request; send at most "
                          f"{settings.max_put_articles} a request", field="body")
        return _json(announced(await run_in_threadpool(rec().add, rows), "added"))

    @app.delete("/v1/articles/{article_id}", summary="Remove an article from every box (bearer token)",
                responses={401: {"description": "Missing or wrong token"}, 404: {"description": "Unknown id"}})
    async def delete_article(request: Request, article_id: str = PathParam(max_length=1000)) -> Response:
        authorise(request, settings.token)
        if article_id not in rec():
            raise Problem(404, "Unknown article", f"no article {article_id!r} in the index", field="article_id")
        return _json(announced(await run_in_threadpool(rec().remove, [article_id]), "removed"))

    def announced(update, what: str) -> dict[str, Any]:
        """The answer to a write (its changed boxes went to the webhook, if any)."""
        body = {what: int(update), "live_update": rec().state.journal_seq}
        if update.changed is not None:
            body["changed_boxes"] = len(update.changed)
        return body

    @app.get("/healthz", summary="The process is alive (and which worker answered)")
    async def healthz() -> Response:
        return _json({"status": "ok", "pid": os.getpid()})

    @app.get("/readyz", summary="A snapshot is loaded: version, articles, age")
    async def readyz() -> Response:
        if "rec" not in holder:
            raise Problem(503, "Not ready", "the index is still loading")
        state = rec().state
        return _json({"status": "ready", "snapshot": state.manifest.get("version"), "articles": len(rec()),
                      "age_seconds": _age_seconds(state.manifest), "live_update": state.journal_seq})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    rules_routes.install(app, rec, settings.token, settings.max_body_bytes, settings.index)
    editor.install(app, rec, settings.index)
    app.state.indexed_box = indexed_box
    return app


class BoxFastPath:
    """The ASGI app to serve: box requests by id go straight to the box, past FastAPI's
    routing and middleware, which cost about as much CPU as the box itself (2,558 ->
    5,520 box requests/s on 2 cores at 100k; the target is 3,000: benchmarks/README.md).
    Every other request, and a box request that fails (unknown id, bad parameter), goes
    through the FastAPI app, which answers it, errors included, the one way."""

    def __init__(self, app: FastAPI):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        found = scope["type"] == "http" and scope["method"] == "GET" and _BOX_PATH.fullmatch(scope["path"])
        if found and len(found.group(1)) <= 1000:
            started = time.perf_counter()
            try:
                response = self.app.state.indexed_box(found.group(1), QueryParams(scope["query_string"]),
                                                      Headers(scope=scope).get("if-none-match"))
            except Exception:  # the app answers it with the right problem document
                pass
            else:
                await response(scope, receive, send)
                metrics.observe(BOX_ROUTE, "GET", response.status_code, time.perf_counter() - started)
                return
        await self.app(scope, receive, send)


BOX_ROUTE = "/v1/articles/{article_id}/similar"
_BOX_PATH = re.compile(r"/v1/articles/([^/]+)/similar")
# The query of a box route, parsed by _box_query (FastAPI's per-request parameter
# machinery cost ~100 us a box, a fifth of the request); declared here for /docs.
BOX_PARAMETERS = [
    {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100},
     "description": "Items in the box (default: the section policy's k, else 2)"},
    {"name": "section", "in": "query", "schema": {"type": "array", "items": {"type": "string"}},
     "style": "form", "explode": True, "description": "Show only these sections (repeat the parameter)"},
    {"name": "exclude", "in": "query", "schema": {"type": "array", "items": {"type": "string"}},
     "style": "form", "explode": True, "description": "Ids never to show (repeat the parameter)"},
    {"name": "max_age_days", "in": "query", "schema": {"type": "number", "exclusiveMinimum": 0},
     "description": "Hide articles older than this"},
]


def _box_query(query: QueryParams) -> tuple[Any, dict[str, Any]]:
    """k and the recommend options of a box route's query. Only the types are read
    here; the library checks the values and names the parameter at fault."""
    unknown = set(query) - {"k", "section", "exclude", "max_age_days"}
    if unknown:
        raise Problem(422, "Invalid parameter", f"unknown query parameter(s) {sorted(unknown)}; known: k, "
                      "section, exclude, max_age_days", field=sorted(unknown)[0])
    options: dict[str, Any] = {"exclude_ids": query.getlist("exclude"), "sections": query.getlist("section") or None}
    k = _number(query, "k", int, None)  # None: the section policy's k, else 2
    max_age = _number(query, "max_age_days", float, None)
    if max_age is not None:
        options["max_age_days"] = max_age
    return k, options


def _number(query, name: str, kind: type, default: Any) -> Any:
    text = query.get(name)
    if text is None:
        return default
    try:
        return kind(text)
    except ValueError:
        raise Problem(422, "Invalid parameter", f"{name}={text!r} is not {'an integer' if kind is int else 'a number'}",
                      field=name) from None


def _etag(state) -> str:
    """A box's validator: the snapshot, the live-update position and the rules version."""
    return f'"{state.manifest.get("version")}.{state.journal_seq}.{state.rules.version}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header (a list, weak tags allowed) names ``etag``."""
    if not if_none_match:
        return False
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in if_none_match.split(","))


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type=JSON)


def _follow(rec: Recommender, interval: float, stop: threading.Event) -> None:
    """New snapshots and live updates, with or without traffic."""
    while not stop.wait(interval):
        try:
            rec.refresh()
        except Exception:  # keep serving what is loaded; the next round tries again
            log.exception("similar-articles: refreshing from the index failed")
        _update_gauges(rec)


def _update_gauges(rec: Recommender) -> None:
    state = rec.state
    metrics.SNAPSHOT_AGE.set(_age_seconds(state.manifest) or 0)
    metrics.BACKLOG.set(state.journal_seq - int(state.manifest.get("journal_seq", 0)))
    metrics.ARTICLES.set(len(rec))


def _age_seconds(manifest: dict[str, Any]) -> float | None:
    try:
        created = datetime.fromisoformat(manifest["created_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return round((datetime.now(timezone.utc) - created).total_seconds(), 1)

