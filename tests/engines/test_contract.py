"""The engine contract, run against every engine with a fake clock: channels,
publishing, reading, expiry. The memory and Redis engines must behave identically."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest

from pushup.core.engine import Clustered, Engine
from pushup.core.errors import ChannelsNotFound, NameTaken
from pushup.core.model import ChannelEnd, ChannelId, ChannelRef, Message, MessageId, ReadResult
from pushup.core.presence import Presence
from tests.engines.conftest import MakeEngine, RecordingListener, hits, published, same
from tests.unit.fakes import T0, FakeClock


async def started(make_engine: MakeEngine, listener: RecordingListener, **kw: float) -> Engine:
    engine = make_engine(**kw)
    await engine.start(listener)
    return engine


async def channel(engine: Engine, name: str | None = None, ttl: float | None = None) -> ChannelId:
    return (await engine.create_channel(ttl, name)).id


async def publish1(engine: Engine, refs: Sequence[ChannelRef], data: bytes = b"1") -> Message:
    (message,) = await engine.publish([(refs, data)])
    return message


async def read(
    engine: Engine,
    channels: Sequence[ChannelId],
    since: MessageId | None = None,
    start: float | None = None,
    end: float | None = None,
) -> ReadResult:
    return await engine.read(channels, since, start, end)


def ids(result: ReadResult) -> list[MessageId]:
    return [message.id for message, _ in result.hits]


async def alive(engine: Engine, ref: ChannelRef) -> bool:
    try:
        await engine.channel_info(ref)
    except ChannelsNotFound as exc:
        assert exc.refs == [ref]
        return False
    return True


# -- channels ----------------------------------------------------------------------------


async def test_create_returns_the_channel_info(engine: Engine) -> None:
    info = await engine.create_channel(None, None)
    assert info.name is None
    assert info.expires_at == T0 + 3600.0
    assert info.ttl_s == 3600.0
    assert info.messages == 0
    assert info.last_message_id is None
    assert 0 < info.id < 2**53

    named = await engine.create_channel(10.0, "tag:c++")
    assert named.name == "tag:c++"
    assert named.expires_at == T0 + 10.0
    assert named.ttl_s == 10.0


async def test_channel_ids_are_unique_and_grow_even_when_the_clock_stands_still(
    engine: Engine, clock: FakeClock
) -> None:
    created = [await channel(engine) for _ in range(5)]
    clock.advance(-60)
    created += [await channel(engine) for _ in range(5)]
    assert created == sorted(created)
    assert len(set(created)) == 10


async def test_channel_ids_are_not_reused_by_a_restarted_engine(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    first = await started(make_engine, listener)
    before = [await channel(first) for _ in range(100)]
    await first.close()
    clock.advance(1.0)
    second = await started(make_engine, listener)
    assert await channel(second) > max(before)


async def test_info_reflects_messages_and_the_last_message(
    engine: Engine, clock: FakeClock
) -> None:
    a = await channel(engine, "a")
    clock.advance(2)
    first = await publish1(engine, [a])
    second = await publish1(engine, ["a"])
    info = await engine.channel_info("a")
    assert info.id == a
    assert info.messages == 2
    assert info.last_message_id == second.id
    assert first.id < second.id
    assert info.expires_at == T0 + 2 + 3600.0


async def test_resolve_keeps_the_order_given_and_accepts_names(engine: Engine) -> None:
    a = await channel(engine, "a")
    b = await channel(engine)
    assert await engine.resolve([b, "a", a]) == [b, a, a]


async def test_resolve_names_every_unknown_ref_as_given(engine: Engine) -> None:
    a = await channel(engine, "a")
    with pytest.raises(ChannelsNotFound) as caught:
        await engine.resolve([a, 12345, "nope", str(a), "A"])
    # A digit string is a name here (the HTTP layer turns ids into ints first).
    assert caught.value.refs == [12345, "nope", str(a), "A"]


async def test_names_are_unique_among_live_channels(engine: Engine) -> None:
    a = await channel(engine, "a")
    with pytest.raises(NameTaken) as caught:
        await engine.create_channel(None, "a")
    assert caught.value.name == "a"
    assert await engine.resolve(["a"]) == [a]


async def test_a_name_is_free_again_after_close(engine: Engine) -> None:
    old = await channel(engine, "a")
    await engine.close_channel("a")
    new = await channel(engine, "a")
    assert new != old
    assert await engine.resolve(["a"]) == [new]
    assert not await alive(engine, old)


async def test_a_name_is_free_again_after_expiry(engine: Engine, clock: FakeClock) -> None:
    old = await channel(engine, "a", ttl=10)
    clock.advance(10.5)
    new = await channel(engine, "a")
    assert new != old
    assert await engine.resolve(["a"]) == [new]


async def test_close_forgets_the_channel_and_tells_the_listener(
    engine: Engine, listener: RecordingListener
) -> None:
    a = await channel(engine)
    b = await channel(engine)
    await publish1(engine, [a, b])
    await engine.close_channel(a)
    assert listener.closed_calls == [[a]]
    for call in (engine.channel_info(a), engine.renew_channel(a, None), engine.close_channel(a)):
        with pytest.raises(ChannelsNotFound) as caught:
            await call
        assert caught.value.refs == [a]
    with pytest.raises(ChannelsNotFound):
        await publish1(engine, [a])
    # The message stays with the other channel.
    assert len((await read(engine, [b])).hits) == 1
    assert listener.closed_calls == [[a]]


async def test_closing_an_unknown_channel_is_not_found(engine: Engine) -> None:
    with pytest.raises(ChannelsNotFound) as caught:
        await engine.close_channel("nope")
    assert caught.value.refs == ["nope"]


# -- channel expiry ----------------------------------------------------------------------


async def test_a_channel_expires_after_its_ttl_of_inactivity(
    engine: Engine, clock: FakeClock, listener: RecordingListener
) -> None:
    a = await channel(engine, ttl=10)
    clock.advance(9.5)
    assert await alive(engine, a)
    assert listener.closed_calls == []
    clock.advance(1.0)
    assert not await alive(engine, a)
    assert listener.closed_calls == [[a]]


async def test_renew_extends_by_the_channel_ttl(engine: Engine, clock: FakeClock) -> None:
    a = await channel(engine, ttl=10)
    clock.advance(8)
    info = await engine.renew_channel(a, None)
    assert info.expires_at == T0 + 18
    assert info.ttl_s == 10
    clock.advance(9.5)  # T0 + 17.5: past the first expiry
    assert await alive(engine, a)
    clock.advance(1.0)  # T0 + 18.5
    assert not await alive(engine, a)


async def test_renew_with_a_longer_ttl_keeps_it(engine: Engine, clock: FakeClock) -> None:
    a = await channel(engine, ttl=10)
    info = await engine.renew_channel(a, 100)
    assert (info.expires_at, info.ttl_s) == (T0 + 100, 100)
    clock.advance(50)
    assert (await engine.renew_channel(a, None)).expires_at == T0 + 150
    clock.advance(99.5)
    assert await alive(engine, a)
    clock.advance(1.0)
    assert not await alive(engine, a)


async def test_renew_with_a_shorter_ttl_brings_expiry_forward(
    engine: Engine, clock: FakeClock, listener: RecordingListener
) -> None:
    a = await channel(engine, ttl=100)
    clock.advance(1)
    info = await engine.renew_channel(a, 5)
    assert (info.expires_at, info.ttl_s) == (T0 + 6, 5)
    clock.advance(4.5)
    assert await alive(engine, a)
    clock.advance(1.0)
    assert not await alive(engine, a)
    assert listener.closed_calls == [[a]]


async def test_renew_with_a_shorter_ttl_is_the_ttl_from_then_on(
    engine: Engine, clock: FakeClock
) -> None:
    a = await channel(engine, ttl=100)
    await engine.renew_channel(a, 5)
    clock.advance(4)
    assert (await engine.renew_channel(a, None)).expires_at == T0 + 9
    clock.advance(3)
    await publish1(engine, [a])
    assert (await engine.channel_info(a)).expires_at == T0 + 12


async def test_publishing_extends_a_channel(engine: Engine, clock: FakeClock) -> None:
    a = await channel(engine, ttl=10)
    clock.advance(8)
    await publish1(engine, [a])
    assert (await engine.channel_info(a)).expires_at == T0 + 18
    clock.advance(9.5)
    assert await alive(engine, a)
    clock.advance(1.0)
    assert not await alive(engine, a)


@pytest.mark.parametrize("activity", ["publish", "renew"])
async def test_activity_after_a_shorter_ttl_still_expires_on_time(
    engine: Engine, clock: FakeClock, activity: str
) -> None:
    """Create with ttl 100, renew with ttl 10, be active at +5: the channel lives to +15."""
    a = await channel(engine, ttl=100)
    await engine.renew_channel(a, 10)  # expires at T0 + 10
    clock.advance(5)
    if activity == "publish":
        await publish1(engine, [a])
    else:
        await engine.renew_channel(a, None)
    assert (await engine.channel_info(a)).expires_at == T0 + 15
    clock.advance(6)  # T0 + 11: past the expiry the shorter TTL had first set
    assert await alive(engine, a)
    clock.advance(5)  # T0 + 16
    assert not await alive(engine, a), "the channel outlived its expires_at"


async def test_expiry_closes_every_due_channel_in_one_call(
    engine: Engine, clock: FakeClock, listener: RecordingListener
) -> None:
    a = await channel(engine, ttl=10)
    b = await channel(engine, ttl=20)
    c = await channel(engine, ttl=100)
    clock.advance(25)
    assert await engine.resolve([c]) == [c]
    assert len(listener.closed_calls) == 1
    assert sorted(listener.closed_calls[0]) == [a, b]


async def test_expired_channels_go_without_a_request(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    """The engine's own timer removes them; the clock is only moved, nothing is called."""
    engine = await started(make_engine, listener)
    a = await engine.create_channel(0.05, None)  # armed ~0.05 s of real time from now
    clock.advance(1.0)
    await asyncio.wait_for(listener.closed_event.wait(), timeout=5.0)
    assert listener.closed_calls == [[a.id]]
    await engine.close()


