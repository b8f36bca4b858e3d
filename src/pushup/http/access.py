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
from pushup.http.stream import Heartbeat
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


def _arm(stream: _GuardedSse | _GuardedWs, grant: Grant | None) -> asyncio.TimerHandle | None:
    if grant is None:
        return None
    delay_s = max(0.0, grant.expires_at - time.time())
    return asyncio.get_running_loop().call_later(delay_s, stream.expire)


class _GuardedSse(SseStream):
    __slots__ = ("_expiry", "_grant", "_head_lines")

    def __init__(self, hub: Hub, grant: Grant | None, cors: Headers) -> None:
        super().__init__(hub)
        self._grant = grant
        self._expiry: asyncio.TimerHandle | None = None
        self._head_lines = b"".join(
            f"{name}: {value}\r\n".encode("latin-1") for name, value in cors
        )

    def _head(self) -> bytes:
        # The head ends with its blank line: the CORS lines go before it.
        return super()._head()[:-2] + self._head_lines + b"\r\n"

    def start(self, transport: asyncio.Transport, heartbeat: Heartbeat) -> None:
        super().start(transport, heartbeat)
        if not self._done:
            self._expiry = _arm(self, self._grant)

    def expire(self) -> None:
        """The token's time is up: say so, then close."""
        self._expiry = None
        if not self._done:
            self._send(_EXPIRED_EVENT)
            self._close()

    def _stop(self) -> None:
        super()._stop()
        _cancel(self)


class _GuardedWs(WsStream):
    __slots__ = ("_expiry", "_grant")

    def __init__(self, hub: Hub, protocol: ServerProtocol, response: bytes, grant: Grant) -> None:
        super().__init__(hub, protocol, response)
        self._grant = grant
        self._expiry: asyncio.TimerHandle | None = None

    def start(self, transport: asyncio.Transport, heartbeat: Heartbeat) -> None:
        super().start(transport, heartbeat)
        if not self._done:
            self._expiry = _arm(self, self._grant)

    def expire(self) -> None:
        """The token's time is up: say why in a text frame, then close with 4401."""
        self._expiry = None
        if not self._done:
            self._send(_EXPIRED_FRAME)
            self._close_handshake(CLOSE_TOKEN_EXPIRED, "token expired")

    def _stop(self) -> None:
        super()._stop()
        _cancel(self)


def _cancel(stream: _GuardedSse | _GuardedWs) -> None:
    """A stream that ends for any reason lets go of its timer, which would otherwise
    keep it in memory until the token's expiry."""
    if stream._expiry is not None:
        stream._expiry.cancel()
        stream._expiry = None
