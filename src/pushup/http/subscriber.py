"""Subscriber endpoints: the long poll and its streams (SSE, WebSocket), called by
browsers."""

from __future__ import annotations

from dataclasses import replace

from pushup.core.events import EVENTS_CHANNEL
from pushup.core.hub import PollQuery
from pushup.core.model import MessageId, Outcome
from pushup.core.waiters import Subscription
from pushup.http import params
from pushup.http.access import sse_stream, ws_stream
from pushup.http.cors import Headers
from pushup.http.errors import (
    Forbidden,
    InvalidCursor,
    InvalidParameter,
    NotFound,
    store_unreachable,
)
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services
from pushup.http.stream import Stream
from pushup.http.tokens import Grant
from pushup.http.websocket import handshake

_POLL_PARAMS = {"channels", "timeout", "since", "start", "end", "last", "limit"}
# A poll of the channel events: its one channel is implied.
_EVENTS_PARAMS = _POLL_PARAMS - {"channels"}
# The most messages `last` and `limit` may ask for at once.
MAX_PAGE = 10_000
# EventSource polyfills that cannot set headers send the last id in the query instead.
_SSE_PARAMS = {*_POLL_PARAMS, "lastEventId"}


def poll_query(
    query: str,
    max_timeout_s: float,
    default_timeout_s: float,
    max_channels: int = params.MAX_CHANNELS,
) -> PollQuery:
    """Validate a poll's query string; every check happens before any lookup."""
    found = params.query(query, _POLL_PARAMS)
    return _checked(found, max_timeout_s, default_timeout_s, max_channels)


def _checked(
    found: dict[str, str],
    max_timeout_s: float,
    default_timeout_s: float,
    max_channels: int = params.MAX_CHANNELS,
) -> PollQuery:
    if not found.get("channels"):
        raise InvalidParameter("channels is required: ids or names, comma-separated")
    channels = params.channel_list(found["channels"].split(","), InvalidParameter, max_channels)
    timeout_s = default_timeout_s
    if "timeout" in found:
        timeout_s = params.seconds(found["timeout"], "timeout")
        if timeout_s > max_timeout_s:
            raise InvalidParameter(f"timeout must be at most {max_timeout_s:g} seconds")
    since = params.cursor(found["since"]) if "since" in found else None
    start = params.seconds(found["start"], "start") if "start" in found else None
    end = params.seconds(found["end"], "end") if "end" in found else None
    if start is not None and end is not None and start > end:
        raise InvalidParameter("start must not be after end")
    last = _count(found["last"], "last") if "last" in found else 0
    limit = _count(found["limit"], "limit") if "limit" in found else 0
    if last and limit:
        raise InvalidParameter("last and limit cannot be combined (last: newest; limit: pages)")
    return PollQuery(tuple(channels), timeout_s, since, start, end, last, limit)


def _count(text: str, param: str) -> int:
    if not params.is_digits(text) or len(text) > 6 or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidParameter(f"{param} must be a whole number from 1 to {MAX_PAGE}")
    return int(text)


def _for_a_stream(query: PollQuery) -> PollQuery:
    if query.limit:
        raise InvalidParameter("limit pages long polls: a stream sends every message")
    return query


async def subscribe(
    request: Request,
    services: Services,
    grant: Grant | None = None,
    cors: Headers | None = None,
) -> Outcome | Subscription | Stream | Response:
    """`GET /subscribe`. With subscriber tokens on, the router passes the request's
    `grant` (and, with CORS on, the answer's `cors` headers) to each transport."""
    if "text/event-stream" in request.headers.get("accept", ""):
        return await subscribe_sse(request, services, grant, cors)
    settings = services.settings
    query = poll_query(
        request.query,
        settings.max_timeout_s,
        settings.default_timeout_s,
        settings.max_channels_per_request,
    )
    if grant is not None:
        query = await grant.authorize(query, services.hub)
    return await services.hub.poll(query, request.connection)


async def channel_events(request: Request, services: Services) -> Outcome | Subscription:
    """`GET /subscribe/events` (publisher side): a long poll of `$events`, the channel
    events of the application (created, closed, expired), with a poll's parameters."""
    settings = services.settings
    if not services.hub.events.on:
        raise NotFound("channel events are off: start the server with --channel-events")
    key = request.publisher
    if key is not None and not key.unrestricted:
        # Every channel's events, other keys' too: for a key allowed every channel.
        raise Forbidden(
            f"publisher key {key.name!r} may not read the channel events: they tell of "
            'every channel, so only a key with the prefix "" may'
        )
    found = params.query(request.query, _EVENTS_PARAMS)
    found["channels"] = EVENTS_CHANNEL
    query = _checked(found, settings.max_timeout_s, settings.default_timeout_s)
    return await services.hub.poll(replace(query, system=True), request.connection)


async def _authorized_query(request: Request, services: Services, grant: Grant | None) -> PollQuery:
    """The request's poll query, checked, and narrowed to what its token grants."""
    settings = services.settings
    query = poll_query(
        request.query,
        settings.max_timeout_s,
        settings.default_timeout_s,
        settings.max_channels_per_request,
    )
    if grant is not None:
        query = await grant.authorize(query, services.hub)
    return query


async def subscribe_sse(
    request: Request,
    services: Services,
    grant: Grant | None = None,
    cors: Headers | None = None,
) -> Stream | Response:
    """`GET /subscribe/sse`, or `/subscribe` asking for `text/event-stream`."""
    settings = services.settings
    found = params.query(request.query, _SSE_PARAMS)
    resume = _last_event_id(request, found.pop("lastEventId", None))
    query = _checked(
        found,
        settings.max_timeout_s,
        settings.default_timeout_s,
        settings.max_channels_per_request,
    )
    query = _for_a_stream(query)
    if resume is not None:
        query = replace(query, since=resume)
    if grant is not None:
        query = await grant.authorize(query, services.hub)
    stream = sse_stream(services.hub, grant, cors)
    await stream.open(query)
    if stream.sub is None and stream.nothing_cached():
        # Its range ended with nothing left to send: 204 is what stops an EventSource
        # from reconnecting.
        return Response(204)
    return stream


async def subscribe_ws(
    request: Request,
    services: Services,
    grant: Grant | None = None,
    cors: Headers | None = None,
) -> Stream:
    """`GET /subscribe/ws`: the same subscription over a WebSocket."""
    query = _for_a_stream(await _authorized_query(request, services, grant))
    protocol, response = handshake(request)
    stream = ws_stream(services.hub, protocol, response, grant)
    await stream.open(query)
    return stream


def _last_event_id(request: Request, in_query: str | None) -> MessageId | None:
    """Where an EventSource resumes: the `Last-Event-ID` header it sends on reconnecting,
    else `lastEventId` in the query; either overrides `since`."""
    header = request.headers.get("last-event-id")
    if header:
        name, value = "Last-Event-ID", header.strip()
    elif in_query:
        name, value = "lastEventId", in_query
    else:
        return None
    try:
        return params.cursor(value)
    except InvalidCursor:
        raise InvalidCursor(f"{name} must be the id of a message from this server") from None


async def health(request: Request, services: Services) -> Response:
    """200 while this node can serve; 503 naming the engine's state while its store is
    out of reach, so a load balancer sends the traffic to other nodes meanwhile."""
    report = services.hub.health()
    if report is None:
        return Response.json(200, {"status": "ok"})
    if not report.ok:
        raise store_unreachable(
            "the message store is unreachable: this node cannot serve",
            engine=dict(report.details),
        )
    return Response.json(200, {"status": "ok", "engine": dict(report.details)})
