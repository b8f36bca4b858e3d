"""The Redis engine: channels, the message cache and ids shared by every node.

Every operation is one Lua script (`scripts.py`), so no node sees half of one, and
ids come from one global sequence. Nodes hear of publications and closes on one
pub/sub channel (`events.py`, `subscription.py`), and keep heartbeats to count the
live nodes (`nodes.py`) and ask them for subscriber counts (`counts.py`).

Durability is Redis's: with `appendonly yes` an acknowledged publication survives a
restart of Redis; `appendfsync always` keeps it even through a crash of Redis or its
machine (`everysec`, the default, may lose the last second then). Without
persistence a restarted Redis starts empty: parked polls get 410, and ids still only
grow, since they come from the clock. One Redis, or the master Redis Sentinel names
(`connect.py`: found again after a failover), not Redis Cluster: the scripts touch keys
they compute, which Cluster does not allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pushup.core.engine import EngineHealth, EngineListener, Publication, SubscriberCount
from pushup.core.errors import EngineUnavailable, IdempotencyKeyReused, NameTaken
from pushup.core.idempotency import IdempotencyKey
from pushup.core.model import (
    SERVER_RETENTION,
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
from pushup.engines.redis import encoding
from pushup.engines.redis.connect import connect
from pushup.engines.redis.counts import Counting
from pushup.engines.redis.events import EventStream
from pushup.engines.redis.health import Health
from pushup.engines.redis.keys import Keys
from pushup.engines.redis.known import KnownChannels
from pushup.engines.redis.nodes import Membership
from pushup.engines.redis.scripts import UNREACHABLE, Scripts
from pushup.engines.redis.shared_calls import SharedCalls
from pushup.engines.redis.subscription import Subscription, close_quietly
from pushup.engines.redis.tasks import stop

log = logging.getLogger("pushup.redis")


class RedisEngine:
    """Keeps channels and cached messages in Redis, so several nodes share one truth.

    `clock` replaces Redis TIME as the time the scripts use (tests drive it by hand);
    by default every node takes the time from Redis, so they agree on it.
    """

    def __init__(
        self,
        url: str,
        *,
        message_ttl_s: float,
        max_messages: int,
        channel_ttl_s: float,
        max_cache_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] | None = None,
        prefix: str = "pushup:",
        timeout_s: float = 5.0,
        sweep_interval_s: float = 0.25,
        max_connections: int = 64,
        heartbeat_s: float = 1.0,
        count_timeout_s: float = 0.25,
    ) -> None:
        self._max_messages = str(max_messages)
        # Payload bytes cached over all channels, counted exactly by the scripts.
        self._max_cache_bytes = str(max_cache_bytes)
        self._channel_ttl = repr(float(channel_ttl_s))
        self._sweep_interval_s = sweep_interval_s
        # One Redis, or the master Sentinel names (`connect.py`).
        self._clients = connect(url, timeout_s=timeout_s, max_connections=max_connections)
        self._redis = self._clients.store
        keys = Keys.of(prefix, self._clients.db)
        self._health = Health()
        # Reads in flight, by query: polls asking the same thing share one round trip.
        self._shared = SharedCalls()
        self._scripts = Scripts(
            self._redis,
            keys,
            message_ttl_s=message_ttl_s,
            clock=clock,
            health=self._health,
            wait=self._clients.wait,
        )
        # Channels this node can vouch for: re-polls on them may skip Redis (`known.py`).
        self._known = KnownChannels(time.time if clock is None else clock)
        self._events = EventStream(self._shared, self._known, self._health, timeout_s)
        self._membership = Membership(self._scripts, self._health, keys.nodes, heartbeat_s)
        self._counting = Counting(
            redis=self._redis,
            scripts=self._scripts,
            keys=keys,
            membership=self._membership,
            events=self._events,
            health=self._health,
            timeout_s=count_timeout_s,
        )
        self._subscription = Subscription(
            self._clients.events,
            store=self._redis,
            keys=keys,
            events=self._events,
            handlers={
                keys.events.encode(): self._events.on_event,
                keys.control.encode(): self._counting.on_question,
                self._counting.reply_channel.encode(): self._counting.on_answer,
            },
            timeout_s=timeout_s,
        )
        self._listener: EngineListener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def node_id(self) -> str:
        return self._membership.node_id

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listener: EngineListener) -> None:
        self._listener = listener
        self._counting.begin(listener)
        try:
            reply = await self._scripts.init()
            pubsub, last, event = await self._subscription.open()
        except UNREACHABLE as exc:
            raise EngineUnavailable(f"cannot reach Redis: {exc}") from exc
        try:
            await self._membership.beat()
        except BaseException:
            await close_quietly(pubsub)
            raise
        self._tell_ended(reply[2])
        self._events.begin(listener, max(int(reply[3]), last), event)
        self._subscription.start(pubsub)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="pushup-redis-sweep")
        self._membership.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._subscription.stop()
        if self._sweeper is not None:
            await stop(self._sweeper)
            self._sweeper = None
        await self._membership.stop()
        await self._counting.stop()
        self._events.lost()
        if self._listener is not None:
            # Leave at once rather than be counted as live until the heartbeat is stale.
            with contextlib.suppress(EngineUnavailable, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._membership.beat(leave=True)
        await self._clients.aclose()

    # -- channels --------------------------------------------------------------------

    async def create_channel(
        self,
        ttl_s: float | None,
        name: str | None,
        retention: Retention = SERVER_RETENTION,
        *,
        owner: str | None = None,
    ) -> ChannelInfo:
        ttl = self._channel_ttl if ttl_s is None else repr(float(ttl_s))
        keep_s, cap = encoding.retention_args(retention)
        reply = await self._run(
            "create",
            ttl,
            "" if name is None else name,
            keep_s,
            cap,
            "" if owner is None else owner,
        )
        if reply[0] == b"taken":
            assert name is not None
            raise NameTaken(name)
        return encoding.info(reply[1:])

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        ttl = "" if ttl_s is None else repr(float(ttl_s))
        reply = await self._run("renew", encoding.ref(ref), ttl)
        info = encoding.info(encoding.found(reply))
        self._known.renewed(info.id, info.expires_at)
        return info

    async def close_channel(self, ref: ChannelRef) -> None:
        encoding.found(await self._run("close", encoding.ref(ref)))

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        return encoding.info(encoding.found(await self._run("info", encoding.ref(ref))))

    async def list_channels(
        self, prefix: str | None, after: ChannelRef | None, limit: int
    ) -> ChannelPage:
        """One round trip: a range of a sorted set of ids, or of names (`list.lua`)."""
        reply = await self._run("list", *encoding.listing_args(prefix, after, limit))
        return encoding.page(encoding.found(reply), prefix is not None)

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        """Known live on this node (`known.py`), or asked of Redis: shared like reads
        (see `read`), since every poll resolves its channels first."""
        if self._events.live:
            known = self._known.lookup(refs)
            if known is not None:
                return known
        key = ("resolve", *refs)
        return list(await self._shared.join(key, lambda: self._resolve(refs)))

    async def _resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        generation = self._known.generation if self._events.live else None
        reply = encoding.found(await self._run("resolve", *map(encoding.ref, refs)))
        as_of_event, channels = encoding.resolved(reply)
        events = self._events
        if generation == self._known.generation and events.live:
            # Redis ran it while this node's event stream was up, and it still is: every
            # later close or publication of these channels reaches `known` as an event.
            self._known.learn(
                refs,
                channels,
                as_of_event=as_of_event,
                heard_event=events.seen,
                high_water=events.high_water,
            )
        return [channel_id for channel_id, _, _ in channels]

    # -- messages --------------------------------------------------------------------

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        args = encoding.publish_args(self._max_messages, self._max_cache_bytes, publications)
        return encoding.published(publications, encoding.found(await self._run("publish", *args)))

    async def publish_once(
        self, publications: Sequence[Publication], key: IdempotencyKey
    ) -> tuple[list[Message], bool]:
        """One script finds the key's answer or stores the publication with it
        (`publish.lua`): atomic over every node."""
        args = encoding.publish_args(self._max_messages, self._max_cache_bytes, publications, key)
        reply = await self._run("publish", *args)
        if reply[0] == b"reused":
            raise IdempotencyKeyReused(key.key)
        replayed = reply[0] == b"replayed"
        return encoding.published(publications, encoding.found(reply)), replayed

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        """Nothing, at once, when this node heard everything up to past `since` and
        nothing on these channels after it (`known.py`); else join an identical read in
        flight, or start one (`shared_calls.py`).

        Answering without Redis is safe: every message at or below the events high
        water was heard, none of those on these channels is after `since`, and any
        later one comes as an event, which wakes the poll the hub parks at the high
        water. Joining a read begun a moment earlier is safe: the hub re-reads when a
        publication was announced after the read's high water, and a later one wakes
        the parked poll.
        """
        if since is not None and end is None and self._events.live:
            # A cursor above the high water (another node heard more, or a clock set
            # back) is Redis's to place; a read with an end may be answered at once by
            # the hub, so it must see what this node has not heard yet.
            high_water = self._events.high_water
            if since <= high_water and self._known.quiet_since(channel_ids, since):
                return ReadResult([], False, MessageId(high_water))
        key = ("read", tuple(channel_ids), since, start, end)
        result: ReadResult = await self._shared.join(
            key, lambda: self._read(channel_ids, since, start, end)
        )
        return result

    async def _read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        low = encoding.lowest_wanted_id(since, start)
        high = "+inf" if end is None else str(encoding.highest_wanted_id(end))
        # As in the memory engine: a drop counts as a gap only if it could have matched.
        gap_possible = end is None or low / 1_000_000 <= end
        reply = await self._run(
            "read", str(low), high, "1" if gap_possible else "0", *map(str, channel_ids)
        )
        return encoding.read_result(encoding.found(reply))

    def high_water(self) -> MessageId:
        return MessageId(self._events.high_water)

    # -- nodes -----------------------------------------------------------------------

    async def count_subscribers(self, channel_id: ChannelId) -> SubscriberCount:
        """This node's parked polls on a channel plus every other live node's that
        answers in time (`counts.py`)."""
        return await self._counting.count(channel_id)

    async def count_each(self, channel_ids: Sequence[ChannelId]) -> list[SubscriberCount]:
        return await self._counting.count_each(channel_ids)

    async def presence(self, channel_id: ChannelId) -> Presence:
        """This node's presence on a channel merged with every other live node's that
        answers in time (`counts.py`)."""
        return await self._counting.presence(channel_id)

    def health(self) -> EngineHealth:
        return self._health.report(
            self.node_id,
            self._membership.live_nodes,
            events_live=self._events.live,
            closed=self._closed,
            received_publications=self._events.received,
        )

    # -- internals -------------------------------------------------------------------

    async def _run(self, script: str, *args: str | bytes) -> list[Any]:
        """Run one script; wait until this node has heard the events it published, so
        local listeners know of them when the caller goes on (as with the memory engine)."""
        reply = await self._scripts.run(script, *args)
        event = int(reply[1])
        if self._events.unheard(event):
            await self._events.hear(event)
        if reply[2]:
            self._tell_ended(reply[2])
        return [reply[0], *reply[3:]]

    def _tell_ended(self, dropped: list[Any]) -> None:
        """This node's script closed or expired these channels: it alone tells."""
        if dropped and self._listener is not None:
            self._listener.ended(encoding.ended(dropped))

    async def _sweep_forever(self) -> None:
        """One timer for the whole node: expire messages and channels without a
        request, and let every node hear of expired channels (410 to their polls).
        Every node sweeps; the script makes each expiry happen once."""
        failing = False
        while not self._closed:
            delay = self._sweep_interval_s
            try:
                reply = await self._run("sweep")
            except EngineUnavailable as exc:
                if not failing:
                    log.warning("cannot sweep expired channels: %s", exc)
                failing = True
            else:
                failing = False
                if reply[1]:
                    due_in = float(reply[1]) - float(reply[2])
                    delay = min(delay, max(due_in, 0.005))
            await asyncio.sleep(delay)
