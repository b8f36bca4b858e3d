"""Publisher endpoints: channels and publications, called by web servers."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from pushup.core.engine import Publication
from pushup.core.idempotency import IdempotencyKey, fingerprint
from pushup.core.model import ChannelInfo, Message
from pushup.http import params
from pushup.http.errors import InvalidBody
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services


def _channel(info: ChannelInfo) -> dict[str, Any]:
    return {"id": info.id, "name": info.name, "expires_at": info.expires_at}


def _published(message: Message) -> dict[str, Any]:
    return {"id": str(message.id), "time": message.time, "channels": list(message.channels)}


async def create_channel(request: Request, services: Services) -> Response:
    body = params.json_body(request.body, optional=True)
    params.only_fields(body, {"ttl", "name", "exist_ok"})
    ttl_s, name = params.ttl(body), params.name(body)
    if params.flag(body, "exist_ok"):
        if name is None:
            raise InvalidBody("exist_ok needs a name: only a named channel can already exist")
        info, created = await services.hub.get_or_create_channel(ttl_s, name)
        return Response.json(201 if created else 200, _channel(info))
    info = await services.hub.create_channel(ttl_s, name)
    return Response.json(201, _channel(info))


async def renew_channel(request: Request, services: Services, ref: str) -> Response:
    channel = params.path_channel(ref)
    body = params.json_body(request.body, optional=True)
    params.only_fields(body, {"ttl"})
    info = await services.hub.renew_channel(channel, params.ttl(body))
    return Response.json(200, _channel(info))


async def close_channel(request: Request, services: Services, ref: str) -> Response:
    await services.hub.close_channel(params.path_channel(ref))
    return Response(204)


async def channel_info(request: Request, services: Services, ref: str) -> Response:
    channel = params.path_channel(ref)
    info = await services.hub.channel_info(channel)
    count = await services.hub.count_subscribers(info.id)
    last = None if info.last_message_id is None else str(info.last_message_id)
    body = {
        **_channel(info),
        "subscribers": count.total,
        "messages": info.messages,
        "last_message_id": last,
    }
    if count.live_nodes is not None:
        # Several nodes share the engine: the total is over the nodes counted.
        body["local_subscribers"] = count.local
        body["nodes"] = {"live": count.live_nodes, "counted": count.counted_nodes}
    return Response.json(200, body)


# Sent with an answer given again for an Idempotency-Key (as Stripe does).
_REPLAYED = (("Idempotent-Replayed", "true"),)


async def publish(request: Request, services: Services) -> Response:
    settings = services.settings
    item = params.publication(
        params.json_body(request.body),
        max_channels=settings.max_channels_per_request,
        max_bytes=settings.max_message_bytes,
    )
    key = _idempotency_key(request, services, [item], batch=False)
    services.limits.check_publish(request, 1)
    if key is None:
        (message,) = await services.hub.publish([item])
        return Response.json(201, _published(message))
    (message,), replayed = await services.hub.publish_once([item], key)
    return _answer(_published(message), replayed)


async def publish_batch(request: Request, services: Services) -> Response:
    settings = services.settings
    items = params.batch(
        params.json_body(request.body),
        max_channels=settings.max_channels_per_request,
        max_bytes=settings.max_message_bytes,
    )
    key = _idempotency_key(request, services, items, batch=True)
    services.limits.check_publish(request, len(items))
    if key is None:
        messages = await services.hub.publish(items)
        replayed = False
    else:
        messages, replayed = await services.hub.publish_once(items, key)
    return _answer({"messages": [_published(message) for message in messages]}, replayed)


def _answer(payload: dict[str, Any], replayed: bool) -> Response:
    response = Response.json(201, payload)
    if replayed:
        response.headers = _REPLAYED
    return response


def _idempotency_key(
    request: Request, services: Services, publications: Sequence[Publication], *, batch: bool
) -> IdempotencyKey | None:
    """The request's Idempotency-Key, or None without one (or with the window off: the
    header is then ignored)."""
    window_s = services.settings.idempotency_window_s
    if window_s == 0:
        return None
    key = params.idempotency_key(request.header("idempotency-key"))
    if key is None:
        return None
    scope = _scope(services.settings.publisher_key)
    return IdempotencyKey(scope, key, fingerprint(publications, batch=batch), window_s)


@functools.cache
def _scope(publisher_key: str | None) -> str:
    """Keys are the publisher's own: scoped by a digest of its key (never the key
    itself, which would then sit in the store); one scope without a key."""
    if publisher_key is None:
        return ""
    return hashlib.sha256(b"pushup publisher key\0" + publisher_key.encode()).hexdigest()[:32]
