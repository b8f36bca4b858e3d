"""The hub over every engine, including one that hears of changes late or loses them
(as a node of a cluster does): parked polls still get each message once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from pushup.core.engine import Engine, EngineListener, Publication
from pushup.core.hub import Hub, PollQuery
from pushup.core.model import (
    SERVER_RETENTION,
    ChannelEnd,
    ChannelId,
    ChannelInfo,
    ChannelPage,
    ChannelRef,
    Message,
    MessageId,
    Outcome,
    PollOutcome,
    ReadResult,
    Retention,
)
from pushup.core.waiters import Subscription
from tests.engines.conftest import MakeEngine
from tests.unit.fakes import FakeClock, RecordingReceiver

LONG = 60.0


class LateEngine:
    """Wraps a real engine and holds its events back until `deliver()` (or throws
    them away with `lose()`), like a node whose news of other nodes comes late."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.held: list[tuple[str, Any]] = []
        self.told_through = MessageId(0)
        self._listener: EngineListener | None = None

    async def start(self, listener: EngineListener) -> None:
        self._listener = listener
        await self.inner.start(self)
        self.told_through = self.inner.high_water()

    def published(self, messages: Sequence[Message], evicted: frozenset[ChannelId]) -> None:
        self.held.append(("published", (list(messages), evicted)))

    def closed(self, channel_ids: Sequence[ChannelId]) -> None:
        self.held.append(("closed", list(channel_ids)))

    def ended(self, ends: Sequence[ChannelEnd]) -> None:
        assert self._listener is not None
        self._listener.ended(ends)  # not held: only the application hears of these

    async def resync(self) -> None:
        assert self._listener is not None
        await self._listener.resync()

    def deliver(self) -> None:
        assert self._listener is not None
        held, self.held = self.held, []
        for kind, args in held:
            if kind == "published":
                messages, evicted = args
                self.told_through = max(self.told_through, messages[-1].id)
                self._listener.published(messages, evicted)
            else:
                self._listener.closed(args)

    async def lose(self) -> None:
        """The held events are lost; the engine asks for a resync, as after a
        reconnect, and knows the store's state from then on."""
        assert self._listener is not None
        self.held.clear()
        await self._listener.resync()
        self.told_through = self.inner.high_water()

    def high_water(self) -> MessageId:
        # Only what the listener was told: the engine contract.
        return self.told_through

    async def close(self) -> None:
        await self.inner.close()

    async def create_channel(
        self,
        ttl_s: float | None,
        name: str | None,
        retention: Retention = SERVER_RETENTION,
        *,
        owner: str | None = None,
    ) -> ChannelInfo:
        return await self.inner.create_channel(ttl_s, name, retention, owner=owner)

    async def list_channels(
        self, prefix: str | None, after: ChannelRef | None, limit: int
    ) -> ChannelPage:
        return await self.inner.list_channels(prefix, after, limit)

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        return await self.inner.renew_channel(ref, ttl_s)

    async def close_channel(self, ref: ChannelRef) -> None:
        await self.inner.close_channel(ref)

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        return await self.inner.channel_info(ref)

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        return await self.inner.resolve(refs)

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        return await self.inner.publish(publications)

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        return await self.inner.read(channel_ids, since, start, end)


@pytest.fixture
async def hub(make_engine: MakeEngine, clock: FakeClock) -> AsyncIterator[Hub]:
    hub = Hub(make_engine(), clock=clock)
    await hub.start()
    yield hub
    await hub.close()


@pytest.fixture
async def late(make_engine: MakeEngine, clock: FakeClock) -> AsyncIterator[tuple[Hub, LateEngine]]:
    engine = LateEngine(make_engine())
    hub = Hub(engine, clock=clock)
    await hub.start()
    yield hub, engine
    await hub.close()


async def poll(
    hub: Hub,
    channels: Sequence[ChannelRef],
    receiver: RecordingReceiver | None = None,
    *,
    timeout: float = LONG,
    since: MessageId | None = None,
) -> Outcome | Subscription:
    return await hub.poll(
        PollQuery(tuple(channels), timeout, since), receiver or RecordingReceiver()
    )


async def publish(hub: Hub, refs: Sequence[ChannelRef], data: bytes = b"1") -> Message:
    (message,) = await hub.publish([(refs, data)])
    return message


