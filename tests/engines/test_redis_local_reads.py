"""Re-polls a Redis node answers without Redis (`engines/redis/known.py`): at its events
high water, on channels it resolved, it costs no script; anything it cannot vouch for
(news on the channel, a cursor it has not reached, a lost event stream, a close) goes
to Redis."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import redis

from pushup.core.engine import Engine
from pushup.core.errors import ChannelsNotFound
from pushup.core.model import ChannelId, MessageId
from pushup.engines.redis import RedisEngine
from tests.engines.conftest import MakeEngine, RecordingListener, same
from tests.engines.test_redis import eventually, node

# Polls' scripts, as opposed to the sweep's and the heartbeat's.
POLL_SCRIPTS = ("resolve", "read")


@pytest.fixture
def engine_kind() -> str:
    """Only the Redis engine here."""
    return "redis"


class CountedScripts:
    """The engine's scripts, each run counted by name on its way to Redis."""

    def __init__(self, scripts: Any) -> None:
        self._scripts = scripts
        self.runs: Counter[str] = Counter()

    async def run(self, name: str, *args: str | bytes) -> list[Any]:
        self.runs[name] += 1
        reply: list[Any] = await self._scripts.run(name, *args)
        return reply

    def polls(self) -> int:
        """Round trips of polls so far."""
        return sum(self.runs[name] for name in POLL_SCRIPTS)


async def counted_node(make_engine: MakeEngine) -> tuple[Engine, RecordingListener, CountedScripts]:
    engine, listener = await node(make_engine)
    assert isinstance(engine, RedisEngine)
    counted = CountedScripts(engine._scripts)
    engine._scripts = counted  # type: ignore[assignment]
    return engine, listener, counted


async def repoll(engine: Engine, channels: list[ChannelId | str], since: int) -> list[int]:
    """A re-poll's two engine calls, as the hub makes them: message ids found."""
    ids = await engine.resolve(channels)
    result = await engine.read(ids, MessageId(since), None, None)
    return [message.id for message, _ in result.hits]


async def test_a_repoll_at_the_high_water_costs_no_round_trip(make_engine: MakeEngine) -> None:
    engine, _, scripts = await counted_node(make_engine)
    channel = (await engine.create_channel(None, "room")).id
    (message,) = await engine.publish([([channel], b'"m"')])
    assert await repoll(engine, ["room", channel], 0) == [message.id]  # learns both refs
    assert scripts.polls() == 2
    for _ in range(100):
        assert await repoll(engine, ["room", channel], message.id) == []
    assert scripts.polls() == 2
    result = await engine.read([channel], message.id, None, None)
    assert result.high_water == engine.high_water() == message.id
    assert not result.gap


async def test_news_heard_from_another_node_is_read_from_redis(make_engine: MakeEngine) -> None:
    a, _ = await node(make_engine)
    b, heard_b, scripts = await counted_node(make_engine)
    channel = (await a.create_channel(None, None)).id
    cursor = b.high_water()
    assert await repoll(b, [channel], cursor) == []
    assert (scripts.runs["resolve"], scripts.runs["read"]) == (1, 0), "learned, read locally"
    (message,) = await a.publish([([channel], b'"news"')])
    await eventually(lambda: b.high_water() == message.id, what="B to hear the publication")
    assert await repoll(b, [channel], cursor) == [message.id]
    assert (scripts.runs["resolve"], scripts.runs["read"]) == (1, 1)
    assert await repoll(b, [channel], message.id) == []
    assert scripts.polls() == 2
    assert [same(m) for m in heard_b.published_calls[-1][0]] == [same(message)]


async def test_a_cursor_above_the_nodes_high_water_is_placed_by_redis(
    make_engine: MakeEngine,
) -> None:
    """A cursor the node has not reached (another node heard more, or a clock set back)
    must park at Redis's high water, not at the cursor, or later messages below the
    cursor would never wake it."""
    engine, _, scripts = await counted_node(make_engine)
    channel = (await engine.create_channel(None, None)).id
    (message,) = await engine.publish([([channel], b'"m"')])
    await repoll(engine, [channel], message.id)
    assert scripts.runs["read"] == 0
    result = await engine.read([channel], MessageId(message.id + 10**9), None, None)
    assert (result.hits, result.high_water) == ([], message.id)
    assert scripts.runs["read"] == 1


async def test_a_read_with_an_end_is_read_from_redis(make_engine: MakeEngine) -> None:
    """The hub answers a read whose end has passed at once: it must see what this node
    has not heard yet."""
    engine, _, scripts = await counted_node(make_engine)
    channel = (await engine.create_channel(None, None)).id
    (message,) = await engine.publish([([channel], b'"m"')])
    await repoll(engine, [channel], message.id)
    await engine.read([channel], message.id, None, message.time + 1)
    assert scripts.runs["read"] == 1


async def test_a_close_heard_from_another_node_ends_the_local_answers(
    make_engine: MakeEngine,
) -> None:
    a, _ = await node(make_engine)
    b, heard_b = await node(make_engine)
    channel = (await a.create_channel(None, "room")).id
    cursor = b.high_water()
    await repoll(b, ["room"], cursor)
    await a.close_channel(channel)
    await eventually(lambda: heard_b.closed_calls == [[channel]], what="B to hear the close")
    for refs in (["room"], [channel]):
        with pytest.raises(ChannelsNotFound):
            await b.resolve(refs)
    with pytest.raises(ChannelsNotFound):
        await b.read([channel], MessageId(cursor), None, None)
    # The name, made again on A, is a new channel to B.
    again = (await a.create_channel(None, "room")).id
    assert await b.resolve(["room"]) == [again]
    (message,) = await a.publish([(["room"], b'"again"')])
    await eventually(lambda: b.high_water() == message.id, what="B to hear it")
    assert await repoll(b, ["room"], cursor) == [message.id]


async def test_a_lost_event_stream_forgets_every_channel_known(
    make_engine: MakeEngine, engine_url: str
) -> None:
    engine, listener, scripts = await counted_node(make_engine)
    channel = (await engine.create_channel(None, None)).id
    cursor = engine.high_water()
    await repoll(engine, [channel], cursor)
    assert scripts.polls() == 1
    with redis.Redis.from_url(engine_url) as client:
        client.client_kill_filter(_type="pubsub")
    await eventually(lambda: listener.resyncs == 1, what="the resync")
    resolves = scripts.runs["resolve"]
    assert await repoll(engine, [channel], cursor) == []
    assert scripts.runs["resolve"] == resolves + 1, "asked of Redis again"
    assert await repoll(engine, [channel], cursor) == []
    assert scripts.runs["resolve"] == resolves + 1, "and known again"
