"""The embedded engine's cache: channels by id and name, the messages each holds, and
the heaps that age them.

Expiry never scans: a heap orders channels by when their oldest message expires, and
each channel trims from its front (aging costs O(log n) per channel that has
messages, and a message evicted by the count limit is freed at once rather than held
until its age runs out); channel expiry uses a heap of deadlines that is corrected
lazily when a channel was active in the meantime. Every change the journal must keep
is told to the engine's `Durability`. A message is cached once it counts (with a
journal, once committed), so what the cache holds and counts was written.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Sequence
from itertools import islice, takewhile

from sortedcontainers import SortedList

from pushup.core.engine import CacheStats, Publication
from pushup.core.errors import ChannelsNotFound
from pushup.core.ids import IdClock
from pushup.core.model import ChannelId, ChannelRef, Hit, Message, MessageId
from pushup.engines.memory.budget import CacheBudget
from pushup.engines.memory.channel import Channel
from pushup.engines.memory.durability import Durability
from pushup.observe import metrics


class Cache:
    """Live channels and their cached messages, within the count, age and byte limits."""

    __slots__ = (
        "_journal",
        "aging",
        "budget",
        "by_id",
        "by_name",
        "channels",
        "expiry",
        "max_messages",
        "message_ttl_s",
        "names",
    )

    def __init__(
        self,
        *,
        message_ttl_s: float,
        max_messages: int,
        budget: CacheBudget,
        journal: Durability[Channel],
    ) -> None:
        self.message_ttl_s = message_ttl_s
        self.max_messages = max_messages
        self.channels: dict[ChannelId, Channel] = {}
        self.names: dict[str, Channel] = {}
        # Live channel ids and names in order, for listings in pages.
        self.by_id: SortedList = SortedList()
        self.by_name: SortedList = SortedList()
        # Channels by when their oldest cached message expires, and by when they do.
        self.aging: list[tuple[float, ChannelId]] = []
        self.expiry: list[tuple[float, ChannelId]] = []
        # Every cached message once, oldest first, and their bytes: past the limit the
        # oldest go, over all channels, as they would by age.
        self.budget = budget
        self._journal = journal

    # -- channels --------------------------------------------------------------------

    def add(self, channel: Channel) -> None:
        """A new channel (its name is free), its retention fitted to the cache's limits."""
        channel.keep_s = channel.retention.keep_s(self.message_ttl_s)
        channel.cap = channel.retention.cap(self.max_messages)
        self.channels[channel.id] = channel
        self.by_id.add(channel.id)
        if channel.name is not None:
            self.names[channel.name] = channel
            self.by_name.add(channel.name)
        self.push_expiry(channel, channel.expires_at)

    def page(
        self, prefix: str | None, after: ChannelRef | None, limit: int
    ) -> tuple[list[Channel], ChannelRef | None]:
        """Up to `limit` live channels past `after`: by id, or by name among those
        starting with `prefix`; and the cursor of the next page (None: no more)."""
        if prefix is None:
            low = after if isinstance(after, int) else 0
            ids = list(islice(self.by_id.irange(low, inclusive=(False, True)), limit + 1))
            channels = [self.channels[ChannelId(i)] for i in ids[:limit]]
            more = len(ids) > limit
            return channels, channels[-1].id if more else None
        past = isinstance(after, str) and after >= prefix
        names = self.by_name.irange(after if past else prefix, inclusive=(not past, True))
        found = list(islice(takewhile(lambda n: n.startswith(prefix), names), limit + 1))
        named = [self.names[name] for name in found[:limit]]
        return named, (named[-1].name if len(found) > limit else None)

    def push_expiry(self, channel: Channel, at: float) -> None:
        channel.scheduled_at = at
        heapq.heappush(self.expiry, (at, channel.id))

    def lookup(self, refs: Sequence[ChannelRef]) -> list[Channel]:
        """The live channels, in the order given; raises ChannelsNotFound for the rest."""
        found: list[Channel] = []
        unknown: list[ChannelRef] = []
        for ref in refs:
            channel = self.channels.get(ChannelId(ref)) if isinstance(ref, int) else None
            if channel is None and isinstance(ref, str):
                channel = self.names.get(ref)
            if channel is None:
                unknown.append(ref)
            else:
                found.append(channel)
        if unknown:
            raise ChannelsNotFound(unknown)
        return found

    def lookup_all(self, ref_lists: Sequence[Sequence[ChannelRef]]) -> list[list[Channel]]:
        """Look up several lists at once, naming every unknown channel of all of them."""
        found: list[list[Channel]] = []
        unknown: dict[ChannelRef, None] = {}
        for refs in ref_lists:
            try:
                found.append(self.lookup(refs))
            except ChannelsNotFound as exc:
                unknown.update(dict.fromkeys(exc.refs))
        if unknown:
            raise ChannelsNotFound(list(unknown))
        return found

    def drop(self, channels: Sequence[Channel]) -> list[ChannelId]:
        """Forget channels that expired or were closed; their ids."""
        journal = self._journal
        for channel in channels:
            channel.closed = True
            del self.channels[channel.id]
            self.by_id.remove(channel.id)
            if channel.name is not None:
                del self.names[channel.name]
                self.by_name.remove(channel.name)
            journal.channel(channel)
            for message in channel.messages:
                self.release(message)
            channel.messages.clear()
        return [channel.id for channel in channels]

    # -- messages --------------------------------------------------------------------

    def issue(
        self, targets: list[list[Channel]], publications: Sequence[Publication], ids: IdClock
    ) -> list[Message]:
        """One new message per publication, for its channels (`targets`, each list made
        unique in place); cached by `insert`, once it counts."""
        messages: list[Message] = []
        # Of equal length; zip's `strict` keyword alone costs 0.1 µs a call.
        for channels, (_, data) in zip(targets, publications):  # noqa: B905
            message_id = ids.next()
            if len(channels) > 1:
                unique = {channel.id: channel for channel in channels}
                channel_ids = tuple(sorted(unique))
                if len(unique) < len(channels):  # a channel named twice
                    channels[:] = unique.values()
            else:
                channel_ids = (channels[0].id,)
            messages.append(
                Message(MessageId(message_id), message_id / 1_000_000, channel_ids, data)
            )
        return messages

    def insert(
        self, targets: list[list[Channel]], messages: list[Message], now: float
    ) -> set[ChannelId]:
        """Cache new messages (in id order, one per list of live `targets`), which
        keep their channels alive; the channels that dropped one of them to stay
        within the count or byte limits."""
        evicted: set[ChannelId] = set()
        if not messages:
            return evicted
        # Every older message was told to the listener before these.
        told = messages[0].id - 1
        aging, budget = self.aging, self.budget
        for channels, message in zip(targets, messages):  # noqa: B905 (as in issue)
            for channel in channels:
                cached = channel.messages
                cached.append(message)
                channel.last_message_id = message.id
                channel.expires_at = now + channel.ttl_s
                if len(cached) > channel.cap:
                    metrics.dropped("count")
                    dropped = cached.pop_oldest()
                    channel.dropped_through = dropped.id
                    if dropped.id > told:
                        evicted.add(channel.id)
                    self.release(dropped)
                if not channel.aging:
                    channel.aging = True
                    heapq.heappush(aging, (cached.oldest().time + channel.keep_s, channel.id))
            budget.add(message)
        if budget.bytes > budget.limit:
            self.trim_to_budget(told, evicted)
        return evicted

    def read(
        self, channel_ids: Sequence[ChannelId], low: int, end: float | None
    ) -> tuple[list[Hit], bool]:
        """Cached messages with `low <= id` and `time <= end`, each once, and whether
        any channel dropped one that could have matched (a gap)."""
        found: dict[MessageId, Message] = {}
        matched: dict[MessageId, list[ChannelId]] = {}
        gap = False
        channels = [self.channels.get(channel_id) for channel_id in channel_ids]
        gone = [channel_id for channel_id in channel_ids if channel_id not in self.channels]
        if gone:  # expired between the caller's lookup and this read
            raise ChannelsNotFound(gone)
        for channel in channels:
            assert channel is not None
            channel_id = channel.id
            if channel.dropped_through >= low and (end is None or low / 1_000_000 <= end):
                gap = True
            for message in channel.messages.since(low):
                if end is not None and message.time > end:
                    break
                if message.id not in found:
                    found[message.id] = message
                    matched[message.id] = []
                matched[message.id].append(channel_id)
        hits: list[Hit] = [
            (found[message_id], tuple(sorted(matched[message_id]))) for message_id in sorted(found)
        ]
        return hits, gap

    def stats(self, leave_out: Collection[ChannelId]) -> CacheStats:
        # The budget counts each cached message's bytes once, however many channels
        # hold it: no walk over the cache, only over the channels (and the few
        # messages of those left out, published to them alone).
        left_out = set(leave_out)
        entries = 0
        channels = 0
        excluded = 0
        for channel in self.channels.values():
            if channel.id in left_out:
                excluded += sum(
                    len(message.data)
                    for message in channel.messages
                    if left_out.issuperset(message.channels)
                )
                continue
            channels += 1
            entries += len(channel.messages)
        return CacheStats(channels, entries, self.budget.bytes - excluded)

    def release(self, message: Message, *, journaled: bool = True) -> None:
        """A channel dropped `message`: once no live channel caches it, it leaves the
        byte budget (and, if `journaled`, the journal)."""
        if len(message.channels) > 1:  # else its only channel just let it go
            for channel_id in message.channels:
                channel = self.channels.get(channel_id)
                if channel is not None and message in channel.messages:
                    return
        self.budget.discard(message)
        if journaled:
            self._journal.forget(message.id)

    def trim_to_budget(self, told: int, evicted: set[ChannelId]) -> None:
        """Drop the oldest messages over all channels until the cache fits its bytes.
        Being the oldest cached anywhere, each is at the front of its channels; their
        gap marks move past it, so a subscriber that wanted it learns of the gap."""
        budget, journal = self.budget, self._journal
        while budget.over() and budget:
            message = budget.pop_oldest()
            for channel_id in message.channels:
                channel = self.channels.get(channel_id)
                if channel is None:
                    continue
                cached = channel.messages
                if cached and cached.oldest() is message:
                    cached.pop_oldest()
                elif message in cached:
                    cached.remove(message)
                else:
                    continue
                channel.dropped_through = max(channel.dropped_through, message.id)
                metrics.dropped("bytes")
                if message.id > told:
                    evicted.add(channel_id)
                journal.channel(channel)  # its gap mark moved
            journal.forget(message.id)

    # -- expiry ----------------------------------------------------------------------

    def expire(self, now: float) -> list[Channel]:
        """Drop messages older than the message TTL and channels past their expiry;
        the channels dropped."""
        aging = self.aging
        while aging and aging[0][0] <= now:
            _, channel_id = heapq.heappop(aging)
            channel = self.channels.get(channel_id)
            if channel is None:
                continue
            cached, ttl_s = channel.messages, channel.keep_s
            # The same expression as the heap key, so a trimmed channel's next key is
            # always past `now` and the loop ends.
            while cached and cached.oldest().time + ttl_s <= now:
                metrics.dropped("ttl")
                dropped = cached.pop_oldest()
                channel.dropped_through = max(channel.dropped_through, dropped.id)
                # The journal's compaction deletes aged messages in bulk.
                self.release(dropped, journaled=False)
            channel.aging = bool(cached)
            if cached:
                heapq.heappush(aging, (cached.oldest().time + ttl_s, channel_id))
        heap = self.expiry
        expired: dict[ChannelId, Channel] = {}
        while heap and heap[0][0] <= now:
            at, channel_id = heapq.heappop(heap)
            channel = self.channels.get(channel_id)
            if channel is None:
                continue
            if channel.expires_at <= now:
                expired[channel_id] = channel
            elif at == channel.scheduled_at:
                # Active since this entry was pushed: look again at its new expiry.
                channel.scheduled_at = channel.expires_at
                heapq.heappush(heap, (channel.expires_at, channel_id))
        if not expired:
            return []
        channels = list(expired.values())
        self.drop(channels)
        return channels

    def next_due(self) -> float:
        """When the next message or channel expires (inf: nothing will)."""
        due = math.inf
        if self.aging:
            due = self.aging[0][0]
        if self.expiry:
            due = min(due, self.expiry[0][0])
        return due
