"""`/openapi.yaml`: the API's OpenAPI description, served by the server it describes so
that tools (code generators, API testers) read the one matching this release."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services

# As for /pushup.js: reused for five minutes, then revalidated with the ETag.
_CACHE_CONTROL = "public, max-age=300"
# RFC 9512; the file is UTF-8, which YAML's media type implies.
_CONTENT_TYPE = "application/yaml"


@functools.cache
def description() -> tuple[bytes, str]:
    """The document and its ETag, read once: the file ships as package data (the
    repository's docs/openapi.yaml is a link to it)."""
    body = resources.files("pushup").joinpath("static/openapi.yaml").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def openapi_description(request: Request, services: Services) -> Response:
    body, etag = description()
    headers = (("ETag", etag), ("Cache-Control", _CACHE_CONTROL))
    given = request.header("if-none-match")
    if given is not None and etag in {tag.strip() for tag in given.split(",")}:
        return Response(304, b"", headers)
    return Response(200, body, (("Content-Type", _CONTENT_TYPE), *headers))
