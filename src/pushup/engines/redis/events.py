"""The event stream: publications and closes as every node hears them, on one pub/sub
channel, in the order Redis ran them.

Each event carries a sequence number, so a node that missed some (a lost connection)
notices, and has its hub re-read the store. A caller that published or closed waits
until this node has heard its own event, so local listeners know of the change when
the caller goes on, as with the memory engine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging

from pushup.core.engine import EngineListener
from pushup.engines.redis import encoding
from pushup.engines.redis.health import Health
from pushup.engines.redis.known import KnownChannels
from pushup.engines.redis.shared_calls import SharedCalls
from pushup.observe import metrics

log = logging.getLogger("pushup.redis")


class EventsLost(Exception):
    """The event stream skipped a sequence number: re-read instead of trusting it."""


class EventStream:
    """Which event this node heard last, the ids it has told its listener, and the
    callers waiting to hear their own events."""

    __slots__ = (
        "_echo_order",
        "_echoes",
        "_health",
        "_known",
        "_listener",
        "_shared",
        "_timeout_s",
        "high_water",
        "live",
        "received",
        "seen",
    )

    def __init__(
        self, shared: SharedCalls, known: KnownChannels, health: Health, timeout_s: float
    ) -> None:
        self._shared = shared
        self._known = known
        self._health = health
        self._timeout_s = timeout_s
        self._listener: EngineListener | None = None
        # Every message at or below this has been told to the listener.
        self.high_water = 0
        # The last event told to the listener (or covered by a resync), and whether
        # the event connection is up; callers wait for their own events meanwhile.
        self.seen = 0
        self.live = False
        self.received = 0  # publication events heard, for /health
        self._echoes: list[tuple[int, int, asyncio.Future[None]]] = []
        self._echo_order = itertools.count()

    def begin(self, listener: EngineListener, high_water: int, seen: int) -> None:
        """Subscribed at start: every event after `seen` is still to come."""
        self._listener = listener
        self.high_water = high_water
        self.seen = seen
        self.live = True

    async def resume(self, last_message: int, seen: int) -> None:
        """Subscribed again after a loss: the listener re-reads the store first. Events
        wait in the connection until it is done, so none overtakes the re-read;
        callers meanwhile do not wait for theirs."""
        assert self._listener is not None
        await self._listener.resync()
        self.high_water = max(self.high_water, last_message)
        self._advance(seen)
        self.live = True
        self._health.events_up()
        log.info("Redis events are back; parked polls re-read the store")
        metrics.engine_reconnected()

    def lost(self) -> None:
        """Nobody waits for an event that may never come: a resync covers them."""
        self._shared.forget()  # a poll from now on reads after the resync began
        self._known.clear()  # closes may go unheard: vouch for no channel
        if self.live:
            self._health.events_down()
        self.live = False
        for _, _, future in self._echoes:
            if not future.done():
                future.set_result(None)
        self._echoes.clear()

    def on_event(self, data: bytes) -> None:
        """`P <seq> <publication>` or `C <seq> <channel ids>`: tell the listener."""
        assert self._listener is not None
        kind, seq_text, rest = data.split(b" ", 2)
        event = int(seq_text)
        if event <= self.seen:
            return  # published before this connection's starting point: covered
        if event != self.seen + 1:
            raise EventsLost(f"event {event} after {self.seen}")
        if kind == b"P":
            messages, evicted = encoding.publication_event(rest)
            self.received += 1
            self.high_water = max(self.high_water, messages[-1].id)
            self._known.heard_published(messages)
            self._listener.published(messages, evicted)
        elif kind == b"C":
            closed = list(encoding.ids(rest))
            self._known.heard_closed(closed, event)
            self._listener.closed(closed)
        else:
            raise EventsLost(f"unknown event kind {kind!r}")
        self._advance(event)

    def unheard(self, event: int) -> bool:
        """Whether `event` is still to come on a live connection."""
        return event > self.seen and self.live

    async def hear(self, event: int) -> None:
        """Return once this node has heard `event` (or a resync covers it), or after
        the timeout: stored all the same, the event will come or a resync cover it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._echoes, (event, next(self._echo_order), future))
        try:
            async with asyncio.timeout(self._timeout_s):
                await future
        except TimeoutError:
            log.warning("Redis event %d was not heard within %.1fs", event, self._timeout_s)

    def _advance(self, event: int) -> None:
        self.seen = event
        echoes = self._echoes
        while echoes and echoes[0][0] <= event:
            future = heapq.heappop(echoes)[2]
            if not future.done():
                future.set_result(None)
