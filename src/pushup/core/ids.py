"""Ids that only grow, across the whole server life and across restarts."""

from __future__ import annotations

import time
from collections.abc import Callable


class IdClock:
    """Hands out strictly increasing ids drawn from the wall clock in microseconds.

    An id is `max(previous + 1, now in µs)`: unique and ordered like publication time,
    and a restarted server starts above every id it issued before without keeping any
    state, because a restart takes far longer than the few µs a burst runs ahead.
    Microseconds since 1970 stay below 2**53 until the year 2255.
    """

    __slots__ = ("_clock", "last")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Every id issued from now on is above `last`.
        self.last = int(clock() * 1_000_000)

    def next(self) -> int:
        now = int(self._clock() * 1_000_000)
        self.last = now if now > self.last else self.last + 1
        return self.last

    def advance_to(self, floor: int) -> None:
        """Never issue an id at or below `floor` (ids recovered from elsewhere)."""
        self.last = max(self.last, floor)


def id_time(message_id: int) -> float:
    """The publication time a message id stands for, in epoch seconds."""
    return message_id / 1_000_000
