"""One HTTP/1.1 connection: httptools parsing, in-order answers, parking, limits.

A connection with a parked poll is just this object sitting in the hub's waiters:
no task, no future, no timer of its own. Pipelined requests queue behind the one in
progress and are answered in order; reading stops if too many queue up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, ClassVar, cast

import httptools

from pushup.core.errors import ChannelsNotFound, EngineUnavailable, NameTaken
from pushup.core.model import Outcome
from pushup.core.waiters import Subscription
from pushup.http import cors
from pushup.http.eager import Running, start_eagerly
from pushup.http.errors import (
    ApiError,
    BadRequest,
    ChannelNotFound,
    EngineUnavailableError,
    HeadersTooLarge,
    InternalError,
    NameTakenError,
    PayloadTooLarge,
    RequestTimeout,
    TooManySubscriptions,
)
from pushup.http.limits import BODY, HEAD, IDLE, client_key
from pushup.http.request import Request
from pushup.http.response import CLOSE, KEEP_ALIVE, KEEP_ALIVE_10, Response, frame, frame_outcome
from pushup.http.shutdown import release_polls
from pushup.http.stream import Stream
from pushup.observe.requests import answered_error, current_request

if TYPE_CHECKING:
    from pushup.http.limits import Quota
    from pushup.http.server import HttpServer

log = logging.getLogger("pushup.http")

_MAX_PIPELINED = 16
# Unparsed bytes held while the pipeline queue is full; past this, reading pauses.
_MAX_BACKLOG = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Fatal(Exception):
    """Raised inside a parser callback: answer `error`, then close the connection."""

    def __init__(self, error: ApiError) -> None:
        self.error = error


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "_backlog",
        "_busy",
        "_closed",
        "_cors",
        "_current",
        "_forwarded_for",
        "_head_bytes",
        "_head_size",
        "_in_head",
        "_parked",
        "_parser",
        "_pending",
        "_phase",
        "_processing",
        "_quota",
        "_reading_paused",
        "_reply_mode",
        "_server",
        "_stream",
        "_task",
        "_transport",
        "_write_paused",
        "peer",
    )

    # Reverse-proxy mode (proxy.py): a request's head may send it to the web app.
    _proxy: ClassVar[bool] = False

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
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
        self._processing = False
        self._parked: Subscription | None = None
        self._reply_mode = KEEP_ALIVE
        # The CORS headers of the current request's answers (None: none, as always
        # without --cors-origins).
        self._cors: cors.Headers | None = None
        self._task: Running | None = None  # the handler, while it waits
        self._closed = False
        self._write_paused = False
        self._reading_paused = False
        # An SSE or WebSocket stream that owns the socket once started, until it ends.
        self._stream: Stream | None = None
        self.peer: str | None = None
        # Limits (limits.py): the phase of a request still arriving (watched for
        # slowness), and the count this connection's parked poll or stream holds
        # against its client's address (whose X-Forwarded-For is kept until then).
        self._phase = IDLE
        self._quota: Quota | None = None
        self._forwarded_for: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple):
            self.peer = peername[0]
        self._server.connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self._closed or self._parser is None:
            if self._stream is not None and not self._closed:
                self._stream.data_received(data)
            return
        if not self._busy:
            self._server.idle.touch(self)
        if self._backlog is not None:
            # Keep reading, so a client that leaves is noticed even now.
            self._backlog += data
            if len(self._backlog) > _MAX_BACKLOG and not self._reading_paused:
                self._reading_paused = True
                assert self._transport is not None
                self._transport.pause_reading()
            return
        self._feed(data)
        self._process()

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
        except httptools.HttpParserUpgrade:
            self._refuse_upgrade()
        except httptools.HttpParserError as exc:
            self._fail(BadRequest(f"malformed HTTP request: {exc}"))
        else:
            if self._in_head and self._head_bytes > self._server.max_header:
                self._fail(HeadersTooLarge("the request line and headers are too large"))
        if self._current is not None or self._phase:
            self._watch()

    def eof_received(self) -> bool:
        # A client that stops sending has gone: drop whatever it left parked.
        return False

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connection_lost(self)
        if self._phase:
            self._server.limits.timeouts.forget(self)
        if self._quota is not None:
            self._quota.release()
            self._quota = None
        if self._parked is not None:
            self._server.hub.cancel(self._parked)
            self._parked = None
        if self._stream is not None:
            self._stream.connection_lost()
            self._stream = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._pending = None
        self._current = None

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = Request(self, self.peer)
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._grow_head(len(url))
        self._current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._grow_head(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        self._current.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self._current
        assert request is not None
        self._in_head = False
        self._head_bytes = 0
        parser = self._parser
        request.method = parser.get_method().decode("latin-1")
        try:
            url = httptools.parse_url(bytes(request.url))
        except httptools.HttpParserInvalidURLError:
            raise _Fatal(BadRequest("the request target is not a valid URL")) from None
        request.path = url.path.decode("latin-1") if url.path else "/"
        request.query = url.query.decode("latin-1") if url.query else ""
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
        if len(request.body) + len(body) > self._server.max_body:
            raise _Fatal(self._too_large())
        request.body += body

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

    # -- handling --------------------------------------------------------------------

    def _process(self) -> None:
        """Handle queued requests one at a time, in the order they came."""
        if self._processing:
            return
        self._processing = True
        try:
            while True:
                pending = self._pending
                while pending and not self._busy and not self._write_paused and not self._closed:
                    item = pending.popleft()
                    if isinstance(item, ApiError):
                        if item.limit is not None:
                            self._server.limits.hit(item.limit)
                        headers = item.headers + answered_error(item, in_request=False)
                        self._write(frame(item.status, item.body(), CLOSE, headers))
                        self._close()
                        return
                    self._handle(item)
                if self._closed or not self._drain_backlog():
                    break
            if not self._pending:
                self._pending = None  # most connections never pipeline: keep them small
            if not self._busy:
                self._maybe_continue()
        finally:
            self._processing = False

    def _drain_backlog(self) -> bool:
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

    def _handle(self, request: Request) -> None:
        self._busy = True
        self._server.idle.forget(self)
        self._reply_mode = request.mode
        if self._server.cors is not None:
            self._cors = self._server.cors.response_headers(request)
        if self._server.limits.trust_forwarded_for:
            self._forwarded_for = request.headers.get("x-forwarded-for")
        # Log lines and error answers name this request; its later steps (future
        # callbacks, a Task) inherit the variable with the context they are made in.
        token = current_request.set(request)
        try:
            self._task = start_eagerly(
                self._server.router.handle(request), self._on_reply, self._on_error
            )
        finally:
            current_request.reset(token)

    def _on_reply(self, reply: Response | Outcome | Subscription | Stream) -> None:
        self._task = None
        if isinstance(reply, Subscription):
            if self._closed:  # the client left while the handler was finishing
                self._server.hub.cancel(reply)
                return
            if not self._admit():
                self._server.hub.cancel(reply)
                return
            self._parked = reply
            if self._server.closing:  # answered at once, as every parked poll was
                release_polls(self._server.hub, (reply,))
        elif isinstance(reply, Outcome):
            self.deliver(reply)
        elif isinstance(reply, Stream):
            if not self._closed and not self._admit():
                reply.connection_lost()
                return
            self._start_stream(reply)
        else:
            mode = self._mode_now(self._reply_mode)
            headers = reply.headers if self._cors is None else reply.headers + self._cors
            self._finish(frame(reply.status, reply.body, mode, headers), mode)

    def _on_error(self, exc: BaseException) -> None:
        self._task = None
        error = _api_error(exc)
        if error.limit is not None:
            self._server.limits.hit(error.limit)
        mode = CLOSE if isinstance(error, BadRequest) else self._mode_now(self._reply_mode)
        headers = error.headers + answered_error(error)
        if self._cors is not None:
            headers += self._cors
        self._finish(frame(error.status, error.body(), mode, headers), mode)

    def deliver(self, outcome: Outcome) -> None:
        """The answer to this connection's poll, now or from the hub once parked."""
        self._parked = None
        quota = self._quota
        if quota is not None:
            self._quota = None
            quota.release()
        if self._closed:
            return
        # The fan-out path, once per receiver: kept to a few attribute reads and one
        # write, since a publication may wake tens of thousands of connections.
        mode = CLOSE if self._server.closing else self._reply_mode
        if self._cors is None:
            data = outcome.framed.get(mode)
            if data is None:
                data = frame_outcome(outcome, mode)
        else:
            data = cors.frame_outcome(outcome, mode, self._cors)
        if mode == CLOSE or self._pending or self._backlog is not None or self._current:
            self._finish(data, mode)
            return
        assert self._transport is not None
        self._transport.write(data)
        self._busy = False
        self._server.idle.touch(self)

    def close_idle(self) -> None:
        """Called by the idle sweep: nothing in progress for too long."""
        if not self._busy:
            self._close()

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

    def close_now(self) -> None:
        """Server shutdown: close whatever state the connection is in."""
        if self._stream is not None:
            self._stream.shutdown()
        self._close()

    def drain(self) -> None:
        """Graceful shutdown (shutdown.py): close now, unless a request is being
        received or handled; that one is answered first, then the connection closes."""
        if self._stream is None and (self._task is not None or self._current is not None):
            return
        self.close_now()

    def abort(self) -> None:
        """The end of a graceful shutdown's time: drop the connection, unsent bytes too."""
        if self._transport is not None:
            self._closed = True
            self._transport.abort()

    def _start_stream(self, stream: Stream) -> None:
        """The answer is a stream (SSE, WebSocket): it owns the socket from now on and
        ends by closing it. Nothing after the request on this connection is HTTP it
        would answer, so parsing stops; the connection stays busy, never idle."""
        self._parser = None  # type: ignore[assignment]
        self._pending = None
        self._backlog = None
        if self._closed or self._transport is None:
            stream.connection_lost()
            return
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()
        self._stream = stream
        stream.start(self._transport, self._server.heartbeat)
        if self._server.closing:  # opened while stopping: ended at once, as the others
            self.close_now()

    def _finish(self, data: bytes, mode: int) -> None:
        self._write(data)
        self._busy = False
        if mode == CLOSE:
            self._close()
            return
        self._server.idle.touch(self)
        self._process()

    # -- helpers ---------------------------------------------------------------------

    def _mode_now(self, mode: int) -> int:
        return CLOSE if self._server.closing else mode

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def _close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._server.idle.forget(self)
            self._transport.close()

    def _fail(self, error: ApiError) -> None:
        """Stop reading; answer `error` after whatever came before it, then close."""
        self._parser = None  # type: ignore[assignment]
        self._current = None
        if self._pending is None:
            self._pending = deque()
        self._pending.append(error)

    def _refuse_upgrade(self) -> None:
        """Answer an `Upgrade` request (e.g. h2c) in plain HTTP/1.1, then close: what
        follows it on the wire would be in the other protocol. Only a WebSocket
        handshake on its own endpoint is accepted (its handler returns a stream)."""
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

    def _admit(self) -> bool:
        """Count a parked poll or an open stream against its client's address; past
        the limit, answer 429 instead."""
        limits = self._server.limits
        forwarded_for, self._forwarded_for = self._forwarded_for, None
        if not limits.parked.limit:
            return True
        key = client_key(self.peer, forwarded_for, limits.trust_forwarded_for)
        try:
            self._quota = limits.parked.admit(key)
        except TooManySubscriptions as error:
            self._on_error(error)
            return False
        return True


def _api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ChannelsNotFound):
        return ChannelNotFound(
            "unknown, expired or closed channels: " + ", ".join(map(str, exc.refs)),
            channels=exc.refs,
        )
    if isinstance(exc, NameTaken):
        return NameTakenError(f"a live channel is already named {exc.name!r}")
    if isinstance(exc, EngineUnavailable):
        log.debug("answered 503: %s", exc)  # the engine logs the outage itself, once
        return EngineUnavailableError(
            "the message store is unreachable; retry shortly", headers=(("Retry-After", "1"),)
        )
    log.error("unexpected error while handling a request", exc_info=exc)
    return InternalError("the server failed to handle this request")
