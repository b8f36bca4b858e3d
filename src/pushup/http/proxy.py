"""Reverse-proxy mode on a client connection (`--upstream`): the requests PushUp does
not answer itself go to the web app.

The server makes its connections of this kind only in that mode, so the plain one
(protocol.py) pays nothing for it. Each request's head decides where it goes
(`router.serves_itself`); one for the web app is queued in the pipeline right then as
a `Forward` (forward.py), so its body streams there as it arrives, and its task
(upstream.py) writes the app's answer straight to this connection. Both kinds keep
their turn: answers go out in the order the requests came. A WebSocket handshake for
the app ends the HTTP on the connection: once the app has answered it, the socket is
spliced with the app's (tunnel.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from pushup.http.forward import BodyStream, Forward
from pushup.http.limits import IDLE
from pushup.http.protocol import HttpConnection
from pushup.http.response import CLOSE
from pushup.http.router import serves_itself
from pushup.observe.requests import current_request

if TYPE_CHECKING:
    from pushup.http.errors import ApiError
    from pushup.http.request import Request
    from pushup.http.server import HttpServer
    from pushup.http.tunnel import AppEnd
    from pushup.http.upstream import Upstream

log = logging.getLogger("pushup.http")


class ProxyConnection(HttpConnection):
    """One client connection in front of the web app."""

    __slots__ = ("_upstream",)

    _proxy = True

    def __init__(self, server: HttpServer, upstream: Upstream) -> None:
        super().__init__(server)
        self._upstream = upstream

    def resume_writing(self) -> None:
        self._write_paused = False
        self._upstream.resume_writing(self)  # an answer from the web app goes on
        self._process()

    # -- reading: a request's head decides where it goes -----------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._grow_head(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        headers = self._current.headers
        if key in headers:
            # It may be passed on to the web app: keep every value (RFC 9110 §5.3).
            headers[key] += ("; " if key == "cookie" else ", ") + value.decode("latin-1")
            return
        headers[key] = value.decode("latin-1")

    def _forward_head(self, request: Request) -> bool:
        """Queue a request for the web app as soon as its head is read, so its body
        streams there as it comes (PushUp's own body limit does not apply to it)."""
        if serves_itself(request.path):
            return False
        forward = Forward(request, BodyStream(self._pause_upload, self._resume_upload))
        self._current = forward
        if self._pending is None:
            self._pending = deque()
        self._pending.append(forward)
        return True

    def on_body(self, body: bytes) -> None:
        request = self._current
        if isinstance(request, Forward):
            request.upload.feed(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        request = self._current
        if isinstance(request, Forward):
            self._current = None
            self._in_head = True
            request.upload.end()  # queued when its head came
            return
        super().on_message_complete()

    def _upgrade(self, rest: bytes) -> None:
        last = self._pending[-1] if self._pending else None
        if (
            not isinstance(last, Forward)
            or self._current is not None
            or last.headers.get("upgrade", "").lower() != "websocket"
        ):
            super()._upgrade(rest)
            return
        # The app's WebSocket: nothing after this request is HTTP. Reading waits for
        # the app's answer, so no byte the client sends meanwhile is lost.
        last.upgrade = rest
        last.mode = CLOSE
        self._parser = None  # type: ignore[assignment]
        self._backlog = None
        self._reading_paused = False
        assert self._transport is not None
        self._transport.pause_reading()

    def _fail(self, error: ApiError) -> None:
        if isinstance(self._current, Forward):
            self._current.upload.abort()
        super()._fail(error)

    def _watch(self) -> None:
        if not isinstance(self._current, Forward):
            super()._watch()
        elif self._phase:
            # A body streamed to the web app is bounded there, not by the body timeout.
            self._server.limits.timeouts.watch(self, IDLE, self._phase)
            self._phase = IDLE

    def _pause_upload(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.pause_reading()

    def _resume_upload(self) -> None:
        # Unless a pipelining backlog keeps reading paused itself.
        if self._transport is not None and not self._closed and not self._reading_paused:
            self._transport.resume_reading()

    # -- answering: the web app's answer, in this request's turn ---------------------

    def _handle(self, request: Request) -> None:
        if isinstance(request, Forward):
            self._forward(request)
            return
        super()._handle(request)

    def _forward(self, request: Forward) -> None:
        self._busy = True
        self._server.idle.forget(self)
        request.mode = self._mode_now(request.mode)
        # A real Task: the HTTP client's timeouts need one. It inherits the request
        # variable, so its log lines and error answers name the request.
        token = current_request.set(request)
        try:
            if request.upgrade is not None:
                upgrade = asyncio.ensure_future(self._upstream.upgrade(request))
                upgrade.add_done_callback(lambda task: self._upgraded(request, task))
                self._task = upgrade
                return
            task = asyncio.ensure_future(self._upstream.forward(request))
        finally:
            current_request.reset(token)
        task.add_done_callback(lambda task: self._forwarded(request, task))
        self._task = task

    def _forwarded(self, request: Forward, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closed:
            return
        self._task = None
        exc = task.exception()
        if exc is not None:  # forward() answers its failures itself: a fault
            log.error("forwarding a request failed", exc_info=exc)
            self._close()
            return
        upload = request.upload
        if not upload.ended and not upload.aborted:
            # The app answered before the whole body came: the client may still be
            # sending it, and must be able to read the answer.
            self._busy = False
            self._linger()
            return
        self._finish(b"", request.outcome_mode)

    def _upgraded(self, request: Forward, task: asyncio.Task[AppEnd | None]) -> None:
        """The app has answered a WebSocket handshake: splice the sockets, which the
        tunnel owns from now on (the connection stays busy, never idle, until it
        ends). Or it could not be reached: that answer is out, close."""
        if task.cancelled():
            return
        self._task = None
        exc = task.exception()
        app = None if exc is not None else task.result()
        if self._closed or self._transport is None or app is None:
            if exc is not None:
                log.error("passing a WebSocket handshake on failed", exc_info=exc)
            if app is not None:
                app.abort()
            self._linger()  # reading was paused: the client may have sent more
            return
        assert request.upgrade is not None
        app.splice(self._transport, self, request.upgrade)
        if self._server.closing:  # opened while stopping: ended at once, as the others
            self.close_now()

    # -- what upstream.py writes to (its `Client`) -----------------------------------

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def write(self, data: bytes) -> None:
        """Part of a response the web app is sending."""
        self._write(data)
