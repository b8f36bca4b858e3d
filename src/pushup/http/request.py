"""A parsed HTTP request, as handlers see it."""

from __future__ import annotations

from typing import Any

from pushup.core.tenants import PublisherKey


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
        "publisher",
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
        # The publisher key that authorized it (router.py); None without keys.
        self.publisher: PublisherKey | None = None

    @property
    def publisher_name(self) -> str | None:
        """The name of the publisher key it came with, for metrics and logs."""
        key = self.publisher
        return None if key is None else key.name

    def header(self, name: str) -> str | None:
        """A header by lower-case name."""
        return self.headers.get(name)
