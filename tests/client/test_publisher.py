"""`AsyncPublisher` and `Publisher` against real servers: every call, and every error
answer as its exception class with the server's status, code and detail."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pushup.client import (
    ApiError,
    AsyncPublisher,
    Channel,
    ChannelNotFound,
    ChannelState,
    Forbidden,
    InvalidRequest,
    ListedChannel,
    NameTaken,
    NotFound,
    PayloadTooLarge,
    Presence,
    Published,
    Publisher,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
    mint_token,
    subscribe,
)
from tests.client.conftest import PublisherFactory
from tests.conftest import RedisFactory, ServerFactory
from tests.helpers import ServerProcess, until


async def test_channel_lifecycle(publisher: Any) -> None:
    before = time.time()
    named = await publisher.create_channel(name="tag:c++/news%", ttl=600)
    assert isinstance(named, Channel)
    assert named.name == "tag:c++/news%"
    assert before + 590 < named.expires_at < time.time() + 610
    plain = await publisher.create_channel()
    assert (plain.name, plain.id > named.id) == (None, True)
    assert plain.expires_at > time.time() + 3000  # the server's default TTL, 3600 s

    renewed = await publisher.renew_channel(named.name, ttl=7200)
    assert (renewed.id, renewed.name) == (named.id, named.name)
    assert renewed.expires_at > time.time() + 7000
    assert (await publisher.renew_channel(plain.id)).id == plain.id

    state = await publisher.channel_info(named.id)
    assert state == ChannelState(
        named.id,
        named.name,
        renewed.expires_at,
        0,
        0,
        None,
        message_ttl=300,  # the server's limits
        max_messages=1000,
    )

    await publisher.close_channel(named.name)
    with pytest.raises(ChannelNotFound) as caught:
        await publisher.channel_info(named.id)
    assert (caught.value.status, caught.value.code) == (404, "channel_not_found")
    assert caught.value.channels == [named.id]
    # The name is free again.
    assert (await publisher.create_channel(name=named.name)).id > plain.id


async def test_get_or_create_finds_the_live_channel_instead_of_name_taken(
    publisher: Any,
) -> None:
    made = await publisher.create_channel("lobby", ttl=60, exist_ok=True)
    found = await publisher.create_channel("lobby", ttl=600, exist_ok=True)
    assert found.id == made.id and found.expires_at > made.expires_at
    with pytest.raises(ValueError, match="needs a name"):
        await publisher.create_channel(exist_ok=True)


async def test_a_channel_with_its_own_retention(publisher: Any) -> None:
    made = await publisher.create_channel("brief", message_ttl=30, max_messages=2)
    assert (made.message_ttl, made.max_messages) == (30, 2)
    state = await publisher.channel_info("brief")
    assert (state.message_ttl, state.max_messages) == (30, 2)
    with pytest.raises(InvalidRequest) as caught:
        await publisher.create_channel(max_messages=1001)
    assert caught.value.code == "above_server_limit"
    assert "--max-messages of 1000" in caught.value.detail


async def test_list_channels_pages_through_every_channel(publisher: Any) -> None:
    made = [await publisher.create_channel(name) for name in ("room:b", "room:a", None, "lobby")]
    await publisher.publish("room:a", 1)

    async def pages(**options: Any) -> list[list[ListedChannel]]:
        listed = publisher.list_channels(**options)
        if isinstance(publisher, AsyncPublisher):
            return [page async for page in listed]
        return list(await listed)

    by_id = await pages(limit=3)
    assert [[c.id for c in page] for page in by_id] == [
        [c.id for c in made[:3]],
        [made[3].id],
    ]
    by_name = await pages(prefix="room:", limit=1)
    assert [[c.name for c in page] for page in by_name] == [["room:a"], ["room:b"]]
    first = by_name[0][0]
    assert (first.messages, first.subscribers, first.max_messages) == (1, 0, 1000)
    assert await pages(prefix="nothing") == []


async def test_publish_to_one_or_many_channels_and_in_batches(
    publisher: Any, server: ServerProcess
) -> None:
    a = await publisher.create_channel(name="a")
    b = await publisher.create_channel()
    one = await publisher.publish("a", {"n": 1})
    assert isinstance(one, Published)
    assert one.channels == (a.id,)
    assert abs(one.time - time.time()) < 60
    both = await publisher.publish([b.id, "a"], [1, "two", None])
    assert both.channels == (a.id, b.id)
    batch = await publisher.publish_batch([("a", "x"), ([a.id, b.id], "y"), (b.id, None)])
    assert [p.channels for p in batch] == [(a.id,), (a.id, b.id), (b.id,)]
    ids = [int(p.id) for p in [one, both, *batch]]
    assert ids == sorted(set(ids))

    state = await publisher.channel_info("a")
    assert (state.messages, state.last_message_id) == (4, batch[1].id)
    # What was published is what subscribers read, the message id being a cursor.
    with server.client() as client:
        body = client.get("/subscribe", params={"channels": "a", "since": one.id}).json()
    assert [(m["id"], m["data"]) for m in body["messages"]] == [
        (both.id, [1, "two", None]),
        (batch[0].id, "x"),
        (batch[1].id, "y"),
    ]


async def test_leaving_the_context_closes_the_connections(server: ServerProcess) -> None:
    # None once the start-up readiness check's connection is gone.
    await until(lambda: _true(server.connections() == 0), what="the readiness check to close")
    with Publisher(server.url) as blocking:
        blocking.create_channel()
        assert server.connections() == 1  # kept alive
    async with AsyncPublisher(server.url) as publisher:
        await publisher.create_channel()
        assert server.connections() in (1, 2)  # the first may not be gone yet
    await until(lambda: _true(server.connections() == 0), what="the connections to close")


async def _true(value: bool) -> bool:
    return value


async def test_channel_info_counts_parked_polls(publisher: Any, server: ServerProcess) -> None:
    channel = await publisher.create_channel()

    async def consume() -> None:
        async with subscribe(server.url, channel.id, timeout=30) as messages:
            async for _ in messages:
                pass

    consumer = asyncio.create_task(consume())
    try:
        await until(lambda: _subscribers(publisher, channel.id, 1), what="the poll to be parked")
    finally:
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer


async def _subscribers(publisher: Any, channel: int, count: int) -> bool:
    state = await publisher.channel_info(channel)
    return bool(state.subscribers == count)


async def test_error_answers_become_typed_exceptions(publisher: Any) -> None:
    channel = await publisher.create_channel(name="taken")
    with pytest.raises(NameTaken) as taken:
        await publisher.create_channel(name="taken")
    assert (taken.value.status, taken.value.code) == (409, "name_taken")
    assert "taken" in taken.value.detail

    with pytest.raises(InvalidRequest) as bad_ttl:
        await publisher.create_channel(ttl=-1)
    assert (bad_ttl.value.status, bad_ttl.value.code) == (400, "invalid_body")
    with pytest.raises(InvalidRequest, match="all digits"):
        await publisher.create_channel(name="123")
    with pytest.raises(InvalidRequest) as bad_ref:
        await publisher.renew_channel("a,b")
    assert bad_ref.value.code == "invalid_parameter"

    with pytest.raises(ChannelNotFound) as unknown:
        await publisher.publish([channel.id, "nobody", 12345], "lost")
    assert unknown.value.channels == ["nobody", 12345]
    assert (await publisher.channel_info(channel.id)).messages == 0  # all or nothing
    with pytest.raises(ChannelNotFound) as unknown_in_batch:
        await publisher.publish_batch([("taken", 1), (["ghost"], 2)])
    assert unknown_in_batch.value.channels == ["ghost"]
    with pytest.raises(ChannelNotFound):
        await publisher.renew_channel("ghost")
    with pytest.raises(ChannelNotFound):
        await publisher.close_channel(12345)

    # The server's limit is on the whole body, checked before sending: a server that
    # answers 413 mid-body closes the connection.
    with pytest.raises(PayloadTooLarge) as too_large:
        await publisher.publish(channel.id, "x" * (1 << 20))
    assert (too_large.value.status, too_large.value.code) == (413, "payload_too_large")
    assert (await publisher.channel_info(channel.id)).messages == 0
    near = await publisher.publish(channel.id, "x" * ((1 << 20) - 100))
    assert near.channels == (channel.id,)


async def test_a_url_that_is_not_pushup_gives_not_found(
    publisher_factory: PublisherFactory, server: ServerProcess
) -> None:
    publisher = publisher_factory(server.url + "/prefix")
    with pytest.raises(NotFound) as caught:
        await publisher.create_channel()
    assert type(caught.value) is NotFound
    assert (caught.value.status, caught.value.code) == (404, "not_found")


async def test_the_publisher_key(
    publisher_factory: PublisherFactory, server_factory: ServerFactory
) -> None:
    server = server_factory("--publisher-key", "s3cret")
    for key in (None, "wrong"):
        with pytest.raises(Unauthorized) as caught:
            await publisher_factory(server.url, key=key).create_channel()
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    channel = await publisher_factory(server.url, key="s3cret").create_channel()
    assert channel.id > 0


async def test_a_key_of_several_raises_forbidden_outside_its_channels(
    publisher_factory: PublisherFactory, server_factory: ServerFactory, tmp_path: Path
) -> None:
    """With `--publisher-keys`, the client needs nothing but its own key."""
    keys = tmp_path / "keys.toml"
    blog, shop = "b" * 32, "s" * 32
    keys.write_text(
        f'[keys.blog]\nsecret = "{blog}"\nprefixes = ["blog:"]\n'
        f'[keys.shop]\nsecret = "{shop}"\nprefixes = ["shop:"]\n'
    )
    server = server_factory("--publisher-keys", str(keys))
    publisher = publisher_factory(server.url, key=blog)
    await publisher.create_channel("blog:a")
    mine = await publisher.create_channel()
    published = await publisher.publish(["blog:a", mine.id], {"n": 1})
    assert published.channels == ((await publisher.channel_info("blog:a")).id, mine.id)
    await publisher_factory(server.url, key=shop).create_channel("shop:b")
    with pytest.raises(Forbidden) as caught:
        await publisher.publish(["blog:a", "shop:b"], {"n": 2})
    assert (caught.value.status, caught.value.code) == (403, "forbidden")
    assert caught.value.body["channels"] == ["shop:b"]
    with pytest.raises(Forbidden):
        await publisher_factory(server.url, key=shop).renew_channel(mine.id)


async def test_no_server_raises_transport_error(publisher_factory: PublisherFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        with pytest.raises(TransportError) as caught:
            await publisher_factory(url, timeout=5).publish(1, "x")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_a_store_outage_is_service_unavailable_with_retry_after(
    publisher_factory: PublisherFactory,
    server_factory: ServerFactory,
    redis_factory: RedisFactory,
) -> None:
    store = redis_factory()
    server = server_factory("--engine", store.url)
    publisher = publisher_factory(server.url, retries=0)
    channel = await publisher.create_channel()
    store.kill()
    with pytest.raises(ServiceUnavailable) as caught:
        await publisher.publish(channel.id, "while down")
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (503, "engine_unavailable", 1.0)
    assert isinstance(error, ApiError) and error.detail


async def test_the_publish_rate_limit_is_too_many_requests_with_retry_after(
    publisher_factory: PublisherFactory, server_factory: ServerFactory
) -> None:
    server = server_factory("--publish-rate", "1", "--publish-burst", "1")
    # Without retries: the publisher would wait out the Retry-After and try again.
    publisher = publisher_factory(server.url, retries=0)
    channel = await publisher.create_channel()
    await publisher.publish(channel.id, "first")
    with pytest.raises(TooManyRequests) as refused:
        await publisher.publish(channel.id, "second")
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after is not None and refused.value.retry_after > 0


async def test_presence_lists_the_subs_of_the_parked_polls(
    publisher_factory: PublisherFactory, server_factory: ServerFactory
) -> None:
    secret = "a-subscriber-secret-of-at-least-32-bytes"
    node = server_factory("--data-dir", "none", "--subscriber-secret", secret)
    publisher = publisher_factory(node.url)
    channel = await publisher.create_channel(name="lobby")
    empty = await publisher.presence("lobby")
    assert empty == Presence(channel.id, "lobby", 0, 0, 0, (), 0, True)

    async def consume(sub: str) -> None:
        token = mint_token(secret, [channel.id], subject=sub)
        async with subscribe(node.url, channel.id, timeout=30, token=token) as messages:
            async for _ in messages:
                pass

    consumers = [asyncio.create_task(consume(sub)) for sub in ("zoe", "ann", "zoe")]
    try:

        async def three() -> Presence | None:
            found: Presence = await publisher.presence(channel.id)
            return found if found.connections == 3 else None

        found = await until(three, what="three polls parked")
        assert (found.polls, found.streams, found.anonymous) == (3, 0, 0)
        assert (found.subs, found.sub_count, found.subs_complete) == (("ann", "zoe"), 2, True)
        assert (found.live_nodes, found.counted_nodes) == (None, None)
    finally:
        for consumer in consumers:
            consumer.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    with pytest.raises(ChannelNotFound):
        await publisher.presence("nowhere")
