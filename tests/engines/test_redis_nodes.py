"""Redis engine nodes knowing of each other: heartbeats in a sorted set, stale nodes
pruned, and subscriber counts asked of every node over pub/sub."""

from __future__ import annotations

import time

import pytest
import redis

from pushup.core.engine import Clustered, Monitored
from pushup.core.model import ChannelId
from pushup.engines.redis import RedisEngine
from tests.engines.conftest import MakeEngine, RecordingListener
from tests.engines.test_redis import eventually

NODES = "pushup:nodes"


@pytest.fixture
def engine_kind() -> str:
    """Only the Redis engine here."""
    return "redis"


class CountingListener(RecordingListener):
    """A listener whose node holds `parked[channel]` polls."""

    def __init__(self) -> None:
        super().__init__()
        self.parked: dict[ChannelId, int] = {}

    def subscribers(self, channel_id: ChannelId) -> int:
        return self.parked.get(channel_id, 0)


async def node(make_engine: MakeEngine, **options: float) -> tuple[RedisEngine, CountingListener]:
    listener = CountingListener()
    engine = make_engine(**options)
    assert isinstance(engine, RedisEngine)
    await engine.start(listener)
    return engine, listener


async def test_each_node_counts_its_own_and_asks_the_others(make_engine: MakeEngine) -> None:
    a, on_a = await node(make_engine)
    b, on_b = await node(make_engine)
    _, on_c = await node(make_engine)
    assert isinstance(a, Clustered) and isinstance(a, Monitored)
    channel = (await a.create_channel(None, None)).id
    on_a.parked[channel], on_b.parked[channel], on_c.parked[channel] = 1, 2, 4
    count = await b.count_subscribers(channel)
    assert (count.total, count.local) == (7, 2)
    assert (count.live_nodes, count.counted_nodes) == (3, 3)
    # A channel nobody waits on.
    other = ChannelId(channel + 1)
    assert (await a.count_subscribers(other)).total == 0


async def test_a_stale_node_is_pruned_and_a_closed_one_leaves_at_once(
    make_engine: MakeEngine, engine_url: str
) -> None:
    a, _ = await node(make_engine, heartbeat_s=0.05)
    b, _ = await node(make_engine, heartbeat_s=0.05)
    with redis.Redis.from_url(engine_url) as client:
        assert set(client.zrange(NODES, 0, -1)) == {a.node_id.encode(), b.node_id.encode()}
        seconds, micros = client.time()
        client.zadd(NODES, {"gone-long-ago": seconds + micros / 1e6 - 3600})
        await eventually(
            lambda: client.zscore(NODES, "gone-long-ago") is None, what="the stale node pruned"
        )
        await b.close()
        assert client.zscore(NODES, b.node_id) is None
    count = await a.count_subscribers(ChannelId(1))
    assert (count.live_nodes, count.counted_nodes) == (1, 1)
    assert a.health().ok


async def test_a_live_node_that_heard_nothing_is_not_waited_for(
    make_engine: MakeEngine, engine_url: str
) -> None:
    """A node killed a moment ago still has a fresh heartbeat, but no connection to hear
    the question on: the count does not wait out its timeout for it."""
    a, _ = await node(make_engine, count_timeout_s=30.0)
    with redis.Redis.from_url(engine_url) as client:
        seconds, micros = client.time()
        client.zadd(NODES, {"killed-just-now": seconds + micros / 1e6})
    started = time.monotonic()
    count = await a.count_subscribers(ChannelId(1))
    assert time.monotonic() - started < 10
    assert (count.live_nodes, count.counted_nodes) == (2, 1)
