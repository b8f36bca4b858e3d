"""Responses and their framing as HTTP/1.1 bytes."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson

from pushup.core.model import Outcome
from pushup.http.errors import ApiError

_REASONS = {status.value: status.phrase for status in HTTPStatus}

# How a response ends its connection, which changes one header line.
KEEP_ALIVE = 0  # HTTP/1.1 default: no Connection header
KEEP_ALIVE_10 = 1  # an HTTP/1.0 client that asked for keep-alive
CLOSE = 2

_CONNECTION_LINE = {
    KEEP_ALIVE: b"",
    KEEP_ALIVE_10: b"Connection: keep-alive\r\n",
    CLOSE: b"Connection: close\r\n",
}


class Response:
    """A JSON response produced by a handler."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        return cls(status, orjson.dumps(payload))

    @classmethod
    def error(cls, error: ApiError) -> Response:
        return cls(error.status, error.body(), error.headers)


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


# The fixed part of a JSON response, up to its length, per status.
_JSON_HEADS = {
    status: _status_line(status) + b"Content-Type: application/json\r\nContent-Length: "
    for status in _REASONS
}


def frame(status: int, body: bytes, mode: int, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The whole response as bytes on the wire."""
    if not headers and status != 204 and status in _JSON_HEADS:
        # Every publish and poll comes this way: one formatting operation.
        return b"%s%d\r\nCache-Control: no-store\r\n%s\r\n%s" % (
            _JSON_HEADS[status],
            len(body),
            _CONNECTION_LINE[mode],
            body,
        )
    head = [_status_line(status)]
    # A handler's own Content-Type or Cache-Control (a static asset's) replaces the
    # JSON default; 204 and 304 carry no body.
    given = {name.lower() for name, _ in headers}
    if status not in (204, 304):
        if "content-type" not in given:
            head.append(b"Content-Type: application/json\r\n")
        head.append(b"Content-Length: %d\r\n" % len(body))
    if "cache-control" not in given:
        head.append(b"Cache-Control: no-store\r\n")
    head.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
    head.append(_CONNECTION_LINE[mode])
    head.append(b"\r\n")
    if status not in (204, 304):
        head.append(body)
    return b"".join(head)


def frame_outcome(outcome: Outcome, mode: int) -> bytes:
    """Frame a shared outcome once per connection mode, for every receiver of it."""
    framed = outcome.framed.get(mode)
    if framed is None:
        framed = outcome.framed[mode] = frame(outcome.status, outcome.body, mode)
    return framed
