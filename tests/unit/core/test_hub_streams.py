"""Stream subscriptions in the hub: they stay parked across deliveries, share each
publication's outcome with polls of their shape, and end only on a close or `end`."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from pushup.core.hub import Hub, PollQuery
from pushup.core.model import ChannelId, ChannelRef, Message, MessageId, PollOutcome
from pushup.core.waiters import Subscription
from pushup.engines.memory import MemoryEngine
from tests.unit.fakes import T0, FakeClock, RecordingReceiver

LONG = 60.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def hub(clock: FakeClock) -> AsyncIterator[Hub]:
    engine = MemoryEngine(message_ttl_s=300.0, max_messages=3, channel_ttl_s=3600.0, clock=clock)
    hub = Hub(engine, clock=clock)
    await hub.start()
    yield hub
    await hub.close()


async def channel(hub: Hub) -> ChannelId:
    return (await hub.create_channel(None, None)).id


async def publish(hub: Hub, refs: Sequence[ChannelRef], data: Any = 1) -> Message:
    (message,) = await hub.publish([(refs, orjson.dumps(data))])
    return message


async def stream(
    hub: Hub,
    channels: Sequence[ChannelRef],
    receiver: RecordingReceiver,
    *,
    since: MessageId | None = None,
    start: float | None = None,
    end: float | None = None,
) -> tuple[PollOutcome, Subscription | None]:
    # A short timeout, to show that it plays no part.
    return await hub.open_stream(PollQuery(tuple(channels), 0.01, since, start, end), receiver)


def ids(outcome: object) -> list[MessageId]:
    assert isinstance(outcome, PollOutcome), outcome
    return [message.id for message, _ in outcome.hits]


async def test_a_stream_gets_the_cache_then_stays_parked_for_every_publication(hub: Hub) -> None:
    a = await channel(hub)
    cached = await publish(hub, [a])
    receiver = RecordingReceiver()
    initial, sub = await stream(hub, [a], receiver)
    assert ids(initial) == [cached.id]
    assert sub is not None and sub.parked and sub.stream
    assert hub.subscribers(a) == 1
    first = await publish(hub, [a])
    second = await publish(hub, [a])
    assert [ids(outcome) for outcome in receiver.outcomes] == [[first.id], [second.id]]
    assert sub.parked and sub.after == second.id
    assert hub.subscribers(a) == 1
    hub.cancel(sub)
    assert hub.subscribers(a) == 0


async def test_a_stream_resumes_after_its_cursor(hub: Hub) -> None:
    a = await channel(hub)
    seen = await publish(hub, [a])
    missed = await publish(hub, [a])
    initial, _ = await stream(hub, [a], RecordingReceiver(), since=seen.id)
    assert ids(initial) == [missed.id]
    assert initial.cursor == missed.id


async def test_streams_and_polls_of_one_shape_share_the_outcome(hub: Hub) -> None:
    a = await channel(hub)
    streamed, polled = RecordingReceiver(), RecordingReceiver()
    await stream(hub, [a], streamed)
    await hub.poll(PollQuery((a,), LONG), polled)
    await publish(hub, [a])
    assert streamed.outcomes[0] is polled.outcomes[0]
    assert hub.subscribers(a) == 1  # the poll was answered, the stream stays


async def test_a_batch_the_cache_could_not_hold_is_no_gap_for_a_live_stream(hub: Hub) -> None:
    a = await channel(hub)
    streamed, polled = RecordingReceiver(), RecordingReceiver()
    await stream(hub, [a], streamed)
    await hub.poll(PollQuery((a,), LONG), polled)
    batch = await hub.publish([([a], b"1")] * 5)  # more than max_messages
    (for_stream,) = streamed.outcomes
    (for_poll,) = polled.outcomes
    assert isinstance(for_stream, PollOutcome) and isinstance(for_poll, PollOutcome)
    assert ids(for_stream) == ids(for_poll) == [message.id for message in batch]
    assert for_poll.gap and not for_stream.gap


async def test_the_opening_read_reports_a_gap(hub: Hub) -> None:
    a = await channel(hub)
    for n in range(5):
        await publish(hub, [a], n)
    initial, sub = await stream(hub, [a], RecordingReceiver())
    assert initial.gap and len(initial.hits) == 3
    assert sub is not None


async def test_a_closed_channel_ends_the_stream(hub: Hub) -> None:
    a, b = await channel(hub), await channel(hub)
    receiver = RecordingReceiver()
    _, sub = await stream(hub, [a, b], receiver)
    await hub.close_channel(b)
    (outcome,) = receiver.outcomes
    assert outcome.status == 410
    assert orjson.loads(outcome.body)["channels"] == [b]
    assert sub is not None and not sub.parked
    assert hub.subscribers(a) == 0


async def test_an_end_already_past_does_not_park(hub: Hub, clock: FakeClock) -> None:
    a = await channel(hub)
    message = await publish(hub, [a])
    clock.advance(10)
    initial, sub = await stream(hub, [a], RecordingReceiver(), end=message.time)
    assert ids(initial) == [message.id]
    assert sub is None
    assert hub.subscribers(a) == 0


async def test_the_end_unparks_the_stream_while_a_poll_times_out_beside_it(
    hub: Hub, clock: FakeClock
) -> None:
    a = await channel(hub)
    forever, bounded, polled = RecordingReceiver(), RecordingReceiver(), RecordingReceiver()
    _, endless = await stream(hub, [a], forever)
    _, ending = await stream(hub, [a], bounded, end=clock.now + 0.05)
    await hub.poll(PollQuery((a,), 0.02), polled)
    assert ids(await polled.next_outcome()) == []
    assert ids(await bounded.next_outcome()) == []
    assert ending is not None and not ending.parked
    # The stream with no end stays, and no timer is armed for it.
    assert endless is not None and endless.parked and not forever.outcomes
    assert hub.waiters.next_deadline() == math.inf
    message = await publish(hub, [a])
    assert ids(forever.outcomes[0]) == [message.id]


async def test_a_resync_delivers_to_a_stream_and_keeps_it(hub: Hub) -> None:
    a = await channel(hub)
    receiver = RecordingReceiver()
    initial, sub = await stream(hub, [a], receiver)
    assert sub is not None
    message = await publish(hub, [a])
    # As if that publication's event had been lost: the resync reads it from the store.
    receiver.outcomes.clear()
    sub.after = initial.cursor
    await hub.resync()
    assert [ids(outcome) for outcome in receiver.outcomes] == [[message.id]]
    assert sub.parked and sub.after == message.id
