"""Channel events for the application: a channel created, closed or expired becomes a
publication on the server's own channel `$events`, which the web application long-polls
with the publisher key (`GET /subscribe/events`) as any subscriber polls a channel: with
a cursor, from the cache, missing nothing in between.

Each event is published once over every node of a shared engine: a creation by the node
that created the channel, a close or an expiry by the node whose engine operation removed
it (`EngineListener.ended`). Publishing is asynchronous: events wait in a bounded queue,
and one task publishes them in order, in batches, trying again while the engine is out
of reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from pushup.core.channels import RESERVED_PREFIX, get_or_create, reserved
from pushup.core.errors import ChannelsNotFound, EngineUnavailable, SystemChannel
from pushup.core.model import SERVER_RETENTION, ChannelEnd, ChannelId, ChannelInfo, ChannelRef

if TYPE_CHECKING:
    from pushup.core.engine import Engine

log = logging.getLogger("pushup.events")

EVENTS_CHANNEL = RESERVED_PREFIX + "events"
# The dashboard's stats channels (`observe/observer.py`): the server's too, told of to
# no one, though anyone who knows a name may read it.
STATS_CHANNEL_PREFIX = "pushup:stats:"
# Events waiting to be published; past this the oldest are dropped (and said to be).
MAX_QUEUED = 10_000
# Events per publication call (the engine's batch limit is higher).
_BATCH = 500
_RETRY_S = 0.5


def _told(name: str | None) -> bool:
    """Whether the application hears of a channel: all but the server's own."""
    return name is None or not name.startswith((RESERVED_PREFIX, STATS_CHANNEL_PREFIX))


class ChannelEvents:
    """The `$events` channel: made at start, kept alive, fed with events, and kept
    from everyone else (`refuse`)."""

    def __init__(self, engine: Engine, clock: Callable[[], float], *, on: bool = True) -> None:
        # Off (`--channel-events` not given): nothing is made or published, and the
        # `$` names stay reserved all the same.
        self.on = on
        self._engine = engine
        self._clock = clock
        # Every id the events channel had on this node (one, unless it expired while
        # every node was down, or the store was lost): none may be read by subscribers.
        self.ids: set[ChannelId] = set()
        self._current: ChannelId | None = None
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._dropped = 0

    async def start(self) -> None:
        """Make (or find) the events channel, then publish and keep it alive."""
        if not self.on:
            return
        with contextlib.suppress(EngineUnavailable):
            await self._ensure()  # else made once the store is back
        self._task = asyncio.create_task(self._drain(), name="pushup-events")
        self._keeper = asyncio.create_task(self._keep_alive(), name="pushup-events-keeper")

    async def close(self, flush_s: float = 1.0) -> None:
        """Stop, after publishing what waits, for at most `flush_s`."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_s):
                while self._queue:
                    self._wake.set()
                    await asyncio.sleep(0.01)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def refuse(self, refs: Sequence[ChannelRef]) -> None:
        """SystemChannel for the server's own channels among `refs`, by name or by id:
        only the server writes them, and only the publisher reads them, at its own
        endpoint. Whatever the publisher key, admin keys too."""
        ids = self.ids
        for ref in refs:  # on every request's path: no list, no call, unless one is
            if (isinstance(ref, str) and ref.startswith(RESERVED_PREFIX)) or ref in ids:
                raise SystemChannel([r for r in refs if reserved(r) or r in ids])

    # -- what happened -----------------------------------------------------------------

    def created(self, info: ChannelInfo) -> None:
        if _told(info.name):
            self._add("created", info.id, info.name, self._clock())

    def ended(self, ends: Sequence[ChannelEnd]) -> None:
        for end in ends:
            if end.id in self.ids:
                # The events channel itself: made again at once, to hear what follows.
                self._current = None
                self._wake.set()
            elif _told(end.name):
                self._add(end.reason, end.id, end.name, end.at)

    def _add(self, event: str, channel: ChannelId, name: str | None, at: float) -> None:
        if not self.on:
            return
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped == 1:
                log.warning(
                    "channel events pile up while the engine is out of reach: dropping the oldest"
                )
        body = {"event": event, "channel": channel, "name": name, "at": at}
        self._queue.append(orjson.dumps(body))
        self._wake.set()

    # -- publishing --------------------------------------------------------------------

    async def _ensure(self) -> ChannelId:
        info, _ = await self._find_or_make()
        self.ids.add(info.id)
        self._current = info.id
        return info.id

    def _find_or_make(self) -> Coroutine[Any, Any, tuple[ChannelInfo, bool]]:
        return get_or_create(self._engine, None, EVENTS_CHANNEL, SERVER_RETENTION, None)

    async def _drain(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(_BATCH, len(self._queue)))]
            try:
                channel = self._current or await self._ensure()
                await self._engine.publish([((channel,), body) for body in batch])
            except ChannelsNotFound:
                self._current = None  # expired or lost meanwhile: made again
                continue
            except EngineUnavailable:
                await asyncio.sleep(_RETRY_S)
                continue
            except Exception:  # one bad batch must not stop the events for good
                log.exception("cannot publish channel events")
                await asyncio.sleep(_RETRY_S)
                continue
            for _ in batch:
                self._queue.popleft()
            if self._dropped:
                log.warning(
                    "dropped %d channel events while the engine was out of reach", self._dropped
                )
                self._dropped = 0

    async def _keep_alive(self) -> None:
        """Renew the events channel well within its TTL (publications renew it too), so
        it lives as long as a node does."""
        while True:
            ttl_s = 60.0
            with contextlib.suppress(EngineUnavailable):
                info, _ = await self._find_or_make()
                self.ids.add(info.id)
                self._current = info.id
                ttl_s = info.ttl_s
            await asyncio.sleep(max(1.0, min(ttl_s / 4, 600.0)))
