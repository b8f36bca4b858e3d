"""Helpers shared by the tests: real server processes and waiting with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx

T = TypeVar("T")


def readme_blocks(language: str, readme: str = "README.md") -> list[str]:
    """The fenced code blocks in `language` of the README (or `readme`, a path in the
    repository), as written, in order."""
    text = (Path(__file__).resolve().parents[1] / readme).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


async def until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """`wait_for` inside an event loop: await `probe` until it gives something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        await asyncio.sleep(interval)


@dataclass
class ServerProcess:
    """A real `pushup serve` process on a free loopback port."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: str
    host: str = "127.0.0.1"
    # A data directory made for this server alone, removed when it stops.
    data_dir: str | None = None
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30.0, **kwargs)  # type: ignore[arg-type]
        self._clients.append(client)
        return client

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sockets(self) -> int:
        """Its open sockets (from /proc): the listening one plus one per connection, so
        a test sees a client's connections open and close from the server's side."""
        count = 0
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):  # closed since the listing
                count += os.readlink(fd).startswith("socket:")
        return count

    def connections(self) -> int:
        """Its TCP connections (from /proc): no listening socket, no socket the event
        loop keeps for itself, so a server with no client has exactly 0."""
        inodes = set()
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as rows:
                next(rows)  # the header
                for row in rows:
                    fields = row.split()
                    # fields[3]: the state, 0A = LISTEN; fields[9]: the socket's inode.
                    count += fields[3] != "0A" and fields[9] in inodes
        return count

    def stop_checked(self) -> None:
        """Stop it, and fail if it died before (a crash the tests did not see) or
        logged a traceback: for servers shared by a whole test module."""
        alive = self.alive()
        self.stop()
        log = self.log()
        assert alive, f"the server died during the tests:\n{log}"
        assert "Traceback" not in log, f"the server logged a traceback:\n{log}"

    def stop(self) -> int:
        for client in self._clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.proc.returncode


def start_server(
    *flags: str,
    env: dict[str, str] | None = None,
    port: int = 0,
    cwd: str | os.PathLike[str] | None = None,
    command: tuple[str, ...] = (sys.executable, "-m", "pushup"),
) -> ServerProcess:
    """Bind a free port (or `port`, to restart a node where it was) here, hand the
    socket to a new server, wait until it answers. Unless told otherwise (a
    `--data-dir` flag or `PUSHUP_DATA_DIR` in `env`), the server journals to a fresh
    temporary data directory of its own, never into the repository. `command` is the
    `pushup` to run (an installed one, say)."""
    given = env or {}
    env = {**os.environ, **given}
    data_dir = None
    if "PUSHUP_DATA_DIR" not in given and not any(
        flag == "--data-dir" or flag.startswith("--data-dir=") for flag in flags
    ):
        data_dir = env["PUSHUP_DATA_DIR"] = tempfile.mkdtemp(prefix="pushup-data-")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As `pushup serve` does itself: connections it accepted (and left in TIME_WAIT
    # when it died) inherit the option, so a successor can bind the same port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    port = sock.getsockname()[1]
    with tempfile.NamedTemporaryFile(prefix="pushup-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [*command, "serve", "--fd", str(sock.fileno()), *flags],
            pass_fds=[sock.fileno()],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
    sock.close()
    server = ServerProcess(proc, port, log.name, data_dir=data_dir)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            return httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=15.0, what="the server to answer /health")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return server


def at_least(items: list[Any], count: int) -> Callable[[], Awaitable[bool]]:
    """A probe for `until`: `items` has grown to `count`."""

    async def probe() -> bool:
        return len(items) >= count

    return probe


def holds_polls(
    session: aiohttp.ClientSession, channels: list[int]
) -> Callable[[], Awaitable[bool]]:
    """A probe for `until`: the node behind `session` itself holds a parked poll on any
    of the channels (its own count, not the cluster's)."""

    async def probe() -> bool:
        for channel in channels:
            async with session.get(f"/channels/{channel}") as resp:
                if resp.status == 200 and (await resp.json())["local_subscribers"] > 0:
                    return True
        return False

    return probe
