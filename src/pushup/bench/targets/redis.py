"""A private redis-server for the targets that run PushUp on the Redis engine.

Nothing is saved to disk (no RDB, no AOF): the benchmark measures the servers, and each
measurement starts from an empty Redis of its own in a temporary directory.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from pushup.bench.targets.private import PrivateServer

INSTALL_HINT = "apt-get install redis-server"
FALLBACK = "/usr/bin/redis-server"  # where Debian installs it, used when not on PATH


class RedisServer(PrivateServer):
    """One redis-server on a free loopback port."""

    name = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def binary(self) -> str:
        binary = shutil.which("redis-server") or FALLBACK
        if not Path(binary).exists():
            raise RuntimeError(f"redis-server is missing: {INSTALL_HINT}")
        return binary

    def arguments(self, directory: Path) -> list[str]:
        return [
            *("--port", str(self.port), "--bind", self.host),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--dir", str(directory)),
            # Every PushUp node or worker holds a few connections, no more.
            *("--maxclients", "1000"),
        ]

    def answers(self, sock: socket.socket) -> bool:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
