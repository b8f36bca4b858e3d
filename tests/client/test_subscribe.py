"""`subscribe` against real servers: order across channels, gaps, closed channels, a
server restart and a store outage mid-subscription (nothing lost or doubled), and every
way of stopping closes the connection."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pushup.client import (
    AsyncPublisher,
    ChannelClosed,
    ChannelNotFound,
    InvalidRequest,
    Message,
    Subscription,
    subscribe,
)
from tests.conftest import RedisFactory, ServerFactory
from tests.helpers import ServerProcess, until

# Short pauses between retries, so that reconnecting is quick whatever the jitter.
FAST = {"backoff": 0.02, "max_backoff": 0.3}


@pytest.fixture
async def publisher(server: ServerProcess) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher(server.url) as publisher:
        yield publisher


class Consumer:
    """Iterates a subscription in a task of its own, keeping what it gets."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.received: list[Message] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with self.subscription as messages:
            async for message in messages:
                self.received.append(message)

    async def has(self, count: int) -> bool:
        if self.task.done():
            self.task.result()  # its exception, if any, fails the test at once
        return len(self.received) >= count

    async def wait_for(self, count: int) -> list[Message]:
        await until(lambda: self.has(count), what=f"{count} messages")
        return self.received

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def consumers() -> AsyncIterator[Callable[[Subscription], Consumer]]:
    started: list[Consumer] = []

    def start(subscription: Subscription) -> Consumer:
        consumer = Consumer(subscription)
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        await consumer.stop()


async def parked(publisher: AsyncPublisher, channel: int | str, count: int = 1) -> bool:
    return (await publisher.channel_info(channel)).subscribers == count


async def test_messages_from_several_channels_arrive_in_order_each_once(
    server: ServerProcess,
    publisher: AsyncPublisher,
    consumers: Callable[[Subscription], Consumer],
) -> None:
    a = await publisher.create_channel(name="room:a")
    b = await publisher.create_channel()
    c = await publisher.create_channel()
    first = await publisher.publish("room:a", "cached")
    consumer = consumers(subscribe(server.url, ["room:a", b.id], timeout=10))
    await consumer.wait_for(1)
    await until(lambda: parked(publisher, b.id), what="the poll to park")
    published = [
        await publisher.publish([a.id, b.id], "both"),
        await publisher.publish(c.id, "elsewhere"),  # not subscribed
        *await publisher.publish_batch([(b.id, i) for i in range(50)]),
        await publisher.publish("room:a", {"last": True}),
    ]
    received = await consumer.wait_for(53)
    expected = [first, published[0], *published[2:]]  # not the one to channel c
    assert [m.id for m in received] == [p.id for p in expected]
    assert [m.data for m in received] == ["cached", "both", *range(50), {"last": True}]
    assert received[1].channels == (a.id, b.id)
    assert received[2].channels == (b.id,)
    assert not any(m.after_gap for m in received)
    assert consumer.subscription.cursor == published[-1].id
    assert (consumer.subscription.gaps, consumer.subscription.failures) == (0, 0)


async def test_since_resumes_after_a_cursor_even_in_the_middle_of_an_answer(
    server: ServerProcess, publisher: AsyncPublisher
) -> None:
    channel = await publisher.create_channel()
    published = await publisher.publish_batch([(channel.id, i) for i in range(6)])
    async with subscribe(server.url, channel.id, since=published[0].id, timeout=5) as messages:
        async for message in messages:
            if message.data == 3:
                break
    # The answer held 1..5; the consumer stopped after 3, so the cursor says 3.
    assert messages.cursor == published[3].id
    resumed = subscribe(server.url, channel.id, since=messages.cursor, timeout=5)
    async with resumed:
        assert [(await anext(resumed)).data for _ in range(2)] == [4, 5]