def ids(outcome: Outcome) -> list[int]:
    assert isinstance(outcome, PollOutcome), outcome
    return [message.id for message, _ in outcome.hits]


async def test_a_parked_poll_is_woken_by_a_publication(hub: Hub) -> None:
    a = (await hub.create_channel(None, None)).id
    receiver = RecordingReceiver()
    assert isinstance(await poll(hub, [a], receiver), Subscription)
    message = await publish(hub, [a])
    # Every engine has told the hub when publish returns.
    (outcome,) = receiver.outcomes
    assert ids(outcome) == [message.id]
    assert outcome.cursor == message.id  # type: ignore[attr-defined]


async def test_a_late_announcement_of_what_a_poll_read_is_not_delivered_twice(
    late: tuple[Hub, LateEngine],
) -> None:
    hub, engine = late
    a = (await engine.create_channel(None, None)).id
    first = await publish(hub, [a])
    # The poll reads it from the store before the hub hears of it...
    assert ids(await poll(hub, [a])) == [first.id]  # type: ignore[arg-type]
    receiver = RecordingReceiver()
    sub = await poll(hub, [a], receiver, since=first.id)
    assert isinstance(sub, Subscription)
    # ...and the re-poll must not get it again when the news arrives.
    engine.deliver()
    assert receiver.outcomes == []
    second = await publish(hub, [a])
    engine.deliver()
    (outcome,) = receiver.outcomes
    assert ids(outcome) == [second.id]


async def test_a_timeout_cursor_covers_what_the_poll_read(late: tuple[Hub, LateEngine]) -> None:
    hub, engine = late
    a = (await engine.create_channel(None, None)).id
    first = await publish(hub, [a])  # not yet heard: the hub's high water lags
    receiver = RecordingReceiver()
    await poll(hub, [a], receiver, since=first.id, timeout=0.05)
    outcome = await receiver.next_outcome()
    assert isinstance(outcome, PollOutcome)
    assert outcome.hits == []
    assert outcome.cursor >= first.id, "a re-poll would get the message again"


async def test_a_resync_delivers_what_lost_events_carried(late: tuple[Hub, LateEngine]) -> None:
    hub, engine = late
    a = (await engine.create_channel(None, None)).id
    b = (await engine.create_channel(None, None)).id
    on_a, on_b, on_both = RecordingReceiver(), RecordingReceiver(), RecordingReceiver()
    for receiver, channels in ((on_a, [a]), (on_b, [b]), (on_both, [a, b])):
        assert isinstance(await poll(hub, channels, receiver), Subscription)
    message = await publish(hub, [a])
    await engine.lose()
    for receiver in (on_a, on_both):
        (outcome,) = receiver.outcomes
        assert ids(outcome) == [message.id]
    assert on_b.outcomes == []
    assert (hub.subscribers(a), hub.subscribers(b)) == (0, 1)
    # The one still parked gets later messages, and nothing twice.
    later = await publish(hub, [b, a])
    engine.deliver()
    (outcome,) = on_b.outcomes
    assert ids(outcome) == [later.id]


async def test_a_resync_answers_410_for_channels_closed_meanwhile(
    late: tuple[Hub, LateEngine],
) -> None:
    hub, engine = late
    a = (await engine.create_channel(None, None)).id
    b = (await engine.create_channel(None, None)).id
    receiver = RecordingReceiver()
    await poll(hub, [a, b], receiver)
    await engine.close_channel(b)
    await engine.lose()
    (outcome,) = receiver.outcomes
    assert outcome.status == 410
    assert b"%d" % b in outcome.body
    assert hub.subscribers(a) == 0


async def test_a_poll_reading_across_a_resync_reads_again(
    late: tuple[Hub, LateEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll whose read spans the start of a resync is not in the resync's list: it
    must read again rather than park on what lost events may have changed."""
    hub, engine = late
    a = (await engine.create_channel(None, None)).id
    reads = 0
    inner_read = engine.read

    async def read(*args: Any) -> ReadResult:
        nonlocal reads
        reads += 1
        result = await inner_read(*args)
        if reads == 1:
            await publish(hub, [a])  # its event will be lost
            await engine.lose()
        return result

    monkeypatch.setattr(engine, "read", read)
    outcome = await poll(hub, [a])
    assert reads == 2
    assert len(ids(outcome)) == 1  # type: ignore[arg-type]
