"""One channel of the embedded engine: its settings, expiry, and cached messages."""

from __future__ import annotations

import math
import sys

from pushup.core.model import SERVER_RETENTION, ChannelId, ChannelInfo, MessageId, Retention
from pushup.engines.memory.message_log import MessageLog


class Channel:
    """A live channel (`closed` once it is not); the journal writes it as it is."""

    __slots__ = (
        "aging",
        "cap",
        "closed",
        "dropped_through",
        "expires_at",
        "id",
        "keep_s",
        "last_message_id",
        "messages",
        "name",
        "owner",
        "retention",
        "scheduled_at",
        "ttl_s",
    )

    def __init__(
        self,
        id: ChannelId,
        name: str | None,
        ttl_s: float,
        now: float,
        retention: Retention = SERVER_RETENTION,
        owner: str | None = None,
    ) -> None:
        self.id = id
        self.name = name
        # The publisher key that created it; never changes.
        self.owner = owner
        self.ttl_s = ttl_s
        # As asked for (kept by the journal, shown), and as applied by the cache, which
        # sets `keep_s` and `cap` within its own limits when the channel joins it.
        self.retention = retention
        self.keep_s = math.inf
        self.cap = sys.maxsize
        self.expires_at = now + ttl_s
        # The time of this channel's authoritative expiry-heap entry; always at or
        # before `expires_at`. Other entries for it are stale and dropped when popped.
        self.scheduled_at = self.expires_at
        # The paper's per-channel B-tree of messages keyed by time (ids order like
        # time); ids only grow, so an array searched by bisection (message_log.py).
        self.messages = MessageLog()
        # Newest id this channel dropped from its cache (by age or count); 0 if none.
        self.dropped_through = 0
        self.last_message_id: MessageId | None = None
        self.closed = False
        # Whether the cache's aging heap holds an entry for this channel's oldest message.
        self.aging = False

    def info(self) -> ChannelInfo:
        return ChannelInfo(
            id=self.id,
            name=self.name,
            expires_at=self.expires_at,
            ttl_s=self.ttl_s,
            messages=len(self.messages),
            last_message_id=self.last_message_id,
            retention=self.retention,
            owner=self.owner,
        )
