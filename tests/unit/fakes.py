"""Test doubles shared by the unit tests: a hand-driven clock, recording listeners."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pushup.core.model import ChannelEnd, ChannelId, Message, Outcome

# A realistic epoch time: ids drawn from it stay far below 2**53.
T0 = 1_700_000_000.0


class FakeClock:
    """A wall clock that only moves when told to; `script` values are returned first."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.script: list[float] = []
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        if self.script:
            return self.script.pop(0)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, now: float) -> None:
        self.now = now


class RecordingListener:
    """An engine listener that keeps every call it receives."""

    def __init__(self) -> None:
        self.published_calls: list[tuple[list[Message], frozenset[ChannelId]]] = []
        self.closed_calls: list[list[ChannelId]] = []
        self.closed_event = asyncio.Event()
        self.ended_calls: list[list[ChannelEnd]] = []

    def published(self, messages: Sequence[Message], evicted: frozenset[ChannelId]) -> None:
        self.published_calls.append((list(messages), evicted))

    def closed(self, channel_ids: Sequence[ChannelId]) -> None:
        self.closed_calls.append(list(channel_ids))
        self.closed_event.set()

    def ended(self, ends: Sequence[ChannelEnd]) -> None:
        self.ended_calls.append(list(ends))


class RecordingReceiver:
    """A receiver that keeps the outcomes delivered to it."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._delivered = asyncio.Event()

    def deliver(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self._delivered.set()

    async def next_outcome(self, timeout: float = 5.0) -> Outcome:
        """The first outcome delivered, waiting for it at most `timeout` seconds."""
        await asyncio.wait_for(self._delivered.wait(), timeout)
        return self.outcomes[0]
