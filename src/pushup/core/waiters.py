"""Parked subscriptions, indexed by channel and by deadline."""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Iterator
from operator import attrgetter
from typing import Protocol

from sortedcontainers import SortedKeyList

from pushup.core.model import ChannelId, Outcome


class Receiver(Protocol):
    """Where a parked subscription's answer goes (an HTTP connection, a stream...)."""

    def deliver(self, outcome: Outcome) -> None: ...


class Subscription:
    """One parked poll. Kept small: a server holds tens of thousands of them."""

    __slots__ = (
        "after",
        "by_deadline",
        "by_start",
        "channels",
        "end",
        "last",
        "limit",
        "parked",
        "receiver",
        "shape",
        "start",
        "stream",
        "who",
    )

    def __init__(
        self,
        receiver: Receiver,
        channels: tuple[ChannelId, ...],
        start: float,
        end: float,
        deadline: float,
        seq: int,
        after: int = 0,
        stream: bool = False,
        last: int = 0,
        limit: int = 0,
        who: str | None = None,
    ) -> None:
        self.receiver = receiver
        self.channels = channels  # sorted, distinct
        self.start = start  # -inf when the poll gave none
        self.end = end  # +inf when the poll gave none
        # Sort keys, unique thanks to `seq`, so removal never scans equal keys.
        self.by_start = (start, seq)
        self.by_deadline = (deadline, seq)
        # Subscriptions of one shape get byte-identical answers, built once per fan-out.
        self.shape = (channels, start, end, last, limit)
        # History controls of a poll (0: off), as in `PollQuery`.
        self.last = last
        self.limit = limit
        self.parked = True
        # The store's high water when the poll read it and found nothing: messages up
        # to here were already looked at. An engine that hears of publications late
        # (over a network) may announce one the read already covered, and after a
        # lost connection the hub re-reads the store from here.
        self.after = after
        # A stream (SSE, WebSocket) stays parked after each delivery, its `after`
        # moved to what it was sent; a poll is unparked by its answer.
        self.stream = stream
        # Who subscribes (the `sub` claim of its token; None: anonymous), for presence.
        self.who = who


_by_start = attrgetter("by_start")
_by_deadline = attrgetter("by_deadline")


class Waiters:
    """Every parked subscription, in two kinds of sorted structure keyed by time.

    Per channel, subscriptions are ordered by the start of their time range, so a
    publication wakes exactly the prefix whose range has begun (the paper's B-tree of
    subscriptions). One global list orders them by deadline, so timeouts cost
    O(log n) each and need a single timer rather than one per request.
    """

    def __init__(self) -> None:
        self._by_channel: dict[ChannelId, SortedKeyList] = {}
        self._by_deadline: SortedKeyList = SortedKeyList(key=_by_deadline)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._by_deadline)

    def count(self, channel_id: ChannelId) -> int:
        waiting = self._by_channel.get(channel_id)
        return 0 if waiting is None else len(waiting)

    def busiest(self, n: int, leave_out: Collection[ChannelId]) -> list[tuple[ChannelId, int]]:
        """The `n` channels with the most parked subscriptions, most first."""
        counts = (
            (channel_id, len(waiting))
            for channel_id, waiting in self._by_channel.items()
            if channel_id not in leave_out
        )
        return heapq.nlargest(n, counts, key=lambda pair: pair[1])

    def park(
        self,
        receiver: Receiver,
        channels: tuple[ChannelId, ...],
        start: float,
        end: float,
        deadline: float,
        after: int = 0,
        stream: bool = False,
        last: int = 0,
        limit: int = 0,
        who: str | None = None,
    ) -> Subscription:
        self._seq += 1
        sub = Subscription(
            receiver, channels, start, end, deadline, self._seq, after, stream, last, limit, who
        )
        for channel_id in channels:
            waiting = self._by_channel.get(channel_id)
            if waiting is None:
                waiting = self._by_channel[channel_id] = SortedKeyList(key=_by_start)
            waiting.add(sub)
        self._by_deadline.add(sub)
        return sub

    def started(self, channel_id: ChannelId, time: float) -> Iterator[Subscription]:
        """Subscriptions on a channel whose time range has begun at `time`."""
        waiting = self._by_channel.get(channel_id)
        if waiting is None:
            return iter(())
        return waiting.irange_key(max_key=(time, math.inf))  # type: ignore[no-any-return]

    def on_channel(self, channel_id: ChannelId) -> list[Subscription]:
        waiting = self._by_channel.get(channel_id)
        return [] if waiting is None else list(waiting)

    def all(self) -> list[Subscription]:
        """Every parked subscription, soonest deadline first."""
        return list(self._by_deadline)

    def next_deadline(self) -> float | None:
        return self._by_deadline[0].by_deadline[0] if self._by_deadline else None

    def due(self, now: float) -> list[Subscription]:
        """Subscriptions whose deadline has come (they stay parked until removed)."""
        return list(self._by_deadline.irange_key(max_key=(now, math.inf)))

    def remove(self, subs: Iterable[Subscription]) -> None:
        """Unpark subscriptions; a large share of a structure is rebuilt in one pass."""
        gone = {sub for sub in subs if sub.parked}
        if not gone:
            return
        for sub in gone:
            sub.parked = False
        per_channel: dict[ChannelId, list[Subscription]] = {}
        for sub in gone:
            for channel_id in sub.channels:
                per_channel.setdefault(channel_id, []).append(sub)
        for channel_id, leaving in per_channel.items():
            waiting = self._by_channel[channel_id]
            if len(leaving) == len(waiting):
                del self._by_channel[channel_id]
            else:
                self._remove_from(waiting, leaving, gone)
        self._remove_from(self._by_deadline, gone, gone)

    @staticmethod
    def _remove_from(
        structure: SortedKeyList, leaving: Iterable[Subscription], gone: set[Subscription]
    ) -> None:
        leaving = list(leaving)
        if len(leaving) * 8 > len(structure):
            # Sorted input makes the rebuild a linear pass (timsort on sorted runs).
            kept = [sub for sub in structure if sub not in gone]
            structure.clear()
            structure.update(kept)
        else:
            for sub in leaving:
                structure.remove(sub)
