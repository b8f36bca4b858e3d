"""Streams: subscriptions answered as responses that stay open (SSE, WebSocket).

A stream is the hub's receiver for a subscription that stays parked: every matching
publication is written to it as it comes, with bytes the transport frames once per
shape. The connection hands the socket over once the handler returns the stream, and
from then on only forwards what it reads and tells it of the end. One `Heartbeat` timer
pings every open stream, so proxies keep quiet ones open and dead peers are noticed.
"""

from __future__ import annotations

import asyncio
import logging

from pushup.core.hub import Hub, PollQuery
from pushup.core.model import MessageId, Outcome, PollOutcome
from pushup.core.waiters import Subscription

log = logging.getLogger("pushup.http")

# A reader this far behind would hold server memory without bound: it is cut off and
# resumes with its cursor, which the message cache serves.
MAX_BUFFERED = 4 * 1024 * 1024


class Stream:
    """The transport-independent part: opening, delivering, pings, the end."""

    __slots__ = ("_done", "_heartbeat", "_hub", "_initial", "_queued", "_transport", "sub")

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.sub: Subscription | None = None
        self._initial: PollOutcome | None = None
        self._transport: asyncio.Transport | None = None
        self._heartbeat: Heartbeat | None = None
        # Deliveries that came before the socket was handed over: a handler run by a
        # Task (the Redis engine's) returns the stream through the Task's done
        # callback, and the loop may run a fan-out to it before that callback.
        self._queued: list[Outcome] | None = None
        self._done = False  # no more messages: ending, or the peer has gone

    async def open(self, query: PollQuery) -> None:
        """Read what is cached and park; raises the errors a poll would, so a bad
        request is answered in plain HTTP before the stream starts."""
        self._initial, self.sub = await self._hub.open_stream(query, self)

    def nothing_cached(self) -> bool:
        """Whether the opening read found nothing to send: no message, no gap."""
        initial = self._initial
        return initial is None or not (initial.hits or initial.gap)

    def start(self, transport: asyncio.Transport, heartbeat: Heartbeat) -> None:
        """The connection hands its socket over: send the head and what was cached."""
        self._transport = transport
        self._heartbeat = heartbeat
        heartbeat.add(self)
        self._send(self._head())
        initial, self._initial = self._initial, None
        assert initial is not None
        if initial.hits or initial.gap:
            self._send(self._messages(initial))
        queued, self._queued = self._queued, None
        for outcome in queued or ():
            self.deliver(outcome)
        if self.sub is None and not self._done:  # its `end` had already passed
            self._range_ended(initial.cursor)

    def deliver(self, outcome: Outcome) -> None:
        """From the hub: messages to send, or the end (a closed channel, `end` passed)."""
        if self._done:
            return
        if self._transport is None:
            if self._queued is None:
                self._queued = []
            self._queued.append(outcome)
            return
        if not isinstance(outcome, PollOutcome):  # 410: a channel closed or expired
            self._channel_closed(outcome)
            return
        if outcome.hits or outcome.gap:
            self._send(self._messages(outcome))
        sub = self.sub
        if sub is not None and not sub.parked and not self._done:
            # The hub let go of a stream: its `end` has passed.
            self._range_ended(outcome.cursor)

    def connection_lost(self) -> None:
        """The socket is gone: free the subscription at once."""
        self._stop()

    # -- for the transports ----------------------------------------------------------

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            log.info("stream closed: its reader is more than %d bytes behind", MAX_BUFFERED)
            self._stop()
            transport.abort()

    def _stop(self) -> None:
        """Send no more: leave the hub and the heartbeat."""
        self._done = True
        if self._heartbeat is not None:
            self._heartbeat.discard(self)
        if self.sub is not None:
            self._hub.cancel(self.sub)

    def _close(self) -> None:
        """Stop, then close the socket once what was written has gone out."""
        self._stop()
        if self._transport is not None:
            self._transport.close()

    # -- what each transport defines -------------------------------------------------

    def _head(self) -> bytes:
        """What starts the stream on the wire (a response head)."""
        raise NotImplementedError

    def _messages(self, outcome: PollOutcome) -> bytes:
        """An outcome's messages (and gap notice), framed once per outcome."""
        raise NotImplementedError

    def _channel_closed(self, outcome: Outcome) -> None:
        """A subscribed channel was closed or expired: say so and end."""
        raise NotImplementedError

    def _range_ended(self, cursor: MessageId) -> None:
        """The `end` of the time range has passed: no message can match any more."""
        raise NotImplementedError

    def ping(self) -> None:
        """Called by the heartbeat every interval."""
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        """Bytes from the peer, once the stream has started."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """The server is stopping; the connection closes the socket right after."""
        self._stop()


class Heartbeat:
    """Pings every open stream with one timer, armed only while there are any."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._streams: dict[Stream, None] = {}  # ordered, for a stable ping order
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: Stream) -> None:
        self._streams[stream] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._tick)

    def discard(self, stream: Stream) -> None:
        self._streams.pop(stream, None)
        if not self._streams and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        for stream in list(self._streams):
            try:
                stream.ping()
            except Exception:
                log.exception("a stream failed to send its ping")
        if self._streams:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._tick)
