"""The NATS JetStream engine: channels, the message cache and ids shared by every node.

Every change is appended to one stream (`writer.py`) on top of its last entry, so the
stream orders all changes of all nodes as Redis's scripts do, and ids grow in stream
order. Control entries (channels, closes, expiries, floors) reach every node
(`log.py`), which applies them to its copy of the channels (`replica.py`). A
publication is stored once per channel, on that channel's subject, and a node hears
it only while it serves the channel (`interest.py`): its inbound traffic is the
publications of the channels its clients poll, not the whole publication rate.
Ages and expiries, which each node's clock decides, are `expiry.py`'s.

Durability is JetStream's: a change is acknowledged once the stream's replicas (R3 on a
cluster of three) have it on file.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import cast

from nats.aio.client import Client

from pushup.core.engine import (
    CacheStats,
    EngineHealth,
    EngineListener,
    Publication,
    SubscriberCount,
)
from pushup.core.errors import ChannelsNotFound, EngineUnavailable, NameTaken
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
from pushup.engines.memory.channel import Channel
from pushup.engines.nats import layout
from pushup.engines.nats import publications as publishing
from pushup.engines.nats.answers import Once, last_entry
from pushup.engines.nats.expiry import Expiry
from pushup.engines.nats.health import Health
from pushup.engines.nats.interest import Interest
from pushup.engines.nats.layout import Servers, Subjects
from pushup.engines.nats.log import Log
from pushup.engines.nats.nodes import Nodes
from pushup.engines.nats.opening import connect, ensure_stream, open_log, raise_floor
from pushup.engines.nats.records import ChannelRecord, Closed, Expired, Floor
from pushup.engines.nats.replica import Replica, lowest_wanted_id
from pushup.engines.nats.writer import UNREACHABLE, Change, Look, Writer, control, need_task

log = logging.getLogger("pushup.nats")


class NatsEngine:
    """Keeps channels and messages in a JetStream stream shared by several nodes; each
    node holds every channel and the messages of the channels it serves.

    `clock` is the time decisions are made with (tests drive it by hand);
    `interest_grace_s` is how long a channel stays served after its last poll.
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
        interest_grace_s: float = 30.0,
    ) -> None:
        self._servers = Servers.parse(url)
        self._subjects = Subjects.of(self._servers.stream)
        self._message_ttl_s = message_ttl_s
        self._max_messages = max_messages
        self._channel_ttl_s = channel_ttl_s
        self._clock = clock
        self._timeout_s = timeout_s
        self._sweep_interval_s = sweep_interval_s
        self._interest_grace_s = interest_grace_s
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
        self._listener: EngineListener | None = None
        self._nc: Client | None = None
        self._log: Log | None = None
        self._writer: Writer | None = None
        self._interest: Interest | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._expiry = Expiry(
            self._replica, self._servers.stream, self._subjects, clock, self._write_control
        )
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listener: EngineListener) -> None:
        self._listener = self._replica.listener = self._expiry.listener = listener
        self._nc = nc = await connect(
            self._servers,
            self._timeout_s,
            on_error=self._on_error,
            on_disconnected=self._on_disconnected,
            on_reconnected=self._on_reconnected,
        )
        js = nc.jetstream(timeout=self._timeout_s)
        stream, subjects, grace_s = self._servers.stream, self._subjects, self._interest_grace_s
        deadline = time.monotonic() + 3 * self._timeout_s
        try:
            await ensure_stream(js, self._servers, subjects, deadline)
            self._log, self._writer = await open_log(
                nc, js, self._servers, subjects, self._replica, self._timeout_s, deadline
            )
            self._interest = Interest(
                nc, stream, subjects, self._replica, timeout_s=self._timeout_s, grace_s=grace_s
            )
            await raise_floor(self._writer, self._replica, subjects, self._clock, deadline)
            await self._nodes.start(nc, listener)
        except UNREACHABLE as exc:
            raise EngineUnavailable(f"cannot use NATS JetStream: {exc!r}") from exc
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="pushup-nats-sweep")

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

    # -- channels --------------------------------------------------------------------

    async def create_channel(
        self,
        ttl_s: float | None,
        name: str | None,
        retention: Retention = SERVER_RETENTION,
        *,
        owner: str | None = None,
    ) -> ChannelInfo:
        await self._expiry.run(self._interest)
        ttl = self._channel_ttl_s if ttl_s is None else ttl_s

        def decide(last_id: int) -> Change:
            if name is not None and name in self._replica.cache.names:
                raise NameTaken(name)
            channel_id = ChannelId(self._replica.channel_ids.next())
            expires_at = self._clock() + ttl
            record = ChannelRecord(channel_id, name, ttl, expires_at, None, 0, retention, owner)
            return control(self._subjects.channel(channel_id), record, last_id)

        record = await self._write_control(decide)
        assert isinstance(record, ChannelRecord)
        return record.info()

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        await self._expiry.run(self._interest)

        def decide(last_id: int) -> Change:
            (channel,) = self._replica.cache.lookup([ref])
            ttl = channel.ttl_s if ttl_s is None else ttl_s
            record = ChannelRecord(
                channel.id,
                channel.name,
                ttl,
                self._clock() + ttl,
                channel.last_message_id,
                channel.dropped_through,
                channel.retention,
                channel.owner,
            )
            return control(self._subjects.channel(channel.id), record, last_id)

        record = await self._write_control(decide)
        assert isinstance(record, ChannelRecord)
        channel = self._replica.cache.channels.get(record.id)
        if channel is not None:
            await self._served([channel])
            return channel.info()
        return record.info()

    async def close_channel(self, ref: ChannelRef) -> None:
        await self._expiry.run(self._interest)
        names: dict[ChannelId, str | None] = {}

        def decide(last_id: int) -> Change:
            (channel,) = self._replica.cache.lookup([ref])
            names[channel.id] = channel.name
            subject = self._subjects.channel(channel.id)
            return control(subject, Closed(channel.id), last_id, layout.ttl(0))

        entry = await self._write_control(decide)
        # Written on top of the stream's last entry: this node alone closed it.
        assert isinstance(entry, Closed)
        self._expiry.tell_ended([entry.id], names, "closed")

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        await self._expiry.run(self._interest)
        channels = await self._lookup([ref])
        await self._served(channels)
        return channels[0].info()

    async def list_channels(
        self, prefix: str | None, after: ChannelRef | None, limit: int
    ) -> ChannelPage:
        """From this node's copy, caught up with the control log; the page's channels
        served, as for one channel's info, to count their messages."""
        await self._expiry.run(self._interest)
        await self._catch_up()
        channels, after_page = self._replica.cache.page(prefix, after, limit)
        assert self._interest is not None
        await need_task()
        await asyncio.gather(*(self._interest.serve([channel.id]) for channel in channels))
        live = [channel for channel in channels if not channel.closed]
        return ChannelPage([channel.info() for channel in live], after_page)

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        await self._expiry.run(self._interest)
        return [channel.id for channel in await self._lookup(refs)]

    # -- messages --------------------------------------------------------------------

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        """Stored as atomic batches (`publications.py`), each on top of the stream's
        last entry; the listener hears of them at once, the other nodes when they serve
        the channels."""
        await self._expiry.run(self._interest)
        try:
            self._replica.cache.lookup_all([refs for refs, _ in publications])
        except ChannelsNotFound:
            await self._catch_up()
            self._replica.cache.lookup_all([refs for refs, _ in publications])
        stored: list[Message] = []
        for chunk in publishing.chunks(publications):
            decide = publishing.decider(
                chunk, self._replica, self._subjects, self._message_ttl_s, self._clock
            )
            change = await self._write(decide)
            assert change is not None
            messages, now = cast(tuple[list[Message], float], change.value)
            self._settle(messages, now)
            stored += messages
        return stored

    async def publish_once(
        self, publications: Sequence[Publication], key: IdempotencyKey
    ) -> tuple[list[Message], bool]:
        """The key's answer is an entry of its own, in the same atomic batch as the
        copies it answers, read from the stream before each append (`answers.py`)."""
        await self._expiry.run(self._interest)
        assert self._nc is not None
        last = partial(last_entry, self._nc, self._servers.stream, self._timeout_s)
        once = Once(
            publications, key, last, self._replica, self._subjects, self._message_ttl_s, self._clock
        )
        return await once.run(self._write, self._settle)

    def _settle(self, messages: list[Message], now: float) -> None:
        """Stored by this node (`publications.py` `settle`). The stream republished the
        copies before it answered: those of the channels this node serves are queued,
        and go first."""
        assert self._interest is not None
        self._interest.flush()
        publishing.settle(self._replica, messages, now, self._max_messages)

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        """A local read of this node's copy, once it serves the channels."""
        await self._expiry.run(self._interest)
        assert self._interest is not None
        await need_task()
        await self._interest.serve(channel_ids)
        hits, gap = self._replica.cache.read(channel_ids, lowest_wanted_id(since, start), end)
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

    async def count_each(self, channel_ids: Sequence[ChannelId]) -> list[SubscriberCount]:
        await need_task()
        return await self._nodes.count_each(channel_ids)

    async def presence(self, channel_id: ChannelId) -> Presence:
        """This node's presence on a channel merged with every other live node's that
        answers in time (`nodes.py`)."""
        await need_task()
        return await self._nodes.presence(channel_id)

    def health(self) -> EngineHealth:
        connected = self._nc is not None and self._nc.is_connected
        interest = self._interest
        return self._health.report(
            self.node_id,
            self._nodes.live_nodes,
            connected=connected or self._closed,
            served_channels=0 if interest is None else len(interest.served),
            received_publications=0 if interest is None else interest.received,
        )

    # -- internals -------------------------------------------------------------------

    async def _served(self, channels: Sequence[Channel]) -> None:
        assert self._interest is not None
        await need_task()
        await self._interest.serve([channel.id for channel in channels])

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

    async def _write_control(self, decide: Callable[[int], Change | None]) -> object:
        change = await self._write(decide)
        if change is None:
            return None
        assert self._log is not None and self._writer is not None
        # Applied here unless the log got there first: the caller's listener knows
        # of the change when the caller goes on.
        entry = change.value
        assert isinstance(entry, ChannelRecord | Closed | Expired | Floor)
        self._log.apply(self._writer.seqs[0], entry)
        return entry

    async def _write(
        self, decide: Callable[[int], Change | None], look: Look | None = None
    ) -> Change | None:
        if self._writer is None:
            raise EngineUnavailable("the NATS engine is not started")
        try:
            try:
                written = await self._writer.append(decide, look)
            except ChannelsNotFound:
                # Decided on a copy that may not know a channel another node just made.
                await self._catch_up()
                written = await self._writer.append(decide, look)
        except EngineUnavailable as exc:
            self._health.unreachable(str(exc))
            raise
        self._health.reachable()
        return None if written is None else written[0]

    async def _sweep_forever(self) -> None:
        """One timer for the whole node: expire without a request, purge the subjects
        of the channels it expired, and stop serving channels no one polls."""
        failing = False
        while not self._closed:
            try:
                await self._expiry.run(self._interest)
                assert self._nc is not None
                await self._expiry.purge(self._nc.jetstream(timeout=self._timeout_s))
                if self._interest is not None and self._listener is not None:
                    await self._interest.release_idle(self._listener.subscribers)
                if self._health.down and self._nc is not None and self._nc.is_connected:
                    # A node whose /health says 503 gets no call from a balancer to
                    # find out that NATS serves again (nor a reconnection, if its
                    # server only froze): the sweep finds out.
                    await self._catch_up()
                    self._health.reachable()
            except EngineUnavailable as exc:
                if not failing:
                    log.warning("NATS is out of reach: %s", exc)
                failing = True
            except Exception:  # one bad turn must not end the node's only timer
                log.exception("the NATS engine's sweep failed")
            else:
                failing = False
            await asyncio.sleep(self._sweep_interval_s)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("lost the connection to NATS; reconnecting")
            self._health.unreachable("the connection to NATS is down; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        self._health.reachable()
        if self._interest is not None:
            self._interest.heal_all()
