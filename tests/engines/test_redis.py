"""What only the Redis engine has: several nodes on one store, its key layout, lost
events, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis

from pushup.core.engine import Engine
from pushup.core.errors import ChannelsNotFound, EngineUnavailable, NameTaken
from pushup.core.hub import Hub, PollQuery
from pushup.core.model import ChannelId, PollOutcome
from pushup.engines.redis import RedisEngine
from tests.conftest import RedisFactory
from tests.engines.conftest import MakeEngine, RecordingListener, published, same
from tests.unit.fakes import T0, FakeClock, RecordingReceiver


@pytest.fixture
def engine_kind() -> str:
    """Only the Redis engine here."""
    return "redis"


async def eventually(probe: Callable[[], object], *, timeout: float = 10.0, what: str = "") -> None:
    """Wait until `probe()` is truthy, letting the loop run, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        await asyncio.sleep(0.01)


async def node(make_engine: MakeEngine, **kw: float) -> tuple[Engine, RecordingListener]:
    listener = RecordingListener()
    engine = make_engine(**kw)
    await engine.start(listener)
    return engine, listener


async def raises_unavailable(call: Awaitable[object]) -> None:
    started = time.monotonic()
    with pytest.raises(EngineUnavailable):
        await call
    assert time.monotonic() - started < 10, "an unreachable Redis must not hang a call"


# -- several nodes -----------------------------------------------------------------------


async def test_a_channel_made_on_one_node_is_used_through_another(make_engine: MakeEngine) -> None:
    a, _ = await node(make_engine)
    b, _ = await node(make_engine)
    c, _ = await node(make_engine)
    info = await a.create_channel(None, "tag:c++")
    (message,) = await b.publish([(["tag:c++"], b'"hi"')])
    result = await c.read([info.id], None, None, None)
    assert [same(m) for m, _ in result.hits] == [same(message)]
    assert (await c.channel_info("tag:c++")).last_message_id == message.id


async def test_every_node_hears_every_publication_in_order(make_engine: MakeEngine) -> None:
    a, heard_a = await node(make_engine)
    b, heard_b = await node(make_engine)
    channel = (await a.create_channel(None, None)).id
    first = await a.publish([([channel], b"1")])
    second = await b.publish([([channel], b"2"), ([channel], b"3")])
    nothing: frozenset[ChannelId] = frozenset()
    expected = [([same(m) for m in first], nothing), ([same(m) for m in second], nothing)]
    # Each node has heard its own publications when publish returns...
    assert published(heard_a)[0] == expected[0]
    # ...and every other one, in Redis's order, soon after.
    await eventually(lambda: published(heard_a) == expected, what="node A to hear B")
    await eventually(lambda: published(heard_b) == expected, what="node B to hear A")
    assert a.high_water() == b.high_water() == second[-1].id


async def test_payloads_reach_other_nodes_byte_for_byte(make_engine: MakeEngine) -> None:
    a, _ = await node(make_engine)
    _, heard_b = await node(make_engine)
    x = (await a.create_channel(None, "x")).id
    y = (await a.create_channel(None, "y é")).id
    payloads = [b'"a b\\n c"', b"[1, 2,\n 3]", '"é ü 😀"'.encode(), b"0", b" " * 1000]
    batch = await a.publish([([x, "y é"] if i % 2 else [y], p) for i, p in enumerate(payloads)])
    await eventually(lambda: published(heard_b), what="B to hear the batch")
    assert published(heard_b) == [([same(m) for m in batch], frozenset())]
    assert [m.data for m in batch] == payloads


async def test_names_are_unique_across_nodes(make_engine: MakeEngine) -> None:
    a, _ = await node(make_engine)
    b, _ = await node(make_engine)
    await a.create_channel(None, "x")
    with pytest.raises(NameTaken):
        await b.create_channel(None, "x")
    await b.close_channel("x")
    await a.create_channel(None, "x")


