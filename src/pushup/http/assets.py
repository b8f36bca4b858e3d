"""Files PushUp serves from its package: the browser client `/pushup.js` (so a page
that long-polls through PushUp loads the matching client from the same origin), the
API's description `/openapi.yaml` (so tools read the one matching this release), and
the start page `/`, where a new user finds the rest."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources

from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services

# Reused for five minutes, then revalidated with the ETag (a 304), so a new release
# reaches pages and tools within minutes without each load fetching the file again.
_CACHE_CONTROL = "public, max-age=300"


@functools.cache
def packaged(name: str) -> tuple[bytes, str]:
    """A file under `pushup/static/` and its ETag, read once, on first use."""
    body = resources.files("pushup").joinpath("static", name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serving(
    name: str, content_type: str, extra: tuple[tuple[str, str], ...] = ()
) -> Callable[[Request, Services], Awaitable[Response]]:
    async def serve(request: Request, services: Services) -> Response:
        body, etag = packaged(name)
        headers = (("ETag", etag), ("Cache-Control", _CACHE_CONTROL), *extra)
        given = request.header("if-none-match")
        if given is not None and etag in {tag.strip() for tag in given.split(",")}:
            return Response(304, b"", headers)
        return Response(200, body, (("Content-Type", content_type), *headers))

    return serve


client_script = _serving("pushup.js", "text/javascript; charset=utf-8")
# RFC 9512; the file is UTF-8, which YAML's media type implies. The repository's
# docs/openapi.yaml is a link to the packaged file.
openapi_description = _serving("openapi.yaml", "application/yaml")
# A page of links and text: it loads nothing, and runs no script.
home = _serving(
    "home.html",
    "text/html; charset=utf-8",
    (
        ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
        ("X-Frame-Options", "DENY"),
    ),
)
