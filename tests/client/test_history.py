"""The client's history controls against a real server: `subscribe(last=N)` starts
from the N newest cached messages, and `history` pages through the cache, then hands
its cursor to `subscribe` without a gap or a repeat."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pushup.client import AsyncPublisher, history, subscribe
from tests.helpers import ServerProcess


@pytest.fixture
async def publisher(server: ServerProcess) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher(server.url) as publisher:
        yield publisher


async def test_subscribe_with_last_starts_from_the_newest_then_goes_on_live(
    server: ServerProcess, publisher: AsyncPublisher
) -> None:
    channel = await publisher.create_channel(name="chat")
    await publisher.publish_batch([(channel.id, n) for n in range(40)])
    async with subscribe(server.url, "chat", last=3, timeout=5) as messages:
        assert [(await anext(messages)).data for _ in range(3)] == [37, 38, 39]
        await publisher.publish_batch([(channel.id, n) for n in range(40, 45)])
        # Later answers are not cut to the last 3: every new message comes.
        assert [(await anext(messages)).data for _ in range(5)] == [40, 41, 42, 43, 44]


async def test_history_pages_through_the_cache_then_subscribe_goes_on_from_it(
    server: ServerProcess, publisher: AsyncPublisher
) -> None:
    left = await publisher.create_channel()
    right = await publisher.create_channel()
    await publisher.publish_batch([(left.id, n) for n in range(120)])
    await publisher.publish_batch([([left.id, right.id], n) for n in range(120, 130)])
    pages = history(server.url, [left.id, right.id], page_size=25)
    assert [message.data async for message in pages] == list(range(130))
    assert pages.pages == 6  # five pages of 25, then one of 5 with nothing more
    await publisher.publish(right.id, "live")
    async with subscribe(server.url, [left.id, right.id], since=pages.cursor, timeout=5) as live:
        assert (await anext(live)).data == "live"


def test_a_page_size_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="page_size"):
        history("http://127.0.0.1:9", [1], page_size=0)