# -- publishing --------------------------------------------------------------------------


async def test_publish_stores_one_message_for_all_its_channels(
    engine: Engine, listener: RecordingListener
) -> None:
    a = await channel(engine, "a")
    b = await channel(engine)
    message = await publish1(engine, [b, "a", a], b'{"x":1}')
    assert message.channels == (a, b)
    assert message.data == b'{"x":1}'
    assert message.time == message.id / 1_000_000
    assert published(listener) == [([same(message)], frozenset())]
    for ch in (a, b):
        info = await engine.channel_info(ch)
        assert (info.messages, info.last_message_id) == (1, message.id)


async def test_a_batch_gets_ids_in_item_order(engine: Engine, listener: RecordingListener) -> None:
    a = await channel(engine)
    b = await channel(engine)
    messages = await engine.publish([([a], b"1"), ([b], b"2"), ([a, b], b"3")])
    assert [m.data for m in messages] == [b"1", b"2", b"3"]
    assert [m.channels for m in messages] == [(a,), (b,), (a, b)]
    assert messages[0].id < messages[1].id < messages[2].id
    assert published(listener) == [([same(m) for m in messages], frozenset())]


async def test_publish_is_all_or_nothing_and_names_every_unknown_channel(
    engine: Engine, clock: FakeClock, listener: RecordingListener
) -> None:
    a = await channel(engine, "a", ttl=10)
    high_water = engine.high_water()
    clock.advance(5)
    with pytest.raises(ChannelsNotFound) as caught:
        await engine.publish(
            [([a], b"1"), ([999, "a", "nope"], b"2"), ([a], b"3"), (["nope", 777], b"4")]
        )
    assert caught.value.refs == [999, "nope", 777]
    assert listener.published_calls == []
    assert (await read(engine, [a])).hits == []
    info = await engine.channel_info(a)
    assert (info.messages, info.last_message_id) == (0, None)
    # A failed publish is no activity.
    assert info.expires_at == T0 + 10
    assert engine.high_water() == high_water


