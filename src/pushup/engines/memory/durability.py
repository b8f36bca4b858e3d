"""When a change of the embedded engine counts: the one seam between the engine and
its journal.

Without a data directory (`Volatile`) a change counts as soon as it is made: the
listener hears of it at once, reads see it, and no caller waits. With one
(`Journaled`) every change is recorded in the journal and counts once its group is
committed: a call returns only then, reads stop at the last committed message, and
the listener hears of publications and closes only after their commit (so parked
polls are answered after it too). Subscribers never see what a crash could take back.

The engine calls the same methods either way; `Volatile`'s are no-ops, or tell the
listener at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from typing import Protocol

from pushup.core.engine import EngineListener
from pushup.core.ids import IdClock
from pushup.core.model import ChannelId, Message
from pushup.engines.memory.journal import Journal
from pushup.engines.memory.snapshot import EMPTY, ChannelState, Snapshot


class Durability(Protocol):
    """What the engine tells of its changes, and what it waits for before answering."""

    def open(self, listener: EngineListener) -> Snapshot:
        """What an earlier run kept, to restore; changes from now on are told to
        `listener`. Raises EngineUnavailable when the data directory is unusable."""

    async def close(self) -> None: ...

    def check(self) -> None:
        """Raise EngineUnavailable, before a change is made, if it cannot be kept."""

    def channel(self, channel: ChannelState) -> None:
        """Keep this channel as it is at the commit (deleted, if closed by then)."""

    def forget(self, message_id: int) -> None:
        """No channel holds this message any more."""

    def published(
        self,
        targets: Sequence[Sequence[ChannelState]],
        messages: list[Message],
        evicted: set[ChannelId],
    ) -> None:
        """Keep a publication (and its channels); tell the listener of it, at once or
        once committed. `evicted`: channels that already dropped some of it."""

    def closed(self, channel_ids: list[ChannelId]) -> None:
        """Channels a publisher closed: told at once or once committed. (An expiry is
        told at once either way: the clock decides it, and a restart finds it too.)"""

    def committed(self) -> asyncio.Future[None] | None:
        """What the caller of a change waits for before answering; None: nothing.
        (So a change without a journal never suspends, and the HTTP server runs it
        without a Task.)"""

    def told(self) -> int:
        """Every message at or below this id has been told to the listener."""

    def read_bound(self) -> int | None:
        """The highest id a read may return; None for no bound (nothing is hidden)."""


class Volatile:
    """`--data-dir none`: nothing is kept; a change counts as soon as it is made."""

    __slots__ = ("_ids", "_listener")

    def __init__(self, message_ids: IdClock) -> None:
        self._ids = message_ids
        self._listener: EngineListener | None = None

    def open(self, listener: EngineListener) -> Snapshot:
        self._listener = listener
        return EMPTY

    async def close(self) -> None:
        pass

    def check(self) -> None:
        pass

    def channel(self, channel: ChannelState) -> None:
        pass

    def forget(self, message_id: int) -> None:
        pass

    def published(
        self,
        targets: Sequence[Sequence[ChannelState]],
        messages: list[Message],
        evicted: set[ChannelId],
    ) -> None:
        if self._listener is not None:
            self._listener.published(messages, frozenset(evicted))

    def closed(self, channel_ids: list[ChannelId]) -> None:
        if self._listener is not None:
            self._listener.closed(channel_ids)

    def committed(self) -> None:
        return None

    def told(self) -> int:
        return self._ids.last

    def read_bound(self) -> None:
        return None


class _News:
    """What the listener hears once one journal group is committed."""

    __slots__ = ("closed", "evicted", "group", "messages")

    def __init__(self, group: object) -> None:
        self.group = group
        self.messages: list[Message] = []
        self.evicted: set[ChannelId] = set()
        self.closed: list[ChannelId] = []


class Journaled:
    """With a data directory: every change goes to the journal, and counts once its
    group is committed."""

    __slots__ = ("_announced", "_journal", "_listener", "_news")

    def __init__(self, journal: Journal, message_ids: IdClock) -> None:
        self._journal = journal
        self._listener: EngineListener | None = None
        # Every message at or below this is committed and told to the listener.
        self._announced = message_ids.last
        # The news of the group being committed, told once it is.
        self._news: _News | None = None

    def open(self, listener: EngineListener) -> Snapshot:
        self._listener = listener
        snapshot = self._journal.open()
        # What an earlier run issued was committed, or never will be.
        self._announced = max(self._announced, snapshot.last_message_id)
        return snapshot

    async def close(self) -> None:
        await self._journal.close()

    def check(self) -> None:
        self._journal.check()

    def channel(self, channel: ChannelState) -> None:
        self._journal.channel(channel)

    def forget(self, message_id: int) -> None:
        self._journal.forget(message_id)

    def published(
        self,
        targets: Sequence[Sequence[ChannelState]],
        messages: list[Message],
        evicted: set[ChannelId],
    ) -> None:
        journal = self._journal
        for channels in targets:
            for channel in channels:
                journal.channel(channel)
        journal.messages(messages)
        news = self._pending_news()
        news.messages += messages
        news.evicted |= evicted

    def closed(self, channel_ids: list[ChannelId]) -> None:
        self._pending_news().closed += channel_ids

    def committed(self) -> asyncio.Future[None]:
        return self._journal.durable()

    def told(self) -> int:
        return self._announced

    def read_bound(self) -> int:
        return self._announced

    def _pending_news(self) -> _News:
        """The news of the journal group now being collected."""
        journal = self._journal
        group = journal.group()
        news = self._news
        if news is None or news.group is not group:
            news = self._news = _News(group)
            journal.after_commit(partial(self._announce, news))
        return news

    def _announce(self, news: _News) -> None:
        """Tell the listener what one committed group changed, in id order, before
        any of its callers resumes (never, if the server stops with it unwritten)."""
        if news is self._news:
            self._news = None
        if news.messages:
            self._announced = news.messages[-1].id
            if self._listener is not None:
                self._listener.published(news.messages, frozenset(news.evicted))
        if news.closed and self._listener is not None:
            self._listener.closed(news.closed)
