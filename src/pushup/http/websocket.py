"""WebSocket (RFC 6455): a subscription pushed as one JSON text frame per message.

The `websockets` package's sans-I/O `ServerProtocol` checks the handshake, reads the
client's frames (answering pings, echoing a close) and frames what it sends. The request
was already parsed as HTTP, so one protocol object checks it and builds the 101 answer,
and the connection's own starts in the OPEN state, reading frames only. Message
frames from a server are never masked, so the same bytes go to every receiver of an
outcome: they are framed once per outcome with the library's `Frame.serialize` and
written directly, between whole frames of the protocol's own.
"""

from __future__ import annotations

import logging
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake as _InvalidHandshake
from websockets.exceptions import InvalidUpgrade
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as Handshake
from websockets.protocol import State
from websockets.server import ServerProtocol

from pushup.core.hub import Hub
from pushup.core.model import MessageId, Outcome, PollOutcome
from pushup.http.errors import ApiError
from pushup.http.request import Request
from pushup.http.stream import Stream

# The memo key of this transport's framing in `Outcome.framed`.
_KEY = "ws"

# Close codes: the end of the time range is a normal closure; a closed or expired
# channel is 4410 (4000 + the poll's 410), after a text frame with the poll's 410 body.
CLOSE_END = 1000
CLOSE_SHUTDOWN = 1001
CLOSE_CHANNEL_CLOSED = 4410

# Clients have nothing to say but control frames; a large message is refused (1009).
_MAX_CLIENT_MESSAGE = 64 * 1024
# The handshake headers the protocol reads; others are not its business.
_HANDSHAKE_HEADERS = (
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "origin",
)
_PING = Frame(Opcode.PING, b"").serialize(mask=False)
# A peer that answers none of this many pings in a row is closed as dead.
_UNANSWERED_PINGS = 2


def _text(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


_GAP = _text(b'{"gap":true}')


class UpgradeRequired(ApiError):
    status = 426
    code = "upgrade_required"


class InvalidHandshake(ApiError):
    code = "invalid_handshake"


class _QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The protocol's logger without its per-connection info lines ("connection
    open", "connection closed"), which would flood the log; warnings stay."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        pass


_protocol_log = _QuietLog(logging.getLogger("pushup.websocket"))


def handshake(request: Request) -> tuple[ServerProtocol, bytes]:
    """The connection's protocol and the 101 answer (not sent yet) for an upgrade
    request; raises a JSON API error (426, or 400 `invalid_handshake`) for a bad one."""
    checker = ServerProtocol(logger=_protocol_log)
    try:
        headers = Headers(
            (name, value) for name, value in request.headers.items() if name in _HANDSHAKE_HEADERS
        )
    except _InvalidHandshake as exc:
        raise InvalidHandshake(f"not a WebSocket handshake: {exc}") from None
    response = checker.accept(Handshake(request.path, headers))
    if response.status_code != 101:
        error = checker.handshake_exc
        version = ("Sec-WebSocket-Version", "13")
        if isinstance(error, InvalidUpgrade):
            raise UpgradeRequired(
                f"this endpoint speaks WebSocket only: {error}",
                headers=(("Upgrade", "websocket"), version),
            )
        raise InvalidHandshake(f"not a WebSocket handshake: {error}", headers=(version,))
    # No extension or subprotocol is offered, so none was negotiated: a fresh protocol
    # in the OPEN state frames exactly as the checker would have.
    protocol = ServerProtocol(state=State.OPEN, max_size=_MAX_CLIENT_MESSAGE, logger=_protocol_log)
    return protocol, response.serialize()


def frame_messages(outcome: PollOutcome) -> bytes:
    """One text frame per message (after a gap notice), built once per outcome."""
    data = outcome.framed.get(_KEY)
    if data is None:
        parts = [_GAP] if outcome.gap else []
        parts.extend(_text(message.fragment(channels)) for message, channels in outcome.hits)
        data = outcome.framed[_KEY] = b"".join(parts)
    return data


def _closed_frame(outcome: Outcome) -> bytes:
    """A poll's 410 body as a text frame, shared by every stream it ends."""
    data = outcome.framed.get(_KEY)
    if data is None:
        data = outcome.framed[_KEY] = _text(outcome.body)
    return data


class WsStream(Stream):
    """One WebSocket connection, from its 101 answer to its close."""

    __slots__ = ("_closing_ticks", "_protocol", "_response", "_unanswered")

    def __init__(self, hub: Hub, protocol: ServerProtocol, response: bytes) -> None:
        super().__init__(hub)
        self._protocol = protocol
        self._response = response
        self._unanswered = 0  # pings sent since the peer last sent anything
        self._closing_ticks = 0  # pings since we sent a close frame, unanswered

    def _head(self) -> bytes:
        response, self._response = self._response, b""
        return response

    def _messages(self, outcome: PollOutcome) -> bytes:
        return frame_messages(outcome)

    def _channel_closed(self, outcome: Outcome) -> None:
        self._send(_closed_frame(outcome))
        self._close_handshake(CLOSE_CHANNEL_CLOSED, "channel closed")

    def _range_ended(self, cursor: MessageId) -> None:
        self._close_handshake(CLOSE_END, "end of range")

    def ping(self) -> None:
        if self._protocol.state is not State.OPEN:
            # Closing: the peer had a whole interval to answer our close frame.
            self._closing_ticks += 1
            if self._closing_ticks > 1 and self._transport is not None:
                self._transport.abort()
            return
        if self._unanswered >= _UNANSWERED_PINGS:
            # Not even a pong for a while: the peer is gone, or too stuck to matter.
            self._stop()
            if self._transport is not None:
                self._transport.abort()
            return
        self._unanswered += 1
        self._send(_PING)

    def data_received(self, data: bytes) -> None:
        self._unanswered = 0
        protocol = self._protocol
        if protocol.state is State.CLOSED:
            return
        protocol.receive_data(data)
        # Pings are answered and a close echoed by the protocol itself; messages from
        # the client carry nothing for a subscription and are ignored.
        protocol.events_received()
        if protocol.state is not State.OPEN:  # a close frame came, or a protocol error
            self._stop()
        self._flush()

    def shutdown(self) -> None:
        if self._protocol.state is State.OPEN and self._transport is not None:
            self._protocol.send_close(CLOSE_SHUTDOWN, "server shutting down")
            self._flush()
        self._stop()

    def _close_handshake(self, code: int, reason: str) -> None:
        """Send our close frame and wait for the peer's (at most about one ping
        interval); the socket closes once it comes."""
        self._stop()
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, reason)
            self._flush()
            transport = self._transport
            if self._heartbeat is not None and transport is not None and not transport.is_closing():
                # Back on the heartbeat only to be cut off (`ping`) if no answer comes.
                self._heartbeat.add(self)

    def _flush(self) -> None:
        """Write what the protocol has to send; an empty chunk asks to end the TCP
        connection, which a server does first."""
        transport = self._transport
        for chunk in self._protocol.data_to_send():
            if transport is None or transport.is_closing():
                return
            if chunk:
                transport.write(chunk)
            else:
                transport.close()
