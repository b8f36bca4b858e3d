"""WebSocket upgrades passed through to the web app (`--upstream`): the app's own
WebSockets (Socket.IO, live reload) work behind PushUp.

The handshake goes to the app over a TCP connection of its own: the HTTP client that
forwards other requests (upstream.py) cannot hand its connection over after a 101.
Once the app has answered, the two sockets are spliced: what one reads is written to
the other, untouched, and a full write buffer on one pauses reading on the other, so a
fast sender and a slow receiver cost bounded memory. When either side ends, the other
is closed once what it was sent has gone out. An answer other than 101 is passed to
the client as it is, and the connection closes after it.
"""

from __future__ import annotations

import asyncio

import httptools


class BadAnswer(Exception):
    """The app closed the connection, or answered something that is not HTTP."""


class _End(asyncio.Protocol):
    """One socket of a tunnel: what it reads goes to the other one's."""

    __slots__ = ("other", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: _End | None = None

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.write(data)

    def eof_received(self) -> bool:
        return False  # this side closes; connection_lost closes the other

    def pause_writing(self) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.pause_reading()

    def resume_writing(self) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.close()  # after what it was sent is written


class _ClientEnd(_End):
    """The client's socket, taken over from its HTTP connection, which still hears
    of the end: it counts as open until then."""

    __slots__ = ("_conn",)

    def __init__(self, transport: asyncio.Transport, conn: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.transport = transport
        self._conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._conn.connection_lost(exc)


class AppEnd(_End):
    """The connection to the app: its answer to the handshake, then its side."""

    __slots__ = ("_done", "_max_header", "_parser", "_received", "answered", "status")

    def __init__(self, max_header: int) -> None:
        super().__init__()
        self._max_header = max_header
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        # What the app sent until the splice: its head, maybe its first frames or body.
        self._received: bytearray | None = bytearray()
        self._done = False  # a non-101 answer has ended
        self.status = 0
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._received is None:
            super().data_received(data)  # spliced: on to the client
        else:
            self._received += data
        parser = self._parser
        if parser is None:
            return  # the app's side of a WebSocket: frames, not HTTP
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._parser = None
        except httptools.HttpParserError as exc:
            self._fail(BadAnswer(f"not an HTTP answer: {exc}"))
            return
        if not self.answered.done() and len(self._received or b"") > self._max_header:
            self._fail(BadAnswer("the answer's head is too large"))

    # httptools callbacks, while the answer is HTTP
    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            return  # informational: the answer is still to come
        self.status = status
        if not self.answered.done():
            self.answered.set_result(None)
            if self.transport is not None:
                # Nothing more is read until the splice: what came is all it holds.
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self._done = True  # the whole answer is in: the tunnel ends with it
            if self._received is None and self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool:
        if not self.answered.done():
            self._fail(BadAnswer("the app closed the connection without answering"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(exc or BadAnswer("the app closed the connection"))
        super().connection_lost(exc)

    def _fail(self, exc: Exception) -> None:
        self._parser = None
        if not self.answered.done():
            self.answered.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def splice(
        self, transport: asyncio.Transport, conn: asyncio.BaseProtocol, early: bytes
    ) -> None:
        """Join the client's socket, until now `conn`'s, to this one: the app's
        answer goes out, then bytes flow both ways after a 101, or the connection
        closes once any other answer is out. `early`: what the client sent after its
        request, for the app once it has switched protocols."""
        client = _ClientEnd(transport, conn)
        client.other = self
        self.other = client
        transport.set_protocol(client)
        received, self._received = self._received, None
        transport.write(bytes(received or b""))
        app = self.transport
        if app is None or self._done:
            # Its whole answer is in, or it has gone: nothing more comes from it.
            if app is not None:
                app.close()
            else:
                transport.close()
            return
        app.resume_reading()
        if self.status == 101:
            if early:
                app.write(early)
            transport.resume_reading()


async def connect(
    host: str,
    port: int,
    *,
    tls: bool,
    head: bytes,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_header: int,
) -> AppEnd:
    """A connection to the app that has sent it `head` (the handshake) and holds the
    head of its answer; TimeoutError, OSError or BadAnswer if there is none in time."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(connect_timeout_s):
        _, end = await loop.create_connection(
            lambda: AppEnd(max_header), host, port, ssl=True if tls else None
        )
    try:
        assert end.transport is not None
        end.transport.write(head)
        async with asyncio.timeout(read_timeout_s):
            await end.answered
    except BaseException:
        end.abort()
        raise
    return end