async def test_publish_to_an_expired_channel_is_not_found(
    engine: Engine, clock: FakeClock, listener: RecordingListener
) -> None:
    a = await channel(engine, ttl=10)
    b = await channel(engine, ttl=100)
    clock.advance(11)
    with pytest.raises(ChannelsNotFound) as caught:
        await engine.publish([([b, a], b"1")])
    assert caught.value.refs == [a]
    assert listener.published_calls == []
    assert (await read(engine, [b])).hits == []


async def test_message_ids_grow_when_the_clock_goes_back(engine: Engine, clock: FakeClock) -> None:
    a = await channel(engine)
    clock.advance(10)
    first = await publish1(engine, [a])
    clock.advance(-5)
    second = await publish1(engine, [a])
    assert second.id > first.id
    assert second.time > first.time


async def test_high_water_is_below_every_later_id(engine: Engine, clock: FakeClock) -> None:
    a = await channel(engine)
    high_water = engine.high_water()
    first = await publish1(engine, [a])
    assert first.id > high_water
    assert engine.high_water() == first.id
    assert (await read(engine, [a])).high_water == first.id
    clock.advance(-30)
    high_water = engine.high_water()
    (second, third) = await engine.publish([([a], b"2"), ([a], b"3")])
    assert high_water < second.id < third.id
    assert engine.high_water() == third.id


