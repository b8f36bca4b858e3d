"""A connection's requests as they arrive: httptools parsing into a queue, in order,
within the limits on a request still arriving.

This is the reading half of `HttpConnection` (protocol.py), which answers what is
queued here. Pipelined requests wait in the queue; past `_MAX_PIPELINED`, further
bytes wait unparsed, and past `_MAX_BACKLOG` of those, reading pauses. A request that
breaks a limit (a head or body too large, one too slow to arrive, bytes that are not
HTTP) is queued as the error to answer in its turn, after which the connection
closes, lingering (`_Lingering`) so that a client still sending can read the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import httptools

from pushup.http.errors import (
    ApiError,
    BadRequest,
    HeadersTooLarge,
    InternalError,
    PayloadTooLarge,
    RequestTimeout,
)
from pushup.http.limits import BODY, HEAD, IDLE
from pushup.http.request import Request
from pushup.http.response import CLOSE, KEEP_ALIVE_10

if TYPE_CHECKING:
    from pushup.http.server import HttpServer

log = logging.getLogger("pushup.http")

_MAX_PIPELINED = 16
# Unparsed bytes held while the pipeline queue is full; past this, reading pauses.
_MAX_BACKLOG = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# After a fatal answer, what the client still sends is read and dropped, up to these
# bounds, before the connection closes: closing with unread bytes makes the kernel
# reset it, and the reset discards the answer at a client still sending its request
# (urllib uploading a body over the limit). 4 MiB covers a body a few times the
# default limit, read in milliseconds; 5 s covers that on a slow link. A client that
# sends more, or for longer, is cut off: it was refused anyway.
_LINGER_BYTES = 4 * 1024 * 1024
_LINGER_S = 5.0


class _Fatal(Exception):
    """Raised inside a parser callback: answer `error`, then close the connection."""

    def __init__(self, error: ApiError) -> None:
        self.error = error


class RequestReader(asyncio.Protocol):
    """The socket, the parser and the queue of requests read but not yet answered."""

    __slots__ = (
        "_backlog",
        "_busy",
        "_closed",
        "_current",
        "_head_bytes",
        "_head_size",
        "_in_head",
        "_parser",
        "_pending",
        "_phase",
        "_reading_paused",
        "_server",
        "_transport",
        "peer",
    )

    # Reverse-proxy mode (proxy.py): a request's head may send it to the web app.
    _proxy: ClassVar[bool] = False

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._current: Request | None = None  # being parsed
        # Bytes of the request head so far, counted as they arrive: httptools hands
        # over a header only once it is complete, too late to stop an endless one.
        self._head_bytes = 0
        self._head_size = 0  # the same, counted exactly by the parser callbacks
        self._in_head = True
        # Bytes received while too many requests wait; parsed once the queue drains.
        self._backlog: bytearray | None = None
        # Complete requests not yet handled, or a final error to send in their turn.
        self._pending: deque[Request | ApiError] | None = None
        self._busy = False  # a request is being handled or is parked
        self._closed = False
        self._reading_paused = False
        # The phase of a request still arriving, watched for slowness (limits.py).
        self._phase = IDLE

    def _process(self) -> None:
        """Answer what is queued, in order: the connection's part."""
        raise NotImplementedError

    def close_idle(self) -> None:
        """Called by the idle sweep: the connection's part."""
        raise NotImplementedError

    def _feed(self, data: bytes | bytearray) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Fatal):
                self._fail(cause.error)
            else:
                log.exception("parser callback failed")
                self._fail(InternalError("the request could not be read"))
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(bytes(data[exc.args[0] :]))
        except httptools.HttpParserError as exc:
            self._fail(BadRequest(f"malformed HTTP request: {exc}"))
        else:
            if self._in_head and self._head_bytes > self._server.max_header:
                self._fail(HeadersTooLarge("the request line and headers are too large"))
        if self._current is not None or self._phase:
            self._watch()

    def _hold(self, data: bytes) -> None:
        """Keep bytes unparsed while too many requests wait. Reading goes on, so a
        client that leaves is noticed even now, until the backlog is too large."""
        assert self._backlog is not None
        self._backlog += data
        if len(self._backlog) > _MAX_BACKLOG and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def _parse_backlog(self) -> bool:
        """Parse held-back bytes once the queue has room; True if there were any."""
        if self._backlog is None or (self._pending and len(self._pending) >= _MAX_PIPELINED):
            return False
        data, self._backlog = self._backlog, None
        if self._reading_paused:
            self._reading_paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        if data and self._parser is not None:
            self._feed(data)
        return bool(data)

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = Request(self, self.peer)
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        request = self._current
        assert request is not None
        self._grow_head(len(url))
        request.url = request.url + url if request.url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called once per header of every request: the size check inlined.
        request = self._current
        assert request is not None
        size = self._head_size = self._head_size + len(name) + len(value) + 4
        if size > self._server.max_header:
            raise _Fatal(HeadersTooLarge("the request line and headers are too large"))
        request.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self._current
        assert request is not None
        self._in_head = False
        self._head_bytes = 0
        parser = self._parser
        request.method = parser.get_method().decode("latin-1")
        try:
            # Any: httptools' stubs type the parts bytes, but a part the target lacks
            # is None (which compiled code would refuse as a bytes).
            url: Any = httptools.parse_url(request.url)
        except httptools.HttpParserInvalidURLError:
            raise _Fatal(BadRequest("the request target is not a valid URL")) from None
        path: bytes | None = url.path
        query: bytes | None = url.query
        request.path = path.decode("latin-1") if path else "/"
        request.query = query.decode("latin-1") if query else ""
        if "host" not in request.headers and parser.get_http_version() != "1.0":
            # RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400.
            raise _Fatal(BadRequest("an HTTP/1.1 request needs a Host header"))
        if not parser.should_keep_alive():
            request.mode = CLOSE
        elif parser.get_http_version() == "1.0":
            request.mode = KEEP_ALIVE_10
        if self._proxy and self._forward_head(request):
            return
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body:
            raise _Fatal(self._too_large())
        if request.headers.get("expect", "").lower() == "100-continue":
            request.expect_continue = True
            self._maybe_continue()

    def _forward_head(self, request: Request) -> bool:
        """In reverse-proxy mode, queue a request for the web app; whether it was one."""
        return False

    def on_body(self, body: bytes) -> None:
        request = self._current
        assert request is not None
        had = request.body
        if len(had) + len(body) > self._server.max_body:
            raise _Fatal(self._too_large())
        if not had:
            request.body = body
        elif isinstance(had, bytearray):
            had += body
        else:
            request.body = bytearray(had) + body

    def on_message_complete(self) -> None:
        request = self._current
        assert request is not None
        self._current = None
        self._in_head = True
        if self._pending is None:
            self._pending = deque()
        self._pending.append(request)
        if len(self._pending) >= _MAX_PIPELINED and self._backlog is None:
            self._backlog = bytearray()

    # -- limits on a request arriving ------------------------------------------------

    def request_timed_out(self, phase: int) -> None:
        """From the sweep: the request arriving has not finished its head (or body) in
        time. A client that trickles bytes must not hold a connection forever."""
        self._phase = IDLE
        if self._closed or self._parser is None:
            return
        limits = self._server.limits
        if phase == HEAD:
            limits.hit("header_timeout")
            what, timeout_s = "line and headers", limits.timeouts.header_timeout_s
        else:
            limits.hit("body_timeout")
            what, timeout_s = "body", limits.timeouts.body_timeout_s
        self._fail(RequestTimeout(f"the request {what} did not arrive within {timeout_s:g} s"))
        self._process()

    def _fail(self, error: ApiError) -> None:
        """Stop reading; answer `error` after whatever came before it, then close."""
        self._parser = None  # type: ignore[assignment]
        self._current = None
        if self._pending is None:
            self._pending = deque()
        self._pending.append(error)

    def _linger(self) -> None:
        """Close once a fatal answer is written, without losing it: send the end of
        the stream after the answer, then read and drop what the client still sends
        until it stops or a bound is reached ("lingering close")."""
        transport = self._transport
        if self._closed or transport is None:
            return
        self._closed = True
        self._server.idle.forget(self)
        _Lingering(self, transport)

    def _upgrade(self, rest: bytes) -> None:
        """Answer an `Upgrade` request (e.g. h2c) in plain HTTP/1.1, then close: what
        follows it on the wire (`rest`, then more) would be in the other protocol.
        Only a WebSocket handshake on its own endpoint is accepted (its handler
        returns a stream), or one for the web app in reverse-proxy mode (proxy.py)."""
        last = self._pending[-1] if self._pending else None
        if isinstance(last, Request) and self._current is None:
            last.mode = CLOSE
            self._parser = None  # type: ignore[assignment]
        else:
            self._fail(BadRequest("protocol upgrades are not supported"))

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._server.max_header:
            raise _Fatal(HeadersTooLarge("the request line and headers are too large"))

    def _too_large(self) -> PayloadTooLarge:
        limit = self._server.max_body
        return PayloadTooLarge(f"the body is larger than {limit} bytes")

    def _maybe_continue(self) -> None:
        """Send `100 Continue` once the request that asked for it is next in line."""
        request = self._current
        if request is not None and request.expect_continue and not self._busy and not self._pending:
            request.expect_continue = False
            self._write(_CONTINUE)
            self._watch()  # the body is due from now on

    def _watch(self) -> None:
        """Follow the phase of the request arriving, for the header and body timeouts.
        A body starts its time once it may be sent (after `100 Continue`)."""
        current = self._current
        if current is None or self._parser is None:
            phase = IDLE
        elif self._in_head:
            phase = HEAD
        elif current.expect_continue:
            phase = IDLE
        else:
            phase = BODY
        if phase != self._phase:
            self._server.limits.timeouts.watch(self, phase, self._phase)
            self._phase = phase

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)


class _Lingering(asyncio.Protocol):
    """A connection's transport after its fatal answer, until it closes. The
    connection still hears of the end (`connection_lost`), so it counts as open
    until then, as the connection limit expects."""

    __slots__ = ("_conn", "_left", "_timer", "_transport")

    def __init__(self, conn: asyncio.BaseProtocol, transport: asyncio.Transport) -> None:
        self._conn = conn
        self._transport = transport
        self._left = _LINGER_BYTES
        self._timer = asyncio.get_running_loop().call_later(_LINGER_S, transport.abort)
        transport.set_protocol(self)
        transport.resume_reading()  # paused by a pipelining backlog or a slow upstream
        if transport.can_write_eof():
            transport.write_eof()  # once the answer is out: the client sees it end

    def data_received(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            self._transport.close()

    def eof_received(self) -> bool:
        return False  # the client has stopped sending: close now

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        self._conn.connection_lost(exc)
