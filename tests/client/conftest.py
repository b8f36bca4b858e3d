"""Fixtures for the client tests: every publisher test runs with both clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pushup.client import AsyncPublisher, Publisher
from tests.helpers import ServerProcess


class BlockingAsAsync:
    """A `Publisher` with awaitable methods, so one test body checks both clients (the
    server is another process: blocking the loop for a call is harmless here)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._publisher, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


PublisherFactory = Callable[..., Any]


@pytest.fixture(params=["async", "sync"])
async def publisher_factory(request: pytest.FixtureRequest) -> AsyncIterator[PublisherFactory]:
    """Make publishers (`AsyncPublisher`, or `Publisher` behind awaitable methods)
    with any arguments; each is closed after the test."""
    opened: list[AsyncPublisher | Publisher] = []

    def make(base_url: str, **kwargs: Any) -> Any:
        if request.param == "async":
            publisher = AsyncPublisher(base_url, **kwargs)
            opened.append(publisher)
            return publisher
        blocking = Publisher(base_url, **kwargs)
        opened.append(blocking)
        return BlockingAsAsync(blocking)

    yield make
    for publisher in opened:
        if isinstance(publisher, AsyncPublisher):
            await publisher.aclose()
        else:
            publisher.close()


@pytest.fixture
def publisher(publisher_factory: PublisherFactory, server: ServerProcess) -> Any:
    """A publisher for `server`."""
    return publisher_factory(server.url)