async def test_a_gap_is_flagged_on_the_next_message(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--max-messages", "2")
    async with AsyncPublisher(server.url) as publisher:
        channel = await publisher.create_channel()
        published = await publisher.publish_batch([(channel.id, i) for i in range(4)])
    # Messages 1 is gone from the cache: it came after the cursor, so the answer says so.
    async with subscribe(server.url, channel.id, since=published[0].id, timeout=5) as messages:
        first, second = await anext(messages), await anext(messages)
    assert [(m.data, m.after_gap) for m in (first, second)] == [(2, True), (3, False)]
    assert messages.gaps == 1


async def test_a_closed_channel_ends_the_subscription_with_channel_closed(
    server: ServerProcess, publisher: AsyncPublisher
) -> None:
    kept = await publisher.create_channel()
    closed = await publisher.create_channel()
    messages = subscribe(server.url, [kept.id, closed.id], timeout=10)
    waiting = asyncio.create_task(anext(messages))
    await until(lambda: parked(publisher, closed.id), what="the poll to park")
    await publisher.close_channel(closed.id)
    with pytest.raises(ChannelClosed) as caught:
        await waiting
    assert caught.value.channels == [closed.id]
    assert (caught.value.status, caught.value.code) == (410, "channel_closed")
    with pytest.raises(StopAsyncIteration):  # over, with its connection closed
        await anext(messages)


async def test_unknown_channels_and_bad_arguments_raise_at_once(server: ServerProcess) -> None:
    with pytest.raises(ChannelNotFound) as unknown:
        await anext(subscribe(server.url, ["nobody", 42]))
    assert unknown.value.channels == ["nobody", 42]
    with pytest.raises(InvalidRequest) as bad:
        await anext(subscribe(server.url, 42, since="not-a-cursor"))
    assert bad.value.code == "invalid_cursor"
    with pytest.raises(InvalidRequest) as too_long:
        await anext(subscribe(server.url, 42, timeout=10_000))
    assert too_long.value.code == "invalid_parameter"
    with pytest.raises(ValueError, match="above 0"):
        subscribe(server.url, 42, timeout=0)


async def test_a_server_restart_loses_and_doubles_nothing(
    server_factory: ServerFactory,
    consumers: Callable[[Subscription], Consumer],
    tmp_path: Path,
) -> None:
    data_dir = str(tmp_path / "data")
    server = server_factory("--data-dir", data_dir)
    async with AsyncPublisher(server.url) as publisher:
        channel = await publisher.create_channel(name="news")
        before = [await publisher.publish("news", i) for i in range(3)]
    consumer = consumers(subscribe(server.url, "news", timeout=10, **FAST))
    await consumer.wait_for(3)
    async with AsyncPublisher(server.url) as publisher:
        await until(lambda: parked(publisher, channel.id), what="the poll to park")

    server.proc.kill()  # a crash, with the poll parked on it
    server.proc.wait()
    await until(lambda: _true(consumer.subscription.failures >= 2), what="polls to fail meanwhile")
    server = server_factory("--data-dir", data_dir, port=server.port)
    async with AsyncPublisher(server.url) as publisher:
        after = [await publisher.publish("news", i) for i in range(3, 6)]
        after += await publisher.publish_batch([("news", 6), (channel.id, 7)])

    received = await consumer.wait_for(8)
    assert [m.id for m in received] == [p.id for p in before + after]
    assert [m.data for m in received] == list(range(8))
    assert consumer.subscription.failures == 0


async def _true(value: bool) -> bool:
    return value


async def test_a_store_outage_is_waited_out(
    server_factory: ServerFactory,
    redis_factory: RedisFactory,
    consumers: Callable[[Subscription], Consumer],
) -> None:
    store = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    server = server_factory("--engine", store.url)
    async with AsyncPublisher(server.url) as publisher:
        channel = await publisher.create_channel()
        first = await publisher.publish(channel.id, "before")
    consumer = consumers(subscribe(server.url, channel.id, timeout=0.2, **FAST))
    await consumer.wait_for(1)
    store.kill()  # polls get 503 with Retry-After now
    await until(lambda: _true(consumer.subscription.failures >= 2), what="503s")
    store.start()
    async with AsyncPublisher(server.url) as publisher:

        async def publish() -> Any:
            with contextlib.suppress(Exception):
                return await publisher.publish(channel.id, "after")
            return None

        second = await until(publish, what="the store to be back")
    received = await consumer.wait_for(2)
    assert [m.id for m in received] == [first.id, second.id]


async def test_cancelling_the_consumer_closes_the_connection(
    server: ServerProcess, publisher: AsyncPublisher
) -> None:
    channel = await publisher.create_channel()
    idle = 1  # the publisher's connection, once the readiness check's is gone
    await until(lambda: _true(server.connections() == idle), what="the readiness check to close")

    async def consume() -> None:
        async for _ in subscribe(server.url, channel.id, timeout=30):
            pass

    task = asyncio.create_task(consume())
    await until(lambda: parked(publisher, channel.id), what="the poll to park")
    assert server.connections() == idle + 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: parked(publisher, channel.id, 0), what="the poll to go")
    await until(lambda: _true(server.connections() == idle), what="the connection to close")
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_breaking_out_of_the_loop_closes_the_connection(
    server: ServerProcess, publisher: AsyncPublisher
) -> None:
    channel = await publisher.create_channel()
    await publisher.publish(channel.id, "one")
    idle = 1  # the publisher's connection, once the readiness check's is gone
    await until(lambda: _true(server.connections() == idle), what="the readiness check to close")

    async def first() -> Any:
        async for message in subscribe(server.url, channel.id, timeout=30):
            assert server.connections() == idle + 1  # the connection, kept alive
            return message.data
        return None

    assert await first() == "one"
    gc.collect()  # the iterator is garbage now: asyncio closes it
    await until(lambda: _true(server.connections() == idle), what="the connection to close")
