"""Reverse-proxy mode on a client connection (`--upstream`): the requests PushUp does
not answer itself go to the web app.

The server makes its connections of this kind only in that mode, so the plain one
(protocol.py) pays nothing for it. Each request's head decides where it goes
(`router.serves_itself`); one for the web app is queued in the pipeline right then as
a `Forward` (forward.py), so its body streams there as it arrives, and its task
(upstream.py) writes the app's answer straight to this connection. Both kinds keep
their turn: answers go out in the order the requests came.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from pushup.http.forward import BodyStream, Forward
from pushup.http.limits import IDLE
from pushup.http.protocol import HttpConnection
from pushup.http.router import serves_itself
from pushup.observe.requests import current_request

if TYPE_CHECKING:
    from pushup.http.errors import ApiError
    from pushup.http.request import Request
    from pushup.http.server import HttpServer
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

    # -- what upstream.py writes to (its `Client`) -----------------------------------

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def write(self, data: bytes) -> None:
        """Part of a response the web app is sending."""
        self._write(data)
