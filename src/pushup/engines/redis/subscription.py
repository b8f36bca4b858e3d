"""The node's one subscribed connection to Redis: events, questions from other nodes
and answers to its own; subscribed again, with backoff, whenever it is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushup.core.errors import EngineUnavailable
from pushup.engines.redis.events import EventsLost, EventStream
from pushup.engines.redis.keys import Keys
from pushup.engines.redis.scripts import UNREACHABLE
from pushup.engines.redis.tasks import stop

log = logging.getLogger("pushup.redis")

# What a message on one of the subscribed channels is handed to.
Handler = Callable[[bytes], None]

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


class Subscription:
    """Subscribes, hands each message to its channel's handler, and on a lost
    connection or a skipped event subscribes again and has the events resume."""

    __slots__ = (
        "_closed",
        "_events",
        "_handlers",
        "_keys",
        "_reader",
        "_redis",
        "_store",
        "_timeout_s",
    )

    def __init__(
        self,
        client: Redis,
        *,
        store: Redis,
        keys: Keys,
        events: EventStream,
        handlers: Mapping[bytes, Handler],
        timeout_s: float,
    ) -> None:
        # A client of its own (`connect.py`): its connection stays subscribed.
        self._redis = client
        self._store = store
        self._keys = keys
        self._events = events
        self._handlers = dict(handlers)
        self._timeout_s = timeout_s
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> tuple[PubSub, int, int]:
        """Subscribe, then read where the store stands (the last message id and the last
        event): every later event reaches us."""
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(*self._handlers)
            confirmed = 0
            async with asyncio.timeout(self._timeout_s):
                while confirmed < len(self._handlers):
                    reply = await pubsub.get_message(timeout=self._timeout_s)
                    if reply is not None and reply["type"] == "subscribe":
                        confirmed += 1
            last, event = await self._store.mget(self._keys.last_message, self._keys.last_event)
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub, int(last or 0), int(event or 0)

    def start(self, pubsub: PubSub) -> None:
        """Read `pubsub` (just opened) in the background from now on."""
        self._reader = asyncio.create_task(self._read(pubsub), name="pushup-redis-events")

    async def stop(self) -> None:
        self._closed = True
        if self._reader is not None:
            await stop(self._reader)
            self._reader = None

    async def _read(self, pubsub: PubSub | None) -> None:
        delay = _BACKOFF_MIN_S
        events = self._events
        try:
            while not self._closed:
                try:
                    if pubsub is None:
                        pubsub, last, event = await self.open()
                        await events.resume(last, event)
                        delay = _BACKOFF_MIN_S
                    await self._pump(pubsub)
                except EventsLost as exc:
                    log.warning("Redis events were lost (%s); re-reading the store", exc)
                    delay = 0.0
                except (*UNREACHABLE, EngineUnavailable) as exc:
                    if events.live:
                        log.warning("lost the Redis event connection (%s); reconnecting", exc)
                    delay = min(max(delay * 2, _BACKOFF_MIN_S), _BACKOFF_MAX_S)
                except Exception:
                    log.exception("failed to handle a Redis event; re-reading the store")
                    delay = _BACKOFF_MAX_S
                events.lost()
                if pubsub is not None:
                    await close_quietly(pubsub)
                    pubsub = None
                await asyncio.sleep(delay)
        finally:
            if pubsub is not None:
                await close_quietly(pubsub)

    async def _pump(self, pubsub: PubSub) -> None:
        pinged = False
        while True:
            reply = await pubsub.get_message(timeout=self._timeout_s)
            if reply is None:
                # A silent connection may be a dead one: ping, and give up if even
                # the ping goes unanswered.
                if pinged:
                    raise RedisTimeoutError("the event connection stopped answering")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if reply["type"] == "message":
                self._handlers[reply["channel"]](reply["data"])


async def close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(*UNREACHABLE):
        await pubsub.aclose()
