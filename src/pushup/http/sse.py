"""Server-Sent Events: a subscription as a `text/event-stream` response that stays open.

Each message is one event whose `id:` is the message id, so the browser's
`EventSource` resumes exactly after the last one it got (`Last-Event-ID`). The body is
delimited by the end of the connection (no length, no chunks): a stream ends only by
closing, and an event needs no framing beyond its blank line.
"""

from __future__ import annotations

from pushup.core.model import MessageId, Outcome, PollOutcome
from pushup.http.stream import Stream

# The memo key of this transport's framing in `Outcome.framed`.
_KEY = "sse"

_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    # nginx would otherwise buffer the stream and hold events back.
    b"X-Accel-Buffering: no\r\n"
    b"Connection: close\r\n"
    b"\r\n"
)
# A comment line: ignored by EventSource, but traffic for proxies timing out a quiet
# connection.
_PING = b": ping\n\n"
# An event needs a data line to be dispatched at all.
_GAP = b'event: gap\ndata: {"gap":true}\n\n'


def frame_events(outcome: PollOutcome) -> bytes:
    """The outcome's messages as events, built once per outcome, so once per shape."""
    data = outcome.framed.get(_KEY)
    if data is None:
        parts = [_GAP] if outcome.gap else []
        parts.extend(
            _event(message.id, message.fragment(channels)) for message, channels in outcome.hits
        )
        data = outcome.framed[_KEY] = b"".join(parts)
    return data


def _event(message_id: int, payload: bytes) -> bytes:
    if b"\n" in payload or b"\r" in payload:
        # Not from PushUp's own JSON encoding, which never breaks lines; a data field
        # is one line, so a payload that has several takes one data line each.
        payload = b"\ndata: ".join(payload.splitlines())
    return b"id: %d\ndata: %s\n\n" % (message_id, payload)


def _closed_event(outcome: Outcome) -> bytes:
    """A poll's 410 body as a `closed` event, shared by every stream it ends."""
    data = outcome.framed.get(_KEY)
    if data is None:
        data = outcome.framed[_KEY] = b"event: closed\ndata: %s\n\n" % outcome.body
    return data


class SseStream(Stream):
    """One `text/event-stream` response."""

    __slots__ = ()

    def _head(self) -> bytes:
        return _HEAD

    def _messages(self, outcome: PollOutcome) -> bytes:
        return frame_events(outcome)

    def _channel_closed(self, outcome: Outcome) -> None:
        self._send(_closed_event(outcome))
        self._close()

    def _range_ended(self, cursor: MessageId) -> None:
        self._send(b'event: end\ndata: {"cursor":"%d"}\n\n' % cursor)
        self._close()

    def ping(self) -> None:
        # A dead peer is noticed when a write fails (the connection is then lost), or
        # when the unsent bytes pass MAX_BUFFERED.
        self._send(_PING)

    def data_received(self, data: bytes) -> None:
        """An event stream is one-way: whatever the client sends is ignored; its end
        of the connection closing is what ends the stream."""
