"""Routing and access: which handler answers a request, and who may call it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from pushup.core.model import Outcome
from pushup.core.waiters import Subscription
from pushup.http import assets, dashboard, monitoring, presence, publisher, subscriber
from pushup.http.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound, Unauthorized
from pushup.http.limits import is_loopback
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services
from pushup.http.stream import Stream
from pushup.http.tokens import SubscriberTokens
from pushup.observe.metrics import FIGURES

if TYPE_CHECKING:
    from pushup.http.cors import CorsPolicy

Reply = Response | Outcome | Subscription | Stream
Handler = Callable[..., Awaitable[Reply]]

# Path patterns: literal segments, or None for a channel id or name.
_ROUTES: list[tuple[tuple[str | None, ...], dict[str, Handler], bool]] = [
    (("",), {"GET": assets.home}, False),
    (("channels",), {"GET": publisher.list_channels, "POST": publisher.create_channel}, True),
    (
        ("channels", None),
        {"GET": publisher.channel_info, "DELETE": publisher.close_channel},
        True,
    ),
    (("channels", None, "renew"), {"POST": publisher.renew_channel}, True),
    # Publishers, and subscribers who may read the channel: the router decides.
    (("channels", None, "presence"), {"GET": presence.channel_presence}, False),
    (("publish",), {"POST": publisher.publish}, True),
    (("publish", "batch"), {"POST": publisher.publish_batch}, True),
    (("subscribe",), {"GET": subscriber.subscribe}, False),
    (("subscribe", "sse"), {"GET": subscriber.subscribe_sse}, False),
    (("subscribe", "ws"), {"GET": subscriber.subscribe_ws}, False),
    # The application's channel events (`$events`): publishers only.
    (("subscribe", "events"), {"GET": subscriber.channel_events}, True),
    (("health",), {"GET": subscriber.health}, False),
    (("pushup.js",), {"GET": assets.client_script}, False),
    (("metrics",), {"GET": monitoring.metrics}, True),
    (("dashboard",), {"GET": monitoring.dashboard}, True),
    # The dashboard page's calls: its cookie admits them too (`http/dashboard.py`).
    (("dashboard", "channels"), {"GET": dashboard.channels}, True),
    (("dashboard", "channels", None), {"GET": dashboard.channel}, True),
    (("dashboard", "channels", None, "presence"), {"GET": dashboard.channel_presence}, True),
    (("dashboard", "publish"), {"POST": dashboard.publish}, True),
    (("dashboard", "subscribe"), {"GET": dashboard.subscribe}, True),
    (("openapi.yaml",), {"GET": assets.openapi_description}, False),
]

# Routes without a parameter, by exact path.
_STATIC = {
    "/" + "/".join(pattern): (methods, for_publishers)  # type: ignore[arg-type]
    for pattern, methods, for_publishers in _ROUTES
    if None not in pattern
}

# Each handler's route as the request-latency metric labels it.
_ROUTE_NAMES = {
    handler: "/" + "/".join("{channel}" if part is None else part for part in pattern)
    for pattern, methods, _ in _ROUTES
    for handler in methods.values()
}
_UNMATCHED = "unmatched"

_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for")

# The subscriber transports: a subscriber token and CORS apply to them.
_SUBSCRIBER_HANDLERS = frozenset(
    (subscriber.subscribe, subscriber.subscribe_sse, subscriber.subscribe_ws)
)

# In front of a web app (`--upstream`), PushUp answers every path under its routes'
# first segments itself, the publisher ones too: without a key those stay loopback-only
# (403 to anyone else) instead of going to the app, so publishing is never reachable
# from the public side and the app never shadows a PushUp path. The rest goes to the app,
# `/` too: PushUp's start page gives way to the app's own.
_OWN_SEGMENTS = frozenset(pattern[0] for pattern, _, _ in _ROUTES if pattern[0])


def serves_itself(path: str) -> bool:
    """Whether PushUp answers `path` itself rather than passing it to the upstream."""
    first = path[1:].split("/", 1)[0]
    if "%" in first:
        try:
            first = unquote(first, errors="strict")
        except UnicodeDecodeError:
            return False  # none of PushUp's paths
    return first in _OWN_SEGMENTS


def _pick(methods: dict[str, Handler], method: str) -> Handler:
    handler = methods.get(method)
    if handler is None:
        allowed = ", ".join(sorted(methods))
        raise MethodNotAllowed(
            f"{method} is not allowed here; use {allowed}", headers=(("Allow", allowed),)
        )
    return handler


class Router:
    def __init__(self, services: Services, cors: CorsPolicy | None = None) -> None:
        self.services = services
        self._keys = services.settings.keys
        secret = services.settings.subscriber_secret
        self._tokens = None if secret is None else SubscriberTokens(secret)
        self._cors = cors

    async def handle(self, request: Request) -> Reply:
        started = time.perf_counter()
        route = _UNMATCHED
        try:
            if request.method == "OPTIONS" and self._cors is not None:
                preflight = self._cors.preflight(request)
                if preflight is not None:
                    return preflight
            handler, args, for_publishers = self._route(request)
            route = _ROUTE_NAMES.get(handler, _UNMATCHED)
            if for_publishers:
                self._authorize_publisher(request)
            elif handler is presence.channel_presence:
                return await self._presence(request, args)
            elif handler in _SUBSCRIBER_HANDLERS and (
                self._tokens is not None or self._cors is not None
            ):
                return await self._subscribe(handler, request)
            return await handler(request, self.services, *args)
        finally:
            # Until the answer, or until the poll is parked or the stream starts.
            FIGURES.request_done(route, request.method, time.perf_counter() - started)

    def _route(self, request: Request) -> tuple[Handler, list[str], bool]:
        # The hot paths (/subscribe, /publish) have no parameters: one dict lookup.
        static = _STATIC.get(request.path)
        if static is not None:
            methods, for_publishers = static
            return _pick(methods, request.method), [], for_publishers
        try:
            segments = [unquote(part, errors="strict") for part in request.path.split("/")[1:]]
        except UnicodeDecodeError:
            raise BadRequest("the path is not valid UTF-8 once percent-decoded") from None
        for pattern, methods, for_publishers in _ROUTES:
            if len(pattern) != len(segments):
                continue
            pairs = list(zip(pattern, segments, strict=True))
            if all(want is None or want == got for want, got in pairs):
                args = [got for want, got in pairs if want is None]
                return _pick(methods, request.method), args, for_publishers
        raise NotFound(f"no such endpoint: {request.path}")

    async def _subscribe(self, handler: Handler, request: Request) -> Reply:
        """A subscriber transport under the access rules: the WebSocket origin, then the
        token (401 before the query is read); the handler checks the channels (403)."""
        cors = self._cors
        if cors is not None and handler is subscriber.subscribe_ws:
            cors.check_websocket(request)
        grant = None if self._tokens is None else self._tokens.verify(request)
        headers = None if cors is None else cors.response_headers(request)
        return await handler(request, self.services, grant=grant, cors=headers)

    async def _presence(self, request: Request, args: list[str]) -> Reply:
        """A channel's presence: the publisher reads any; a subscriber, with subscriber
        tokens on, only one its token grants (`http/presence.py`)."""
        if self._is_publisher(request):
            return await presence.channel_presence(request, self.services, *args)
        grant = None if self._tokens is None else self._tokens.verify(request)
        return await presence.channel_presence(request, self.services, *args, grant=grant)

    def _is_publisher(self, request: Request) -> bool:
        """Whether the request comes with the publisher's access (no error if not)."""
        try:
            self._authorize_publisher(request)
        except (Unauthorized, Forbidden):
            return False
        return True

    def _authorize_publisher(self, request: Request) -> None:
        """A publisher key (its request then carries it, `request.publisher`), or with
        none configured a direct loopback client; `/metrics` and `/dashboard` need a
        key marked admin."""
        keys = self._keys
        if keys is not None:
            given = request.header("authorization") or ""
            scheme, _, token = given.partition(" ")
            key = keys.match(token.strip().encode()) if scheme.lower() == "bearer" else None
            if key is None:
                # A browser on the dashboard: the key as ?key= or its cookie.
                key = monitoring.admitted(request, keys)
            if key is None:
                raise Unauthorized(
                    "publisher requests need Authorization: Bearer <publisher key>",
                    headers=(("WWW-Authenticate", 'Bearer realm="pushup"'),),
                )
            request.publisher = key
            if not key.admin and monitoring.admin_only(request.path):
                raise Forbidden(
                    f"publisher key {key.name!r} may not read {request.path}: "
                    "only keys marked admin may"
                )
            return
        if not is_loopback(request.peer) or any(
            name in request.headers for name in _FORWARDING_HEADERS
        ):
            raise Forbidden(
                "without a publisher key, publishing is open only to direct loopback clients"
            )
