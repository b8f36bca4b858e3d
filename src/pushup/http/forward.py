"""A request bound for the upstream web app, and its body on the way there.

The connection queues a `Forward` as soon as its head is parsed, so its body can go
to the upstream as it arrives instead of being gathered first: `BodyStream` holds the
chunks not yet sent and pauses reading from the client while too many wait. Nothing
here talks to the upstream (see upstream.py), so the HTTP layer can import it without
the HTTP client library.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from pushup.http.request import Request

# Body bytes held for the upstream: reading from the client pauses above the first and
# resumes below the second, so a fast client and a slow upstream cost bounded memory.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class BodyAborted(Exception):
    """The client's body cannot be read to its end (malformed chunked framing)."""


class BodyStream:
    """A proxied request's body, from the client connection to the upstream."""

    __slots__ = (
        "_chunks",
        "_discarding",
        "_pause",
        "_paused",
        "_resume",
        "_size",
        "_waiter",
        "aborted",
        "ended",
    )

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._discarding = False
        self.ended = False  # the whole body has arrived
        self.aborted = False

    def feed(self, data: bytes) -> None:
        """Body bytes from the client, in order."""
        if self._discarding:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if self._size > _HIGH_WATER:
            # Every time, not once: parsing a held-back pipelining backlog may resume reading.
            self._paused = True
            self._pause()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def abort(self) -> None:
        self.aborted = True
        self._wake()

    def discard(self) -> None:
        """Nobody will read the rest (the answer went out early): drop it."""
        self._discarding = True
        self._chunks.clear()
        self._size = 0
        self._unpause()
        self._wake()  # a reader still waiting stops

    async def chunks(self) -> AsyncIterator[bytes]:
        """What has arrived, as it arrives, joined into as few writes as possible."""
        while True:
            if self.aborted:
                raise BodyAborted("the request body could not be read")
            if self._chunks:
                chunks, self._chunks = self._chunks, deque()
                self._size = 0
                self._unpause()
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif self.ended or self._discarding:
                return
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _unpause(self) -> None:
        if self._paused and self._size <= _LOW_WATER:
            self._paused = False
            self._resume()


class Forward(Request):
    """A request PushUp does not answer itself: its head, and its body as a stream."""

    __slots__ = ("has_body", "outcome_mode", "upgrade", "upload")

    def __init__(self, request: Request, upload: BodyStream) -> None:
        super().__init__(request.connection, request.peer)
        self.url = request.url
        self.headers = request.headers
        self.method = request.method
        self.path = request.path
        self.query = request.query
        self.mode = request.mode
        self.upload = upload
        headers = request.headers
        length = headers.get("content-length")
        self.has_body = "transfer-encoding" in headers or (
            length is not None and length.strip() not in ("", "0")
        )
        # How the connection goes on once the upstream's answer is sent.
        self.outcome_mode = request.mode
        # A WebSocket handshake (tunnel.py): what the client sent after it, for the
        # app once it has switched protocols. None for any other request.
        self.upgrade: bytes | None = None
