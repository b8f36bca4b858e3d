"""Waiters: parked subscriptions indexed by channel (start time) and by deadline."""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pushup.core.model import ChannelId
from pushup.core.waiters import Subscription, Waiters
from tests.unit.fakes import RecordingReceiver

A, B, C = ChannelId(1), ChannelId(2), ChannelId(3)
INF = math.inf


def park(
    waiters: Waiters,
    channels: tuple[ChannelId, ...],
    *,
    start: float = -INF,
    end: float = INF,
    deadline: float = 100.0,
) -> Subscription:
    return waiters.park(RecordingReceiver(), channels, start, end, deadline)


def test_park_indexes_a_subscription_under_each_of_its_channels() -> None:
    waiters = Waiters()
    receiver = RecordingReceiver()
    sub = waiters.park(receiver, (A, C), 5.0, 9.0, 42.0)
    assert sub.receiver is receiver
    assert sub.channels == (A, C)
    assert (sub.start, sub.end) == (5.0, 9.0)
    assert sub.shape == ((A, C), 5.0, 9.0, 0, 0)
    assert len(waiters) == 1
    assert (waiters.count(A), waiters.count(B), waiters.count(C)) == (1, 0, 1)
    assert waiters.on_channel(A) == [sub]
    assert waiters.on_channel(B) == []
    assert waiters.next_deadline() == 42.0


def test_an_empty_structure() -> None:
    waiters = Waiters()
    assert len(waiters) == 0
    assert waiters.count(A) == 0
    assert waiters.next_deadline() is None
    assert waiters.due(INF) == []
    assert list(waiters.started(A, INF)) == []
    waiters.remove([])
    assert len(waiters) == 0


def test_started_is_the_prefix_whose_range_has_begun_in_start_order() -> None:
    waiters = Waiters()
    late = park(waiters, (A,), start=30.0)
    open_ = park(waiters, (A,))
    mid = park(waiters, (A,), start=20.0)
    mid_too = park(waiters, (A,), start=20.0)
    other = park(waiters, (B,), start=0.0)
    assert list(waiters.started(A, 10.0)) == [open_]
    # Inclusive: a range starting exactly at the message time has begun.
    assert list(waiters.started(A, 20.0)) == [open_, mid, mid_too]
    assert list(waiters.started(A, math.nextafter(20.0, -INF))) == [open_]
    assert list(waiters.started(A, 30.0)) == [open_, mid, mid_too, late]
    assert list(waiters.started(B, 30.0)) == [other]
    assert list(waiters.started(C, 30.0)) == []


def test_started_ignores_the_end_of_the_range() -> None:
    """Ends are checked by whoever builds the answer; `started` only looks at starts."""
    waiters = Waiters()
    ended = park(waiters, (A,), start=0.0, end=1.0)
    assert list(waiters.started(A, 5.0)) == [ended]


def test_due_lists_subscriptions_by_deadline_up_to_now_inclusive() -> None:
    waiters = Waiters()
    third = park(waiters, (A,), deadline=30.0)
    first = park(waiters, (B,), deadline=10.0)
    second = park(waiters, (A, B), deadline=20.0)
    second_too = park(waiters, (C,), deadline=20.0)
    assert waiters.due(9.99) == []
    assert waiters.due(10.0) == [first]
    assert waiters.due(25.0) == [first, second, second_too]
    assert waiters.due(INF) == [first, second, second_too, third]
    # Due subscriptions stay parked until removed.
    assert len(waiters) == 4
    assert waiters.next_deadline() == 10.0


def test_next_deadline_follows_removals() -> None:
    waiters = Waiters()
    later = park(waiters, (A,), deadline=30.0)
    sooner = park(waiters, (A,), deadline=10.0)
    assert waiters.next_deadline() == 10.0
    waiters.remove([sooner])
    assert waiters.next_deadline() == 30.0
    waiters.remove([later])
    assert waiters.next_deadline() is None


def test_remove_one_of_many_takes_it_off_every_index() -> None:
    """One of 20 on a channel: the one-by-one path."""
    waiters = Waiters()
    subs = [park(waiters, (A, B), start=float(i), deadline=float(i)) for i in range(20)]
    gone = subs[7]
    waiters.remove([gone])
    kept = subs[:7] + subs[8:]
    assert len(waiters) == 19
    assert waiters.on_channel(A) == kept
    assert waiters.on_channel(B) == kept
    assert list(waiters.started(A, INF)) == kept
    assert waiters.due(INF) == kept


def test_remove_most_rebuilds_and_keeps_the_rest_in_order() -> None:
    """Half of a channel leaving: the rebuild path."""
    waiters = Waiters()
    subs = [park(waiters, (A,), start=float(i % 7), deadline=float(i % 5)) for i in range(40)]
    gone = subs[::2]
    waiters.remove(gone)
    kept = subs[1::2]
    assert len(waiters) == 20
    assert waiters.count(A) == 20
    assert waiters.on_channel(A) == sorted(kept, key=lambda s: s.by_start)
    assert waiters.due(INF) == sorted(kept, key=lambda s: s.by_deadline)


