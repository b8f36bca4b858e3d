"""The dashboard's own calls, under `/dashboard/`: the publisher endpoints its page
needs, admitted by the dashboard's cookie as well as by a key (`http/monitoring.py`).

The cookie opens these and nothing else: a page can list channels, read one's state
last messages and presence, and publish a test message; it cannot create, renew or close a
channel. Each answers as the endpoint it stands for; each is a handler of its own so
that the request metrics tell the dashboard's calls apart.
"""

from __future__ import annotations

from pushup.core.model import Outcome
from pushup.core.waiters import Subscription
from pushup.http import presence, publisher, subscriber
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services
from pushup.http.stream import Stream


async def channels(request: Request, services: Services) -> Response:
    """`GET /dashboard/channels`: as `GET /channels`."""
    return await publisher.list_channels(request, services)


async def channel(request: Request, services: Services, ref: str) -> Response:
    """`GET /dashboard/channels/{id}`: as `GET /channels/{id}`."""
    return await publisher.channel_info(request, services, ref)


async def channel_presence(request: Request, services: Services, ref: str) -> Response:
    """`GET /dashboard/channels/{id}/presence`: as `GET /channels/{id}/presence`, read
    as the publisher."""
    return await presence.channel_presence(request, services, ref)


async def publish(request: Request, services: Services) -> Response:
    """`POST /dashboard/publish`: as `POST /publish` (the page's test message)."""
    return await publisher.publish(request, services)


async def subscribe(
    request: Request, services: Services
) -> Outcome | Subscription | Stream | Response:
    """`GET /dashboard/subscribe`: as `GET /subscribe`, with the publisher's access
    instead of a subscriber token (the stats channel, a channel's last messages)."""
    return await subscriber.subscribe(request, services)
