"""The service's routes for the newsroom's rules (docs/editors.md): read them (open),
change them (bearer token): pins, blocks, section policies, or the whole document.

Each change is an operation applied under the rules lock to the rules in force, so two
editors' changes never overwrite each other; ``If-Match: "<version>"`` (or a whole
document's ``version``) makes a change conditional on the version it was made from
(409 when another came first). A bad rule is a 422 naming it; the rules in force stay.
The worker that takes a change serves it at once, the others within their refresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import orjson
from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ..recommender import Recommender
from ..rules import NoSuchRuleError, RuleError, Rules, RulesConflictError
from ..rulesfile import RulesFile
from .guard import authorise, json_body
from .problems import Problem

ROUTES = "/v1/rules"
_AUTH = {401: {"description": "Missing or wrong token"}, 403: {"description": "Writes are off"},
         409: {"description": "The rules changed since the version given"},
         422: {"description": "A bad rule (named)"}}


def install(app: FastAPI, rec: Callable[[], Recommender], token: str | None, max_body_bytes: int,
            index: Path) -> None:
    """Add the rules routes to ``app``; ``rec`` gives the loaded Recommender of ``index``."""
    files = RulesFile(index)

    async def change(request: Request, edit: Callable[[Rules], Rules], based_on: int | None = None) -> Response:
        authorise(request, token)
        if based_on is None:
            based_on = _if_match(request)
        try:
            rules = await run_in_threadpool(rec().edit_rules, edit, based_on=based_on)
        except NoSuchRuleError as exc:
            raise Problem(404, "No such rule", str(exc), field=exc.rule) from None
        except RuleError as exc:
            raise Problem(422, "Invalid rule", str(exc), field=exc.rule) from None
        except RulesConflictError as exc:
            raise Problem(409, "Rules changed", str(exc), field="If-Match") from None
        return _rules_response(rules)

    async def body(request: Request) -> dict[str, Any]:
        authorise(request, token)  # before reading a body from anyone
        value = await json_body(request, max_body_bytes)
        if not isinstance(value, dict):
            raise Problem(422, "Invalid rule", "the body must be a JSON object", field="body")
        return value

    @app.get(ROUTES, summary="The rules in force (pins, blocks, section policies) and their version")
    async def read_rules() -> Response:
        # From the file, not this worker's state: an edit made from it must carry the
        # version in force even if this worker has not applied the last change yet.
        return _rules_response(await run_in_threadpool(files.read))

    @app.get(ROUTES + "/history", summary="What the last rule changes did, newest first")
    async def history(limit: int = Query(50, ge=1, le=1000)) -> Response:
        return Response(orjson.dumps({"history": files.history(limit)}), media_type="application/json",
                        headers={"Cache-Control": "no-cache"})

    @app.put(ROUTES, summary="Replace every rule (bearer token); the body's version must be the one in force",
             responses=_AUTH)
    async def put_rules(request: Request) -> Response:
        document = await body(request)
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise Problem(422, "Invalid rule", "the document needs the version it was made from (the version "
                          f"GET {ROUTES} returned)", field="version")
        made = _checked(lambda: Rules.from_document(document))
        return await change(request, lambda current: made, based_on=version)  # numbered when saved

    @app.post(ROUTES + "/pins", summary="Pin an article into the boxes of an article, section or tag (bearer token)",
              responses=_AUTH)
    async def pin(request: Request) -> Response:
        fields = await body(request)
        return await change(request, lambda rules: rules.with_pin(fields))

    @app.delete(ROUTES + "/pins/{article}", summary="Unpin an article (from one target with into=, section= or "
                "tag=; else everywhere)", responses={**_AUTH, 404: {"description": "No such pin"}})
    async def unpin(request: Request, article: str = PathParam(max_length=1000)) -> Response:
        query = request.query_params
        unknown = set(query) - {"into", "section", "tag"}
        if unknown or len(query) > 1:
            raise Problem(422, "Invalid parameter", "give at most one of into, section, tag "
                          f"(got {sorted(query)})", field=sorted(unknown or query)[0])
        target = next(iter(query.items()), None)
        return await change(request, lambda rules: rules.without_pins(article, target))

    @app.post(ROUTES + "/blocks", summary="Block an article everywhere, or from one article's box with "
              '"from" (bearer token)', responses=_AUTH)
    async def block(request: Request) -> Response:
        fields = await body(request)
        return await change(request, lambda rules: rules.with_block(fields))

    @app.delete(ROUTES + "/blocks/{article}", summary="Unblock an article (everywhere, or from= one box)",
                responses={**_AUTH, 404: {"description": "No such block"}})
    async def unblock(request: Request, article: str = PathParam(max_length=1000)) -> Response:
        unknown = set(request.query_params) - {"from"}
        if unknown:
            raise Problem(422, "Invalid parameter", f"unknown query parameter(s) {sorted(unknown)}; known: from",
                          field=sorted(unknown)[0])
        source = request.query_params.get("from")
        return await change(request, lambda rules: rules.without_block(article, source))

    @app.put(ROUTES + "/policies/{section}", summary="Set keys of a section's policy (* for every section); "
             "null removes a key (bearer token)", responses=_AUTH)
    async def policy(request: Request, section: str = PathParam(max_length=1000)) -> Response:
        values = await body(request)
        return await change(request, lambda rules: rules.with_policy(section, values))

    @app.delete(ROUTES + "/policies/{section}", summary="Remove a section's policy (bearer token)",
                responses={**_AUTH, 404: {"description": "No such policy"}})
    async def drop_policy(request: Request, section: str = PathParam(max_length=1000)) -> Response:
        return await change(request, lambda rules: rules.without_policy(section))


def _checked(make: Callable[[], Rules]) -> Rules:
    try:
        return make()
    except RuleError as exc:
        raise Problem(422, "Invalid rule", str(exc), field=exc.rule) from None


def _if_match(request: Request) -> int | None:
    """The rules version an ``If-Match: "<version>"`` header names, if any."""
    given = request.headers.get("if-match")
    if given is None:
        return None
    text = given.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise Problem(422, "Invalid header", f"If-Match: {given!r} is not a rules version like \"7\"",
                      field="If-Match")
    return int(text)


def _rules_response(rules: Rules) -> Response:
    return Response(orjson.dumps(rules.to_document()), media_type="application/json",
                    headers={"ETag": f'"{rules.version}"', "Cache-Control": "no-cache"})
