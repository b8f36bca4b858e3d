"""`AsyncPublisher`: the publisher API for asyncio code, over pooled connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

import httpx

from pushup.client import wire
from pushup.client.errors import PushUpError, TransportError
from pushup.client.wire import (
    Channel,
    ChannelRef,
    Channels,
    ChannelState,
    ListedChannel,
    Presence,
    Published,
)

T = TypeVar("T")


class AsyncPublisher(wire.AsyncClosing):
    """Creates, renews, inspects and closes channels and publishes to them.

    `key` is the server's `--publisher-key` (sent as a bearer token); `timeout` bounds
    each request in seconds. Use as `async with AsyncPublisher(url) as publisher:`, or call
    `aclose()`, so the pooled connections are closed. Error answers raise the matching
    `ApiError` subclass; no answer raises `TransportError`.

    Each publication carries an `Idempotency-Key` (a new one per call, unless given),
    and is tried `retries` times more, with the same key, after no answer, a 429 or a
    502, 503 or 504: the server keeps the first answer to a key for its
    `--idempotency-window` and stores a retry once. (A server with the window off
    would store it again: pass `retries=0` to such a server.) Nothing else is retried.
    """

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        timeout: float = 10.0,
        retries: int = wire.RETRIES,
    ) -> None:
        self._retries = retries
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=wire.headers(key), timeout=timeout
        )

    async def create_channel(
        self,
        name: str | None = None,
        ttl: float | None = None,
        *,
        exist_ok: bool = False,
        message_ttl: float | None = None,
        max_messages: int | None = None,
    ) -> Channel:
        """A new channel, optionally named; it expires after `ttl` seconds without
        activity (the server's `--channel-ttl` if None). With `exist_ok`, the live
        channel of that name, renewed, if there is one (no `NameTaken`; it keeps its
        own retention). `message_ttl` and `max_messages` make it keep fewer messages,
        or for less time, than the server's limits (above them: `InvalidRequest`)."""
        call = wire.create_channel(
            name, ttl, exist_ok, message_ttl=message_ttl, max_messages=max_messages
        )
        return await self._call(call)

    async def renew_channel(self, channel: ChannelRef, ttl: float | None = None) -> Channel:
        """Push the channel's expiry to now + its TTL (`ttl`, if given, becomes its TTL)."""
        return await self._call(wire.renew_channel(channel, ttl))

    async def close_channel(self, channel: ChannelRef) -> None:
        """Close the channel: polls parked on it get `410 channel_closed`."""
        await self._call(wire.close_channel(channel))

    async def channel_info(self, channel: ChannelRef) -> ChannelState:
        """The channel's state: expiry, parked polls, cached messages, last message id."""
        return await self._call(wire.channel_info(channel))

    async def list_channels(
        self, prefix: str | None = None, limit: int | None = None
    ) -> AsyncIterator[list[ListedChannel]]:
        """Every live channel, a page (at most `limit`, the server's default if None)
        at a time: by id, or by name among those whose name starts with `prefix`.
        Channels made while it runs come in a later page, or not at all."""
        after: str | None = None
        while True:
            page = await self._call(wire.list_channels(prefix, limit, after))
            if page.channels:
                yield page.channels
            if page.next is None:
                return
            after = page.next

    async def presence(self, channel: ChannelRef) -> Presence:
        """Who is on the channel now: its parked polls and open streams over every
        node, and the distinct `sub` claims of their tokens."""
        return await self._call(wire.presence(channel))

    async def publish(
        self, channels: Channels, data: Any, *, idempotency_key: str | None = None
    ) -> Published:
        """Publish `data` (any JSON value) to one channel or several, all or nothing.
        `idempotency_key`: your own key for this publication (say, from the row it
        announces), so that calling again with it after a crash stores it once too."""
        return await self._retried(wire.publish(channels, data, idempotency_key))

    async def publish_batch(
        self, items: Iterable[tuple[Channels, Any]], *, idempotency_key: str | None = None
    ) -> list[Published]:
        """Publish several `(channels, data)` messages in one request, all or nothing;
        their ids increase in item order. `idempotency_key` as for `publish`."""
        return await self._retried(wire.publish_batch(items, idempotency_key))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    async def _retried(self, call: wire.Call[T]) -> T:
        """The call, tried again while the failure says a retry may help."""
        attempt = 0
        while True:
            try:
                return await self._call(call)
            except PushUpError as exc:
                delay = wire.retry_delay(exc, attempt) if attempt < self._retries else None
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _call(self, call: wire.Call[T]) -> T:
        try:
            response = await self._client.send(call.request(self._client))
        except httpx.TransportError as exc:
            raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
        return call.result(response)
