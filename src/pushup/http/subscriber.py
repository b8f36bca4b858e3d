"""Subscriber endpoints: the long poll, called by browsers."""

from __future__ import annotations

from pushup.core.hub import PollQuery
from pushup.core.model import Outcome
from pushup.core.waiters import Subscription
from pushup.http import params
from pushup.http.errors import InvalidParameter
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services

_POLL_PARAMS = {"channels", "timeout", "since", "start", "end"}


def poll_query(query: str, max_timeout_s: float, default_timeout_s: float) -> PollQuery:
    """Validate a poll's query string; every check happens before any lookup."""
    found = params.query(query, _POLL_PARAMS)
    if not found.get("channels"):
        raise InvalidParameter("channels is required: ids or names, comma-separated")
    channels = params.channel_list(found["channels"].split(","), InvalidParameter)
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
    return PollQuery(tuple(channels), timeout_s, since, start, end)


async def subscribe(request: Request, services: Services) -> Outcome | Subscription:
    settings = services.settings
    query = poll_query(request.query, settings.max_timeout_s, settings.default_timeout_s)
    return await services.hub.poll(query, request.connection)


async def health(request: Request, services: Services) -> Response:
    return Response.json(200, {"status": "ok"})
