"""The browser client, `/pushup.js`, served by PushUp itself so a page that long-polls
through it loads the matching client from the same origin."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services

# Browsers may reuse it for five minutes, then revalidate with the ETag (a 304), so a
# new release reaches pages within minutes without each load fetching it again.
_CACHE_CONTROL = "public, max-age=300"


@functools.cache
def _client() -> tuple[bytes, str]:
    # Read once, on first use: the file ships as package data.
    body = resources.files("pushup").joinpath("static/pushup.js").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def client_script(request: Request, services: Services) -> Response:
    body, etag = _client()
    headers = (("ETag", etag), ("Cache-Control", _CACHE_CONTROL))
    given = request.header("if-none-match")
    if given is not None and etag in {tag.strip() for tag in given.split(",")}:
        return Response(304, b"", headers)
    return Response(200, body, (("Content-Type", "text/javascript; charset=utf-8"), *headers))
