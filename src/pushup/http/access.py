"""Streams under the subscriber access rules: an SSE head that carries the CORS headers,
and the end of a stream when the token that opened it expires.

A token is checked when its stream opens, and a stream holds no more than its token
grants: at the token's `exp` (plus the leeway) the server ends it, with an `expired`
event (SSE) or a text frame and close code 4401 (WebSocket), and the client reconnects
with a fresh token from its cursor. Streams opened without a token or CORS are the
plain ones, untouched.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from pushup.core.hub import Hub
from pushup.http.cors import Headers
from pushup.http.sse import SseStream
from pushup.http.stream import Heartbeat, Stream
from pushup.http.tokens import Grant
from pushup.http.websocket import WsStream

# A closed channel is 4410; an expired token is 4000 + its 401.
CLOSE_TOKEN_EXPIRED = 4401

_EXPIRED_BODY = orjson.dumps(
    {
        "error": "token_expired",
        "detail": "the subscriber token has expired: reconnect with a fresh one",
    }
)
_EXPIRED_EVENT = b"event: expired\ndata: %s\n\n" % _EXPIRED_BODY
_EXPIRED_FRAME = Frame(Opcode.TEXT, _EXPIRED_BODY).serialize(mask=False)


def sse_stream(hub: Hub, grant: Grant | None, cors: Headers | None) -> SseStream:
    """The SSE stream for a request: the plain one unless a token or CORS applies."""
    if grant is None and not cors:
        return SseStream(hub)
    return _GuardedSse(hub, grant, cors or ())


def ws_stream(hub: Hub, protocol: ServerProtocol, response: bytes, grant: Grant | None) -> WsStream:
    """The WebSocket stream for a request: the plain one unless opened with a token."""
    if grant is None:
        return WsStream(hub, protocol, response)
    return _GuardedWs(hub, protocol, response, grant)


class _Expiring(Stream):
    """A stream that ends when its token expires, for SSE and WebSocket alike. Its
    timer is let go of when the stream ends first, or it would keep the stream in
    memory until then."""

    # The two attributes are slots of each concrete class: a class cannot have two
    # bases that both add slots (this one and the WebSocket stream), so mypy does
    # not see them here.
    __slots__ = ()

    _grant: Grant | None
    _expiry: asyncio.TimerHandle | None

    def start(self, transport: asyncio.Transport, heartbeat: Heartbeat) -> None:
        super().start(transport, heartbeat)
        if not self._done and self._grant is not None:
            delay_s = max(0.0, self._grant.expires_at - time.time())
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay_s, self.expire)  # type: ignore[misc]

    def expire(self) -> None:
        """The token's time is up: say so, then close."""
        raise NotImplementedError

    def _stop(self) -> None:
        super()._stop()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None  # type: ignore[misc]


class _GuardedSse(_Expiring, SseStream):
    __slots__ = ("_expiry", "_grant", "_head_lines")

    def __init__(self, hub: Hub, grant: Grant | None, cors: Headers) -> None:
        super().__init__(hub)
        self._grant = grant
        self._expiry = None
        self._head_lines = b"".join(
            f"{name}: {value}\r\n".encode("latin-1") for name, value in cors
        )

    def _head(self) -> bytes:
        # The head ends with its blank line: the CORS lines go before it.
        return super()._head()[:-2] + self._head_lines + b"\r\n"

    def expire(self) -> None:
        self._expiry = None
        if not self._done:
            self._send(_EXPIRED_EVENT)
            self._close()


class _GuardedWs(_Expiring, WsStream):
    __slots__ = ("_expiry", "_grant")

    def __init__(self, hub: Hub, protocol: ServerProtocol, response: bytes, grant: Grant) -> None:
        super().__init__(hub, protocol, response)
        self._grant = grant
        self._expiry = None

    def expire(self) -> None:
        """The token's time is up: say why in a text frame, then close with 4401."""
        self._expiry = None
        if not self._done:
            self._send(_EXPIRED_FRAME)
            self._close_handshake(CLOSE_TOKEN_EXPIRED, "token expired")