async def test_a_fresh_engine_has_a_high_water_of_now(engine: Engine) -> None:
    assert engine.high_water() == int(T0 * 1_000_000)
    assert (await read(engine, [await channel(engine)])).high_water == int(T0 * 1_000_000)


# -- reading -----------------------------------------------------------------------------


async def three_seconds(engine: Engine, clock: FakeClock, a: ChannelId) -> list[Message]:
    """Messages on `a` at T0 + 1, T0 + 2 and T0 + 3."""
    messages = []
    for _ in range(3):
        clock.advance(1)
        messages.append(await publish1(engine, [a]))
    assert [m.time for m in messages] == [T0 + 1, T0 + 2, T0 + 3]
    return messages


async def test_read_returns_every_cached_message_in_id_order(
    engine: Engine, clock: FakeClock
) -> None:
    a = await channel(engine)
    messages = await three_seconds(engine, clock, a)
    result = await read(engine, [a])
    assert hits(result) == [(same(m), (a,)) for m in messages]
    assert result.gap is False
    assert result.high_water == messages[-1].id


async def test_read_since_is_exclusive(engine: Engine, clock: FakeClock) -> None:
    a = await channel(engine)
    m1, m2, m3 = await three_seconds(engine, clock, a)
    assert ids(await read(engine, [a], since=m1.id)) == [m2.id, m3.id]
    assert ids(await read(engine, [a], since=MessageId(m2.id - 1))) == [m2.id, m3.id]
    assert ids(await read(engine, [a], since=m3.id)) == []
    assert ids(await read(engine, [a], since=MessageId(0))) == [m1.id, m2.id, m3.id]


async def test_read_start_and_end_are_inclusive(engine: Engine, clock: FakeClock) -> None:
    a = await channel(engine)
    m1, m2, m3 = await three_seconds(engine, clock, a)
    assert ids(await read(engine, [a], start=T0 + 2)) == [m2.id, m3.id]
    assert ids(await read(engine, [a], end=T0 + 2)) == [m1.id, m2.id]
    assert ids(await read(engine, [a], start=T0 + 2, end=T0 + 2)) == [m2.id]
    assert ids(await read(engine, [a], start=T0 + 1.5, end=T0 + 2.5)) == [m2.id]
    assert ids(await read(engine, [a], start=T0 + 2.5, end=T0 + 2.7)) == []
    assert ids(await read(engine, [a], since=m1.id, start=T0, end=T0 + 3)) == [m2.id, m3.id]
    assert ids(await read(engine, [a], since=m2.id, start=T0, end=T0 + 2)) == []


