"""Publisher endpoints: channels and publications, called by web servers."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from pushup.core.engine import Publication, SubscriberCount
from pushup.core.idempotency import IdempotencyKey, fingerprint
from pushup.core.model import ChannelInfo, Message
from pushup.core.tenants import PublisherKey
from pushup.http import params
from pushup.http.errors import InvalidBody
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services
from pushup.observe import metrics


def _channel(info: ChannelInfo, services: Services) -> dict[str, Any]:
    """A channel as every answer about one shows it: with the retention it gets (its
    own within the server's limits, or the server's)."""
    settings = services.settings
    return {
        "id": info.id,
        "name": info.name,
        "expires_at": info.expires_at,
        "message_ttl": info.retention.keep_s(settings.message_ttl_s),
        "max_messages": info.retention.cap(settings.max_messages),
    }


def _listed(info: ChannelInfo, count: SubscriberCount, services: Services) -> dict[str, Any]:
    return {**_channel(info, services), "messages": info.messages, "subscribers": count.total}


def _published(message: Message) -> dict[str, Any]:
    return {"id": str(message.id), "time": message.time, "channels": list(message.channels)}


def _restricted(request: Request) -> PublisherKey | None:
    """The request's publisher key when its channels need checking (not allowed all)."""
    key = request.publisher
    return None if key is None or key.unrestricted else key


async def _store(
    request: Request,
    services: Services,
    items: Sequence[Publication],
    once: IdempotencyKey | None,
) -> tuple[list[Message], bool]:
    """Publish, after the publish rate and the key's channels: refused whole (403,
    nothing stored) if any channel of any item is not the key's. Under an idempotency
    key (`once`), the messages may be a first answer given again: True, nothing stored."""
    services.limits.check_publish(request, len(items))
    restricted = _restricted(request)
    if restricted is not None:
        await services.access.check(restricted, [ref for refs, _ in items for ref in refs])
    if once is None:
        messages = await services.hub.publish(items)
        replayed = False
    else:
        messages, replayed = await services.hub.publish_once(items, once)
    if request.publisher is not None and not replayed:
        metrics.key_published(request.publisher.name, len(messages))
    return messages, replayed


async def create_channel(request: Request, services: Services) -> Response:
    body = params.json_body(request.body, optional=True)
    params.only_fields(body, {"ttl", "name", "exist_ok", "message_ttl", "max_messages"})
    ttl_s, name = params.ttl(body), params.name(body)
    settings = services.settings
    retention = params.retention(body, settings.message_ttl_s, settings.max_messages)
    key = request.publisher
    # An unnamed channel is its creator's; a named one is any key's whose prefix it has.
    owner = None if key is None else key.name
    if name is not None:
        await services.access.check(key, [name])
    if params.flag(body, "exist_ok"):
        if name is None:
            raise InvalidBody("exist_ok needs a name: only a named channel can already exist")
        info, created = await services.hub.get_or_create_channel(
            ttl_s, name, retention, owner=owner
        )
        return Response.json(201 if created else 200, _channel(info, services))
    info = await services.hub.create_channel(ttl_s, name, retention, owner=owner)
    services.access.remember(info)
    return Response.json(201, _channel(info, services))


async def list_channels(request: Request, services: Services) -> Response:
    """A page of the live channels the request's publisher key may touch."""
    prefix, after, limit = params.listing(request.query)
    page, counts = await services.hub.list_channels(prefix, after, limit, request.publisher)
    channels = [
        _listed(info, count, services) for info, count in zip(page.channels, counts, strict=True)
    ]
    after_page = None if page.next is None else str(page.next)
    return Response.json(200, {"channels": channels, "next": after_page})


async def renew_channel(request: Request, services: Services, ref: str) -> Response:
    channel = params.path_channel(ref)
    body = params.json_body(request.body, optional=True)
    params.only_fields(body, {"ttl"})
    await services.access.check(request.publisher, [channel])
    info = await services.hub.renew_channel(channel, params.ttl(body))
    return Response.json(200, _channel(info, services))


async def close_channel(request: Request, services: Services, ref: str) -> Response:
    channel = params.path_channel(ref)
    await services.access.check(request.publisher, [channel])
    await services.hub.close_channel(channel)
    return Response(204)


async def channel_info(request: Request, services: Services, ref: str) -> Response:
    channel = params.path_channel(ref)
    await services.access.check(request.publisher, [channel])
    info = await services.hub.channel_info(channel)
    count = await services.hub.count_subscribers(info.id)
    last = None if info.last_message_id is None else str(info.last_message_id)
    body = {
        **_listed(info, count, services),
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
    once = _idempotency_key(request, services, [item], batch=False)
    (message,), replayed = await _store(request, services, [item], once)
    return _answer(_published(message), replayed)


async def publish_batch(request: Request, services: Services) -> Response:
    settings = services.settings
    items = params.batch(
        params.json_body(request.body),
        max_channels=settings.max_channels_per_request,
        max_bytes=settings.max_message_bytes,
    )
    once = _idempotency_key(request, services, items, batch=True)
    messages, replayed = await _store(request, services, items, once)
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
    given = request.headers.get("idempotency-key")
    window_s = services.settings.idempotency_window_s
    if given is None or window_s == 0:  # most publications: nothing more to do
        return None
    key = params.idempotency_key(given)
    if key is None:
        return None
    publisher = request.publisher
    scope = _scope(None if publisher is None else publisher.secret)
    return IdempotencyKey(scope, key, fingerprint(publications, batch=batch), window_s)


@functools.cache
def _scope(secret: str | None) -> str:
    """Keys are each publisher key's own: scoped by a digest of its secret (never the
    secret itself, which would then sit in the store); one scope without keys."""
    if secret is None:
        return ""
    return hashlib.sha256(b"pushup publisher key\0" + secret.encode()).hexdigest()[:32]
