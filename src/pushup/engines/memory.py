"""The embedded engine: channels and the message cache in this process's memory,
optionally journaled to a local data directory so a restart loses nothing."""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable, Collection, Sequence
from functools import partial
from operator import attrgetter

from sortedcontainers import SortedKeyList

from pushup.core.engine import CacheStats, EngineListener, Publication
from pushup.core.errors import ChannelsNotFound, NameTaken
from pushup.core.ids import IdClock
from pushup.core.model import (
    ChannelId,
    ChannelInfo,
    ChannelRef,
    Hit,
    Message,
    MessageId,
    ReadResult,
)
from pushup.engines.budget import CacheBudget
from pushup.engines.journal import Journal, Snapshot

_message_id = attrgetter("id")
_MAX_TIMER_S = 3600.0


class _Channel:
    __slots__ = (
        "aging",
        "closed",
        "dropped_through",
        "expires_at",
        "id",
        "last_message_id",
        "messages",
        "name",
        "scheduled_at",
        "ttl_s",
    )

    def __init__(self, id: ChannelId, name: str | None, ttl_s: float, now: float) -> None:
        self.id = id
        self.name = name
        self.ttl_s = ttl_s
        self.expires_at = now + ttl_s
        # The time of this channel's authoritative expiry-heap entry; always at or
        # before `expires_at`. Other entries for it are stale and dropped when popped.
        self.scheduled_at = self.expires_at
        # The paper's per-channel B-tree of messages keyed by time (ids order like time).
        self.messages: SortedKeyList = SortedKeyList(key=_message_id)
        # Newest id this channel dropped from its cache (by age or count); 0 if none.
        self.dropped_through = 0
        self.last_message_id: MessageId | None = None
        self.closed = False
        # Whether the engine's aging heap holds an entry for this channel's oldest message.
        self.aging = False

    def info(self) -> ChannelInfo:
        return ChannelInfo(
            id=self.id,
            name=self.name,
            expires_at=self.expires_at,
            ttl_s=self.ttl_s,
            messages=len(self.messages),
            last_message_id=self.last_message_id,
        )


class _News:
    """What the listener hears once one journal group is committed."""

    __slots__ = ("closed", "evicted", "group", "messages")

    def __init__(self, group: object) -> None:
        self.group = group
        self.messages: list[Message] = []
        self.evicted: set[ChannelId] = set()
        self.closed: list[ChannelId] = []


