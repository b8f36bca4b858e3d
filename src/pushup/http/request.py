"""A parsed HTTP request, as handlers see it."""

from __future__ import annotations

from typing import Any


class Request:
    __slots__ = (
        "body",
        "connection",
        "expect_continue",
        "headers",
        "method",
        "mode",
        "path",
        "peer",
        "query",
        "url",
    )

    def __init__(self, connection: Any, peer: str | None) -> None:
        self.connection = connection
        self.peer = peer
        self.url = b""  # the request target as it came
        self.headers: dict[str, str] = {}
        # Most bodies come in one piece: bytes as they came, a bytearray from the second.
        self.body: bytes | bytearray = b""
        self.method = ""
        self.path = ""
        self.query = ""
        self.mode = 0  # how the response ends the connection (see response.py)
        self.expect_continue = False

    def header(self, name: str) -> str | None:
        """A header by lower-case name."""
        return self.headers.get(name)
