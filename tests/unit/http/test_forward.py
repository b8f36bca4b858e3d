"""Reverse-proxy pieces without sockets: which paths PushUp keeps, and the request body
stream's order, ends and backpressure."""

from __future__ import annotations

import asyncio

import pytest

from pushup.http.forward import BodyAborted, BodyStream
from pushup.http.router import serves_itself


@pytest.mark.parametrize(
    "path",
    [
        "/subscribe",
        "/subscribe/",
        "/subscribe/sse",
        "/health",
        "/health/x",
        "/pushup.js",
        "/channels",
        "/channels/17/renew",
        "/publish",
        "/publish/batch",
        "/%73ubscribe",
        "/%63hannels/1",
    ],
)
def test_pushup_keeps_its_own_paths(path: str) -> None:
    assert serves_itself(path)


@pytest.mark.parametrize(
    "path",
    ["/", "/index.html", "/healthz", "/channelsX", "/api/publish", "//channels", "/%ff", "/x%2F"],
)
def test_everything_else_goes_to_the_app(path: str) -> None:
    assert not serves_itself(path)


class Reading:
    """Stands for the connection's transport: is reading paused?"""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False


async def collect(stream: BodyStream) -> list[bytes]:
    return [chunk async for chunk in stream.chunks()]


async def test_chunks_come_in_order_joined_until_the_end() -> None:
    reading = Reading()
    stream = BodyStream(reading.pause, reading.resume)
    stream.feed(b"a")
    stream.feed(b"b")
    reader = asyncio.ensure_future(collect(stream))
    await asyncio.sleep(0)  # let the reader take what is there
    stream.feed(b"c")
    stream.end()
    assert await reader == [b"ab", b"c"]
    assert reading.pauses == 0


async def test_reading_pauses_while_too_much_waits_and_resumes_once_taken() -> None:
    reading = Reading()
    stream = BodyStream(reading.pause, reading.resume)
    stream.feed(b"x" * (200 * 1024))
    assert not reading.paused
    stream.feed(b"x" * (100 * 1024))
    assert reading.paused
    chunks = stream.chunks()
    assert len(await anext(chunks)) == 300 * 1024
    assert not reading.paused
    stream.end()
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)


async def test_an_abort_fails_the_reader() -> None:
    stream = BodyStream(lambda: None, lambda: None)
    reader = asyncio.ensure_future(collect(stream))
    await asyncio.sleep(0)
    stream.abort()
    with pytest.raises(BodyAborted):
        await reader


async def test_discarding_drops_the_rest_and_stops_the_reader() -> None:
    reading = Reading()
    stream = BodyStream(reading.pause, reading.resume)
    stream.feed(b"x" * (300 * 1024))
    assert reading.paused
    stream.discard()
    assert not reading.paused
    stream.feed(b"more")
    assert await collect(stream) == []
