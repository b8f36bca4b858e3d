"""IdClock: ids only grow, whatever the wall clock does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pushup.core.ids import IdClock, id_time
from pushup.core.model import MAX_ID
from tests.unit.fakes import T0, FakeClock


def test_ids_follow_the_clock_in_microseconds() -> None:
    clock = FakeClock(T0)
    ids = IdClock(clock)
    clock.set(T0 + 1.5)
    assert ids.next() == 1_700_000_001_500_000
    clock.set(T0 + 2)
    assert ids.next() == 1_700_000_002_000_000


def test_ids_grow_by_one_while_the_clock_stands_still() -> None:
    clock = FakeClock(T0)
    ids = IdClock(clock)
    issued = [ids.next() for _ in range(5)]
    first = int(T0 * 1_000_000) + 1
    assert issued == [first, first + 1, first + 2, first + 3, first + 4]


def test_ids_grow_when_the_clock_goes_back() -> None:
    clock = FakeClock(T0 + 10)
    ids = IdClock(clock)
    before = ids.next()
    clock.set(T0)  # an NTP step backwards by 10 s
    after = [ids.next() for _ in range(3)]
    assert after == [before + 1, before + 2, before + 3]
    # Once the clock catches up and passes the last id, ids follow it again.
    clock.set(T0 + 20)
    assert ids.next() == int((T0 + 20) * 1_000_000)


def test_last_is_below_every_later_id() -> None:
    clock = FakeClock(T0)
    ids = IdClock(clock)
    last = ids.last
    assert last == int(T0 * 1_000_000)
    first = ids.next()
    assert first > last
    assert ids.last == first
    clock.set(T0 - 100)
    assert ids.next() > first


def test_a_new_clock_started_later_issues_ids_above_the_old_ones() -> None:
    """A restart needs no state: the new clock starts at the current time."""
    clock = FakeClock(T0)
    old = IdClock(clock)
    issued = [old.next() for _ in range(1000)]  # a burst runs 1 ms ahead of the clock
    clock.advance(1.0)  # a restart takes far longer than that
    assert IdClock(clock).next() > max(issued)


def test_advance_to_skips_ids_at_or_below_the_floor() -> None:
    clock = FakeClock(T0)
    ids = IdClock(clock)
    floor = int(T0 * 1_000_000) + 5_000_000
    ids.advance_to(floor)
    assert ids.last == floor
    assert ids.next() == floor + 1


def test_advance_to_never_moves_back() -> None:
    clock = FakeClock(T0)
    ids = IdClock(clock)
    issued = ids.next()
    ids.advance_to(issued - 100)
    assert ids.last == issued
    assert ids.next() == issued + 1


def test_ids_stay_below_two_to_the_53() -> None:
    clock = FakeClock(T0)
    assert IdClock(clock).next() < MAX_ID


def test_id_time_is_the_id_in_microseconds() -> None:
    assert id_time(1_700_000_001_500_000) == 1_700_000_001.5


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("tick"), st.floats(min_value=-5, max_value=5)),
            st.tuples(st.just("floor"), st.integers(min_value=-10_000_000, max_value=10_000_000)),
        ),
        max_size=50,
    )
)
def test_ids_strictly_increase_whatever_the_clock_does(
    steps: list[tuple[str, float]],
) -> None:
    clock = FakeClock(T0)
    ids = IdClock(clock)
    previous = ids.last
    for kind, value in steps:
        if kind == "tick":
            clock.advance(value)
        else:
            floor = int(T0 * 1_000_000) + int(value)
            ids.advance_to(floor)
            assert ids.last >= floor
            previous = max(previous, floor)
        issued = ids.next()
        assert issued > previous
        assert issued >= int(clock() * 1_000_000)
        assert ids.last == issued
        previous = issued
