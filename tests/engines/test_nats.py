"""What only the NATS engine has: its state is a stream that a restarted engine replays,
several engines on one stream append in one order (and each hears, in that order, the
publications of the channels it serves), and an unreachable server is one error at
start."""

from __future__ import annotations

import asyncio

import pytest

from pushup.core.errors import EngineUnavailable
from pushup.engines.nats import NatsEngine
from tests.engines.conftest import RecordingListener
from tests.helpers import until
from tests.proxies import free_port


def engine(url: str, **options: float) -> NatsEngine:
    return NatsEngine(url, message_ttl_s=300.0, max_messages=100, channel_ttl_s=3600.0, **options)


async def test_a_restarted_engine_replays_channels_and_messages(nats_url: str) -> None:
    first = engine(nats_url)
    await first.start(RecordingListener())
    a = (await first.create_channel(None, "a")).id
    b = (await first.create_channel(60.0, None)).id
    renewed = await first.renew_channel(b, 120.0)
    old = await first.publish([([a, b], b'"both"'), ([a], b'"a"')])
    await first.close_channel((await first.create_channel(None, "gone")).id)
    await first.close()

    second = engine(nats_url)
    await second.start(RecordingListener())
    try:
        assert await second.resolve(["a", b]) == [a, b]
        assert await second.resolve(["a"]) == [a]
        with pytest.raises(Exception, match="gone"):
            await second.resolve(["gone"])
        info = await second.channel_info(b)
        assert (info.ttl_s, info.messages, info.last_message_id) == (120.0, 1, old[0].id)
        assert info.expires_at >= renewed.expires_at
        result = await second.read([a, b], None, None, None)
        assert [(m.id, m.data, chans) for m, chans in result.hits] == [
            (old[0].id, b'"both"', (a, b) if a < b else (b, a)),
            (old[1].id, b'"a"', (a,)),
        ]
        (new,) = await second.publish([([a], b'"new"')])
        assert new.id > old[1].id and second.high_water() == new.id
    finally:
        await second.close()


async def test_engines_on_one_stream_append_in_one_order_and_hear_each_other(
    nats_url: str,
) -> None:
    heard_a, heard_b = RecordingListener(), RecordingListener()
    a, b = engine(nats_url), engine(nats_url)
    await a.start(heard_a)
    await b.start(heard_b)
    try:
        channel = (await a.create_channel(None, "shared")).id
        assert await b.resolve(["shared"]) == [channel]
        # A node hears the publications of the channels it serves: both read it.
        for node in (a, b):
            await node.read([channel], None, None, None)

        async def publish_from(node: NatsEngine, tag: str) -> list[int]:
            ids = []
            for i in range(20):
                (message,) = await node.publish([(["shared"], b'"%s%d"' % (tag.encode(), i))])
                ids.append(message.id)
            return ids

        from_a, from_b = await asyncio.gather(publish_from(a, "a"), publish_from(b, "b"))
        assert len(set(from_a) | set(from_b)) == 40

        def told(listener: RecordingListener) -> list[int]:
            return [m.id for messages, _ in listener.published_calls for m in messages]

        await until(lambda: _true(len(told(heard_a)) == len(told(heard_b)) == 40), what="all")
        # Both heard the same messages in the same order, the order of their ids.
        assert told(heard_a) == told(heard_b) == sorted(from_a + from_b)
        read_a = await a.read([channel], None, None, None)
        read_b = await b.read([channel], None, None, None)
        assert [m.id for m, _ in read_a.hits] == [m.id for m, _ in read_b.hits]
    finally:
        await a.close()
        await b.close()


async def test_an_unreachable_server_fails_the_start(nats_url: str) -> None:
    dead = engine(f"nats://127.0.0.1:{free_port()}", timeout_s=1.0)
    with pytest.raises(EngineUnavailable, match="cannot reach NATS"):
        await dead.start(RecordingListener())
    await dead.close()


async def _true(value: bool) -> bool:
    return value
