"""This node's copy of the shared state: the log replayed into the embedded engine's
cache (`engines/memory/cache.py`), so reads, counts and gaps work as they do there.

Every node applies the same entries in the same (stream) order, so every copy agrees
on channels, messages, ids, evictions and gaps. What the clock alone decides (a
message aged past the message TTL) each node does by itself; what changes channels (an
expiry) is an entry, written once by whichever node saw it due first.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

from pushup.core.engine import EngineListener
from pushup.core.ids import IdClock
from pushup.core.model import ChannelId, Message, MessageId
from pushup.engines.memory.budget import CacheBudget
from pushup.engines.memory.cache import Cache
from pushup.engines.memory.channel import Channel
from pushup.engines.memory.durability import Volatile
from pushup.engines.memory.restore import restore
from pushup.engines.memory.snapshot import Snapshot, StoredChannel, StoredMessage
from pushup.engines.nats.records import (
    ChannelRecord,
    Closed,
    Entry,
    Expired,
    Floor,
    Published,
)


class Replica:
    """The cache, the id clocks and the high water, changed only by `apply`."""

    __slots__ = ("_clock", "cache", "channel_ids", "listener", "message_ids", "told")

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
        # Every message at or below this id has been told to the listener.
        self.told = self.message_ids.last
        self.listener: EngineListener | None = None

    # -- the log at start ----------------------------------------------------------------

    def restore(self, entries: Sequence[Entry]) -> None:
        """Fill the (empty) cache from every entry the stream holds, in stream order.

        A channel's record may come after publications to it (a renew rewrites it), so
        records are gathered first; a publication extends a channel only if it came
        after the channel's record."""
        records: dict[ChannelId, tuple[int, ChannelRecord]] = {}
        last_message, last_channel = 0, 0
        for seq, entry in enumerate(entries):
            if isinstance(entry, ChannelRecord):
                records[entry.id] = (seq, entry)
                last_channel = max(last_channel, entry.id)
            elif isinstance(entry, Closed | Expired):
                for channel_id in (entry.id,) if isinstance(entry, Closed) else entry.ids:
                    records.pop(channel_id, None)
            elif isinstance(entry, Floor):
                last_message = max(last_message, entry.message_id)
                last_channel = max(last_channel, entry.channel_id)
        expires = {cid: rec.expires_at for cid, (_, rec) in records.items()}
        last = {cid: rec.last_message_id or 0 for cid, (_, rec) in records.items()}
        messages: list[StoredMessage] = []
        for seq, entry in enumerate(entries):
            if not isinstance(entry, Published):
                continue
            for message_id, targets, data in entry.messages:
                messages.append(StoredMessage(message_id, targets, data))
                last_message = max(last_message, message_id)
                for channel_id in targets:
                    found = records.get(channel_id)
                    if found is not None and found[0] < seq:
                        expires[channel_id] = entry.now + found[1].ttl_s
                        last[channel_id] = max(last[channel_id], message_id)
        channels = [
            StoredChannel(
                rec.id,
                rec.name,
                rec.ttl_s,
                expires[cid],
                MessageId(last[cid]) if last[cid] else None,
                rec.dropped_through,
            )
            for cid, (_, rec) in sorted(records.items())
        ]
        snapshot = Snapshot(channels, messages, last_channel, last_message)
        restore(self.cache, snapshot, self._clock(), self.channel_ids, self.message_ids)
        self.told = max(self.told, self.message_ids.last)

    # -- the log as it grows -------------------------------------------------------------

    def apply(self, entry: Entry) -> list[Message]:
        """Apply one new entry and tell the listener; the messages it cached."""
        if isinstance(entry, Published):
            return self._published(entry)
        if isinstance(entry, ChannelRecord):
            self._record(entry)
        elif isinstance(entry, Closed | Expired):
            ids = (entry.id,) if isinstance(entry, Closed) else entry.ids
            live = [c for cid in ids if (c := self.cache.channels.get(cid)) is not None]
            if live:
                dropped = self.cache.drop(live)
                if self.listener is not None:
                    self.listener.closed(dropped)
        elif isinstance(entry, Floor):
            self.message_ids.advance_to(entry.message_id)
            self.channel_ids.advance_to(entry.channel_id)
            # Ids below another node's floor were issued before it, so told already.
            self.told = max(self.told, entry.message_id)
        return []

    def _record(self, record: ChannelRecord) -> None:
        cache = self.cache
        channel = cache.channels.get(record.id)
        if channel is None:
            channel = Channel(record.id, record.name, record.ttl_s, 0.0)
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
        self.channel_ids.advance_to(record.id)

    def _published(self, entry: Published) -> list[Message]:
        channels = self.cache.channels
        targets: list[list[Channel]] = []
        messages: list[Message] = []
        for message_id, channel_ids, data in entry.messages:
            live = [c for cid in channel_ids if (c := channels.get(cid)) is not None]
            self.message_ids.advance_to(message_id)
            if live:
                targets.append(live)
                messages.append(Message(message_id, message_id / 1_000_000, channel_ids, data))
        if not messages:
            return messages
        evicted = self.cache.insert(targets, messages, entry.now)
        self.told = max(self.told, messages[-1].id)
        if self.listener is not None:
            self.listener.published(messages, frozenset(evicted))
        return messages

    # -- what the clock decides ----------------------------------------------------------

    def age(self, now: float) -> None:
        """Drop messages older than the message TTL (as `Cache.expire` does), leaving
        channels to the log."""
        cache = self.cache
        ttl_s, aging = cache.message_ttl_s, cache.aging
        while aging and aging[0][0] <= now:
            _, channel_id = heapq.heappop(aging)
            channel = cache.channels.get(channel_id)
            if channel is None:
                continue
            cached = channel.messages
            while cached and cached.oldest().time + ttl_s <= now:
                dropped = cached.pop_oldest()
                channel.dropped_through = max(channel.dropped_through, dropped.id)
                cache.release(dropped, journaled=False)
            channel.aging = bool(cached)
            if cached:
                heapq.heappush(aging, (cached.oldest().time + ttl_s, channel_id))

    def due(self, now: float) -> list[ChannelId]:
        """Channels past their expiry, still here (their expiry is the log's to write)."""
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
