"""The NATS JetStream engine: channels, the message cache and ids shared by every node.

Every change is one entry appended to one stream (`writer.py`), on top of the last
entry this node applied, so the stream orders all changes of all nodes as Redis's
scripts do. Every node follows the stream (`log.py`) and applies each entry to its own
copy of the state (`replica.py`, the embedded engine's cache), so reads, merges across
channels and gaps are local and need no round trip; a publication to several channels
is one entry with one id per message and its payload once. The stream keeps only the
newest entry of each subject (`layout.py`), so it is also the state a restarted node,
or a restarted cluster, replays.

Durability is JetStream's: a change is acknowledged once the stream's replicas (R3 on a
cluster of three) have it on file.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable, Collection, Sequence

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from pushup.core.engine import (
    CacheStats,
    EngineHealth,
    EngineListener,
    Publication,
    SubscriberCount,
)
from pushup.core.errors import ChannelsNotFound, EngineUnavailable, NameTaken
from pushup.core.model import (
    MAX_ID,
    ChannelId,
    ChannelInfo,
    ChannelRef,
    Message,
    MessageId,
    ReadResult,
)
from pushup.engines.memory.channel import Channel
from pushup.engines.nats import layout
from pushup.engines.nats.health import Health
from pushup.engines.nats.layout import Servers, Subjects
from pushup.engines.nats.log import Log
from pushup.engines.nats.nodes import Nodes
from pushup.engines.nats.records import ChannelRecord, Closed, Expired, Floor, Published
from pushup.engines.nats.replica import Replica
from pushup.engines.nats.writer import UNREACHABLE, Append, Writer, need_task

log = logging.getLogger("pushup.nats")


class NatsEngine:
    """Keeps channels and cached messages in a JetStream stream that every node
    replays, so several nodes share one truth.

    `clock` is the time decisions are made with (tests drive it by hand).
    """

    def __init__(
        self,
        url: str,
        *,
        message_ttl_s: float,
        max_messages: int,
        channel_ttl_s: float,
        max_cache_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
        sweep_interval_s: float = 0.25,
        heartbeat_s: float = 1.0,
        count_timeout_s: float = 0.25,
    ) -> None:
        self._servers = Servers.parse(url)
        self._subjects = Subjects.of(self._servers.stream)
        self._message_ttl_s = message_ttl_s
        self._channel_ttl_s = channel_ttl_s
        self._clock = clock
        self._timeout_s = timeout_s
        self._sweep_interval_s = sweep_interval_s
        self._replica = Replica(
            message_ttl_s=message_ttl_s,
            max_messages=max_messages,
            max_cache_bytes=max_cache_bytes,
            clock=clock,
        )
        self.node_id = uuid.uuid4().hex[:12]
        self._health = Health()
        self._nodes = Nodes(
            self.node_id, self._subjects, heartbeat_s=heartbeat_s, timeout_s=count_timeout_s
        )
        self._nc: Client | None = None
        self._log: Log | None = None
        self._writer: Writer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # Channels this node expired, whose records it still has to purge.
        self._to_purge: list[ChannelId] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listener: EngineListener) -> None:
        self._replica.listener = listener
        try:
            # nats-py would try the first connection again and again: bound it.
            async with asyncio.timeout(self._timeout_s):
                nc = await self._connect()
        except (*UNREACHABLE, nats.errors.NoServersError) as exc:
            raise EngineUnavailable(f"cannot reach NATS: {exc!r}") from exc
        self._nc = nc
        js = nc.jetstream(timeout=self._timeout_s)
        deadline = time.monotonic() + 3 * self._timeout_s
        try:
            await self._ensure_stream(js, deadline)
            await self._open(nc, js, deadline)
            await self._nodes.start(nc, listener)
        except UNREACHABLE as exc:
            raise EngineUnavailable(f"cannot use NATS JetStream: {exc!r}") from exc
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="pushup-nats-sweep")

    async def _connect(self) -> Client:
        return await nats.connect(
            servers=list(self._servers.urls),
            connect_timeout=min(self._timeout_s, 2.0),
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            allow_reconnect=True,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self._nodes.stop()
        if self._log is not None:
            await self._log.close()
        if self._nc is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self._nc.close()
            except Exception as exc:  # reconnecting, its transport gone: nothing to flush
                log.debug("closing the NATS connection: %r", exc)

    async def _ensure_stream(self, js: JetStreamContext, deadline: float) -> None:
        """Make the stream unless it exists; a cluster that is still electing its
        JetStream leader (just started, or a server lost) is given until `deadline`."""
        config = layout.stream_config(self._servers, self._subjects)
        while True:
            try:
                try:
                    await js.stream_info(self._servers.stream)
                except NotFoundError:
                    try:
                        await js.add_stream(config)
                    except BadRequestError:  # another node made it meanwhile
                        await js.stream_info(self._servers.stream)
                return
            except (*UNREACHABLE, ServiceUnavailableError) as exc:
                if isinstance(exc, NotFoundError | BadRequestError):
                    raise
                await _wait_or_raise(exc, deadline)

    async def _open(self, nc: Client, js: JetStreamContext, deadline: float) -> None:
        """Replay the stream, then raise the id floor. A stream just made, or a
        cluster just started and electing its leaders, may answer no one for a while:
        each step is tried again until `deadline` (a floor written twice is harmless)."""
        while True:
            log_ = Log(nc, js, self._servers.stream, self._subjects, self._replica)
            try:
                await log_.open(self._timeout_s)  # fills the replica only once replayed
                break
            except UNREACHABLE as exc:
                await log_.close()
                await _wait_or_raise(exc, deadline)
        self._log = log_
        self._writer = Writer(nc, js, self._servers.stream, log_, self._timeout_s)
        while True:
            try:
                await self._writer.append(self._raise_floor)
                return
            except EngineUnavailable as exc:
                await _wait_or_raise(exc, deadline)

    def _raise_floor(self) -> Append:
        """Ids issued by any node from now on are above this node's clock."""
        now_us = int(self._clock() * 1_000_000)
        replica = self._replica
        floor = Floor(max(now_us, replica.message_ids.last), max(now_us, replica.channel_ids.last))
        return Append(self._subjects.floor, floor)

    # -- channels --------------------------------------------------------------------

    async def create_channel(self, ttl_s: float | None, name: str | None) -> ChannelInfo:
        await self._expire()
        ttl = self._channel_ttl_s if ttl_s is None else ttl_s

        def decide() -> Append:
            if name is not None and name in self._replica.cache.names:
                raise NameTaken(name)
            channel_id = ChannelId(self._replica.channel_ids.next())
            record = ChannelRecord(channel_id, name, ttl, self._clock() + ttl, None, 0)
            return Append(self._subjects.channel(channel_id), record)

        record = await self._write(decide)
        assert isinstance(record, ChannelRecord)
        return ChannelInfo(record.id, name, record.expires_at, ttl, 0, None)

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        await self._expire()

        def decide() -> Append:
            (channel,) = self._replica.cache.lookup([ref])
            ttl = channel.ttl_s if ttl_s is None else ttl_s
            record = ChannelRecord(
                channel.id,
                channel.name,
                ttl,
                self._clock() + ttl,
                channel.last_message_id,
                channel.dropped_through,
            )
            return Append(self._subjects.channel(channel.id), record)

        record = await self._write(decide)
        assert isinstance(record, ChannelRecord)
        channel = self._replica.cache.channels.get(record.id)
        if channel is not None:
            return channel.info()
        return ChannelInfo(
            record.id, record.name, record.expires_at, record.ttl_s, 0, record.last_message_id
        )

    async def close_channel(self, ref: ChannelRef) -> None:
        await self._expire()

        def decide() -> Append:
            (channel,) = self._replica.cache.lookup([ref])
            return Append(self._subjects.channel(channel.id), Closed(channel.id), layout.ttl(0))

        await self._write(decide)

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        await self._expire()
        (channel,) = await self._lookup([ref])
        return channel.info()

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        await self._expire()
        return [channel.id for channel in await self._lookup(refs)]

    # -- messages --------------------------------------------------------------------

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        await self._expire()

        def decide() -> Append:
            replica = self._replica
            targets = replica.cache.lookup_all([refs for refs, _ in publications])
            messages = []
            ttl = self._message_ttl_s
            for channels, (_, data) in zip(targets, publications, strict=True):
                message_id = MessageId(replica.message_ids.next())
                ids = tuple(sorted({channel.id for channel in channels}))
                messages.append((message_id, ids, data))
                ttl = max(ttl, *(channel.ttl_s for channel in channels))
            entry = Published(self._clock(), tuple(messages))
            return Append(self._subjects.publication(messages[0][0]), entry, layout.ttl(ttl))

        entry = await self._write(decide)
        assert isinstance(entry, Published)
        return [Message(mid, mid / 1_000_000, ids, data) for mid, ids, data in entry.messages]

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        """A local read of this node's copy: every entry it applied is in it."""
        await self._expire()
        if since is not None and since > self._replica.told:
            # A cursor from a node further along the stream (its subscriber came here
            # when that node died): read from below it and the poll would be handed
            # a cursor below its own, or parked from there and given again what it had.
            await self._catch_up()
        hits, gap = self._replica.cache.read(channel_ids, _lowest_wanted_id(since, start), end)
        return ReadResult(hits, gap, self.high_water())

    def high_water(self) -> MessageId:
        return MessageId(self._replica.told)

    def cache_stats(self, leave_out: Collection[ChannelId] = ()) -> CacheStats:
        return self._replica.cache.stats(leave_out)

    # -- nodes -----------------------------------------------------------------------

    async def count_subscribers(self, channel_id: ChannelId) -> SubscriberCount:
        """This node's parked polls on a channel plus every other live node's that
        answers in time (`nodes.py`)."""
        await need_task()
        return await self._nodes.count(channel_id)

    def health(self) -> EngineHealth:
        connected = self._nc is not None and self._nc.is_connected
        return self._health.report(
            self.node_id, self._nodes.live_nodes, connected=connected or self._closed
        )

    # -- internals -------------------------------------------------------------------

    async def _lookup(self, refs: Sequence[ChannelRef]) -> list[Channel]:
        """The channels from this node's copy; a channel it does not know yet may have
        just been created through another node, so it catches up once before saying no."""
        try:
            return self._replica.cache.lookup(refs)
        except ChannelsNotFound:
            await self._catch_up()
            return self._replica.cache.lookup(refs)

    async def _catch_up(self) -> None:
        if self._log is None:
            raise EngineUnavailable("the NATS engine is not started")
        await need_task()
        try:
            await self._log.sync(self._timeout_s)
        except UNREACHABLE as exc:
            self._health.unreachable(str(exc))
            raise EngineUnavailable(f"NATS is unreachable: {exc!r}") from exc

    async def _write(self, decide: Callable[[], Append | None]) -> object:
        if self._writer is None:
            raise EngineUnavailable("the NATS engine is not started")
        try:
            try:
                entry = await self._writer.append(decide)
            except ChannelsNotFound:
                # Decided on a copy that may not know a channel another node just made.
                await self._catch_up()
                entry = await self._writer.append(decide)
        except EngineUnavailable as exc:
            self._health.unreachable(str(exc))
            raise
        self._health.reachable()
        return entry

    async def _expire(self) -> None:
        """Age messages, and expire due channels with one entry (the first node to see
        them due writes it; the others find nothing left to do)."""
        replica = self._replica
        now = self._clock()
        if replica.next_due() > now:
            return
        replica.age(now)
        if not replica.due(now):
            return

        def decide() -> Append | None:
            due = replica.due(self._clock())
            if not due:
                return None
            return Append(self._subjects.expiry, Expired(tuple(due)), layout.ttl(0))

        entry = await self._write(decide)
        if isinstance(entry, Expired):
            self._to_purge.extend(entry.ids)

    async def _sweep_forever(self) -> None:
        """One timer for the whole node: expire without a request, purge the records
        of the channels it expired, and, after a failed call, find out when NATS
        serves again: a node whose `/health` says 503 gets no call from a balancer to
        tell it (nor a reconnection, if its server only froze)."""
        failing = False
        while not self._closed:
            try:
                await self._expire()
                await self._purge()
                if self._health.down and self._nc is not None and self._nc.is_connected:
                    await self._catch_up()
                    self._health.reachable()
            except EngineUnavailable as exc:
                if not failing:
                    log.warning("NATS is out of reach: %s", exc)
                failing = True
            else:
                failing = False
            await asyncio.sleep(self._sweep_interval_s)

    async def _purge(self) -> None:
        assert self._nc is not None
        jsm = self._nc.jetstream(timeout=self._timeout_s)
        while self._to_purge:
            channel_id = self._to_purge[-1]
            try:
                await jsm.purge_stream(
                    self._servers.stream, subject=self._subjects.channel(channel_id)
                )
            except UNREACHABLE as exc:
                raise EngineUnavailable(f"cannot purge expired channels: {exc!r}") from exc
            self._to_purge.pop()

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("lost the connection to NATS; reconnecting")
            self._health.unreachable("the connection to NATS is down; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        self._health.reachable()


async def _wait_or_raise(exc: Exception, deadline: float) -> None:
    """Wait a little before trying again, unless `deadline` has passed."""
    if time.monotonic() > deadline:
        raise exc
    log.info("waiting for NATS JetStream: %r", exc)
    await asyncio.sleep(0.5)


def _lowest_wanted_id(since: MessageId | None, start: float | None) -> int:
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
