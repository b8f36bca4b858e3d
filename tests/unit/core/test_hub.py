"""The hub over the memory engine: immediate answers, parking, fan-out, close, timeouts."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from pushup.core.errors import ChannelsNotFound
from pushup.core.hub import Hub, PollQuery
from pushup.core.model import ChannelId, ChannelRef, Message, MessageId, Outcome, PollOutcome
from pushup.core.waiters import Subscription
from pushup.engines.memory import MemoryEngine
from tests.unit.fakes import T0, FakeClock, RecordingReceiver

LONG = 60.0  # a timeout no test waits for


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def engine(clock: FakeClock) -> MemoryEngine:
    return MemoryEngine(message_ttl_s=300.0, max_messages=100, channel_ttl_s=3600.0, clock=clock)


@pytest.fixture
async def hub(engine: MemoryEngine, clock: FakeClock) -> AsyncIterator[Hub]:
    hub = Hub(engine, clock=clock)
    await hub.start()
    yield hub
    await hub.close()


async def channel(hub: Hub, name: str | None = None, ttl: float | None = None) -> ChannelId:
    return (await hub.create_channel(ttl, name)).id


async def publish(hub: Hub, refs: Sequence[ChannelRef], data: Any = 1) -> Message:
    (message,) = await hub.publish([(refs, orjson.dumps(data))])
    return message


async def poll(
    hub: Hub,
    channels: Sequence[ChannelRef],
    receiver: RecordingReceiver | None = None,
    *,
    timeout: float = LONG,
    since: MessageId | None = None,
    start: float | None = None,
    end: float | None = None,
) -> Outcome | Subscription:
    query = PollQuery(tuple(channels), timeout, since, start, end)
    return await hub.poll(query, receiver or RecordingReceiver())


async def answer(hub: Hub, channels: Sequence[ChannelRef], **kw: Any) -> PollOutcome:
    """A poll that must be answered at once."""
    outcome = await poll(hub, channels, **kw)
    assert isinstance(outcome, PollOutcome), outcome
    return outcome


async def parked(
    hub: Hub, channels: Sequence[ChannelRef], receiver: RecordingReceiver, **kw: Any
) -> Subscription:
    """A poll that must park."""
    sub = await poll(hub, channels, receiver, **kw)
    assert isinstance(sub, Subscription), sub
    return sub


def body(outcome: Outcome) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(outcome.body)
    return decoded


def message_ids(outcome: PollOutcome) -> list[MessageId]:
    return [message.id for message, _ in outcome.hits]


# -- answered at once ----------------------------------------------------------------------


async def test_cached_messages_are_answered_at_once(hub: Hub, clock: FakeClock) -> None:
    a = await channel(hub)
    b = await channel(hub, "b")
    clock.advance(1)
    m1 = await publish(hub, [a], {"n": 1})
    m2 = await publish(hub, [a, b], [2])
    receiver = RecordingReceiver()
    outcome = await answer(hub, [a, "b"], receiver=receiver)
    assert outcome.status == 200
    assert outcome.hits == [(m1, (a,)), (m2, (a, b))]
    assert outcome.cursor == m2.id
    assert body(outcome) == {
        "messages": [
            {"id": str(m1.id), "time": m1.time, "channels": [a], "data": {"n": 1}},
            {"id": str(m2.id), "time": m2.time, "channels": [a, b], "data": [2]},
        ],
        "cursor": str(m2.id),
        "gap": False,
    }
    assert receiver.outcomes == []
    assert hub.subscribers(a) == 0


async def test_since_skips_what_the_client_has(hub: Hub) -> None:
    a = await channel(hub)
    m1 = await publish(hub, [a])
    m2 = await publish(hub, [a])
    outcome = await answer(hub, [a], since=m1.id)
    assert (message_ids(outcome), outcome.cursor) == ([m2.id], m2.id)


async def test_a_gap_is_answered_at_once_even_when_empty(
    hub: Hub, engine: MemoryEngine, clock: FakeClock
) -> None:
    a = await channel(hub)
    before = engine.high_water()
    m1 = await publish(hub, [a])
    clock.advance(301)  # past the message TTL
    outcome = await answer(hub, [a], since=before)
    assert outcome.hits == []
    assert body(outcome) == {"messages": [], "cursor": str(m1.id), "gap": True}


async def test_timeout_zero_answers_at_once_with_the_high_water(
    hub: Hub, engine: MemoryEngine
) -> None:
    a = await channel(hub)
    b = await channel(hub)
    m1 = await publish(hub, [a])
    other = await publish(hub, [b])
    outcome = await answer(hub, [a], since=m1.id, timeout=0)
    assert body(outcome) == {"messages": [], "cursor": str(other.id), "gap": False}
    assert outcome.cursor == engine.high_water()
    assert hub.subscribers(a) == 0


async def test_an_end_already_past_never_parks(
    hub: Hub, engine: MemoryEngine, clock: FakeClock
) -> None:
    a = await channel(hub)
    outcome = await answer(hub, [a], end=clock.now - 1)
    assert (outcome.hits, outcome.cursor) == ([], engine.high_water())
    outcome = await answer(hub, [a], end=clock.now)
    assert outcome.hits == []
    assert hub.subscribers(a) == 0


async def test_unknown_channels_are_not_found(hub: Hub) -> None:
    a = await channel(hub)
    with pytest.raises(ChannelsNotFound) as caught:
        await poll(hub, [a, 424242, "nope"])
    assert caught.value.refs == [424242, "nope"]
    assert hub.subscribers(a) == 0


async def test_a_channel_expiring_during_a_poll_is_not_found(hub: Hub, clock: FakeClock) -> None:
    """The channel is live when the poll resolves it and expired when it reads: 404."""
    a = await channel(hub, ttl=10)
    # The engine's next clock reading (resolve) sees it live, every later one expired.
    clock.script = [T0 + 9.999]
    clock.set(T0 + 10.001)
    with pytest.raises(ChannelsNotFound) as caught:
        await poll(hub, [a])
    assert caught.value.refs == [a]


# -- parking and waking --------------------------------------------------------------------


async def test_a_poll_with_nothing_to_answer_parks(hub: Hub) -> None:
    a = await channel(hub)
    b = await channel(hub)
    receiver = RecordingReceiver()
    sub = await parked(hub, [b, a], receiver)
    assert sub.receiver is receiver
    assert sub.channels == (a, b)
    assert (sub.start, sub.end) == (-math.inf, math.inf)
    assert (hub.subscribers(a), hub.subscribers(b)) == (1, 1)
    assert (await hub.count_subscribers(a)).total == 1
    assert receiver.outcomes == []


async def test_a_poll_past_every_cached_message_parks(hub: Hub) -> None:
    a = await channel(hub)
    m1 = await publish(hub, [a])
    await parked(hub, [a], RecordingReceiver(), since=m1.id)
    assert hub.subscribers(a) == 1


async def test_publish_wakes_only_matching_subscriptions(hub: Hub, clock: FakeClock) -> None:
    a = await channel(hub)
    b = await channel(hub)
    on_a, on_b, on_a_later, on_a_ended = (RecordingReceiver() for _ in range(4))
    await parked(hub, [a], on_a)
    await parked(hub, [b], on_b)
    await parked(hub, [a], on_a_later, start=T0 + 100)
    await parked(hub, [a], on_a_ended, end=T0 + 0.5)
    clock.advance(1)
    m1 = await publish(hub, [a], "one")
    # Deliveries happen inside publish: nothing to wait for.
    (outcome,) = on_a.outcomes
    assert isinstance(outcome, PollOutcome)
    assert outcome.hits == [(m1, (a,))]
    assert body(outcome) == {
        "messages": [{"id": str(m1.id), "time": m1.time, "channels": [a], "data": "one"}],
        "cursor": str(m1.id),
        "gap": False,
    }
    assert (on_b.outcomes, on_a_later.outcomes, on_a_ended.outcomes) == ([], [], [])
    assert (hub.subscribers(a), hub.subscribers(b)) == (2, 1)

    # Once the start has come, a message wakes the later one.
    clock.set(T0 + 100)
    m2 = await publish(hub, [a], "two")
    (later,) = on_a_later.outcomes
    assert isinstance(later, PollOutcome)
    assert later.hits == [(m2, (a,))]
    assert (on_b.outcomes, on_a_ended.outcomes) == ([], [])


async def test_start_bounds_are_inclusive_for_parked_subscriptions(
    hub: Hub, clock: FakeClock
) -> None:
    a = await channel(hub)
    clock.advance(5)
    exact, just_after = RecordingReceiver(), RecordingReceiver()
    (m1,) = await hub.publish([([a], b"0")])
    start = m1.time + 10
    await parked(hub, [a], exact, since=m1.id, start=start, end=start)
    await parked(hub, [a], just_after, since=m1.id, start=math.nextafter(start, math.inf))
    clock.set(start)
    m2 = await publish(hub, [a])
    assert m2.time == start
    assert [message_ids(o) for o in exact.outcomes] == [[m2.id]]  # type: ignore[arg-type]
    assert just_after.outcomes == []


async def test_subscriptions_of_one_shape_share_one_outcome(hub: Hub) -> None:
    a = await channel(hub)
    b = await channel(hub)
    same = [RecordingReceiver() for _ in range(5)]
    for i, receiver in enumerate(same):
        await parked(hub, [a, b] if i % 2 else [b, a], receiver)
    only_a = RecordingReceiver()
    await parked(hub, [a], only_a)
    await publish(hub, [a])
    first = same[0].outcomes[0]
    assert all(len(r.outcomes) == 1 and r.outcomes[0] is first for r in same)
    assert only_a.outcomes[0] is not first
    assert body(only_a.outcomes[0])["messages"][0]["channels"] == [a]
    assert body(first)["messages"][0]["channels"] == [a]


async def test_one_message_to_several_subscribed_channels_comes_once(hub: Hub) -> None:
    a = await channel(hub)
    b = await channel(hub)
    c = await channel(hub)
    receiver = RecordingReceiver()
    await parked(hub, [a, b], receiver)
    message = await publish(hub, [a, b, c])
    (outcome,) = receiver.outcomes
    assert isinstance(outcome, PollOutcome)
    assert outcome.hits == [(message, (a, b))]
    assert body(outcome)["messages"] == [
        {"id": str(message.id), "time": message.time, "channels": [a, b], "data": 1}
    ]
    assert (hub.subscribers(a), hub.subscribers(b)) == (0, 0)


async def test_a_batch_arrives_together(hub: Hub) -> None:
    a = await channel(hub)
    b = await channel(hub)
    c = await channel(hub)
    receiver = RecordingReceiver()
    await parked(hub, [a, b], receiver)
    batch = await hub.publish([([a], b"1"), ([c], b"2"), ([b, c], b"3")])
    (outcome,) = receiver.outcomes
    assert isinstance(outcome, PollOutcome)
    assert outcome.hits == [(batch[0], (a,)), (batch[2], (b,))]
    assert outcome.cursor == batch[2].id


async def test_a_parked_subscriber_gets_a_whole_batch_even_beyond_max_messages(
    clock: FakeClock,
) -> None:
    engine = MemoryEngine(message_ttl_s=300.0, max_messages=2, channel_ttl_s=3600.0, clock=clock)
    hub = Hub(engine, clock=clock)
    await hub.start()
    a = await channel(hub)
    receiver = RecordingReceiver()
    await parked(hub, [a], receiver)
    batch = await engine.publish([([a], b"%d" % i) for i in range(3)])
    (outcome,) = receiver.outcomes
    assert isinstance(outcome, PollOutcome)
    assert message_ids(outcome) == [m.id for m in batch]
    await hub.close()


async def test_a_woken_subscription_is_answered_once(hub: Hub) -> None:
    a = await channel(hub)
    receiver = RecordingReceiver()
    await parked(hub, [a], receiver)
    await publish(hub, [a])
    await publish(hub, [a])
    assert len(receiver.outcomes) == 1
    assert hub.subscribers(a) == 0


async def test_names_and_ids_of_one_channel_count_once(hub: Hub) -> None:
    a = await channel(hub, "a")
    receiver = RecordingReceiver()
    sub = await parked(hub, [a, "a"], receiver)
    assert sub.channels == (a,)
    assert hub.subscribers(a) == 1
    message = await publish(hub, ["a"])
    (outcome,) = receiver.outcomes
    assert isinstance(outcome, PollOutcome)
    assert outcome.hits == [(message, (a,))]


async def test_a_cursor_from_the_future_reads_as_now(hub: Hub, engine: MemoryEngine) -> None:
    """A cursor this server never issued must not hide later messages."""
    a = await channel(hub)
    receiver = RecordingReceiver()
    future = MessageId(engine.high_water() + 10**9)
    await parked(hub, [a], receiver, since=future)
    message = await publish(hub, [a])
    (outcome,) = receiver.outcomes
    assert isinstance(outcome, PollOutcome)
    assert message_ids(outcome) == [message.id]
    # And a poll with it afterwards still finds what followed.
    later = await publish(hub, [a])
    assert message_ids(await answer(hub, [a], since=message.id)) == [later.id]


# -- close and cancel ----------------------------------------------------------------------


async def test_closing_a_channel_answers_410_with_the_closed_subscribed_channels(
    hub: Hub,
) -> None:
    a = await channel(hub)
    b = await channel(hub)
    c = await channel(hub)
    on_abc, on_b, on_a = RecordingReceiver(), RecordingReceiver(), RecordingReceiver()
    await parked(hub, [a, b, c], on_abc)
    await parked(hub, [b], on_b)
    await parked(hub, [a], on_a)
    await hub.close_channel(b)
    for receiver in (on_abc, on_b):
        (outcome,) = receiver.outcomes
        assert outcome.status == 410
        assert body(outcome) == {
            "error": "channel_closed",
            "detail": body(outcome)["detail"],
            "channels": [b],
        }
        assert isinstance(body(outcome)["detail"], str)
    assert on_a.outcomes == []
    assert (hub.subscribers(a), hub.subscribers(b), hub.subscribers(c)) == (1, 0, 0)
    # The closed subscription is gone from its other channels too.
    await publish(hub, [c])
    assert len(on_abc.outcomes) == 1


async def test_expiring_channels_answer_410(hub: Hub, clock: FakeClock) -> None:
    a = await channel(hub, ttl=10)
    b = await channel(hub, ttl=10)
    c = await channel(hub, ttl=100)
    receiver = RecordingReceiver()
    await parked(hub, [a, b, c], receiver)
    clock.advance(11)
    await hub.resolve([c])  # any call lets the engine notice
    (outcome,) = receiver.outcomes
    assert outcome.status == 410
    assert body(outcome)["channels"] == sorted([a, b])
    assert hub.subscribers(c) == 0


async def test_cancel_forgets_the_subscription(hub: Hub) -> None:
    a = await channel(hub)
    b = await channel(hub)
    gone, kept = RecordingReceiver(), RecordingReceiver()
    sub = await parked(hub, [a, b], gone)
    await parked(hub, [a], kept)
    hub.cancel(sub)
    assert (hub.subscribers(a), hub.subscribers(b)) == (1, 0)
    await publish(hub, [a, b])
    assert gone.outcomes == []
    assert len(kept.outcomes) == 1


async def test_cancel_after_the_answer_leaves_the_others_parked(hub: Hub) -> None:
    """A receiver that goes away right after its answer must not unpark anyone else."""
    a = await channel(hub)
    b = await channel(hub)
    answered, waiting = RecordingReceiver(), RecordingReceiver()
    sub = await parked(hub, [a], answered)
    first = await publish(hub, [a])
    assert len(answered.outcomes) == 1
    await parked(hub, [a, b], waiting, since=first.id)
    hub.cancel(sub)
    assert (hub.subscribers(a), hub.subscribers(b)) == (1, 1)
    message = await publish(hub, [a])
    (outcome,) = waiting.outcomes
    assert message_ids(outcome) == [message.id]  # type: ignore[arg-type]


# -- timeouts ------------------------------------------------------------------------------


async def test_a_timeout_answers_empty_with_the_high_water(hub: Hub, engine: MemoryEngine) -> None:
    a = await channel(hub)
    b = await channel(hub)
    receiver = RecordingReceiver()
    await parked(hub, [a], receiver, timeout=0.05)
    other = await publish(hub, [b])
    outcome = await receiver.next_outcome()
    assert isinstance(outcome, PollOutcome)
    assert body(outcome) == {"messages": [], "cursor": str(other.id), "gap": False}
    assert outcome.cursor == engine.high_water()
    assert hub.subscribers(a) == 0
    assert len(receiver.outcomes) == 1


async def test_timeouts_fire_in_deadline_order_and_spare_the_rest(hub: Hub) -> None:
    a = await channel(hub)
    slow, fast = RecordingReceiver(), RecordingReceiver()
    await parked(hub, [a], slow, timeout=LONG)
    await parked(hub, [a], fast, timeout=0.05)
    await fast.next_outcome()
    assert slow.outcomes == []
    assert hub.subscribers(a) == 1
    message = await publish(hub, [a])
    (outcome,) = slow.outcomes
    assert message_ids(outcome) == [message.id]  # type: ignore[arg-type]


async def test_an_end_passing_answers_a_parked_poll(
    hub: Hub, engine: MemoryEngine, clock: FakeClock
) -> None:
    a = await channel(hub)
    receiver = RecordingReceiver()
    await parked(hub, [a], receiver, timeout=LONG, end=clock.now + 0.05)
    outcome = await receiver.next_outcome()
    assert isinstance(outcome, PollOutcome)
    assert (outcome.hits, outcome.cursor) == ([], engine.high_water())
    assert hub.subscribers(a) == 0


async def test_many_timeouts_are_each_answered_once(hub: Hub) -> None:
    a = await channel(hub)
    receivers = [RecordingReceiver() for _ in range(3)]
    for receiver in receivers:
        await parked(hub, [a], receiver, timeout=0.05)
    await asyncio.gather(*(receiver.next_outcome() for receiver in receivers))
    assert all(len(r.outcomes) == 1 for r in receivers)
    assert hub.subscribers(a) == 0


async def test_later_timeouts_fire_after_earlier_ones(hub: Hub) -> None:
    """One timer serves every deadline: after firing it is armed for the next one."""
    a = await channel(hub)
    receivers = [RecordingReceiver() for _ in range(3)]
    for i, receiver in enumerate(receivers):
        await parked(hub, [a], receiver, timeout=0.05 * (i + 1))
    await asyncio.gather(*(receiver.next_outcome() for receiver in receivers))
    assert all(len(r.outcomes) == 1 for r in receivers)
    assert hub.subscribers(a) == 0