async def test_read_bounds_are_exact_at_float_boundaries(engine: Engine, clock: FakeClock) -> None:
    """Messages one µs apart: the bounds compare a message's time, id / 1e6, exactly."""
    a = await channel(engine)
    clock.advance(0.123456)
    m1, m2, m3 = await engine.publish([([a], b"1"), ([a], b"2"), ([a], b"3")])
    assert (m2.id - m1.id, m3.id - m2.id) == (1, 1)
    up = math.nextafter(m2.time, math.inf)
    down = math.nextafter(m2.time, -math.inf)
    assert m1.time < down < m2.time < up < m3.time
    assert ids(await read(engine, [a], start=m2.time)) == [m2.id, m3.id]
    assert ids(await read(engine, [a], start=up)) == [m3.id]
    assert ids(await read(engine, [a], start=down)) == [m2.id, m3.id]
    assert ids(await read(engine, [a], end=m2.time)) == [m1.id, m2.id]
    assert ids(await read(engine, [a], end=down)) == [m1.id]
    assert ids(await read(engine, [a], end=up)) == [m1.id, m2.id]
    assert ids(await read(engine, [a], start=m2.time, end=m2.time)) == [m2.id]
    assert ids(await read(engine, [a], start=up, end=math.nextafter(m3.time, -math.inf))) == []


async def test_read_bounds_hold_for_many_float_starts(engine: Engine, clock: FakeClock) -> None:
    """Every message whose time is >= start and <= end, compared as floats."""
    a = await channel(engine)
    clock.advance(0.987654)
    messages = await engine.publish([([a], b"%d" % i) for i in range(30)])
    times = [m.time for m in messages]
    probes = [*times, *(math.nextafter(t, math.inf) for t in times)]
    probes += [math.nextafter(t, -math.inf) for t in times]
    for bound in probes:
        assert ids(await read(engine, [a], start=bound)) == [
            m.id for m in messages if m.time >= bound
        ], bound
        assert ids(await read(engine, [a], end=bound)) == [
            m.id for m in messages if m.time <= bound
        ], bound


async def test_read_returns_each_message_once_across_channels(
    engine: Engine, clock: FakeClock
) -> None:
    a = await channel(engine)
    b = await channel(engine)
    c = await channel(engine)
    clock.advance(1)
    only_a = await publish1(engine, [a])
    a_and_b = await publish1(engine, [b, a])
    all_three = await publish1(engine, [a, b, c])
    only_c = await publish1(engine, [c])
    result = await read(engine, [c, b, a])
    assert hits(result) == [
        (same(only_a), (a,)),
        (same(a_and_b), (a, b)),
        (same(all_three), (a, b, c)),
        (same(only_c), (c,)),
    ]
    # Only the subscribed channels are listed.
    result = await read(engine, [b, c])
    assert hits(result) == [(same(a_and_b), (b,)), (same(all_three), (b, c)), (same(only_c), (c,))]


# -- message expiry and gaps -------------------------------------------------------------


