"""A private redis-server for the targets that run PushUp on the Redis engine.

Nothing is saved to disk (no RDB, no AOF): the benchmark measures the servers, and each
measurement starts from an empty Redis of its own in a temporary directory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pushup.bench.targets.process import free_port, stop_process

INSTALL_HINT = "apt-get install redis-server"
FALLBACK = "/usr/bin/redis-server"  # where Debian installs it, used when not on PATH


class RedisServer:
    """One redis-server on a free loopback port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        binary = shutil.which("redis-server") or FALLBACK
        if not Path(binary).exists():
            raise RuntimeError(f"redis-server is missing: {INSTALL_HINT}")
        self._dir = Path(tempfile.mkdtemp(prefix="pushup-redis-"))
        # The port is free when picked but bound a moment later: retry the rare race.
        for attempt in range(5):
            self.port = free_port(self.host)
            log = self._dir / "redis.log"
            with open(log, "ab") as out:
                self._proc = subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(self.port),
                        "--bind",
                        self.host,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--dir",
                        str(self._dir),
                        # Every PushUp node or worker holds a few connections, no more.
                        "--maxclients",
                        "1000",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ping():
                return
            stop_process(self._proc)
            text = log.read_text(errors="replace")
            if "in use" not in text or attempt == 4:
                self.stop()
                raise RuntimeError(f"redis-server did not start:\n{text[-2000:]}")

    def _wait_ping(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
