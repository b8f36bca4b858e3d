"""This node's copy of the shared state: every channel (from the control entries every
node applies), and the cached messages of the channels it serves (from their copies,
`interest.py`), in the embedded engine's cache (`engines/memory/cache.py`), so reads,
counts and gaps work as they do there.

Every node applies the same control entries in the same order, so every copy agrees on
channels and names. A served channel's messages come in stream order, which is id
order, so its cache holds what every node serving it holds. What the clock alone
decides (a message aged past the message TTL) each node does by itself; what changes
channels (an expiry) is an entry, written once by whichever node saw it due first.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Sequence

from pushup.core.engine import EngineListener
from pushup.core.ids import IdClock
from pushup.core.model import MAX_ID, ChannelId, Message, MessageId
from pushup.engines.memory.budget import CacheBudget
from pushup.engines.memory.cache import Cache
from pushup.engines.memory.channel import Channel
from pushup.engines.memory.durability import Volatile
from pushup.engines.nats.records import ChannelRecord, Closed, Copy, Entry, Expired


class Replica:
    """The cache, the id clocks and the high water, changed only by `apply` (control
    entries) and `cache` (publications)."""

    __slots__ = ("_clock", "cache", "channel_ids", "listener", "message_ids", "renewed", "told")

    def __init__(
        self,
        *,
        message_ttl_s: float,
        max_messages: int,
        max_cache_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self.message_ids = IdClock(clock)
        self.channel_ids = IdClock(clock)
        self.cache = Cache(
            message_ttl_s=message_ttl_s,
            max_messages=max_messages,
            budget=CacheBudget(max_cache_bytes),
            journal=Volatile(self.message_ids),
        )
        # Every message at or below this id, on a channel this node serves, has been
        # told to the listener or is in the cache.
        self.told = self.message_ids.last
        self.listener: EngineListener | None = None
        # When each channel's record was written: a publication from before it does
        # not extend it (the record may have shortened its TTL since).
        self.renewed: dict[ChannelId, float] = {}

    # -- control entries ---------------------------------------------------------------

    def restore(self, entries: Sequence[Entry], last_message_id: int) -> None:
        """Fill the (empty) state from the control entries the stream holds, in stream
        order, and the highest message id the stream tells of."""
        records: dict[ChannelId, ChannelRecord] = {}
        last_channel = 0
        for entry in entries:
            if isinstance(entry, ChannelRecord):
                records[entry.id] = entry
            elif isinstance(entry, Closed | Expired):
                for channel_id in (entry.id,) if isinstance(entry, Closed) else entry.ids:
                    records.pop(channel_id, None)
            else:
                last_message_id = max(last_message_id, entry.message_id)
                last_channel = max(last_channel, entry.channel_id)
        for channel_id in sorted(records):
            self._record(records[channel_id])
        self.channel_ids.advance_to(last_channel)
        self.message_ids.advance_to(last_message_id)
        self.told = max(self.told, self.message_ids.last)

    def apply(self, entry: Entry) -> list[ChannelId]:
        """Apply one new control entry and tell the listener; the channels it dropped."""
        if isinstance(entry, ChannelRecord):
            self._record(entry)
        elif isinstance(entry, Closed | Expired):
            ids = (entry.id,) if isinstance(entry, Closed) else entry.ids
            live = [c for cid in ids if (c := self.cache.channels.get(cid)) is not None]
            if live:
                dropped = self.cache.drop(live)
                for channel_id in dropped:
                    self.renewed.pop(channel_id, None)
                if self.listener is not None:
                    self.listener.closed(dropped)
                return dropped
        else:
            self.message_ids.advance_to(entry.message_id)
            self.channel_ids.advance_to(entry.channel_id)
            # Ids below another node's floor were issued before it, so told already.
            self.told = max(self.told, entry.message_id)
        return []

    def _record(self, record: ChannelRecord) -> None:
        cache = self.cache
        channel = cache.channels.get(record.id)
        if channel is None:
            channel = Channel(
                record.id, record.name, record.ttl_s, 0.0, record.retention, record.owner
            )
            channel.expires_at = channel.scheduled_at = record.expires_at
            channel.last_message_id = record.last_message_id
            channel.dropped_through = record.dropped_through
            older = cache.names.get(record.name) if record.name is not None else None
            if older is not None:  # only if two nodes' clocks disagree on its expiry
                self.apply(Expired((older.id,)))
            cache.add(channel)
        else:
            channel.ttl_s = record.ttl_s
            if record.expires_at < channel.scheduled_at:
                cache.push_expiry(channel, record.expires_at)
            channel.expires_at = record.expires_at
        self.renewed[record.id] = record.expires_at - record.ttl_s
        self.channel_ids.advance_to(record.id)

    # -- publications --------------------------------------------------------------------

    def extend(self, channel: Channel, published_at: float) -> None:
        """A publication keeps its channel alive a TTL from when it happened, unless
        the channel's record was written after it."""
        if published_at >= self.renewed.get(channel.id, -1.0):
            channel.expires_at = max(channel.expires_at, published_at + channel.ttl_s)

    def cache_copies(
        self, copies: Iterable[Copy], served: Callable[[ChannelId], bool], *, tell: bool
    ) -> list[Message]:
        """Cache copies (in stream order) on the served channels that are alive, one
        message per id however many of its copies come; with `tell`, tell the listener
        of those above the high water, one call per publication. The messages cached."""
        channels = self.cache.channels
        # A copy already past its channel's message TTL (history fetched late) is
        # dropped there as the cache would have dropped it, leaving its gap mark.
        clock_now = self._clock()
        cached: list[Message] = []
        for now, group in itertools.groupby(copies, key=lambda copy: copy.now):
            messages: list[Message] = []
            targets: list[list[Channel]] = []
            for _, same in itertools.groupby(group, key=lambda copy: copy.message.id):
                message = next(same).message
                # Cached at once in every channel of it this node serves (its other
                # copies follow at once in stream order), so a read lists them all;
                # a copy already cached (heard live, then fetched) is skipped.
                live: list[Channel] = []
                for channel_id in message.channels:
                    channel = channels.get(channel_id)
                    if channel is None or not served(channel_id):
                        continue
                    if message.time <= clock_now - channel.keep_s:
                        channel.dropped_through = max(channel.dropped_through, message.id)
                    elif next(channel.messages.since(message.id), None) is None:
                        live.append(channel)
                if live:
                    messages.append(message)
                    targets.append(live)
            if messages:
                cached += messages
                self._insert(targets, messages, now, tell=tell)
        return cached

    def _insert(
        self, targets: list[list[Channel]], messages: list[Message], now: float, *, tell: bool
    ) -> None:
        kept = {channel.id: channel.expires_at for live in targets for channel in live}
        evicted = self.cache.insert(targets, messages, now)
        for live in targets:
            for channel in live:
                channel.expires_at = kept[channel.id]
                self.extend(channel, now)
        new = [message for message in messages if message.id > self.told]
        self.message_ids.advance_to(messages[-1].id)
        self.told = max(self.told, messages[-1].id)
        if tell and new and self.listener is not None:
            self.listener.published(new, frozenset(evicted))

    def forget_messages(self, channel_id: ChannelId) -> None:
        """This node no longer serves the channel: let its cached messages go."""
        channel = self.cache.channels.get(channel_id)
        if channel is None:
            return
        for message in list(channel.messages):
            channel.messages.pop_oldest()
            self.cache.release(message, journaled=False)
        channel.aging = False

    # -- what the clock decides ----------------------------------------------------------

    def age(self, now: float) -> None:
        """Drop messages older than their channel's message TTL (as `Cache.expire`
        does), leaving channels to the log."""
        cache = self.cache
        aging = cache.aging
        while aging and aging[0][0] <= now:
            _, channel_id = heapq.heappop(aging)
            channel = cache.channels.get(channel_id)
            if channel is None:
                continue
            cached, ttl_s = channel.messages, channel.keep_s
            while cached and cached.oldest().time + ttl_s <= now:
                dropped = cached.pop_oldest()
                channel.dropped_through = max(channel.dropped_through, dropped.id)
                cache.release(dropped, journaled=False)
            channel.aging = bool(cached)
            if cached:
                heapq.heappush(aging, (cached.oldest().time + ttl_s, channel_id))

    def due(self, now: float) -> list[ChannelId]:
        """Channels past their expiry as far as this node knows, still here (their
        expiry is the log's to write)."""
        cache = self.cache
        heap = cache.expiry
        if not heap or heap[0][0] > now:
            return []
        due: dict[ChannelId, Channel] = {}
        while heap and heap[0][0] <= now:
            at, channel_id = heapq.heappop(heap)
            channel = cache.channels.get(channel_id)
            if channel is None:
                continue
            if channel.expires_at <= now:
                due[channel_id] = channel
            elif at == channel.scheduled_at:
                channel.scheduled_at = channel.expires_at
                heapq.heappush(heap, (channel.expires_at, channel_id))
        for channel in due.values():  # found again should the expiry not be written
            cache.push_expiry(channel, channel.expires_at)
        return sorted(due)

    def next_due(self) -> float:
        return self.cache.next_due()


def lowest_wanted_id(since: MessageId | None, start: float | None) -> int:
    """The smallest id wanted: after `since`, with time (id / 1e6, a float) >= start."""
    low = 1 if since is None else since + 1
    if start is not None:
        if start * 1_000_000 > MAX_ID:
            return MAX_ID + 1
        by_time = max(1, math.ceil(start * 1_000_000) - 1)
        while by_time / 1_000_000 < start:
            by_time += 1
        low = max(low, by_time)
    return low