async def test_messages_expire_after_the_message_ttl(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    engine = await started(make_engine, listener, message_ttl_s=10)
    a = await channel(engine)
    b = await channel(engine)
    old = await publish1(engine, [a, b])
    clock.advance(5)
    new = await publish1(engine, [a])
    clock.advance(4.5)  # old is 9.5 s old
    assert ids(await read(engine, [a])) == [old.id, new.id]
    clock.advance(1.0)  # old is 10.5 s old, new 5.5 s
    result = await read(engine, [a, b])
    assert hits(result) == [(same(new), (a,))]
    assert (await engine.channel_info(a)).messages == 1
    assert (await engine.channel_info(b)).messages == 0
    # The last message ever published stays known.
    assert (await engine.channel_info(b)).last_message_id == old.id
    clock.advance(5)
    assert (await read(engine, [a])).hits == []


async def test_gap_when_messages_after_since_expired(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    engine = await started(make_engine, listener, message_ttl_s=10)
    a = await channel(engine)
    before = engine.high_water()
    clock.advance(1)
    m1 = await publish1(engine, [a])
    clock.advance(5)
    m2 = await publish1(engine, [a])
    assert (await read(engine, [a], since=before)).gap is False
    clock.advance(5.5)  # m1 expired, m2 still cached
    result = await read(engine, [a], since=before)
    assert (ids(result), result.gap) == ([m2.id], True)
    result = await read(engine, [a])
    assert (ids(result), result.gap) == ([m2.id], True)
    # A client that already had m1 missed nothing.
    result = await read(engine, [a], since=m1.id)
    assert (ids(result), result.gap) == ([m2.id], False)
    # Nor did one that only wants messages from after m1.
    result = await read(engine, [a], start=m1.time + 0.5)
    assert (ids(result), result.gap) == ([m2.id], False)


async def test_gap_when_messages_after_since_were_dropped_by_count(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    engine = await started(make_engine, listener, max_messages=2)
    a = await channel(engine)
    b = await channel(engine)
    before = engine.high_water()
    clock.advance(1)
    m1, m2, m3 = [await publish1(engine, [a, b]) for _ in range(3)]
    m4 = await publish1(engine, [b])
    assert (await engine.channel_info(a)).messages == 2
    result = await read(engine, [a], since=before)
    assert (ids(result), result.gap) == ([m2.id, m3.id], True)
    result = await read(engine, [a], since=m1.id)
    assert (ids(result), result.gap) == ([m2.id, m3.id], False)
    # On b, m1 and m2 are gone.
    result = await read(engine, [b], since=m1.id)
    assert (ids(result), result.gap) == ([m3.id, m4.id], True)
    result = await read(engine, [b], since=m2.id)
    assert (ids(result), result.gap) == ([m3.id, m4.id], False)
    # Reading both: the gap on b counts; m3 comes once.
    result = await read(engine, [a, b], since=m1.id)
    assert (ids(result), result.gap) == ([m2.id, m3.id, m4.id], True)


async def test_no_gap_without_drops(engine: Engine, clock: FakeClock) -> None:
    a = await channel(engine)
    assert (await read(engine, [a])).gap is False
    await three_seconds(engine, clock, a)
    assert (await read(engine, [a])).gap is False
    assert (await read(engine, [a], since=MessageId(1))).gap is False


async def test_a_batch_over_max_messages_reports_evicted_channels(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    engine = await started(make_engine, listener, max_messages=2)
    a = await channel(engine)
    b = await channel(engine)
    old = await publish1(engine, [a, b])
    listener.published_calls.clear()
    batch = await engine.publish([([a], b"1"), ([a, b], b"2"), ([a], b"3")])
    # a dropped the batch's first message; b dropped nothing.
    assert published(listener) == [([same(m) for m in batch], frozenset({a}))]
    result = await read(engine, [a], since=old.id)
    assert (ids(result), result.gap) == ([batch[1].id, batch[2].id], True)
    result = await read(engine, [b], since=old.id)
    assert (ids(result), result.gap) == ([batch[1].id], False)


async def test_dropping_only_older_messages_evicts_nothing(
    make_engine: MakeEngine, listener: RecordingListener
) -> None:
    engine = await started(make_engine, listener, max_messages=2)
    a = await channel(engine)
    await engine.publish([([a], b"1"), ([a], b"2")])
    listener.published_calls.clear()
    batch = await engine.publish([([a], b"3"), ([a], b"4")])
    assert published(listener) == [([same(m) for m in batch], frozenset())]
    assert ids(await read(engine, [a])) == [batch[0].id, batch[1].id]


# -- how the HTTP layer calls --------------------------------------------------------------


async def test_every_call_works_when_stepped_outside_a_task(engine: Engine) -> None:
    """The HTTP layer runs handlers by hand until their first real wait (http/eager.py)."""
    from pushup.http.eager import start_eagerly

    async def handler() -> int:
        channel = (await engine.create_channel(None, "eager")).id
        await engine.resolve(["eager"])
        await engine.publish([([channel], b"1")])
        return len((await engine.read([channel], None, None, None)).hits)

    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    # Called from a plain callback, as the protocol's data_received is.
    asyncio.get_running_loop().call_soon(
        lambda: start_eagerly(handler(), done.set_result, done.set_exception)
    )
    assert await asyncio.wait_for(done, timeout=10) == 1


# -- presence, on the engines several nodes share ------------------------------------------


async def test_presence_is_merged_over_the_nodes_that_answer(
    make_engine: MakeEngine, engine_kind: str
) -> None:
    """Each node tells its own presence; the asker adds up the connections and takes the
    union of the subs, so one subscriber on two nodes counts once."""
    first, second = RecordingListener(), RecordingListener()
    a = await started(make_engine, first)
    if not isinstance(a, Clustered):
        assert engine_kind in ("memory", "journal")
        return  # one node: the hub's own subscriptions are the whole presence
    b = await started(make_engine, second)
    room = await channel(a, "room")
    first.present[room] = Presence(2, 0, 1, ("alice",), 1)
    second.present[room] = Presence(1, 2, 0, ("alice", "bob"), 2)
    found = await until_counted(b, room, nodes=2)
    assert (found.polls, found.streams, found.anonymous) == (3, 2, 1)
    assert (found.subs, found.sub_count, found.complete) == (("alice", "bob"), 2, True)
    # A node that could not list all of its subs makes the union incomplete, and the
    # count at least its own.
    first.present[room] = Presence(0, 1, 0, ("carol",), 5000, complete=False)
    found = await a.presence(room)
    assert (found.subs, found.sub_count, found.complete) == (("alice", "bob", "carol"), 5000, False)
    await b.close()  # it leaves at once: its last beat (NATS) is heard a moment later
    async with asyncio.timeout(10):
        while (alone := await a.presence(room)).live_nodes != 1:
            await asyncio.sleep(0.02)
    assert (alone.connections, alone.counted_nodes) == (1, 1)


async def until_counted(engine: Clustered, channel_id: ChannelId, *, nodes: int) -> Presence:
    """The presence once `nodes` nodes know of each other (a newcomer's heartbeat)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        found = await engine.presence(channel_id)
        if found.counted_nodes == nodes or asyncio.get_running_loop().time() > deadline:
            assert found.counted_nodes == nodes, found
            return found
        await asyncio.sleep(0.05)


# -- closes and expiries told once, for the application's channel events -------------------


async def test_a_close_and_an_expiry_are_told_once_with_name_and_reason(
    engine: Engine, clock: FakeClock, listener: RecordingListener
) -> None:
    named = await channel(engine, "named")
    short = await channel(engine, ttl=10)
    await engine.close_channel("named")
    assert listener.ended_calls == [[ChannelEnd(named, "named", "closed", clock())]]
    clock.advance(11)
    assert not await alive(engine, short)
    assert listener.ended_calls[1:] == [[ChannelEnd(short, None, "expired", clock())]]


async def test_an_expiry_found_by_several_nodes_is_told_by_one(
    make_engine: MakeEngine, clock: FakeClock, engine_kind: str
) -> None:
    """Every node sweeps, and every call expires what is due first: the node whose
    operation removed a channel tells of it, and no other."""
    if engine_kind in ("memory", "journal"):
        return  # one node
    listeners = [RecordingListener() for _ in range(3)]
    nodes = [await started(make_engine, listener) for listener in listeners]
    doomed = [await channel(nodes[0], f"doomed-{n}", ttl=10) for n in range(6)]
    kept = await channel(nodes[0], "kept", ttl=1000)
    for node in nodes:  # every node knows every channel before they are due
        assert await node.resolve(doomed) == doomed
    clock.advance(11)
    # Each node at once, as a poll on each would, while their sweeps run too.
    await asyncio.gather(*(node.resolve([kept]) for node in nodes))
    async with asyncio.timeout(10):
        for listener in listeners:
            while sorted(c for call in listener.closed_calls for c in call) != doomed:
                await asyncio.sleep(0.02)
    told = [end for listener in listeners for call in listener.ended_calls for end in call]
    assert sorted(end.id for end in told) == doomed
    assert {(end.reason, end.name) for end in told} == {
        ("expired", f"doomed-{n}") for n in range(6)
    }
