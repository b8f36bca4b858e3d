"""One HTTP/1.1 connection: in-order answers, parking, delivery, streams, its end.

A connection with a parked poll is just this object sitting in the hub's waiters:
no task, no future, no timer of its own. Pipelined requests queue behind the one in
progress and are answered in order. Reading them, within the limits on a request
arriving, is the base class's part (reader.py); reverse-proxy mode is a subclass
(proxy.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from pushup.core.errors import EngineUnavailable
from pushup.core.model import Outcome
from pushup.core.waiters import Subscription
from pushup.http import cors
from pushup.http.eager import Running, start_eagerly
from pushup.http.errors import (
    ApiError,
    BadRequest,
    InternalError,
    TooManySubscriptions,
    answer,
)
from pushup.http.limits import client_key
from pushup.http.reader import RequestReader
from pushup.http.response import CLOSE, KEEP_ALIVE, Response, frame, frame_outcome
from pushup.http.shutdown import dismiss_polls
from pushup.http.stream import Stream
from pushup.observe.requests import answered_error, current_request

if TYPE_CHECKING:
    from pushup.http.limits import Quota
    from pushup.http.request import Request
    from pushup.http.server import HttpServer

log = logging.getLogger("pushup.http")


class HttpConnection(RequestReader):
    """One client connection: its requests answered in turn, its poll parked, or its
    socket handed to a stream."""

    __slots__ = (
        "_cors",
        "_forwarded_for",
        "_parked",
        "_processing",
        "_quota",
        "_reply_mode",
        "_stream",
        "_task",
        "_write_paused",
    )

    def __init__(self, server: HttpServer) -> None:
        super().__init__(server)
        self._processing = False
        self._parked: Subscription | None = None
        self._reply_mode = KEEP_ALIVE
        # The CORS headers of the current request's answers (None: none, as always
        # without --cors-origins).
        self._cors: cors.Headers | None = None
        self._task: Running | None = None  # the handler, while it waits
        self._write_paused = False
        # An SSE or WebSocket stream that owns the socket once started, until it ends.
        self._stream: Stream | None = None
        # The count this connection's parked poll or stream holds against its client's
        # address (limits.py), whose X-Forwarded-For is kept until then.
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
        if self._backlog is not None:
            self._hold(data)
            return
        self._feed(data)
        self._process()
        # A request still arriving keeps the connection from idling out; one answered
        # was touched by its answer (`_finish`), the common case costs nothing here.
        if self._current is not None and not self._busy and not self._closed:
            self._server.idle.touch(self)

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
        # The parser calls back into this object and the transport holds it: without
        # these two cycles a closed connection is freed at once, not by a later
        # cyclic collection (which, with many parked polls alive, comes rarely and let
        # the dead of a connection churn pile up by the thousand).
        self._parser = None  # type: ignore[assignment]
        self._transport = None

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
                        self._linger()
                        return
                    self._handle(item)
                if self._closed or not self._parse_backlog():
                    break
            if not self._pending:
                self._pending = None  # most connections never pipeline: keep them small
            if not self._busy:
                self._maybe_continue()
        finally:
            self._processing = False

    def _handle(self, request: Request) -> None:
        # Not taken out of the idle sweep: it passes over a busy connection (and
        # forgets it until its answer touches it again), which costs a request nothing.
        self._busy = True
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
                dismiss_polls(self._server.hub, (reply,))
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

    def close_now(self) -> None:
        """Server shutdown: close whatever state the connection is in."""
        if self._stream is not None:
            self._stream.shutdown()
        self._close()

    def close_gracefully(self) -> None:
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

    def _close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._server.idle.forget(self)
            self._transport.close()

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
    error = answer(exc)
    if error is None:
        log.error("unexpected error while handling a request", exc_info=exc)
        return InternalError("the server failed to handle this request")
    if isinstance(exc, EngineUnavailable):
        log.debug("answered 503: %s", exc)  # the engine logs the outage itself, once
    return error