def test_remove_every_subscription_of_a_channel_drops_the_channel() -> None:
    waiters = Waiters()
    on_a = [park(waiters, (A,)) for _ in range(3)]
    on_a_and_b = park(waiters, (A, B))
    on_b = park(waiters, (B,))
    waiters.remove([*on_a, on_a_and_b])
    assert waiters.count(A) == 0
    assert waiters.on_channel(A) == []
    assert list(waiters.started(A, INF)) == []
    assert waiters.on_channel(B) == [on_b]
    assert waiters.due(INF) == [on_b]


def test_remove_multi_channel_subscriptions_from_channels_of_different_sizes() -> None:
    """One removal hits a crowded channel (one by one) and a sparse one (rebuild)."""
    waiters = Waiters()
    crowded = [park(waiters, (A,)) for _ in range(30)]
    spanning = [park(waiters, (A, B, C)) for _ in range(2)]
    sparse = park(waiters, (C,))
    waiters.remove(spanning)
    assert waiters.on_channel(A) == crowded
    assert waiters.count(B) == 0
    assert waiters.on_channel(C) == [sparse]
    assert len(waiters) == 31


def test_remove_accepts_a_generator_and_repeats() -> None:
    waiters = Waiters()
    subs = [park(waiters, (A,)) for _ in range(4)]
    waiters.remove(sub for sub in [subs[0], subs[0], subs[1]])
    assert waiters.on_channel(A) == subs[2:]
    assert len(waiters) == 2


# -- a naive model -----------------------------------------------------------------------

CHANNELS = st.lists(st.sampled_from([A, B, C]), min_size=1, max_size=3, unique=True).map(
    lambda cs: tuple(sorted(cs))
)
TIMES = st.sampled_from([-INF, 0.0, 1.0, 2.0, 2.5, 3.0, 10.0])
DEADLINES = st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0, 8.0])


class WaitersModel(RuleBasedStateMachine):
    """Waiters against a plain list of the parked subscriptions, in parking order."""

    @initialize()
    def setup(self) -> None:
        self.waiters = Waiters()
        self.parked: list[Subscription] = []
        # Parking order, which breaks ties between equal starts or deadlines.
        self.order: dict[Subscription, int] = {}
        self.deadline: dict[Subscription, float] = {}

    def _park(self, channels: tuple[ChannelId, ...], start: float, deadline: float) -> None:
        sub = self.waiters.park(RecordingReceiver(), channels, start, INF, deadline)
        self.order[sub] = len(self.order)
        self.deadline[sub] = deadline
        self.parked.append(sub)

    @rule(channels=CHANNELS, start=TIMES, deadline=DEADLINES)
    def park(self, channels: tuple[ChannelId, ...], start: float, deadline: float) -> None:
        self._park(channels, start, deadline)

    @rule(count=st.integers(min_value=1, max_value=12))
    def park_many(self, count: int) -> None:
        for i in range(count):
            self._park((A,) if i % 3 else (A, B), float(i % 4), float(i))

    @precondition(lambda self: self.parked)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        gone = data.draw(
            st.lists(st.sampled_from(self.parked), min_size=1, max_size=len(self.parked))
        )
        self.waiters.remove(gone)
        self.parked = [sub for sub in self.parked if sub not in gone]

    @rule(now=DEADLINES)
    def remove_due(self, now: float) -> None:
        due = self.waiters.due(now)
        assert due == self._sorted(
            [sub for sub in self.parked if self.deadline[sub] <= now], by_start=False
        )
        self.waiters.remove(due)
        self.parked = [sub for sub in self.parked if sub not in due]

    @rule(channel=st.sampled_from([A, B, C]), time=TIMES)
    def started(self, channel: ChannelId, time: float) -> None:
        expected = [sub for sub in self.parked if channel in sub.channels and sub.start <= time]
        assert list(self.waiters.started(channel, time)) == self._sorted(expected, by_start=True)

    @invariant()
    def indexes_match(self) -> None:
        assert len(self.waiters) == len(self.parked)
        for channel in (A, B, C):
            on_channel = [sub for sub in self.parked if channel in sub.channels]
            assert self.waiters.count(channel) == len(on_channel)
            assert self.waiters.on_channel(channel) == self._sorted(on_channel, by_start=True)
        deadlines = [self.deadline[sub] for sub in self.parked]
        assert self.waiters.next_deadline() == (min(deadlines) if deadlines else None)
        assert self.waiters.due(INF) == self._sorted(self.parked, by_start=False)

    def _sorted(self, subs: list[Subscription], *, by_start: bool) -> list[Subscription]:
        if by_start:
            return sorted(subs, key=lambda sub: (sub.start, self.order[sub]))
        return sorted(subs, key=lambda sub: (self.deadline[sub], self.order[sub]))


TestWaitersModel = WaitersModel.TestCase
TestWaitersModel.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
