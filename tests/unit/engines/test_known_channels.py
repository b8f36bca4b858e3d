"""KnownChannels: what a node may vouch for without asking Redis, and everything that
must make it stop vouching (a close, an expiry near, a close that overtook a resolve, a
lost event stream)."""

from __future__ import annotations

from pushup.core.model import ChannelId, Message, MessageId
from pushup.engines.redis.known import EXPIRY_MARGIN_S, KnownChannels
from tests.unit.fakes import T0, FakeClock

A, B = ChannelId(11), ChannelId(22)


def known_with(clock: FakeClock, *, newest: int = 100, event: int = 5) -> KnownChannels:
    """`A` as "a" and by id, `B` by id, learned as of `event`, nothing heard after it."""
    known = KnownChannels(clock)
    known.learn(
        ["a", A, B],
        [(A, newest, T0 + 60), (A, newest, T0 + 60), (B, 0, T0 + 60)],
        as_of_event=event,
        heard_event=event,
        high_water=newest,
    )
    return known


def message(id_: int, *channels: ChannelId) -> Message:
    return Message(MessageId(id_), id_ / 1e6, channels, b"1")


def test_refs_resolve_and_quiet_channels_are_answered_locally() -> None:
    known = known_with(FakeClock(T0))
    assert known.lookup(["a", B]) == [A, B]
    assert known.lookup(["a", "unknown"]) is None
    assert known.quiet_since([A, B], 100)
    assert not known.quiet_since([A], 99), "a message on A after the cursor"
    assert not known.quiet_since([A, ChannelId(33)], 100), "a channel never learned"


def test_a_heard_publication_makes_older_cursors_ask_redis() -> None:
    known = known_with(FakeClock(T0))
    known.heard_published([message(150, B), message(160, A, B)])
    assert not known.quiet_since([B], 150)
    assert known.quiet_since([A, B], 160)


def test_a_close_forgets_the_channel_and_every_name_of_it() -> None:
    known = known_with(FakeClock(T0))
    known.heard_closed([A], event=6)
    assert known.lookup(["a"]) is None
    assert known.lookup([A]) is None
    assert not known.quiet_since([A], 10**9)
    assert known.lookup([B]) == [B]


def test_a_resolve_that_a_heard_close_overtook_teaches_nothing() -> None:
    """Redis answered "live" before the close, but the node heard the close first."""
    known = KnownChannels(FakeClock(T0))
    known.heard_closed([A], event=6)
    known.learn(["a"], [(A, 0, T0 + 60)], as_of_event=5, heard_event=6, high_water=0)
    assert known.lookup(["a"]) is None


def test_a_name_that_moved_to_a_new_channel_survives_the_old_ones_close() -> None:
    clock = FakeClock(T0)
    known = known_with(clock)
    new = ChannelId(44)
    known.learn(["a"], [(new, 0, T0 + 60)], as_of_event=7, heard_event=7, high_water=100)
    known.heard_closed([A], event=6)  # the old channel's close, heard late
    assert known.lookup(["a"]) == [new]
    assert known.lookup([A]) is None


def test_events_heard_before_the_answer_count_as_news_on_its_channels() -> None:
    """A publication heard between Redis answering and the answer arriving updated
    nothing (the channel was not known yet): the high water stands in for it."""
    known = KnownChannels(FakeClock(T0))
    known.learn(["a"], [(A, 100, T0 + 60)], as_of_event=5, heard_event=6, high_water=180)
    assert not known.quiet_since([A], 150)
    assert known.quiet_since([A], 180)


def test_a_channel_near_its_expiry_is_asked_of_redis() -> None:
    clock = FakeClock(T0)
    known = known_with(clock)
    clock.advance(60 - EXPIRY_MARGIN_S - 0.1)
    assert known.lookup(["a"]) == [A]
    clock.advance(0.2)
    assert known.lookup(["a"]) is None
    assert not known.quiet_since([A], 100)
    known.renewed(A, T0 + 120)
    assert known.lookup(["a"]) == [A]


def test_losing_the_event_stream_forgets_everything() -> None:
    known = known_with(FakeClock(T0))
    generation = known.generation
    known.clear()
    assert known.generation != generation
    assert len(known) == 0
    assert known.lookup([B]) is None


def test_closes_too_old_to_remember_refuse_older_answers() -> None:
    known = KnownChannels(FakeClock(T0))
    for n in range(5000):
        known.heard_closed([ChannelId(1000 + n)], event=10 + n)
    known.learn([A], [(A, 0, T0 + 60)], as_of_event=100, heard_event=6000, high_water=0)
    assert known.lookup([A]) is None
    known.learn([A], [(A, 0, T0 + 60)], as_of_event=6000, heard_event=6000, high_water=0)
    assert known.lookup([A]) == [A]
