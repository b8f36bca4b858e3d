"""A private engine server for the benchmark targets that share one: started on a free
loopback port in a temporary directory of its own, checked until it answers, removed
at stop. `redis.py` and `nats.py` say which program, with which arguments, and what
answer means ready."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pushup.bench.targets.process import free_port, stop_process

_READY_S = 15.0


class PrivateServer:
    """One engine server; a subclass names it and says how to run and probe it."""

    name = "server"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def binary(self) -> str:
        """The program's path; RuntimeError naming how to install it when missing."""
        raise NotImplementedError

    def arguments(self, directory: Path) -> list[str]:
        """The program's arguments for `self.port`, its files in `directory`."""
        raise NotImplementedError

    def answers(self, sock: socket.socket) -> bool:
        """Whether the server, just connected to, answers as a ready one does."""
        raise NotImplementedError

    def start(self) -> None:
        binary = self.binary()
        self._dir = Path(tempfile.mkdtemp(prefix=f"pushup-{self.name}-"))
        # The port is free when picked but bound a moment later: retry the rare race.
        for attempt in range(5):
            self.port = free_port(self.host)
            log = self._dir / f"{self.name}.log"
            with open(log, "ab") as out:
                self._proc = subprocess.Popen(
                    [binary, *self.arguments(self._dir)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return
            stop_process(self._proc)
            text = log.read_text(errors="replace")
            if "in use" not in text or attempt == 4:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{text[-2000:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _READY_S
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                    if self.answers(sock):
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