class MemoryEngine:
    """Keeps channels and cached messages in memory; the single-node default.

    Expiry never scans: a heap orders channels by when their oldest message expires,
    and each channel trims from its front; channel expiry uses a heap of deadlines
    that is corrected lazily when a channel was active in the meantime.

    With a `journal`, every change is recorded there and a call returns only once its
    group is committed. Subscribers never see what a crash could take back: reads stop
    at the last committed message, and the listener hears of publications and closes
    only after their commit (so parked polls are answered after it too).
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
        self._message_ttl_s = message_ttl_s
        self._max_messages = max_messages
        self._channel_ttl_s = channel_ttl_s
        self._clock = clock
        self._channel_ids = IdClock(clock)
        self._message_ids = IdClock(clock)
        self._channels: dict[ChannelId, _Channel] = {}
        self._names: dict[str, _Channel] = {}
        # Channels by when their oldest cached message expires: aging costs O(log n)
        # per channel that has messages, and a message evicted by the count limit is
        # freed at once rather than held until its age runs out.
        self._aging: list[tuple[float, ChannelId]] = []
        self._expiry_heap: list[tuple[float, ChannelId]] = []
        self._listener: EngineListener | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf
        self._journal = journal
        # Every cached message once, oldest first, and their bytes: past the limit the
        # oldest go, over all channels, as they would by age.
        self._budget = CacheBudget(max_cache_bytes)
        # With a journal: every message at or below this is committed and told to
        # the listener; the news of the group being committed, told once it is.
        self._announced = self._message_ids.last
        self._news: _News | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listener: EngineListener) -> None:
        self._listener = listener
        if self._journal is not None:
            self._restore(self._journal.open())
        self._schedule_sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._journal is not None:
            await self._journal.close()

    # -- channels --------------------------------------------------------------------

    async def create_channel(self, ttl_s: float | None, name: str | None) -> ChannelInfo:
        journal = self._journal
        if journal is not None:
            journal.check()
        now = self._clock()
        self._expire(now)
        if name is not None and name in self._names:
            raise NameTaken(name)
        channel = _Channel(
            ChannelId(self._channel_ids.next()),
            name,
            self._channel_ttl_s if ttl_s is None else ttl_s,
            now,
        )
        self._channels[channel.id] = channel
        if name is not None:
            self._names[name] = channel
        self._push_expiry(channel, channel.expires_at)
        info = channel.info()
        if journal is not None:
            journal.channel(channel)
            await journal.durable()
        return info

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        journal = self._journal
        if journal is not None:
            journal.check()
        now = self._clock()
        (channel,) = self._lookup([ref], now)
        if ttl_s is not None:
            channel.ttl_s = ttl_s
        # A shorter TTL can move the expiry earlier than the heap entry: push a fresh one.
        if now + channel.ttl_s < channel.expires_at:
            self._push_expiry(channel, now + channel.ttl_s)
        channel.expires_at = now + channel.ttl_s
        info = channel.info()
        if journal is not None:
            journal.channel(channel)
            await journal.durable()
        return info

    async def close_channel(self, ref: ChannelRef) -> None:
        if self._journal is not None:
            self._journal.check()
        now = self._clock()
        (channel,) = self._lookup([ref], now)
        self._drop_channels([channel], closed=True)
        if self._journal is not None:
            await self._journal.durable()

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        (channel,) = self._lookup([ref], self._clock())
        return channel.info()

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        return [channel.id for channel in self._lookup(refs, self._clock())]

    # -- messages --------------------------------------------------------------------

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        journal = self._journal
        if journal is not None:
            journal.check()
        now = self._clock()
        if len(publications) == 1:
            targets = [self._lookup(publications[0][0], now)]
        else:
            targets = self._lookup_all([refs for refs, _ in publications], now)
        messages: list[Message] = []
        evicted: set[ChannelId] = set()
        # Messages above this are not yet told to the listener: dropping one evicts.
        told = self._message_ids.last if journal is None else self._announced
        max_messages, ttl_s, aging = self._max_messages, self._message_ttl_s, self._aging
        budget = self._budget
        for channels, (_, data) in zip(targets, publications, strict=True):
            message_id = self._message_ids.next()
            if len(channels) > 1:
                channels = list({channel.id: channel for channel in channels}.values())
                channel_ids = tuple(sorted(channel.id for channel in channels))
            else:
                channel_ids = (channels[0].id,)
            message = Message(MessageId(message_id), message_id / 1_000_000, channel_ids, data)
            for channel in channels:
                cached = channel.messages
                cached.add(message)
                channel.last_message_id = message.id
                channel.expires_at = now + channel.ttl_s
                if len(cached) > max_messages:
                    dropped = cached.pop(0)
                    channel.dropped_through = dropped.id
                    if dropped.id > told:
                        evicted.add(channel.id)
                    self._release(dropped)
                if not channel.aging:
                    channel.aging = True
                    heapq.heappush(aging, (cached[0].time + ttl_s, channel.id))
            messages.append(message)
            budget.add(message)
        if budget.bytes > budget.limit:
            self._trim_to_budget(told, evicted)
        if journal is not None:
            await self._record_published(journal, targets, messages, evicted)
            return messages
        if self._listener is not None:
            self._listener.published(messages, frozenset(evicted))
        self._schedule_sweep()
        return messages

    def _record_published(
        self,
        journal: Journal,
        targets: list[list[_Channel]],
        messages: list[Message],
        evicted: set[ChannelId],
    ) -> asyncio.Future[None]:
        """Journal a publication; the listener hears of it once its group commits."""
        for channels in targets:
            for channel in channels:
                journal.channel(channel)
        journal.messages(messages)
        news = self._pending_news()
        news.messages += messages
        news.evicted |= evicted
        self._schedule_sweep()
        return journal.durable()

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        now = self._clock()
        self._expire(now)
        low = self._lowest_wanted_id(since, start)
        found: dict[MessageId, Message] = {}
        matched: dict[MessageId, list[ChannelId]] = {}
        gap = False
        # With a journal, messages not yet committed stay hidden (None: no bound).
        high = None if self._journal is None else self._announced
        channels = [self._channels.get(channel_id) for channel_id in channel_ids]
        gone = [channel_id for channel_id in channel_ids if channel_id not in self._channels]
        if gone:  # expired between the caller's lookup and this read
            raise ChannelsNotFound(gone)
        for channel in channels:
            assert channel is not None
            channel_id = channel.id
            if channel.dropped_through >= low and (end is None or low / 1_000_000 <= end):
                gap = True
            for message in channel.messages.irange_key(min_key=low, max_key=high):
                if end is not None and message.time > end:
                    break
                if message.id not in found:
                    found[message.id] = message
                    matched[message.id] = []
                matched[message.id].append(channel_id)
        hits: list[Hit] = [
            (found[message_id], tuple(sorted(matched[message_id]))) for message_id in sorted(found)
        ]
        return ReadResult(hits, gap, self.high_water())

    def cache_stats(self, leave_out: Collection[ChannelId] = ()) -> CacheStats:
        # The budget counts each cached message's bytes once, however many channels
        # hold it: no walk over the cache, only over the channels (and the few
        # messages of those left out, published to them alone).
        left_out = set(leave_out)
        entries = 0
        channels = 0
        excluded = 0
        for channel in self._channels.values():
            if channel.id in left_out:
                excluded += sum(
                    len(message.data)
                    for message in channel.messages
                    if left_out.issuperset(message.channels)
                )
                continue
            channels += 1
            entries += len(channel.messages)
        return CacheStats(channels, entries, self._budget.bytes - excluded)

    def high_water(self) -> MessageId:
        if self._journal is None:
            return MessageId(self._message_ids.last)
        return MessageId(self._announced)

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _lowest_wanted_id(since: MessageId | None, start: float | None) -> int:
        low = 1 if since is None else since + 1
        if start is not None:
            # The smallest id whose time (id / 1e6, as a float) is at least `start`.
            by_time = max(1, math.ceil(start * 1_000_000) - 1)
            while by_time / 1_000_000 < start:
                by_time += 1
            low = max(low, by_time)
        return low

    def _lookup(self, refs: Sequence[ChannelRef], now: float) -> list[_Channel]:
        self._expire(now)
        found: list[_Channel] = []
        unknown: list[ChannelRef] = []
        for ref in refs:
            channel = self._channels.get(ChannelId(ref)) if isinstance(ref, int) else None
            if channel is None and isinstance(ref, str):
                channel = self._names.get(ref)
            if channel is None:
                unknown.append(ref)
            else:
                found.append(channel)
        if unknown:
            raise ChannelsNotFound(unknown)
        return found

    def _lookup_all(
        self, ref_lists: Sequence[Sequence[ChannelRef]], now: float
    ) -> list[list[_Channel]]:
        """Look up several lists at once, naming every unknown channel of all of them."""
        found: list[list[_Channel]] = []
        unknown: dict[ChannelRef, None] = {}
        for refs in ref_lists:
            try:
                found.append(self._lookup(refs, now))
            except ChannelsNotFound as exc:
                unknown.update(dict.fromkeys(exc.refs))
        if unknown:
            raise ChannelsNotFound(list(unknown))
        return found

    def _expire(self, now: float) -> None:
        """Drop messages older than the message TTL and channels past their expiry."""
        ttl_s, aging = self._message_ttl_s, self._aging
        while aging and aging[0][0] <= now:
            _, channel_id = heapq.heappop(aging)
            channel = self._channels.get(channel_id)
            if channel is None:
                continue
            cached = channel.messages
            # The same expression as the heap key, so a trimmed channel's next key is
            # always past `now` and the loop ends.
            while cached and cached[0].time + ttl_s <= now:
                dropped = cached.pop(0)
                channel.dropped_through = max(channel.dropped_through, dropped.id)
                # The journal's compaction deletes aged messages in bulk.
                self._release(dropped, journaled=False)
            channel.aging = bool(cached)
            if cached:
                heapq.heappush(aging, (cached[0].time + ttl_s, channel_id))
        heap = self._expiry_heap
        expired: dict[ChannelId, _Channel] = {}
        while heap and heap[0][0] <= now:
            at, channel_id = heapq.heappop(heap)
            channel = self._channels.get(channel_id)
            if channel is None:
                continue
            if channel.expires_at <= now:
                expired[channel_id] = channel
            elif at == channel.scheduled_at:
                # Active since this entry was pushed: look again at its new expiry.
                channel.scheduled_at = channel.expires_at
                heapq.heappush(heap, (channel.expires_at, channel_id))
        if expired:
            self._drop_channels(list(expired.values()))

    def _push_expiry(self, channel: _Channel, at: float) -> None:
        channel.scheduled_at = at
        heapq.heappush(self._expiry_heap, (at, channel.id))
        self._schedule_sweep()

    def _drop_channels(self, channels: Sequence[_Channel], *, closed: bool = False) -> None:
        """Forget channels that expired or, with `closed`, that a publisher closed."""
        journal = self._journal
        for channel in channels:
            channel.closed = True
            del self._channels[channel.id]
            if channel.name is not None:
                del self._names[channel.name]
            if journal is not None:
                journal.channel(channel)
            for message in channel.messages:
                self._release(message)
            channel.messages.clear()
        channel_ids = [channel.id for channel in channels]
        if journal is not None and closed:
            # Told once committed, as a publication is. An expiry is told at once: the
            # clock, not the journal, decides it, and a restart finds it expired too.
            self._pending_news().closed += channel_ids
        elif self._listener is not None:
            self._listener.closed(channel_ids)

    # -- journal ---------------------------------------------------------------------

    def _restore(self, snapshot: Snapshot) -> None:
        """Rebuild channels and the cache from the journal as if the server had never
        stopped: what expired meanwhile is gone, gaps are still reported, and ids
        continue above every id stored, even if the clock went back."""
        assert self._journal is not None
        now = self._clock()
        self._channel_ids.advance_to(snapshot.last_channel_id)
        self._message_ids.advance_to(snapshot.last_message_id)
        self._announced = self._message_ids.last
        channels = self._channels
        for stored in snapshot.channels:  # in id order: the newer of two names wins
            if stored.expires_at <= now:
                continue
            channel = _Channel(stored.id, stored.name, stored.ttl_s, now)
            channel.expires_at = channel.scheduled_at = stored.expires_at
            channel.last_message_id = stored.last_message_id
            channel.dropped_through = stored.dropped_through
            if stored.name is not None:
                older = self._names.get(stored.name)
                if older is not None:  # possible only if the clock went back
                    del channels[older.id]
                    older.closed = True
                    self._journal.channel(older)
                self._names[stored.name] = channel
            channels[channel.id] = channel
        ttl_s = self._message_ttl_s
        for stored_message in snapshot.messages:  # in id order
            message_id = stored_message.id
            holders = [
                holder
                for channel_id in stored_message.channels
                if (holder := channels.get(channel_id)) is not None
                and message_id > holder.dropped_through
            ]
            if not holders:
                continue
            message = Message(
                message_id, message_id / 1_000_000, stored_message.channels, stored_message.data
            )
            if message.time + ttl_s <= now:
                for channel in holders:
                    channel.dropped_through = message_id
                continue
            for channel in holders:
                channel.messages.add(message)
            self._budget.add(message)
        for channel in channels.values():
            cached = channel.messages
            while len(cached) > self._max_messages:
                dropped = cached.pop(0)
                channel.dropped_through = dropped.id
                self._release(dropped, journaled=False)
            if cached:
                channel.aging = True
                heapq.heappush(self._aging, (cached[0].time + ttl_s, channel.id))
            heapq.heappush(self._expiry_heap, (channel.expires_at, channel.id))
        # Started with a smaller --max-cache-bytes than the journal holds.
        self._trim_to_budget(self._announced, set())

    def _pending_news(self) -> _News:
        """The news of the journal group now being collected."""
        journal = self._journal
        assert journal is not None
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

    def _release(self, message: Message, *, journaled: bool = True) -> None:
        """A channel dropped `message`: once no live channel caches it, it leaves the
        byte budget (and, if `journaled`, the journal)."""
        if len(message.channels) > 1:  # else its only channel just let it go
            for channel_id in message.channels:
                channel = self._channels.get(channel_id)
                if channel is not None and message in channel.messages:
                    return
        self._budget.discard(message)
        if journaled and self._journal is not None:
            self._journal.forget(message.id)

    def _trim_to_budget(self, told: int, evicted: set[ChannelId]) -> None:
        """Drop the oldest messages over all channels until the cache fits its bytes.
        Being the oldest cached anywhere, each is at the front of its channels; their
        gap marks move past it, so a subscriber that wanted it learns of the gap."""
        budget, journal = self._budget, self._journal
        while budget.over() and budget:
            message = budget.pop_oldest()
            for channel_id in message.channels:
                channel = self._channels.get(channel_id)
                if channel is None:
                    continue
                cached = channel.messages
                if cached and cached[0] is message:
                    cached.pop(0)
                elif message in cached:
                    cached.remove(message)
                else:
                    continue
                channel.dropped_through = max(channel.dropped_through, message.id)
                if message.id > told:
                    evicted.add(channel_id)
                if journal is not None:  # its gap mark moved
                    journal.channel(channel)
            if journal is not None:
                journal.forget(message.id)

    def _schedule_sweep(self) -> None:
        """Keep one timer armed for the next message or channel expiry."""
        due = math.inf
        if self._aging:
            due = self._aging[0][0]
        if self._expiry_heap:
            due = min(due, self._expiry_heap[0][0])
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
