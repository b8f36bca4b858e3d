"""CORS for the subscriber side: which web origins may read polls and streams.

Browsers on another origin may read PushUp's subscriber answers (and load
`/pushup.js` as a module) only if the answer names their origin. With `--cors-origins`
set, every answer on those paths carries `Vary: Origin` and, for an allowed origin,
`Access-Control-Allow-Origin` echoing it; a preflight is answered 204; a WebSocket
handshake from another origin is refused (WebSockets are not subject to CORS, so the
server checks the origin itself). Publisher paths never get CORS headers: publishing is
for servers, never for browsers. Without the option nothing here runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from pushup.core.model import Outcome
from pushup.http.errors import Forbidden
from pushup.http.request import Request
from pushup.http.response import Response, frame

Headers = tuple[tuple[str, str], ...]

# Paths a browser on another origin may read: the subscriber transports and the client
# (and a channel's presence, `/channels/{id}/presence`: see `readable`).
PATHS = frozenset({"/subscribe", "/subscribe/sse", "/subscribe/ws", "/pushup.js"})
_PRESENCE = ("/channels/", "/presence")

ANY = "*"
# How long a browser may reuse a preflight's answer (Chrome caps it at 2 hours).
MAX_AGE_S = 600

_VARY: Headers = (("Vary", "Origin"),)
_PREFLIGHT: Headers = (
    ("Access-Control-Allow-Methods", "GET"),
    # Authorization carries a subscriber token; EventSource polyfills send Last-Event-ID.
    ("Access-Control-Allow-Headers", "Authorization, Last-Event-ID"),
    ("Access-Control-Max-Age", str(MAX_AGE_S)),
)


def readable(path: str) -> bool:
    """Whether a page on another origin may read the answer to `path`."""
    return path in PATHS or (
        path.startswith(_PRESENCE[0]) and path.endswith(_PRESENCE[1]) and path.count("/") == 3
    )


class CorsPolicy:
    """The allowed origins (`*`: any) and the headers that say so."""

    def __init__(self, origins: Sequence[str]) -> None:
        self._any = ANY in origins
        # Per listed origin, the headers of its answers, built once.
        self._headers = {
            origin: (("Access-Control-Allow-Origin", origin), *_VARY)
            for origin in origins
            if origin != ANY
        }

    def allows(self, origin: str) -> bool:
        return self._any or origin in self._headers

    def response_headers(self, request: Request) -> Headers | None:
        """The CORS headers of any answer to `request`: None off the subscriber paths,
        else `Vary: Origin` and, for an allowed origin, its echo."""
        if not readable(request.path):
            return None
        origin = request.headers.get("origin")
        if origin is None:
            return _VARY
        headers = self._headers.get(origin)
        if headers is not None:
            return headers
        if self._any:
            return (("Access-Control-Allow-Origin", origin), *_VARY)
        return _VARY

    def preflight(self, request: Request) -> Response | None:
        """The answer to an `OPTIONS` request on a subscriber path (None elsewhere: the
        router's 405). The echo of the origin is added with every other answer's."""
        if not readable(request.path):
            return None
        origin = request.headers.get("origin")
        if origin is None or not self.allows(origin):
            raise Forbidden(f"cross-origin requests from {origin or 'no origin'} are not allowed")
        return Response(204, headers=_PREFLIGHT)

    def check_websocket(self, request: Request) -> None:
        """A 403 for a WebSocket handshake a page on a foreign origin made. Clients that
        are not browsers send no `Origin`, and a page of the origin it connects to
        (`Origin` naming the request's `Host`) is not cross-origin: both pass."""
        origin = request.headers.get("origin")
        if origin is None or self.allows(origin) or _same_host(origin, request):
            return
        raise Forbidden(f"WebSocket connections from {origin} are not allowed")


def _same_host(origin: str, request: Request) -> bool:
    host = request.headers.get("host")
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return host is not None and netloc.lower() == host.lower()


def frame_outcome(outcome: Outcome, mode: int, headers: Headers) -> bytes:
    """A shared poll answer with CORS headers, framed once per connection mode and
    origin, as `response.frame_outcome` does without them."""
    key = (mode, headers)
    framed = outcome.framed.get(key)
    if framed is None:
        framed = outcome.framed[key] = frame(outcome.status, outcome.body, mode, headers)
    return framed
