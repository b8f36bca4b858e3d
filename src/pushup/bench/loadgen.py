"""The load generator: raw asyncio protocols, far cheaper than the servers they load.

A subscriber is one `PollClient`: a keep-alive connection that sends the target's poll
request, parses the answer with httptools, records each message's trip time from the
send time carried in its payload, and polls again (at once for long polling, after an
interval for client pull). Publishers are `PublishClient`s keeping requests in flight.
Every byte both ways, headers included, is counted at the client.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httptools

from pushup.bench.targets.base import PollAnswer, PollState, Target

# What `payload` writes: sequence number, then send time (pre-built publications of
# the publish-rate runs carry no time).
_TIMED = re.compile(rb'"seq":\s*([0-9]+)(?:,\s*"t":\s*([0-9.]+))?')


def payload(seq: int, pad: int = 0) -> bytes:
    """A message carrying its sequence number and send time (epoch seconds)."""
    padding = b',"pad":"' + b"x" * pad + b'"' if pad else b""
    return b'{"seq":%d,"t":%.6f%s}' % (seq, time.time(), padding)


@dataclass
class Recorder:
    """What one client process saw."""

    trips_s: list[float] = field(default_factory=list)
    received: Counter[int] = field(default_factory=Counter)  # seq -> deliveries
    statuses: Counter[int] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    polls: int = 0
    errors: int = 0  # connections lost or refused

    def message(self, data: bytes, now: float) -> None:
        """Record every timed payload in `data`: one payload or a whole response body
        (scanning bytes keeps the client far cheaper than decoding JSON would)."""
        for match in _TIMED.finditer(data):
            self.received[int(match.group(1))] += 1
            if match.group(2) is not None:
                self.trips_s.append(now - float(match.group(2)))

    def reset(self) -> None:
        self.trips_s.clear()
        self.received.clear()
        self.statuses.clear()
        self.bytes_in = self.bytes_out = self.polls = self.errors = 0

    def summary(self) -> dict[str, object]:
        return {
            "trips_s": list(self.trips_s),
            "received": dict(self.received),
            "statuses": dict(self.statuses),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "polls": self.polls,
            "errors": self.errors,
        }


class _ResponseReader:
    """httptools response parsing: status, headers, body of each response."""

    __slots__ = ("_body", "_headers", "_on_response", "parser")

    def __init__(self, on_response: Callable[[int, dict[str, str], bytes], None]) -> None:
        self._on_response = on_response
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        headers, body = self._headers, bytes(self._body)
        self._headers, self._body = {}, bytearray()
        self._on_response(status, headers, body)


class _CountingClient(asyncio.Protocol):
    """A client connection that counts every byte it receives and parses the responses;
    a malformed response counts as an error and ends the connection."""

    recorder: Recorder
    transport: asyncio.Transport | None
    _reader: _ResponseReader | _StatusReader
    _connected: asyncio.Future[None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._connected.set_result(None)

    async def connected(self) -> None:
        await self._connected

    def data_received(self, data: bytes) -> None:
        self.recorder.bytes_in += len(data)
        try:
            self._reader.parser.feed_data(data)
        except httptools.HttpParserError:
            self.recorder.errors += 1
            if self.transport is not None:
                self.transport.close()


class PollClient(_CountingClient):
    """One subscriber: poll, record, poll again, until stopped."""

    def __init__(
        self,
        target: Target,
        state: PollState,
        timeout_s: float,
        recorder: Recorder,
        *,
        interval_s: float = 0.0,
    ) -> None:
        self.target = target
        self.state = state
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.recorder = recorder
        self.parked = False  # a poll is out and unanswered
        self.stopped = False
        self.transport: asyncio.Transport | None = None
        self._reader = _ResponseReader(self._answer)
        self._connected = asyncio.get_running_loop().create_future()

    def poll(self) -> None:
        if self.stopped or self.transport is None or self.transport.is_closing():
            return
        request = self.target.poll_request(self.state, self.timeout_s)
        self.recorder.bytes_out += len(request)
        self.recorder.polls += 1
        self.parked = True
        self.transport.write(request)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        now = time.time()
        self.parked = False
        self.recorder.statuses[status] += 1
        answer: PollAnswer = self.target.poll_answer(status, headers, body)
        for data in answer.payloads:
            self.recorder.message(data, now)
        if answer.cursor is not None:
            self.state.cursor = answer.cursor
        if self.stopped:
            return
        if self.interval_s > 0:
            asyncio.get_running_loop().call_later(self.interval_s, self.poll)
        else:
            self.poll()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopped:
            self.recorder.errors += 1
        self.parked = False
        if not self._connected.done():
            self._connected.set_exception(exc or ConnectionError("connection lost"))

    def stop(self) -> None:
        self.stopped = True
        if self.transport is not None:
            self.transport.close()


async def open_pollers(
    target: Target,
    channels: Sequence[str],
    count: int,
    recorder: Recorder,
    *,
    timeout_s: float,
    interval_s: float = 0.0,
    source_addresses: Sequence[str] = ("127.0.0.1",),
    per_source: int = 25_000,
    concurrency: int = 200,
) -> list[PollClient]:
    """Open `count` subscriber connections spread round-robin over `channels`.

    Connections use source address `source_addresses[i // per_source]`, so one client
    process can pass the ~28,000 ephemeral ports one address has towards one server.
    """
    loop = asyncio.get_running_loop()
    clients: list[PollClient] = []
    gate = asyncio.Semaphore(concurrency)

    async def connect(i: int) -> None:
        source = source_addresses[min(i // per_source, len(source_addresses) - 1)]
        state = PollState(channels[i % len(channels)])
        async with gate:
            _, client = await loop.create_connection(
                lambda: PollClient(target, state, timeout_s, recorder, interval_s=interval_s),
                target.host,
                target.port,
                local_addr=(source, 0),
            )
        clients.append(client)
        client.poll()

    results = await asyncio.gather(*(connect(i) for i in range(count)), return_exceptions=True)
    recorder.errors += sum(1 for result in results if isinstance(result, BaseException))
    return clients


class PublishClient(_CountingClient):
    """A keep-alive publisher keeping `depth` publications in flight (pipelined)."""

    def __init__(
        self,
        target: Target,
        next_publication: Callable[[], tuple[str, bytes] | None],
        recorder: Recorder,
        depth: int = 1,
    ) -> None:
        self.target = target
        self.next_publication = next_publication
        self.recorder = recorder
        self.depth = depth
        self.in_flight = 0
        self.acknowledged = 0
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()
        self._reader = _ResponseReader(self._answer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for _ in range(self.depth):
            self._send()

    def _send(self) -> None:
        item = self.next_publication()
        if item is None:
            if self.in_flight == 0 and not self.done.done():
                self.done.set_result(None)
            return
        channel, data = item
        request = self.target.publish_request(channel, data)
        self.recorder.bytes_out += len(request)
        self.in_flight += 1
        assert self.transport is not None
        self.transport.write(request)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.in_flight -= 1
        self.recorder.statuses[status] += 1
        if 200 <= status < 300:
            self.acknowledged += 1
        else:
            self.recorder.errors += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.in_flight:
                self.done.set_exception(exc or ConnectionError("publisher connection lost"))
            else:
                self.done.set_result(None)


async def publish_all(
    target: Target,
    publications: Callable[[], tuple[str, bytes] | None],
    recorder: Recorder,
    *,
    connections: int = 1,
    depth: int = 1,
) -> int:
    """Send every publication `publications()` yields; the number acknowledged."""
    loop = asyncio.get_running_loop()
    clients: list[PublishClient] = []
    for _ in range(connections):
        _, client = await loop.create_connection(
            lambda: PublishClient(target, publications, recorder, depth),
            target.host,
            target.port,
        )
        clients.append(client)
    try:
        await asyncio.gather(*(client.done for client in clients))
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    return sum(client.acknowledged for client in clients)


class _StatusReader:
    """httptools response parsing that keeps only the status: a publisher needs no more,
    and skipping header callbacks keeps the load generator cheap."""

    __slots__ = ("_on_status", "parser")

    def __init__(self, on_status: Callable[[int], None]) -> None:
        self._on_status = on_status
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self._on_status(self.parser.get_status_code())


class PublishSession(_CountingClient):
    """A keep-alive publisher connection kept open across runs.

    Unlike `PublishClient` (one batch per connection), a session sends batch after batch
    of prebuilt requests, so connecting is never part of a measured run. `send` keeps up
    to `depth` requests in flight (pipelined), taking each next one from a source shared
    by every session of the process.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0
        self.acknowledged = 0
        self._next: Callable[[], bytes | None] = lambda: None
        self._done: asyncio.Future[None] | None = None
        self._reader = _StatusReader(self._answer)
        self._connected = asyncio.get_running_loop().create_future()

    def send(
        self, next_request: Callable[[], bytes | None], depth: int = 1
    ) -> asyncio.Future[None]:
        """Send requests from `next_request` until it returns None; done when all answered."""
        self._next = next_request
        self._done = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            self._done.set_exception(ConnectionError("publisher connection is closed"))
            return self._done
        for _ in range(depth):
            if not self._send_one():
                break
        self._maybe_done()
        return self._done

    def _send_one(self) -> bool:
        request = self._next()
        if request is None or self.transport is None:
            return False
        self.recorder.bytes_out += len(request)
        self.in_flight += 1
        self.transport.write(request)
        return True

    def _maybe_done(self) -> None:
        if self.in_flight == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _answer(self, status: int) -> None:
        self.in_flight -= 1
        self.recorder.statuses[status] += 1
        if 200 <= status < 300:
            self.acknowledged += 1
        if not self._send_one():
            self._maybe_done()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._connected.done():
            self._connected.set_exception(exc or ConnectionError("connection lost"))
        if self._done is not None and not self._done.done():
            if self.in_flight:
                self.recorder.errors += 1
                self._done.set_exception(exc or ConnectionError("publisher connection lost"))
            else:
                self._done.set_result(None)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_publish_sessions(
    target: Target,
    count: int,
    recorder: Recorder,
    *,
    source_address: str = "127.0.0.1",
) -> list[PublishSession]:
    """Open `count` idle keep-alive publisher connections; failures count as errors."""
    loop = asyncio.get_running_loop()

    async def connect() -> PublishSession:
        _, session = await loop.create_connection(
            lambda: PublishSession(recorder),
            target.host,
            target.port,
            local_addr=(source_address, 0),
        )
        return session

    results = await asyncio.gather(*(connect() for _ in range(count)), return_exceptions=True)
    sessions = [result for result in results if isinstance(result, PublishSession)]
    recorder.errors += count - len(sessions)
    return sessions
