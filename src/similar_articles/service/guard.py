"""What the service's write routes share: the bearer token check and reading a JSON
body with a size limit, each refusing with a problem document."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import Request

from .problems import Problem

TOKEN_ENV = "SIMILAR_ARTICLES_TOKEN"


def authorise(request: Request, token: str | None) -> None:
    if not token:
        raise Problem(403, "Writes are off", f"this service has no token, so it takes no updates; start it with "
                      f"${TOKEN_ENV} set or --token-file PATH")
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Problem(401, "Unauthorised", "send the service's token as 'Authorization: Bearer <token>'",
                      field="Authorization", headers={"WWW-Authenticate": "Bearer"})


async def json_body(request: Request, limit: int) -> Any:
    """The request's JSON, refused with 413 past ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "Body too large", f"the body has {declared} bytes; the limit is {limit} "
                      "(send fewer articles a request)")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise Problem(413, "Body too large", f"the body is over the limit of {limit} bytes "
                          "(send fewer articles a request)")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "Malformed JSON", f"the body is not JSON ({exc}); send application/json",
                      field="body") from None
