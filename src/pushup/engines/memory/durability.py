"""When a change of the embedded engine counts: the one seam between the engine and
its journal.

Without a data directory (`Volatile`) a change counts as soon as it is made: a
publication is cached and the listener hears of it at once, and no caller waits. With
one (`Journaled`) every change is recorded in the journal and counts once its group is
committed: a call returns only then, a publication is cached (read, counted) only
then, and the listener hears of publications and closes only after their commit (so
parked polls are answered after it too). Subscribers never see what a crash could take
back, and a group that cannot be written leaves nothing in the cache.

The engine calls the same methods either way; `Volatile`'s are no-ops, or act at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Generic, Protocol, TypeVar

from pushup.core.engine import EngineListener
from pushup.core.idempotency import Answer
from pushup.core.ids import IdClock
from pushup.core.model import ChannelId, Message
from pushup.engines.memory.answers import Answers
from pushup.engines.memory.journal import Journal
from pushup.engines.memory.snapshot import EMPTY, ChannelState, Snapshot

# The engine's live channels.
C = TypeVar("C", bound=ChannelState)
# Caches messages that count, one per list of channels, at a time (the engine's);
# gives the channels that dropped one of them.
Store = Callable[[list[list[C]], list[Message], float], set[ChannelId]]


def _no_cache(targets: list[list[C]], messages: list[Message], now: float) -> set[ChannelId]:
    raise RuntimeError("the engine has not set its store yet")


class Durability(Protocol[C]):
    """What the engine tells of its changes, and what it waits for before answering."""

    # Set by the engine once its cache exists (the cache itself tells changes here).
    store: Store[C]
    # First answers to idempotency keys, looked up by the engine.
    answers: Answers

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

    def published(self, targets: list[list[C]], messages: list[Message], now: float) -> None:
        """Keep a publication (and its channels, kept alive from `now`); cache it and
        tell the listener of it, at once or once committed (never, if it cannot be)."""

    def answered(self, answer: Answer) -> None:
        """Keep the first answer to an idempotency key with the publication just made,
        in `answers` at once (a retry meanwhile finds it `unconfirmed`), and dropped if
        the publication is never stored."""

    def unconfirmed(self, digest: str) -> bool:
        """Whether the answer to this key waits for its publication's commit (a retry
        waits for it too, before answering)."""

    def closed(self, channel_ids: list[ChannelId]) -> None:
        """Channels a publisher closed: told at once or once committed. (An expiry is
        told at once either way: the clock decides it, and a restart finds it too.)"""

    def committed(self) -> asyncio.Future[None] | None:
        """What the caller of a change waits for before answering; None: nothing.
        (So a change without a journal never suspends, and the HTTP server runs it
        without a Task.)"""

    def told(self) -> int:
        """Every message at or below this id has been told to the listener."""


class Volatile(Generic[C]):
    """`--data-dir none`: nothing is kept; a change counts as soon as it is made."""

    __slots__ = ("_ids", "_listener", "answers", "store")

    def __init__(self, message_ids: IdClock) -> None:
        self._ids = message_ids
        self.store: Store[C] = _no_cache
        self.answers = Answers()
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

    def published(self, targets: list[list[C]], messages: list[Message], now: float) -> None:
        evicted = self.store(targets, messages, now)
        if self._listener is not None:
            self._listener.published(messages, frozenset(evicted))

    def answered(self, answer: Answer) -> None:
        self.answers.add(answer)

    def unconfirmed(self, digest: str) -> bool:
        return False

    def closed(self, channel_ids: list[ChannelId]) -> None:
        if self._listener is not None:
            self._listener.closed(channel_ids)

    def committed(self) -> None:
        return None

    def told(self) -> int:
        return self._ids.last


class _News(Generic[C]):
    """What is cached, and what the listener hears, once one journal group is
    committed."""

    __slots__ = ("answers", "closed", "group", "messages", "now", "targets")

    def __init__(self, group: object) -> None:
        self.group = group
        self.targets: list[list[C]] = []
        self.messages: list[Message] = []
        # When the last of them was published.
        self.now = 0.0
        self.closed: list[ChannelId] = []
        self.answers: list[Answer] = []


class Journaled(Generic[C]):
    """With a data directory: every change goes to the journal, and counts once its
    group is committed."""

    __slots__ = ("_announced", "_journal", "_listener", "_news", "_unconfirmed", "answers", "store")

    def __init__(self, journal: Journal, message_ids: IdClock) -> None:
        self._journal = journal
        self.store: Store[C] = _no_cache
        self.answers = Answers()
        # Keys whose answer is in a group not yet committed.
        self._unconfirmed: set[str] = set()
        self._listener: EngineListener | None = None
        # Every message at or below this is committed and told to the listener.
        self._announced = message_ids.last
        # The news of the group being committed, told once it is.
        self._news: _News[C] | None = None

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

    def published(self, targets: list[list[C]], messages: list[Message], now: float) -> None:
        journal = self._journal
        for channels in targets:
            for channel in channels:
                # Written as the group's commit will leave it (the cache takes the
                # messages only then).
                channel.expires_at = now + channel.ttl_s
                journal.channel(channel)
        journal.messages(messages)
        news = self._pending_news()
        news.targets += targets
        news.messages += messages
        news.now = now

    def answered(self, answer: Answer) -> None:
        # Written in the publication's own group: committed with it, or not at all.
        self._journal.answer(answer)
        self._pending_news().answers.append(answer)
        self.answers.add(answer)
        self._unconfirmed.add(answer.digest)

    def unconfirmed(self, digest: str) -> bool:
        return digest in self._unconfirmed

    def closed(self, channel_ids: list[ChannelId]) -> None:
        self._pending_news().closed += channel_ids

    def committed(self) -> asyncio.Future[None]:
        return self._journal.durable()

    def told(self) -> int:
        return self._announced

    def _live(
        self, targets: list[list[C]], messages: list[Message]
    ) -> tuple[list[list[C]], list[Message]]:
        """Leave out channels closed while their publications were being committed;
        a message left with none is forgotten (compaction deletes it)."""
        live_targets: list[list[C]] = []
        live_messages: list[Message] = []
        for channels, message in zip(targets, messages, strict=True):
            live = [channel for channel in channels if not channel.closed]
            if live:
                live_targets.append(live)
                live_messages.append(message)
            else:
                self._journal.forget(message.id)
        return live_targets, live_messages

    def _pending_news(self) -> _News[C]:
        """The news of the journal group now being collected."""
        journal = self._journal
        group = journal.group()
        news = self._news
        if news is None or news.group is not group:
            news = self._news = _News(group)
            journal.after_commit(partial(self._announce, news))
        return news

    def _announce(self, news: _News[C], committed: bool) -> None:
        """Cache what one committed group published and tell the listener what it
        changed, in id order, before any of its callers resumes. A group given up
        publishes nothing; its closes happened in memory all the same."""
        if news is self._news:
            self._news = None
        for answer in news.answers:
            self._unconfirmed.discard(answer.digest)
            if not committed:
                self.answers.drop(answer)
        if news.messages and committed:
            targets, messages = news.targets, news.messages
            if any(channel.closed for channels in targets for channel in channels):
                targets, messages = self._live(targets, messages)
            evicted = self.store(targets, messages, news.now)
            self._announced = news.messages[-1].id
            if self._listener is not None:
                self._listener.published(news.messages, frozenset(evicted))
        if news.closed and self._listener is not None:
            self._listener.closed(news.closed)
