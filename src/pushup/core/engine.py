"""The engine boundary: where channels and messages live, and who hears of changes.

The hub (parked subscriptions, fan-out) talks only to this interface, so the storage can
be the embedded in-memory engine or a shared one for several nodes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

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
from pushup.core.presence import Presence

if TYPE_CHECKING:
    from pushup.core.idempotency import IdempotencyKey

# One publication as the engine takes it: target channels and the JSON-encoded payload.
Publication = tuple[Sequence[ChannelRef], bytes]


class EngineListener(Protocol):
    """Told synchronously by the engine of every change subscribers must hear about."""

    def published(self, messages: Sequence[Message], evicted: frozenset[ChannelId]) -> None:
        """`messages` were stored, in id order; `evicted` lists channels that already
        dropped some of them (more than `max_messages` in one batch)."""

    def closed(self, channel_ids: Sequence[ChannelId]) -> None:
        """These channels were closed or expired (told on every node)."""

    def ended(self, ends: Sequence[ChannelEnd]) -> None:
        """These channels were closed or expired by this node's own operation: told
        once over every node sharing the engine, on the node whose operation removed
        them (a close, or the call or sweep that found them expired), so the node told
        can speak for the whole cluster (the application's channel events). An expiry
        several nodes find due at once is told once, by the one whose write removed it."""

    async def resync(self) -> None:
        """The engine may have missed events (its link to a shared store was lost and
        is back): re-read the store for everything waiting on it. The engine holds
        further events back until this returns, so none overtakes the re-read."""

    def subscribers(self, channel_id: ChannelId) -> int:
        """Polls parked on this channel in this process (a shared engine tells other
        nodes, which count their own)."""

    def presence(self, channel_id: ChannelId) -> Presence:
        """Who is on this channel in this process: its parked polls and open streams,
        and the distinct `sub` claims of their tokens (a shared engine tells other
        nodes, which answer with their own)."""


class Engine(Protocol):
    """Channels and the message cache. A shared engine raises EngineUnavailable from
    any call while its store is out of reach."""

    async def start(self, listener: EngineListener) -> None: ...

    async def close(self) -> None: ...

    async def create_channel(
        self,
        ttl_s: float | None,
        name: str | None,
        retention: Retention = SERVER_RETENTION,
        *,
        owner: str | None = None,
    ) -> ChannelInfo:
        """Raises NameTaken. `retention` is kept with the channel (across restarts of a
        store that keeps channels) and applied by the engine's eviction. `owner`, the
        creating publisher key's name, is kept with the channel for as long as it lives
        (across restarts and nodes) and shown by `channel_info`."""

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        """Raises ChannelsNotFound."""

    async def close_channel(self, ref: ChannelRef) -> None:
        """Raises ChannelsNotFound."""

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        """Raises ChannelsNotFound."""

    async def list_channels(
        self, prefix: str | None, after: ChannelRef | None, limit: int
    ) -> ChannelPage:
        """At most `limit` live channels after `after`: by id without a prefix, by name
        (by code point) among those whose name starts with `prefix`. A page starts past
        `after` (the last id or name of the page before), so none repeats a channel and
        none skips one live throughout; one made meanwhile comes later or not at all."""

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        """Ids of live channels, in the order given; raises ChannelsNotFound for the rest."""

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        """All or nothing: raises ChannelsNotFound and stores nothing if any is unknown."""

    async def publish_once(
        self, publications: Sequence[Publication], key: IdempotencyKey
    ) -> tuple[list[Message], bool]:
        """`publish`, once per key within its window: the messages stored, and False;
        or, if the key already stored these publications, their messages as first
        answered (nothing is stored, nor told to the listener), and True. Raises
        IdempotencyKeyReused if the key went with other publications. Only a stored
        publication is kept as an answer: after an error a retry runs afresh.

        Finding the answer and storing the publication with it are one atomic step over
        every node of a shared engine (calls at once with one key store it once), and
        the answer outlives a restart of a persistent one. An answer is given only once
        its publication counts (committed, with a journal), even to a call that came
        while the first was in flight and whose caller has gone."""

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        """Cached messages after `since` with `start <= time <= end`, each once."""

    def high_water(self) -> MessageId:
        """Every message published from now on has an id above this, and every one at
        or below it has already been told to the listener (or covered by a resync)."""


# -- extras: engines shared by several nodes ---------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriberCount:
    """Polls parked on one channel: on this node, and over every node counted."""

    total: int
    local: int
    # Nodes sharing the engine that are alive (by their heartbeat), and how many of
    # them are in `total`: fewer when some did not answer in time, which makes `total`
    # a lower bound. None with an engine of one node.
    live_nodes: int | None = None
    counted_nodes: int | None = None


@runtime_checkable
class Clustered(Protocol):
    """An engine several nodes share. Each node holds its own parked polls, so a
    channel's subscribers are counted by asking the other nodes."""

    async def count_subscribers(self, channel_id: ChannelId) -> SubscriberCount:
        """This node's count plus each live node's that answers in a bounded time."""

    async def count_each(self, channel_ids: Sequence[ChannelId]) -> list[SubscriberCount]:
        """The same for several channels, with one question to the other nodes."""

    async def presence(self, channel_id: ChannelId) -> Presence:
        """This node's presence merged with each live node's that answers in a bounded
        time (`live_nodes` and `counted_nodes` say how many); a node that died is no
        longer live once its heartbeats stop, and is not waited for."""


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """Whether the engine can serve now, and what `/health` shows of it (JSON-ready)."""

    ok: bool
    details: Mapping[str, object]


@runtime_checkable
class Monitored(Protocol):
    """An engine whose store can be out of reach (a load balancer should then send
    traffic elsewhere)."""

    def health(self) -> EngineHealth:
        """The state as last seen, without any I/O: a health check must never hang."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    """The size of what an engine holds in this process, for the metrics."""

    channels: int
    # Cache entries: a message cached in three channels counts three times.
    messages: int
    # Payload bytes of the distinct cached messages.
    bytes: int


@runtime_checkable
class Measured(Protocol):
    """An engine whose channels and cache live in this process, so their size can be
    read at scrape time (a shared store's size belongs to the store's own metrics)."""

    def cache_stats(self, leave_out: Collection[ChannelId] = ()) -> CacheStats:
        """Counted now, less the channels in `leave_out` (the dashboard's own); costs a
        walk over the cached messages, not a hot-path counter."""
