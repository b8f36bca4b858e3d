"""Fixtures: real PushUp processes, stopped and checked for crashes after each test, and
real Redis and NATS servers for the shared engines."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pushup import build
from tests.helpers import ServerProcess, start_server, wait_for
from tests.natsservers import NatsServer, cluster

ServerFactory = Callable[..., ServerProcess]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Run on the build asked for, and never on compiled modules that are older than
    their source (they would test old code): `make test` builds the compiled one,
    `make test BUILD=pure` the pure one, and says which in PUSHUP_EXPECT_BUILD."""
    stale = build.stale()
    if stale:
        pytest.exit(
            f"compiled modules are older than their source ({', '.join(stale)}): "
            "run `make compiled` again, or `make pure`",
            returncode=2,
        )
    expected = os.environ.get("PUSHUP_EXPECT_BUILD")
    actual = "compiled" if build.compiled() else "pure"
    if expected is not None and expected != actual:
        pytest.exit(f"PUSHUP_EXPECT_BUILD={expected}, but the {actual} build runs", returncode=2)


@pytest.fixture(scope="session", autouse=True)
def _no_data_dir_in_the_repository() -> Iterator[None]:
    """Servers the tests start some other way (the benchmark's targets, a bare `pushup
    serve`) keep nothing on disk unless a test says where: the default data directory
    is under the working directory, the repository here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PUSHUP_DATA_DIR", "none")
        yield


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    """Start servers with any `pushup serve` flags; each is stopped after the test and
    must not have logged a traceback (a crash in a handler is a failed test)."""
    started: list[ServerProcess] = []

    def start(
        *flags: str,
        env: dict[str, str] | None = None,
        port: int = 0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> ServerProcess:
        server = start_server(*flags, env=env, port=port, cwd=cwd)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        log = server.log()
        assert "Traceback" not in log, f"the server logged a traceback:\n{log}"


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    """A server on its defaults."""
    return server_factory()


# -- Redis -------------------------------------------------------------------------------


class RedisServer:
    """A real `redis-server` on a loopback port of its own, in its own directory.

    It can be killed and started again on the same port (with AOF, its data comes
    back), as a crashed and restarted Redis would."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.directory = directory
        self.options = options
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing: run scripts/install-test-deps.sh")
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.directory),
                    *self.options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {proc.returncode}:\n{self.log()}")
            try:
                with redis.Redis(port=self.port, socket_timeout=1.0) as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(ready, timeout=15.0, what="redis-server to answer PING")

    def kill(self) -> None:
        """As a crash would: no chance to save anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5.0)

    def log(self) -> str:
        return (self.directory / "redis.log").read_text(errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the whole session; each test that uses it gets it flushed."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, empty."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Start private Redis servers (with any options, such as AOF) that a test may
    kill and restart; all are stopped after the test."""
    started: list[RedisServer] = []

    def start(*options: str) -> RedisServer:
        directory = tmp_path / f"redis-{len(started)}"
        directory.mkdir()
        server = RedisServer(directory, *options)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


# -- NATS --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server with JetStream for the whole session; each test that uses it
    gets a stream of its own (`nats_url`)."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session's NATS, with a stream (and node subjects) no other test uses."""
    return f"{nats_server.url}?stream=T{uuid.uuid4().hex[:16].upper()}"


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """The three-server JetStream cluster of deploy/nats, started for one test."""
    servers = cluster(tmp_path)
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(params=["redis", "nats"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """An engine URL for each shared engine in turn, on the session's server."""
    return str(request.getfixturevalue(f"{request.param}_url"))
