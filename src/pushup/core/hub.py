"""The hub: the one door to storage. It answers polls from the engine's cache or parks
them, fans publications out, and counts what it does."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from pushup.core import presence
from pushup.core.channels import get_or_create, visible_page
from pushup.core.engine import (
    CacheStats,
    Clustered,
    Engine,
    EngineHealth,
    Measured,
    Monitored,
    Publication,
    SubscriberCount,
)
from pushup.core.errors import ChannelsNotFound
from pushup.core.events import ChannelEvents
from pushup.core.fanout import answer_closed, fan_out
from pushup.core.flights import Flights
from pushup.core.idempotency import IdempotencyKey
from pushup.core.model import (
    SERVER_RETENTION,
    ChannelEnd,
    ChannelId,
    ChannelInfo,
    ChannelPage,
    ChannelRef,
    Message,
    MessageId,
    Outcome,
    PollOutcome,
    Retention,
    paged_outcome,
)
from pushup.core.presence import Presence
from pushup.core.tenants import PublisherKey
from pushup.core.waiters import Receiver, Subscription, Waiters
from pushup.observe import metrics


@dataclass(frozen=True, slots=True)
class PollQuery:
    """A validated poll: which channels, how long to wait, which messages."""

    channels: tuple[ChannelRef, ...]
    timeout_s: float
    since: MessageId | None = None
    start: float | None = None
    end: float | None = None
    # History controls (0: off): at most the `last` newest matching messages, or at most
    # the `limit` oldest, saying whether more are cached (a poll's pages).
    last: int = 0
    limit: int = 0
    # Who asks: the `sub` claim of the subscriber's token (None: anonymous), for presence.
    who: str | None = None
    # The publisher reading the server's own channels (`$events`); else they are refused.
    system: bool = False


_TIMER_SLACK_S = 0.002


class Hub:
    """Owns the parked subscriptions of this process and wakes them on engine events.

    Transports and observation reach channels and messages only through the hub; the
    engine is its own. The hub listens to the engine (`published`, `closed`), so a
    publication made on another node wakes the same local subscriptions.
    """

    def __init__(
        self, engine: Engine, *, clock: Callable[[], float] = time.time, events: bool = False
    ) -> None:
        self._engine = engine
        self.waiters = Waiters()
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # Highest message id this hub has been told about; lets a poll notice that a
        # publication slipped in while it was reading an asynchronous engine.
        self._notified = 0
        # Resyncs begun so far; a poll whose read spans one reads again.
        self._resyncs = 0
        # Several nodes share the engine: a node may lag behind the others.
        self._shared = isinstance(engine, Clustered)
        # The application's channel events, published to `$events`, a channel everyone
        # else is kept from (`events.refuse`).
        self.events = ChannelEvents(engine, clock, on=events)
        # Idempotent publications in flight in this process.
        self._flights = Flights()

    @property
    def shared(self) -> bool:
        """Whether several nodes share the engine."""
        return self._shared

    async def start(self) -> None:
        await self._engine.start(self)
        await self.events.start()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.events.close()
        await self._engine.close()

    # -- channels and publications ---------------------------------------------------
    # Plain delegations hand back the engine's own coroutine: no frame of their own on
    # a request's path.

    async def publish(
        self, publications: Sequence[Publication], *, counted: bool = True
    ) -> list[Message]:
        """Store publications, all or nothing (raises ChannelsNotFound); the engine's
        event then wakes the subscriptions. The server's own publications (the
        dashboard's figures) pass `counted=False`: they are not the users' messages."""
        for refs, _ in publications:
            self.events.refuse(refs)
        messages = await self._engine.publish(publications)
        if counted:
            metrics.published(len(messages))
            for message in messages:
                metrics.published_to(message.channels)
        return messages

    def publish_once(
        self, publications: Sequence[Publication], key: IdempotencyKey
    ) -> Coroutine[Any, Any, tuple[list[Message], bool]]:
        """`publish` under an idempotency key: the messages, and whether they are a
        first answer given again (nothing stored). Raises IdempotencyKeyReused when the
        key went with other publications. A retry that comes while the first call is in
        flight here waits for it (`flights.py`)."""
        for refs, _ in publications:
            self.events.refuse(refs)
        return self._flights.publish(self._engine, publications, key)

    async def create_channel(
        self,
        ttl_s: float | None,
        name: str | None,
        retention: Retention = SERVER_RETENTION,
        *,
        owner: str | None = None,
    ) -> ChannelInfo:
        """A new channel, owned by the publisher key named `owner`; raises NameTaken."""
        info = await self._engine.create_channel(ttl_s, name, retention, owner=owner)
        self.events.created(info)
        return info

    async def get_or_create_channel(
        self,
        ttl_s: float | None,
        name: str,
        retention: Retention = SERVER_RETENTION,
        *,
        owner: str | None = None,
    ) -> tuple[ChannelInfo, bool]:
        """The live channel of that name, renewed, or a new one; and whether it is new
        (`core/channels.py`). An application's start-up can then ask for its
        channels without counting `name_taken` errors. A channel found keeps its own
        retention and owner: messages it holds were kept by it, and the answer shows it."""
        info, created = await get_or_create(self._engine, ttl_s, name, retention, owner)
        if created:
            self.events.created(info)
        return info, created

    def renew_channel(
        self, ref: ChannelRef, ttl_s: float | None
    ) -> Coroutine[Any, Any, ChannelInfo]:
        """The channel with a new expiry; raises ChannelsNotFound."""
        self.events.refuse((ref,))
        return self._engine.renew_channel(ref, ttl_s)

    def close_channel(self, ref: ChannelRef) -> Coroutine[Any, Any, None]:
        """Close a channel: its subscriptions are answered 410; raises ChannelsNotFound."""
        self.events.refuse((ref,))
        return self._engine.close_channel(ref)

    def channel_info(self, ref: ChannelRef) -> Coroutine[Any, Any, ChannelInfo]:
        """A channel's state; raises ChannelsNotFound."""
        return self._engine.channel_info(ref)

    async def list_channels(
        self,
        prefix: str | None,
        after: ChannelRef | None,
        limit: int,
        key: PublisherKey | None = None,
    ) -> tuple[ChannelPage, list[SubscriberCount]]:
        """A page of the live channels `key` may touch (`core/channels.py`), each
        with its parked polls over every node of a shared engine (one question for the
        page)."""
        page = await visible_page(self._engine, key, prefix, after, limit)
        ids = [info.id for info in page.channels]
        if isinstance(self._engine, Clustered) and ids:
            return page, await self._engine.count_each(ids)
        return page, [SubscriberCount(n, n) for n in map(self.subscribers, ids)]

    def resolve(self, refs: Sequence[ChannelRef]) -> Coroutine[Any, Any, list[ChannelId]]:
        """Ids of live channels, in the order given; raises ChannelsNotFound."""
        return self._engine.resolve(refs)

    async def count_subscribers(self, channel_id: ChannelId) -> SubscriberCount:
        """A channel's parked polls: on every node of a shared engine (asked over the
        engine, in a bounded time), else on this one."""
        if isinstance(self._engine, Clustered):
            return await self._engine.count_subscribers(channel_id)
        local = self.subscribers(channel_id)
        return SubscriberCount(local, local)

    async def channel_presence(self, channel_id: ChannelId) -> Presence:
        """Who is on a channel: on every node of a shared engine (asked over the
        engine, in a bounded time), else on this one."""
        if isinstance(self._engine, Clustered):
            return await self._engine.presence(channel_id)
        return self.presence(channel_id)

    def health(self) -> EngineHealth | None:
        """The engine's state as last seen, without I/O; None for an engine whose store
        cannot be out of reach."""
        return self._engine.health() if isinstance(self._engine, Monitored) else None

    def cache_stats(self, leave_out: Collection[ChannelId] = ()) -> CacheStats | None:
        """What the engine caches in this process, less `leave_out`; None when the cache
        lives in a shared store (whose size is the store's own metric)."""
        engine = self._engine
        if not isinstance(engine, Measured):
            return None
        return engine.cache_stats((*leave_out, *self.events.ids))

    # -- polls and streams -----------------------------------------------------------

    def poll(
        self, query: PollQuery, receiver: Receiver
    ) -> Coroutine[Any, Any, Outcome | Subscription]:
        """The answer now, or the parked subscription that will deliver one to `receiver`."""
        return self._subscribe(query, receiver, False)

    def open_stream(
        self, query: PollQuery, receiver: Receiver
    ) -> Coroutine[Any, Any, tuple[PollOutcome, Subscription | None]]:
        """A stream's start: what is cached now, and a subscription that stays parked
        and delivers every later message to `receiver` (None once `end` has passed).

        `query.timeout_s` plays no part: a stream lasts until its client leaves, its
        channel closes or its `end` passes."""
        return self._subscribe(query, receiver, True)

    def cancel(self, sub: Subscription) -> None:
        """The receiver went away: forget its subscription at once."""
        self.waiters.remove((sub,))

    def subscribers(self, channel_id: ChannelId) -> int:
        """Subscriptions parked on this channel in this process."""
        return self.waiters.count(channel_id)

    def presence(self, channel_id: ChannelId) -> Presence:
        """Who is on this channel in this process, polls and streams."""
        return presence.of_subscriptions(self.waiters.on_channel(channel_id))

    def parked(self) -> int:
        """Subscriptions parked in this process, polls and streams."""
        return len(self.waiters)

    def busiest(self, n: int, leave_out: Collection[ChannelId] = ()) -> list[tuple[ChannelId, int]]:
        """The `n` channels with the most subscriptions parked in this process, and
        how many each has (one pass over the channels that have any)."""
        return self.waiters.busiest(n, leave_out)

    def dismiss(self, subs: Sequence[Subscription]) -> None:
        """Answer parked subscriptions now, empty (their timeout, or a server stopping),
        each with the cursor past what this hub was told and past what its read
        covered: a re-poll with it misses nothing and repeats nothing."""
        self.waiters.remove(subs)
        high_water = self._engine.high_water()
        outcomes: dict[tuple[int, bool], Outcome] = {}
        for sub in subs:
            cursor = max(high_water, sub.after)
            paged = sub.limit != 0
            outcome = outcomes.get((cursor, paged))
            if outcome is None:
                more = False if paged else None
                outcome = outcomes[(cursor, paged)] = PollOutcome(
                    [], MessageId(cursor), False, more
                )
            sub.receiver.deliver(outcome)

    @overload
    async def _subscribe(
        self, query: PollQuery, receiver: Receiver, stream: Literal[False]
    ) -> Outcome | Subscription: ...

    @overload
    async def _subscribe(
        self, query: PollQuery, receiver: Receiver, stream: Literal[True]
    ) -> tuple[PollOutcome, Subscription | None]: ...

    async def _subscribe(
        self, query: PollQuery, receiver: Receiver, stream: bool
    ) -> Outcome | Subscription | tuple[PollOutcome, Subscription | None]:
        """Read, then park: a poll with something to answer (or nothing to wait for)
        is answered by its read; a stream sends its read and stays parked after it."""
        if not query.system:
            self.events.refuse(query.channels)
        # An id and a name may denote the same channel: count it once.
        channel_ids = list(dict.fromkeys(await self._engine.resolve(query.channels)))
        if not query.system:
            self.events.refuse(channel_ids)
        # A cursor above the store's high water finds nothing. In one process it is one
        # this server never issued (a clock set back): the poll parks from the high
        # water, as "everything from now on", and hides no later message. With a shared
        # engine it is the usual case of a node behind another that already answered
        # this client (ids are issued cluster-wide): the poll parks from its cursor, so
        # the messages up to it, arriving here late, are not sent to it again.
        now = self._clock()
        ended = query.end is not None and query.end <= now
        while True:
            resyncs = self._resyncs
            result = await self._engine.read(channel_ids, query.since, query.start, query.end)
            if not stream and (result.hits or result.gap or query.timeout_s == 0 or ended):
                # Never a cursor below the one sent (see `_parked_from`).
                floor = self._parked_from(result.high_water, query.since)
                return paged_outcome(result, query.last, query.limit, floor)
            # Parked right after this read: a publication announced while it was in
            # flight, or a resync that started meanwhile (and so cannot know this
            # subscription), may have passed it by, so read again.
            if self._notified <= result.high_water and self._resyncs == resyncs:
                break
        initial = paged_outcome(result, query.last) if stream else None
        if initial is not None and ended:
            return initial, None
        # A stream waits until its `end` (forever without one), a poll its timeout too.
        wait_s = math.inf if stream else query.timeout_s
        if query.end is not None:
            wait_s = min(wait_s, query.end - now)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        sub = self.waiters.park(
            receiver,
            tuple(sorted(channel_ids)),
            -math.inf if query.start is None else query.start,
            math.inf if query.end is None else query.end,
            deadline,
            self._parked_from(result.high_water, query.since),
            stream=stream,
            # A stream sends every live message: `last` shapes only its start.
            last=0 if stream else query.last,
            limit=0 if stream else query.limit,
            who=query.who,
        )
        if deadline < self._timer_at:
            self._arm_timer(loop, deadline)
        return sub if initial is None else (initial, sub)

    # -- engine events ---------------------------------------------------------------

    def published(self, messages: Sequence[Message], evicted: frozenset[ChannelId]) -> None:
        if messages:
            self._notified = max(self._notified, messages[-1].id)
            fan_out(self.waiters, messages, evicted)

    def closed(self, channel_ids: Sequence[ChannelId]) -> None:
        answer_closed(self.waiters, channel_ids)

    def ended(self, ends: Sequence[ChannelEnd]) -> None:
        self.events.ended(ends)

    async def resync(self) -> None:
        """Re-read the store for every parked subscription: the engine may have missed
        publications and closes (a lost connection), so events alone may never come."""
        self._resyncs += 1
        groups: dict[tuple[tuple[ChannelId, ...], float, float, int, int, int], list[Subscription]]
        groups = {}
        for sub in self.waiters.all():
            key = (sub.channels, sub.start, sub.end, sub.after, sub.last, sub.limit)
            groups.setdefault(key, []).append(sub)
        for (channel_ids, start, end, after, last, limit), subs in groups.items():
            if not any(sub.parked for sub in subs):
                continue
            try:
                result = await self._engine.read(
                    channel_ids,
                    MessageId(after),
                    None if start == -math.inf else start,
                    None if end == math.inf else end,
                )
            except ChannelsNotFound as exc:
                # Closed or expired while events were lost: answer 410 as a close would.
                self.closed([ChannelId(int(ref)) for ref in exc.refs])
                continue
            live = [sub for sub in subs if sub.parked]
            if result.hits or result.gap:
                outcome = paged_outcome(result, last, limit)
                self.waiters.remove(sub for sub in live if not sub.stream)
                for sub in live:
                    if sub.stream:
                        sub.after = max(sub.after, outcome.cursor)
                    sub.receiver.deliver(outcome)
            else:
                for sub in live:
                    sub.after = max(sub.after, result.high_water)

    # -- internals -------------------------------------------------------------------

    def _parked_from(self, high_water: MessageId, since: MessageId | None) -> int:
        if since is not None and since > high_water and self._shared:
            return since
        return high_water

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._expire_due)

    def _expire_due(self) -> None:
        """Answer every subscription whose timeout or time range has run out."""
        self._timer = None
        self._timer_at = math.inf
        loop = asyncio.get_running_loop()
        # Timers may fire a hair early; answering a few ms early beats spinning.
        due = self.waiters.due(loop.time() + _TIMER_SLACK_S)
        if due:
            self.dismiss(due)
        next_deadline = self.waiters.next_deadline()
        if next_deadline is not None and next_deadline < math.inf:  # streams have none
            self._arm_timer(loop, next_deadline)