async def test_ids_are_globally_ordered_whatever_the_clock_of_each_node(
    engine_url: str,
) -> None:
    """One node's clock runs an hour behind: its ids still follow the other's."""
    ahead, behind = FakeClock(T0 + 3600), FakeClock(T0)
    engines = [
        RedisEngine(engine_url, message_ttl_s=1e6, max_messages=100, channel_ttl_s=1e6, clock=c)
        for c in (ahead, behind)
    ]
    for engine in engines:
        await engine.start(RecordingListener())
    try:
        channel = (await engines[0].create_channel(None, None)).id
        ids = []
        for i in range(10):
            (message,) = await engines[i % 2].publish([([channel], b"%d" % i)])
            ids.append(message.id)
        assert ids == sorted(ids) and len(set(ids)) == 10
        other = (await engines[1].create_channel(None, None)).id
        assert other > channel
    finally:
        for engine in engines:
            await engine.close()


async def test_a_close_on_one_node_is_heard_on_every_node(make_engine: MakeEngine) -> None:
    a, heard_a = await node(make_engine)
    b, heard_b = await node(make_engine)
    channel = (await a.create_channel(None, None)).id
    await b.close_channel(channel)
    assert heard_b.closed_calls == [[channel]]
    await eventually(lambda: heard_a.closed_calls == [[channel]], what="node A to hear it")
    with pytest.raises(ChannelsNotFound):
        await a.channel_info(channel)


