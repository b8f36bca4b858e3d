"""The embedded engine: channels and the message cache in this process's memory,
optionally journaled to a local data directory so a restart loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Collection, Sequence

from pushup.core.engine import CacheStats, EngineListener, Publication
from pushup.core.errors import EngineUnavailable, IdempotencyKeyReused, NameTaken
from pushup.core.idempotency import Answer, IdempotencyKey, entries, replay
from pushup.core.ids import IdClock
from pushup.core.model import (
    SERVER_RETENTION,
    ChannelEnd,
    ChannelId,
    ChannelInfo,
    ChannelPage,
    ChannelRef,
    Message,
    MessageId,
    ReadResult,
    Retention,
)
from pushup.engines.memory.budget import CacheBudget
from pushup.engines.memory.cache import Cache
from pushup.engines.memory.channel import Channel
from pushup.engines.memory.durability import Durability, Journaled, Volatile
from pushup.engines.memory.journal import Journal
from pushup.engines.memory.restore import restore

_MAX_TIMER_S = 3600.0


class MemoryEngine:
    """Keeps channels and cached messages in memory (`cache.py`); the single-node default.

    With a `journal`, every change is recorded there and counts once its group is
    committed (`durability.py`); without one, at once.
    """

    def __init__(
        self,
        *,
        message_ttl_s: float,
        max_messages: int,
        channel_ttl_s: float,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
        max_cache_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._channel_ttl_s = channel_ttl_s
        self._clock = clock
        self._channel_ids = IdClock(clock)
        self._message_ids = IdClock(clock)
        # Chosen once: the engine calls it the same way with a journal or without.
        self._journal: Durability[Channel] = (
            Volatile(self._message_ids)
            if journal is None
            else Journaled(journal, self._message_ids)
        )
        self._budget = CacheBudget(max_cache_bytes)
        self._cache = Cache(
            message_ttl_s=message_ttl_s,
            max_messages=max_messages,
            budget=self._budget,
            journal=self._journal,
        )
        # What caches a publication once it counts: without a journal, at once (and
        # `publish` arms the sweep after it); with one, on commit (arming it there).
        self._journal.store = self._cache.insert if journal is None else self._cached
        # First answers to idempotency keys, kept with their publications.
        self._answers = self._journal.answers
        self._listener: EngineListener | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listener: EngineListener) -> None:
        self._listener = listener
        snapshot = self._journal.open(listener)
        now = self._clock()
        restore(self._cache, snapshot, now, self._channel_ids, self._message_ids)
        for answer in snapshot.answers:
            if answer.expires_at > now:
                self._answers.add(answer)
        self._schedule_sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await self._journal.close()

    # -- channels --------------------------------------------------------------------

    async def create_channel(
        self,
        ttl_s: float | None,
        name: str | None,
        retention: Retention = SERVER_RETENTION,
        *,
        owner: str | None = None,
    ) -> ChannelInfo:
        journal = self._journal
        journal.check()
        now = self._clock()
        self._expire(now)
        if name is not None and name in self._cache.names:
            raise NameTaken(name)
        channel = Channel(
            ChannelId(self._channel_ids.next()),
            name,
            self._channel_ttl_s if ttl_s is None else ttl_s,
            now,
            retention,
            owner,
        )
        self._cache.add(channel)
        self._schedule_sweep()
        info = channel.info()
        journal.channel(channel)
        if (committed := journal.committed()) is not None:
            try:
                await committed
            except EngineUnavailable:
                self._unmake(channel)
                raise
        return info

    def _unmake(self, channel: Channel) -> None:
        """A creation answered with an error is undone: a retry must not find the
        name taken."""
        if channel.closed:
            return
        # The journal may be closed already (the server stops): nothing to write then.
        with contextlib.suppress(EngineUnavailable):
            self._cache.drop([channel])
        if self._listener is not None:
            self._listener.closed([channel.id])

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        journal = self._journal
        journal.check()
        now = self._clock()
        (channel,) = self._lookup([ref], now)
        if ttl_s is not None:
            channel.ttl_s = ttl_s
        # A shorter TTL can move the expiry earlier than the heap entry: push a fresh one.
        if now + channel.ttl_s < channel.expires_at:
            self._cache.push_expiry(channel, now + channel.ttl_s)
            self._schedule_sweep()
        channel.expires_at = now + channel.ttl_s
        info = channel.info()
        journal.channel(channel)
        if (committed := journal.committed()) is not None:
            await committed
        return info

    async def close_channel(self, ref: ChannelRef) -> None:
        journal = self._journal
        journal.check()
        now = self._clock()
        (channel,) = self._lookup([ref], now)
        journal.closed(self._cache.drop([channel]))
        try:
            if (committed := journal.committed()) is not None:
                await committed
        finally:
            # Closed in memory even if its commit failed (it goes with the next group).
            if self._listener is not None:
                self._listener.ended([ChannelEnd(channel.id, channel.name, "closed", now)])

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        (channel,) = self._lookup([ref], self._clock())
        return channel.info()

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        return [channel.id for channel in self._lookup(refs, self._clock())]

    async def list_channels(
        self, prefix: str | None, after: ChannelRef | None, limit: int
    ) -> ChannelPage:
        self._expire(self._clock())
        channels, after_page = self._cache.page(prefix, after, limit)
        return ChannelPage([channel.info() for channel in channels], after_page)

    # -- messages --------------------------------------------------------------------

    async def publish_once(
        self, publications: Sequence[Publication], key: IdempotencyKey
    ) -> tuple[list[Message], bool]:
        while (found := self._answers.find(key.digest, self._clock())) is not None:
            if found.fingerprint != key.fingerprint:
                raise IdempotencyKeyReused(key.key)
            if not self._journal.unconfirmed(key.digest):
                return replay(publications, found.entries), True
            # The first call's group is being committed (its caller may have gone):
            # wait for it, then look again (a group given up drops its answer).
            if (committed := self._journal.committed()) is not None:
                await committed
        return await self.publish(publications, key), False

    async def publish(
        self, publications: Sequence[Publication], key: IdempotencyKey | None = None
    ) -> list[Message]:
        """With `key`, its answer is kept with the publication (see `publish_once`)."""
        journal = self._journal
        journal.check()
        now = self._clock()
        if len(publications) == 1:
            targets = [self._lookup(publications[0][0], now)]
        else:
            self._expire(now)
            targets = self._cache.lookup_all([refs for refs, _ in publications])
        messages = self._cache.issue(targets, publications, self._message_ids)
        # Cached now, or once committed.
        journal.published(targets, messages, now)
        if key is not None:
            journal.answered(
                Answer(key.digest, key.fingerprint, entries(messages), now + key.window_s)
            )
        self._schedule_sweep()
        # Only a journal makes the caller wait (for its group commit): without one a
        # publication never suspends, so the HTTP server runs it without a Task.
        if (committed := journal.committed()) is not None:
            await committed
        return messages

    def _cached(
        self, targets: list[list[Channel]], messages: list[Message], now: float
    ) -> set[ChannelId]:
        """Cache committed messages; the channels that dropped one of them."""
        evicted = self._cache.insert(targets, messages, now)
        self._schedule_sweep()
        return evicted

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        self._expire(self._clock())
        low = _lowest_wanted_id(since, start)
        # Only what counts is cached: with a journal, what is committed.
        hits, gap = self._cache.read(channel_ids, low, end)
        return ReadResult(hits, gap, self.high_water())

    def cache_stats(self, leave_out: Collection[ChannelId] = ()) -> CacheStats:
        return self._cache.stats(leave_out)

    def high_water(self) -> MessageId:
        return MessageId(self._journal.told())

    # -- expiry ----------------------------------------------------------------------

    def _lookup(self, refs: Sequence[ChannelRef], now: float) -> list[Channel]:
        self._expire(now)
        return self._cache.lookup(refs)

    def _expire(self, now: float) -> None:
        """Drop what expired, and tell the listener of expired channels at once: the
        clock, not the journal, decides an expiry, and a restart finds it expired too."""
        if self._answers.next_due <= now:
            self._answers.expire(now)
        expired = self._cache.expire(now)
        if expired and self._listener is not None:
            self._listener.closed([channel.id for channel in expired])
            self._listener.ended(
                [ChannelEnd(channel.id, channel.name, "expired", now) for channel in expired]
            )

    def _schedule_sweep(self) -> None:
        """Keep one timer armed for the next message or channel expiry."""
        due = self._cache.next_due()
        if due >= self._sweep_at or due == math.inf:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweep_at = due
        # Far-off expiries are looked at again later rather than armed as huge timers.
        delay = min(max(0.0, due - self._clock()), _MAX_TIMER_S)
        self._sweeper = loop.call_at(loop.time() + delay, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        self._sweep_at = math.inf
        self._expire(self._clock())
        self._schedule_sweep()


def _lowest_wanted_id(since: MessageId | None, start: float | None) -> int:
    low = 1 if since is None else since + 1
    if start is not None:
        # The smallest id whose time (id / 1e6, as a float) is at least `start`.
        by_time = max(1, math.ceil(start * 1_000_000) - 1)
        while by_time / 1_000_000 < start:
            by_time += 1
        low = max(low, by_time)
    return low
