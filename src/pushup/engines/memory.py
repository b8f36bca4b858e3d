"""The embedded engine: channels and the message cache in this process's memory."""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable, Sequence
from operator import attrgetter

from sortedcontainers import SortedKeyList

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
from pushup.engines.base import EngineListener, Publication

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


class MemoryEngine:
    """Keeps channels and cached messages in memory; the single-node default.

    Expiry never scans: a heap orders channels by when their oldest message expires,
    and each channel trims from its front; channel expiry uses a heap of deadlines
    that is corrected lazily when a channel was active in the meantime.
    """

    def __init__(
        self,
        *,
        message_ttl_s: float,
        max_messages: int,
        channel_ttl_s: float,
        clock: Callable[[], float] = time.time,
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

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listener: EngineListener) -> None:
        self._listener = listener
        self._schedule_sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # -- channels --------------------------------------------------------------------

    async def create_channel(self, ttl_s: float | None, name: str | None) -> ChannelInfo:
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
        return channel.info()

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        now = self._clock()
        (channel,) = self._lookup([ref], now)
        if ttl_s is not None:
            channel.ttl_s = ttl_s
        # A shorter TTL can move the expiry earlier than the heap entry: push a fresh one.
        if now + channel.ttl_s < channel.expires_at:
            self._push_expiry(channel, now + channel.ttl_s)
        channel.expires_at = now + channel.ttl_s
        return channel.info()

    async def close_channel(self, ref: ChannelRef) -> None:
        now = self._clock()
        (channel,) = self._lookup([ref], now)
        self._drop_channels([channel])

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        (channel,) = self._lookup([ref], self._clock())
        return channel.info()

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        return [channel.id for channel in self._lookup(refs, self._clock())]

    # -- messages --------------------------------------------------------------------

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        now = self._clock()
        if len(publications) == 1:
            targets = [self._lookup(publications[0][0], now)]
        else:
            targets = self._lookup_all([refs for refs, _ in publications], now)
        messages: list[Message] = []
        evicted: set[ChannelId] = set()
        max_messages, ttl_s, aging = self._max_messages, self._message_ttl_s, self._aging
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
                    if messages and dropped.id >= messages[0].id:
                        evicted.add(channel.id)
                if not channel.aging:
                    channel.aging = True
                    heapq.heappush(aging, (cached[0].time + ttl_s, channel.id))
            messages.append(message)
        if self._listener is not None:
            self._listener.published(messages, frozenset(evicted))
        self._schedule_sweep()
        return messages

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
        channels = [self._channels.get(channel_id) for channel_id in channel_ids]
        gone = [channel_id for channel_id in channel_ids if channel_id not in self._channels]
        if gone:  # expired between the caller's lookup and this read
            raise ChannelsNotFound(gone)
        for channel in channels:
            assert channel is not None
            channel_id = channel.id
            if channel.dropped_through >= low and (end is None or low / 1_000_000 <= end):
                gap = True
            for message in channel.messages.irange_key(min_key=low):
                if end is not None and message.time > end:
                    break
                if message.id not in found:
                    found[message.id] = message
                    matched[message.id] = []
                matched[message.id].append(channel_id)
        hits: list[Hit] = [
            (found[message_id], tuple(sorted(matched[message_id]))) for message_id in sorted(found)
        ]
        return ReadResult(hits, gap, MessageId(self._message_ids.last))

    def high_water(self) -> MessageId:
        return MessageId(self._message_ids.last)

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
                channel.dropped_through = max(channel.dropped_through, cached.pop(0).id)
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

    def _drop_channels(self, channels: Sequence[_Channel]) -> None:
        for channel in channels:
            channel.closed = True
            del self._channels[channel.id]
            if channel.name is not None:
                del self._names[channel.name]
            channel.messages.clear()
        if self._listener is not None:
            self._listener.closed([channel.id for channel in channels])

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