async def test_an_expiry_noticed_by_one_node_is_heard_on_every_node(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    a, heard_a = await node(make_engine)
    _, heard_b = await node(make_engine)
    channel = (await a.create_channel(10, None)).id
    clock.advance(11)
    # Whichever node notices first (a request or a sweep), each expiry happens once.
    await eventually(lambda: heard_a.closed_calls and heard_b.closed_calls, what="the expiry")
    assert heard_a.closed_calls == heard_b.closed_calls == [[channel]]


async def test_deployments_on_two_databases_of_one_redis_stay_apart(
    engine_url: str, clock: FakeClock
) -> None:
    """Pub/sub spans every database: each deployment still hears only its own events."""
    engines, listeners = [], []
    for db in (0, 1):
        url = engine_url.rsplit("/", 1)[0] + f"/{db}"
        engine = RedisEngine(url, message_ttl_s=300, max_messages=10, channel_ttl_s=60, clock=clock)
        listener = RecordingListener()
        await engine.start(listener)
        engines.append(engine)
        listeners.append(listener)
    try:
        for engine in engines:
            channel = (await engine.create_channel(None, None)).id
            await engine.publish([([channel], b"1")])
            await engine.close_channel(channel)
        for listener in listeners:
            assert (len(listener.published_calls), len(listener.closed_calls)) == (1, 1)
            assert listener.resyncs == 0
    finally:
        for engine in engines:
            await engine.close()


# -- the store ---------------------------------------------------------------------------


async def test_channels_stored_before_listings_existed_are_indexed_once_at_start(
    make_engine: MakeEngine, engine_url: str
) -> None:
    engine, _ = await node(make_engine)
    made = [(await engine.create_channel(None, name)).id for name in ("b", None, "a")]
    with redis.Redis.from_url(engine_url) as client:
        # As a store written by an earlier version leaves it.
        client.delete("pushup:channels", "pushup:names:sorted", "pushup:channels:indexed")
        assert (await engine.list_channels(None, None, 10)).channels == []
        later, _ = await node(make_engine)
        assert client.get("pushup:channels:indexed") == b"1"
    assert [c.id for c in (await later.list_channels(None, None, 10)).channels] == made
    assert [c.name for c in (await later.list_channels("", None, 10)).channels] == ["a", "b"]


async def test_a_payload_is_stored_once_and_expiry_leaves_nothing_behind(
    make_engine: MakeEngine, clock: FakeClock, engine_url: str
) -> None:
    engine, _ = await node(make_engine, message_ttl_s=10)
    channels = [(await engine.create_channel(20, f"c{i}")).id for i in range(3)]
    await engine.publish([(channels, b'"x" ')])
    with redis.Redis.from_url(engine_url) as client:
        assert client.hlen("pushup:message:data") == 1
        clock.advance(25)  # past the message TTL and the channels' expiry
        await engine.create_channel(None, None)  # any call expires first
        left = {key.decode() for key in client.keys("*")}
    channel_keys = {k for k in left if k.startswith("pushup:channel:")}
    assert len(channel_keys) == 1  # the channel just made
    assert left - channel_keys == {
        "pushup:seq:message",
        "pushup:seq:channel",
        "pushup:seq:event",
        "pushup:expiry",
        "pushup:channels",  # the live channel ids, for listings
        "pushup:channels:indexed",
        "pushup:nodes",  # the live nodes' heartbeats: one entry per node
    }


async def test_identical_reads_in_flight_share_one_round_trip(
    make_engine: MakeEngine, engine_url: str
) -> None:
    """After a fan-out every subscriber re-polls with the same cursor at once."""
    engine, _ = await node(make_engine)
    channel = (await engine.create_channel(None, None)).id
    (message,) = await engine.publish([([channel], b'"m"')])

    def reads_so_far() -> int:
        with redis.Redis.from_url(engine_url) as client:
            stats = client.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_evalsha"))

    before = reads_so_far()
    resolved = await asyncio.gather(*(engine.resolve([channel]) for _ in range(500)))
    answers = await asyncio.gather(*(engine.read([channel], None, None, None) for _ in range(500)))
    calls = reads_so_far() - before  # with a heartbeat script or two meanwhile
    assert calls < 50, f"{calls} scripts for 500 identical resolves and 500 reads"
    assert resolved == [[channel]] * 500
    assert all([hit[0].id for hit in a.hits] == [message.id] for a in answers)
    # A different query is its own read; one that left does not cancel the others.
    other = asyncio.ensure_future(engine.read([channel], message.id, None, None))
    leaving = asyncio.ensure_future(engine.read([channel], message.id, None, None))
    await asyncio.sleep(0)
    leaving.cancel()
    assert (await other).hits == []


# -- lost events -------------------------------------------------------------------------


async def test_a_skipped_event_makes_the_node_resync(
    make_engine: MakeEngine, engine_url: str
) -> None:
    engine, listener = await node(make_engine)
    channel = (await engine.create_channel(None, None)).id
    with redis.Redis.from_url(engine_url) as client:
        client.publish("pushup:events:0", b"C 999999 1")  # a sequence number out of order
    await eventually(lambda: listener.resyncs == 1, what="a resync")
    # The node listens on as before.
    (message,) = await engine.publish([([channel], b"1")])
    assert published(listener)[-1] == ([same(message)], frozenset())
    assert listener.closed_calls == []


async def test_a_dropped_event_connection_reconnects_and_resyncs(
    make_engine: MakeEngine, engine_url: str
) -> None:
    a, heard_a = await node(make_engine)
    b, _ = await node(make_engine)
    channel = (await a.create_channel(None, None)).id
    with redis.Redis.from_url(engine_url) as client:
        client.client_kill_filter(_type="pubsub")
    await b.publish([([channel], b"1")])  # possibly while A is away
    await eventually(lambda: heard_a.resyncs == 1, what="A to resync")
    # Events flow again afterwards.
    (message,) = await b.publish([([channel], b"2")])
    await eventually(
        lambda: published(heard_a) and published(heard_a)[-1][0] == [same(message)],
        what="A to hear B again",
    )


# -- Redis away and back -----------------------------------------------------------------


async def test_calls_fail_fast_while_redis_is_down_and_work_once_it_is_back(
    redis_factory: RedisFactory, clock: FakeClock
) -> None:
    server = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    engine = RedisEngine(
        server.url,
        message_ttl_s=300,
        max_messages=100,
        channel_ttl_s=3600,
        clock=clock,
        timeout_s=2.0,
    )
    listener = RecordingListener()
    await engine.start(listener)
    try:
        channel = (await engine.create_channel(None, "kept")).id
        (kept,) = await engine.publish([([channel], b'"acknowledged"')])
        server.kill()
        await raises_unavailable(engine.publish([([channel], b"lost")]))
        await raises_unavailable(engine.read([channel], None, None, None))
        await raises_unavailable(engine.create_channel(None, None))
        server.start()

        # Without a restart of the engine: the channel and the message survived (AOF).
        async def back() -> bool:
            try:
                await engine.channel_info("kept")
            except EngineUnavailable:
                return False
            return True

        deadline = time.monotonic() + 15
        while not await back():
            assert time.monotonic() < deadline, "the engine did not recover"
            await asyncio.sleep(0.05)
        result = await engine.read([channel], None, None, None)
        assert [same(m) for m, _ in result.hits] == [same(kept)]
        await eventually(lambda: listener.resyncs >= 1, what="the events to come back")
        (after,) = await engine.publish([([channel], b'"after"')])
        assert after.id > kept.id
        assert published(listener)[-1] == ([same(after)], frozenset())
    finally:
        await engine.close()


async def test_a_master_refusing_writes_without_replicas_is_unavailable_not_broken(
    redis_factory: RedisFactory,
) -> None:
    """`min-replicas-to-write` with too few replicas: Redis answers NOREPLICAS, which is
    a 503 while it lasts, as an outage is, and no failure of the engine."""
    server = redis_factory()
    engine = RedisEngine(server.url, message_ttl_s=300, max_messages=100, channel_ttl_s=3600)
    await engine.start(RecordingListener())
    try:
        channel = (await engine.create_channel(None, None)).id
        with server.client() as client:
            client.config_set("min-replicas-to-write", 1)
        await raises_unavailable(engine.publish([([channel], b'"refused"')]))
        assert not engine.health().ok
        with server.client() as client:
            client.config_set("min-replicas-to-write", 0)
        (message,) = await engine.publish([([channel], b'"taken"')])
        result = await engine.read([channel], None, None, None)
        assert [same(m) for m, _ in result.hits] == [same(message)]
        assert engine.health().ok
    finally:
        await engine.close()


async def test_start_fails_clearly_when_redis_is_unreachable(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    server.kill()
    engine = RedisEngine(server.url, message_ttl_s=1, max_messages=1, channel_ttl_s=1)
    with pytest.raises(EngineUnavailable, match="cannot reach Redis"):
        await engine.start(RecordingListener())
    await engine.close()


async def test_a_poll_parked_across_lost_events_still_gets_the_message(
    make_engine: MakeEngine, clock: FakeClock, engine_url: str
) -> None:
    """A node's event connection drops; another node publishes meanwhile: the poll
    parked on the first node is answered by its re-read of the store."""
    hub = Hub(make_engine(), clock=clock)
    await hub.start()
    other, _ = await node(make_engine)
    a = (await other.create_channel(None, None)).id
    b = (await other.create_channel(None, None)).id
    on_a, on_b = RecordingReceiver(), RecordingReceiver()
    await hub.poll(PollQuery((a,), 60.0), on_a)
    await hub.poll(PollQuery((b,), 60.0), on_b)
    with redis.Redis.from_url(engine_url) as client:
        client.client_kill_filter(_type="pubsub")
    (message,) = await other.publish([([a], b'"while away"')])
    await other.close_channel(b)
    outcome = await on_a.next_outcome(timeout=10)
    assert isinstance(outcome, PollOutcome)
    assert [same(m) for m, _ in outcome.hits] == [same(message)]
    assert (await on_b.next_outcome(timeout=10)).status == 410
    assert len(on_a.outcomes) == len(on_b.outcomes) == 1
    await hub.close()
