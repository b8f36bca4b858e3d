"""The listening side: accepts connections and holds what they share."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING

from pushup.core.hub import Hub
from pushup.http.idle import IdleConnections
from pushup.http.limits import Limits, Refused
from pushup.http.protocol import HttpConnection
from pushup.http.proxy import ProxyConnection
from pushup.http.router import Router
from pushup.http.stream import Heartbeat
from pushup.http.trim import HeapTrimmer

if TYPE_CHECKING:
    from pushup.http.cors import CorsPolicy
    from pushup.http.upstream import Upstream


class HttpServer:
    """State shared by every connection of one listening socket."""

    def __init__(
        self,
        router: Router,
        hub: Hub,
        *,
        max_body: int,
        max_header: int,
        keepalive_timeout_s: float,
        ping_interval_s: float = 20.0,
        upstream: Upstream | None = None,
        limits: Limits | None = None,
        cors: CorsPolicy | None = None,
    ) -> None:
        self.router = router
        self.hub = hub
        self.max_body = max_body
        self.max_header = max_header
        self.idle = IdleConnections(keepalive_timeout_s, time.monotonic)
        self.limits = limits or Limits()
        # Slow request heads and bodies are looked for by the idle sweep's timer.
        self.idle.also_sweep(self.limits.timeouts.sweep)
        # Pings open SSE and WebSocket streams; its timer runs only while there are any.
        self.heartbeat = Heartbeat(ping_interval_s)
        # The web app that requests PushUp does not answer go to, if any.
        self.upstream = upstream
        self.connections: set[HttpConnection] = set()
        # Connections closed so far: what was freed with them goes back to the system.
        self.closed_total = 0
        self.trimmer = HeapTrimmer(lambda: self.closed_total)
        self.idle.also_sweep(self.trimmer.check)
        # Which web origins may read subscriber answers (`--cors-origins`); None: no CORS.
        self.cors = cors
        self.closing = False
        # Set once stopping and the last connection has gone (http/shutdown.py).
        self.all_closed = asyncio.Event()
        self._server: asyncio.Server | None = None

    def connection_made(self, conn: HttpConnection) -> None:
        self.connections.add(conn)
        self.idle.touch(conn)

    def connection_lost(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)
        self.closed_total += 1
        self.idle.forget(conn)
        if self.closing and not self.connections:
            self.all_closed.set()

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, sock=sock, backlog=4096)
        self.idle.start(loop)

    def _protocol(self) -> HttpConnection | Refused:
        # Past the limit, still accept (the client learns why at once) but answer 503.
        if len(self.connections) >= self.limits.max_connections:
            return Refused(self.limits)
        if self.upstream is not None:
            return ProxyConnection(self, self.upstream)
        return HttpConnection(self)

    def stop_accepting(self) -> None:
        """Close the listening socket: from now on every answer closes its connection."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        self.idle.stop()

    async def close(self) -> None:
        """Stop accepting, then close every connection (at once: `shutdown.stop_gracefully` first
        lets them finish)."""
        self.stop_accepting()
        for conn in list(self.connections):
            conn.close_now()
        if self._server is not None:
            await self._server.wait_closed()
