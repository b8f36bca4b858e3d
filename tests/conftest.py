"""Fixtures: real PushUp processes, stopped and checked for crashes after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers import ServerProcess, start_server

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    """Start servers with any `pushup serve` flags; each is stopped after the test and
    must not have logged a traceback (a crash in a handler is a failed test)."""
    started: list[ServerProcess] = []

    def start(*flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = start_server(*flags, env=env)
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
