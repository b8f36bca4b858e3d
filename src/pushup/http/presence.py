"""`GET /channels/{id}/presence`: who is on a channel now, for its publisher and for
the subscribers who may read it.

A channel's presence tells what its messages are shown to, so it is readable by whoever
may read the channel: the publisher (its key, or a loopback peer when there is no key;
with `--publisher-keys`, a key allowed the channel, as for its other calls), and with
`--subscriber-secret` a subscriber whose token grants the channel (as Centrifugo lets a
channel's clients ask for its presence). Without a subscriber secret the channel is open
to every subscriber, and so is its presence, which then lists no `sub` (there are no
tokens to take one from).
"""

from __future__ import annotations

from typing import Any

from pushup.core.hub import PollQuery
from pushup.core.presence import Presence
from pushup.http import params
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services
from pushup.http.tokens import Grant

# The token may come in the query, as for EventSource (a page may reuse its URL's).
_PARAMS = {"token"}


async def channel_presence(
    request: Request,
    services: Services,
    ref: str,
    *,
    grant: Grant | None = None,
) -> Response:
    """The channel's parked polls and open streams over every node, and the distinct
    `sub` claims among them. The router passes `grant` for a subscriber with a token."""
    channel = params.path_channel(ref)
    params.query(request.query, _PARAMS)
    hub = services.hub
    if grant is not None:
        # A 403 for a channel the token does not grant, before anything is looked up.
        (channel,) = (await grant.authorize(PollQuery((channel,), 0.0), hub)).channels
    else:
        # The publisher: a 403 for a channel its key may not use (None: no keys set).
        await services.access.check(request.publisher, [channel])
    info = await hub.channel_info(channel)
    return Response.json(
        200, {"id": info.id, "name": info.name, **body(await hub.channel_presence(info.id))}
    )


def body(found: Presence) -> dict[str, Any]:
    """A presence as the API shows it."""
    shown: dict[str, Any] = {
        "connections": found.connections,
        "polls": found.polls,
        "streams": found.streams,
        "anonymous": found.anonymous,
        "sub_count": found.sub_count,
        "subs": list(found.subs),
        "subs_complete": found.complete,
    }
    if found.live_nodes is not None:
        # Several nodes share the engine: the figures are over the nodes counted.
        shown["nodes"] = {"live": found.live_nodes, "counted": found.counted_nodes}
    return shown
