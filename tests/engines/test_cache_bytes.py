"""`--max-cache-bytes`, run against every engine: the cache holds at most that many
bytes of message data over all channels, the oldest messages go first, and whoever
wanted one of them sees a gap. Bytes are counted exactly: a message once however many
channels hold it, and freed as soon as none does."""

from __future__ import annotations

import redis

from pushup.core.engine import Engine
from pushup.core.model import ChannelId, Message
from pushup.engines.memory import MemoryEngine
from pushup.engines.nats import NatsEngine
from tests.engines.conftest import MakeEngine, RecordingListener, published
from tests.engines.test_contract import channel, ids, publish1, read, started


def payload(size: int) -> bytes:
    """A JSON string of exactly `size` bytes."""
    return b'"' + b"x" * (size - 2) + b'"'


def cached_bytes(engine: Engine, engine_url: str) -> int:
    if isinstance(engine, MemoryEngine):
        return engine._budget.bytes
    if isinstance(engine, NatsEngine):  # every node serving the channels counts the same
        return engine.cache_stats().bytes
    with redis.Redis.from_url(engine_url) as client:
        return int(client.get("pushup:cache:bytes") or 0)


async def serving(engine: Engine, count: int) -> list[ChannelId]:
    """New channels, read once: a NATS node caches the channels it serves."""
    made = [await channel(engine) for _ in range(count)]
    await read(engine, made)
    return made


async def messages_in(engine: Engine, *channels: ChannelId) -> int:
    return sum([(await engine.channel_info(c)).messages for c in channels])


async def test_the_oldest_go_first_over_all_channels(
    make_engine: MakeEngine, listener: RecordingListener, engine_url: str
) -> None:
    engine = await started(make_engine, listener, max_cache_bytes=1000)
    a, b = await serving(engine, 2)
    sent: list[Message] = []
    for i in range(15):
        sent.append(await publish1(engine, [a if i % 2 else b], payload(100)))
        assert cached_bytes(engine, engine_url) == min(i + 1, 10) * 100
    assert await messages_in(engine, a, b) == 10
    everything = await read(engine, [a, b])
    assert ids(everything) == [m.id for m in sent[5:]]
    assert everything.gap is True
    # After the newest dropped: no gap; from before it: a gap, on either channel.
    assert (await read(engine, [a, b], since=sent[4].id)).gap is False
    assert ids(await read(engine, [a, b], since=sent[4].id)) == [m.id for m in sent[5:]]
    assert (await read(engine, [b], since=sent[3].id)).gap is True
    assert (await read(engine, [a], since=sent[2].id)).gap is True


async def test_a_message_in_several_channels_counts_once_and_leaves_all(
    make_engine: MakeEngine, listener: RecordingListener, engine_url: str
) -> None:
    engine = await started(make_engine, listener, max_cache_bytes=1000)
    a, b = await serving(engine, 2)
    m1 = await publish1(engine, [a, b], payload(400))
    m2 = await publish1(engine, [a, b], payload(400))
    assert cached_bytes(engine, engine_url) == 800
    m3 = await publish1(engine, [a], payload(400))
    assert cached_bytes(engine, engine_url) == 800
    assert ids(await read(engine, [a])) == [m2.id, m3.id]
    assert ids(await read(engine, [b])) == [m2.id]
    assert (await read(engine, [b], since=m1.id)).gap is False
    assert (await read(engine, [b])).gap is True


async def test_messages_no_channel_holds_free_their_bytes(
    make_engine: MakeEngine, listener: RecordingListener, engine_url: str
) -> None:
    engine = await started(make_engine, listener, max_messages=1, max_cache_bytes=1000)
    a, b = await serving(engine, 2)
    old = await publish1(engine, [b], payload(100))
    for _ in range(20):  # each drops the one before by the count limit
        await publish1(engine, [a], payload(100))
    assert cached_bytes(engine, engine_url) == 200
    await engine.close_channel(a)
    assert cached_bytes(engine, engine_url) == 100
    # The 2,000 bytes published never counted at once: b's message is still there.
    kept = await read(engine, [b])
    assert (ids(kept), kept.gap) == ([old.id], False)


async def test_a_batch_over_the_limit_tells_its_channels_evicted(
    make_engine: MakeEngine, listener: RecordingListener, engine_url: str
) -> None:
    engine = await started(make_engine, listener, max_cache_bytes=1000)
    a, b = await serving(engine, 2)
    first, second = await engine.publish([([a], payload(600)), ([b], payload(600))])
    assert published(listener)[-1][1] == frozenset({a})
    assert cached_bytes(engine, engine_url) == 600
    result = await read(engine, [a, b])
    assert (ids(result), result.gap) == ([second.id], True)
    assert first.id < second.id
