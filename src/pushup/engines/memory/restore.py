"""The cache rebuilt from what the journal kept, as if the server had never stopped:
what expired meanwhile is gone, gaps are still reported, and ids continue above every
id stored, even if the clock went back."""

from __future__ import annotations

import heapq

from pushup.core.ids import IdClock
from pushup.core.model import Message
from pushup.engines.memory.cache import Cache
from pushup.engines.memory.channel import Channel
from pushup.engines.memory.snapshot import Snapshot


def restore(
    cache: Cache, snapshot: Snapshot, now: float, channel_ids: IdClock, message_ids: IdClock
) -> None:
    """Fill the (empty) cache from `snapshot`; nothing to do for an empty one."""
    channel_ids.advance_to(snapshot.last_channel_id)
    message_ids.advance_to(snapshot.last_message_id)
    channels = cache.channels
    for stored in snapshot.channels:  # in id order: the newer of two names wins
        if stored.expires_at <= now:
            continue
        channel = Channel(stored.id, stored.name, stored.ttl_s, now, stored.retention, stored.owner)
        channel.expires_at = stored.expires_at
        channel.last_message_id = stored.last_message_id
        channel.dropped_through = stored.dropped_through
        if stored.name is not None:
            older = cache.names.get(stored.name)
            if older is not None:  # possible only if the clock went back
                cache.drop([older])
        cache.add(channel)
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
        # Each channel keeps it as long as its own retention says.
        kept = False
        for channel in holders:
            if message.time + channel.keep_s <= now:
                channel.dropped_through = message_id
            else:
                channel.messages.append(message)
                kept = True
        if kept:
            cache.budget.add(message)
    for channel in channels.values():
        cached = channel.messages
        while len(cached) > channel.cap:
            dropped = cached.pop_oldest()
            channel.dropped_through = dropped.id
            cache.release(dropped, journaled=False)
        if cached:
            channel.aging = True
            heapq.heappush(cache.aging, (cached.oldest().time + channel.keep_s, channel.id))
    # Started with a smaller --max-cache-bytes than the journal holds; every message
    # restored counts as told.
    cache.trim_to_budget(message_ids.last, set())
