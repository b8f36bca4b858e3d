"""The Redis engine: channels, the message cache and ids shared by every node.

Every operation is one Lua script (`lua/*.lua`, each behind the shared head
`common.lua`, which also holds the key layout), so Redis runs it atomically: no node
sees half a publication, and ids come from one global sequence. Nodes hear of
publications and closes on one pub/sub channel, in the order Redis ran them; each
event carries a sequence number, so a node that missed some (a lost connection)
notices, and has its hub re-read the store.

Durability is Redis's: with `appendonly yes` an acknowledged publication survives a
restart of Redis; `appendfsync always` keeps it even through a crash of Redis or its
machine (`everysec`, the default, may lose the last second then). Without
persistence a restarted Redis starts empty: parked polls get 410, and ids still only
grow, since they come from the clock. Standalone Redis (or a Sentinel-managed primary)
only: the scripts touch keys they compute, which Redis Cluster does not allow.

Each node also keeps a heartbeat in Redis (a sorted set of node ids by last-seen
time), and listens on a control channel: a node counting a channel's subscribers asks
every node there, and each answers with its own count on the asker's reply channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import importlib.resources
import itertools
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushup.core.engine import EngineHealth, EngineListener, Publication, SubscriberCount
from pushup.core.errors import ChannelsNotFound, EngineUnavailable, NameTaken
from pushup.core.model import (
    MAX_ID,
    ChannelId,
    ChannelInfo,
    ChannelRef,
    Hit,
    Message,
    MessageId,
    ReadResult,
)
from pushup.observe import metrics

log = logging.getLogger("pushup.redis")

# Errors meaning "Redis is out of reach now" (refused, reset, timed out, loading its
# data after a restart, a replica that cannot take writes): answered with 503.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
_SCRIPTS = ("init", "create", "renew", "close", "info", "resolve", "publish", "read", "sweep")
# Scripts about nodes, not channels: without the common head (see heartbeat.lua).
_NODE_SCRIPTS = ("heartbeat", "ask")
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
# A node missing this many heartbeats in a row is no longer counted as live.
_MISSED_BEATS = 3


class _EventsLost(Exception):
    """The event stream skipped a sequence number: re-read instead of trusting it."""


class _Tally:
    """The answers to one question of this node's: node id -> its subscriber count."""

    __slots__ = ("answers", "complete", "expected", "listeners")

    def __init__(self, complete: asyncio.Future[None]) -> None:
        self.answers: dict[str, int] = {}
        self.complete = complete
        self.expected: set[str] | None = None  # the other live nodes, once known
        self.listeners = 0  # the other nodes that heard the question

    def expect(self, expected: set[str], listeners: int) -> None:
        self.expected, self.listeners = expected, listeners
        self._check()

    def add(self, node: str, count: int) -> None:
        self.answers[node] = count
        self._check()

    def _check(self) -> None:
        # Done once every live node answered, or everyone who heard the question did
        # (a node killed a moment ago is still live by its heartbeat, but heard nothing).
        if self.expected is None or self.complete.done():
            return
        if self.expected <= self.answers.keys() or len(self.answers) >= self.listeners:
            self.complete.set_result(None)


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
        self._message_ttl = repr(float(message_ttl_s))
        self._max_messages = str(max_messages)
        # Payload bytes cached over all channels, counted exactly by the scripts.
        self._max_cache_bytes = str(max_cache_bytes)
        self._channel_ttl = repr(float(channel_ttl_s))
        self._clock = clock
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._sweep_interval_s = sweep_interval_s
        # Never retry by ourselves: a publication whose answer was lost may have been
        # stored, and a retry would store it twice. The caller gets a 503 instead.
        options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": min(timeout_s, 2.0),
            "retry": Retry(NoBackoff(), 0),
        }
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s, **options
        )
        self._redis: Redis = Redis.from_pool(pool)
        # Events get a connection of their own: it stays subscribed.
        self._events_redis: Redis = Redis.from_url(url, **options)
        self._scripts = {name: self._redis.register_script(_source(name)) for name in _SCRIPTS}
        self._node_scripts = {
            name: self._redis.register_script(_source(name, head=False)) for name in _NODE_SCRIPTS
        }
        # Pub/sub spans every database of a Redis: name the channels after ours.
        db = pool.connection_kwargs.get("db", 0)
        self._events_key = f"{prefix}events:{db}"
        # Nodes: who is alive, and how they ask each other for subscriber counts.
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._heartbeat_s = heartbeat_s
        self._stale_s = repr(_MISSED_BEATS * heartbeat_s)
        self._count_timeout_s = count_timeout_s
        self._nodes_key = f"{prefix}nodes"
        self._control_key = f"{prefix}control:{db}"
        self._reply_prefix = f"{prefix}reply:{db}:"
        self._channels = {
            self._events_key.encode(): self._on_event,
            self._control_key.encode(): self._on_question,
            (self._reply_prefix + self.node_id).encode(): self._on_answer,
        }
        self._tallies: dict[int, _Tally] = {}
        self._questions = itertools.count(1)
        self._live_nodes = 0
        self._beater: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()
        # Health: since when (epoch seconds) and why Redis has been out of reach, as
        # last seen by a call (the sweep and the heartbeat make one several times a
        # second) or by the event connection.
        self._down_since: float | None = None
        self._down_reason = ""
        self._events_down_since: float | None = None
        self._listener: EngineListener | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # Every message at or below this has been told to the listener.
        self._high_water = 0
        # The last event told to the listener (or covered by a resync), and whether
        # the event connection is up; callers wait for their own events meanwhile.
        self._seen_event = 0
        self._live = False
        self._echoes: list[tuple[int, int, asyncio.Future[None]]] = []
        # Reads in flight, by query: polls asking the same thing share one round trip.
        self._in_flight: dict[tuple[Any, ...], asyncio.Future[Any]] = {}
        self._echo_order = itertools.count()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listener: EngineListener) -> None:
        self._listener = listener
        try:
            reply = await self._scripts["init"](args=self._args())
            pubsub, last, event = await self._subscribe()
        except _UNREACHABLE as exc:
            raise EngineUnavailable(f"cannot reach Redis: {exc}") from exc
        try:
            await self._beat()
        except BaseException:
            await _close_quietly(pubsub)
            raise
        self._high_water = max(int(reply[2]), last)
        self._seen_event = event
        self._live = True
        self._reader = asyncio.create_task(self._read_events(pubsub), name="pushup-redis-events")
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="pushup-redis-sweep")
        self._beater = asyncio.create_task(self._beat_forever(), name="pushup-redis-heartbeat")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._reader, self._sweeper, self._beater, *self._answering):
            if task is not None:
                await _stop(task)
        self._reader = self._sweeper = self._beater = None
        self._lost_events()
        if self._listener is not None:
            # Leave at once rather than be counted as live until the heartbeat is stale.
            with contextlib.suppress(EngineUnavailable, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._beat(leave=True)
        await self._events_redis.aclose()
        await self._redis.aclose()

    # -- channels --------------------------------------------------------------------

    async def create_channel(self, ttl_s: float | None, name: str | None) -> ChannelInfo:
        ttl = self._channel_ttl if ttl_s is None else repr(float(ttl_s))
        reply = await self._run("create", ttl, "" if name is None else name)
        if reply[0] == b"taken":
            assert name is not None
            raise NameTaken(name)
        return _info(reply[1:])

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        reply = await self._run("renew", _ref(ref), "" if ttl_s is None else repr(float(ttl_s)))
        return _info(_found(reply))

    async def close_channel(self, ref: ChannelRef) -> None:
        _found(await self._run("close", _ref(ref)))

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        return _info(_found(await self._run("info", _ref(ref))))

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        # Shared like reads (see `read`): every poll resolves its channels first.
        key = ("resolve", *refs)
        return list(await self._shared(key, lambda: self._resolve(refs)))

    async def _resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        reply = _found(await self._run("resolve", *map(_ref, refs)))
        return [ChannelId(int(value)) for value in reply]

    # -- messages --------------------------------------------------------------------

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        args: list[str | bytes] = [
            self._max_messages,
            self._max_cache_bytes,
            str(len(publications)),
        ]
        for refs, data in publications:
            args.append(str(len(refs)))
            args.extend(map(_ref, refs))
            args.append(data)
        reply = _found(await self._run("publish", *args))
        messages = []
        for (_, data), raw_id, targets in zip(publications, reply[::2], reply[1::2], strict=True):
            message_id = int(raw_id)
            messages.append(
                Message(MessageId(message_id), message_id / 1_000_000, _ids(targets), data)
            )
        return messages

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        """Join an identical read in flight, or start one.

        After a fan-out every woken subscriber re-polls at once with the same cursor:
        thousands of identical reads. One round trip answers them all, instead of
        thousands queueing for the connection pool (and the publication queueing behind
        them). Joining a read begun a moment earlier is safe: the hub re-reads when a
        publication was announced after the read's high water, and a later one wakes
        the parked poll.
        """
        key = ("read", tuple(channel_ids), since, start, end)
        result: ReadResult = await self._shared(
            key, lambda: self._read(channel_ids, since, start, end)
        )
        return result

    def _shared(
        self, key: tuple[Any, ...], call: Callable[[], Coroutine[Any, Any, Any]]
    ) -> asyncio.Future[Any]:
        """The call in flight under `key`, or a new one; shielded, so one caller
        leaving (its client went away) never cancels the others' call."""
        shared = self._in_flight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(call())
            self._in_flight[key] = shared
            shared.add_done_callback(functools.partial(self._landed, key))
        return asyncio.shield(shared)

    def _landed(self, key: tuple[Any, ...], done: asyncio.Future[Any]) -> None:
        if self._in_flight.get(key) is done:
            del self._in_flight[key]
        if not done.cancelled():
            done.exception()  # retrieved, even if every caller left

    async def _read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        low = _lowest_wanted_id(since, start)
        high = "+inf" if end is None else str(_highest_wanted_id(end))
        # As in the memory engine: a drop counts as a gap only if it could have matched.
        gap_possible = end is None or low / 1_000_000 <= end
        reply = _found(
            await self._run(
                "read", str(low), high, "1" if gap_possible else "0", *map(str, channel_ids)
            )
        )
        hits: list[Hit] = []
        for i in range(2, len(reply), 4):
            message_id = int(reply[i])
            message = Message(
                MessageId(message_id), message_id / 1_000_000, _ids(reply[i + 2]), reply[i + 3]
            )
            hits.append((message, _ids(reply[i + 1])))
        return ReadResult(hits, reply[0] == 1, MessageId(int(reply[1])))

    def high_water(self) -> MessageId:
        return MessageId(self._high_water)

    # -- scripts ---------------------------------------------------------------------

    def _args(self, *args: str | bytes) -> list[str | bytes]:
        if self._clock is None:
            now, now_us = "", ""
        else:
            now_s = float(self._clock())
            now, now_us = repr(now_s), str(int(now_s * 1_000_000))
        return [self._prefix, self._events_key, now, now_us, self._message_ttl, *args]

    async def _run(self, script: str, *args: str | bytes) -> list[Any]:
        """Run one script; wait until this node has heard the events it published, so
        local listeners know of them when the caller goes on (as with the memory engine)."""
        await _in_a_task()
        try:
            reply: list[Any] = await self._scripts[script](args=self._args(*args))
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            raise EngineUnavailable(f"Redis is unreachable: {exc}") from exc
        self._down_since = None
        event = int(reply[1])
        if event > self._seen_event and self._live:
            await self._heard(event)
        return [reply[0], *reply[2:]]

    async def _heard(self, event: int) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._echoes, (event, next(self._echo_order), future))
        try:
            async with asyncio.timeout(self._timeout_s):
                await future
        except TimeoutError:
            # Stored all the same; the event will come, or a resync cover it.
            log.warning("Redis event %d was not heard within %.1fs", event, self._timeout_s)

    def _advance(self, event: int) -> None:
        self._seen_event = event
        echoes = self._echoes
        while echoes and echoes[0][0] <= event:
            future = heapq.heappop(echoes)[2]
            if not future.done():
                future.set_result(None)

    def _lost_events(self) -> None:
        """Nobody waits for an event that may never come: a resync covers them."""
        self._in_flight.clear()  # a poll from now on reads after the resync began
        if self._live:
            self._events_down_since = time.time()
        self._live = False
        for _, _, future in self._echoes:
            if not future.done():
                future.set_result(None)
        self._echoes.clear()

    # -- events ----------------------------------------------------------------------

    async def _subscribe(self) -> tuple[PubSub, int, int]:
        """Subscribe (to events, questions from other nodes and answers to ours), then
        read where the store stands: every later event reaches us."""
        pubsub = self._events_redis.pubsub()
        try:
            await pubsub.subscribe(*self._channels)
            confirmed = 0
            async with asyncio.timeout(self._timeout_s):
                while confirmed < len(self._channels):
                    reply = await pubsub.get_message(timeout=self._timeout_s)
                    if reply is not None and reply["type"] == "subscribe":
                        confirmed += 1
            last, event = await self._redis.mget(
                self._prefix + "seq:message", self._prefix + "seq:event"
            )
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub, int(last or 0), int(event or 0)

    async def _read_events(self, pubsub: PubSub | None) -> None:
        """Pump events to the listener; on a lost connection or a skipped event,
        subscribe again with backoff and have the listener re-read the store."""
        assert self._listener is not None
        delay = _BACKOFF_MIN_S
        try:
            while not self._closed:
                try:
                    if pubsub is None:
                        pubsub, last, event = await self._subscribe()
                        # Events wait in the connection until the re-read is done, so
                        # none overtakes it; callers meanwhile do not wait for theirs.
                        await self._listener.resync()
                        self._high_water = max(self._high_water, last)
                        self._advance(event)
                        self._live = True
                        self._events_down_since = None
                        log.info("Redis events are back; parked polls re-read the store")
                        metrics.engine_reconnected()
                        delay = _BACKOFF_MIN_S
                    await self._pump(pubsub)
                except _EventsLost as exc:
                    log.warning("Redis events were lost (%s); re-reading the store", exc)
                    delay = 0.0
                except (*_UNREACHABLE, EngineUnavailable) as exc:
                    if self._live:
                        log.warning("lost the Redis event connection (%s); reconnecting", exc)
                    delay = min(max(delay * 2, _BACKOFF_MIN_S), _BACKOFF_MAX_S)
                except Exception:
                    log.exception("failed to handle a Redis event; re-reading the store")
                    delay = _BACKOFF_MAX_S
                self._lost_events()
                if pubsub is not None:
                    await _close_quietly(pubsub)
                    pubsub = None
                await asyncio.sleep(delay)
        finally:
            if pubsub is not None:
                await _close_quietly(pubsub)

    async def _pump(self, pubsub: PubSub) -> None:
        pinged = False
        while True:
            reply = await pubsub.get_message(timeout=self._timeout_s)
            if reply is None:
                # A silent connection may be a dead one: ping, and give up if even
                # the ping goes unanswered.
                if pinged:
                    raise RedisTimeoutError("the event connection stopped answering")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if reply["type"] == "message":
                self._channels[reply["channel"]](reply["data"])

    def _on_event(self, data: bytes) -> None:
        assert self._listener is not None
        kind, seq_text, rest = data.split(b" ", 2)
        event = int(seq_text)
        if event <= self._seen_event:
            return  # published before this connection's starting point: covered
        if event != self._seen_event + 1:
            raise _EventsLost(f"event {event} after {self._seen_event}")
        if kind == b"P":
            messages, evicted = _decode_publication(rest)
            self._high_water = max(self._high_water, messages[-1].id)
            self._listener.published(messages, evicted)
        elif kind == b"C":
            self._listener.closed(list(_ids(rest)))
        else:
            raise _EventsLost(f"unknown event kind {kind!r}")
        self._advance(event)

    # -- nodes -----------------------------------------------------------------------

    async def count_subscribers(self, channel_id: ChannelId) -> SubscriberCount:
        """This node's parked polls on a channel plus every other live node's: the
        question goes out on the control channel, and the answers are awaited for at
        most `count_timeout_s`. A node that does not answer in time (overloaded, or
        killed within the last few heartbeats) is left out, and said to be:
        `counted_nodes` is then below `live_nodes`, and the total a lower bound."""
        assert self._listener is not None
        await _in_a_task()
        local = self._listener.subscribers(channel_id)
        question = next(self._questions)
        tally = _Tally(asyncio.get_running_loop().create_future())
        self._tallies[question] = tally
        try:
            try:
                reply = await self._node_scripts["ask"](
                    keys=[self._nodes_key],
                    args=[
                        self._control_key,
                        self._stale_s,
                        f"Q {question} {channel_id} {self.node_id}",
                    ],
                )
            except _UNREACHABLE as exc:
                self._unreachable(exc)
                raise EngineUnavailable(f"Redis is unreachable: {exc}") from exc
            live = {raw.decode() for raw in reply[1:]} | {self.node_id}
            # The others that heard it: this node hears its own question too.
            tally.expect(live - {self.node_id}, int(reply[0]) - 1)
            # Without the event connection no answer can come.
            if self._live and not tally.complete.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._count_timeout_s):
                        await tally.complete
        finally:
            del self._tallies[question]
        answers = dict(tally.answers)
        return SubscriberCount(
            total=local + sum(answers.values()),
            local=local,
            live_nodes=len(live | answers.keys()),
            counted_nodes=1 + len(answers),
        )

    def health(self) -> EngineHealth:
        details: dict[str, object] = {"kind": "redis", "node": self.node_id}
        if self._down_since is not None:
            since, reason = self._down_since, self._down_reason
        elif not self._live and not self._closed:
            since = self._events_down_since or time.time()
            reason = "the event connection to Redis is down; reconnecting"
        else:
            details.update(state="reachable", live_nodes=self._live_nodes)
            return EngineHealth(True, details)
        details.update(state="unreachable", since=since, reason=reason)
        return EngineHealth(False, details)

    def _unreachable(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.time()
        self._down_reason = str(exc) or type(exc).__name__

    def _on_question(self, data: bytes) -> None:
        """Another node counts a channel's subscribers: answer with this node's count."""
        assert self._listener is not None
        try:
            _, question, channel, asker = data.decode().split(" ", 3)
            count = self._listener.subscribers(ChannelId(int(channel)))
        except ValueError:
            log.warning("ignored a malformed question from another node: %r", data[:200])
            return
        if asker != self.node_id:
            self._spawn(self._answer(asker, f"A {question} {count} {self.node_id}"))

    def _on_answer(self, data: bytes) -> None:
        try:
            _, question, count, node = data.decode().split(" ", 3)
            tally = self._tallies.get(int(question))
            if tally is not None:  # else answered too late: the count is given already
                tally.add(node, int(count))
        except ValueError:
            log.warning("ignored a malformed answer from another node: %r", data[:200])

    async def _answer(self, asker: str, text: str) -> None:
        try:
            await self._redis.publish(self._reply_prefix + asker, text)
        except _UNREACHABLE as exc:
            self._unreachable(exc)  # the asker counts without us, and says so

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _beat(self, *, leave: bool = False) -> None:
        """Tell Redis this node is alive (or, with `leave`, gone); learn how many are."""
        await _in_a_task()
        try:
            live = await self._node_scripts["heartbeat"](
                keys=[self._nodes_key], args=[self.node_id, self._stale_s, "1" if leave else ""]
            )
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            raise EngineUnavailable(f"cannot reach Redis: {exc}") from exc
        self._down_since = None
        self._live_nodes = int(live)

    async def _beat_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._heartbeat_s)
            # A failure is logged by the sweep, which fails alike; health reports it.
            with contextlib.suppress(EngineUnavailable):
                await self._beat()

    # -- expiry ----------------------------------------------------------------------

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


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for its end. The cancellation is repeated:
    redis-py can swallow one that lands while a command completes (asyncio.wait_for
    on Python 3.11)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.error("a Redis engine task failed", exc_info=task.exception())


async def _in_a_task() -> None:
    """Stepped by hand outside any Task (http/eager.py), a caller first asks for one
    with a bare yield: redis-py's timeouts need it."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(*_UNREACHABLE):
        await pubsub.aclose()


# -- encoding ------------------------------------------------------------------------


def _source(name: str, *, head: bool = True) -> str:
    lua = importlib.resources.files("pushup.engines") / "lua"
    script = (lua / f"{name}.lua").read_text()
    return (lua / "common.lua").read_text() + "\n" + script if head else script


def _ref(ref: ChannelRef) -> str:
    """A reference as the scripts take it: ids and names never mix up."""
    return f"i:{ref}" if isinstance(ref, int) else f"n:{ref}"


def _unref(raw: bytes) -> ChannelRef:
    text = raw.decode()
    return int(text[2:]) if text.startswith("i:") else text[2:]


def _found(reply: list[Any]) -> list[Any]:
    """The values of a script's reply, or ChannelsNotFound naming the missing refs."""
    if reply[0] == b"missing":
        refs = [_unref(raw) if raw[:2] in (b"i:", b"n:") else int(raw) for raw in reply[1:]]
        raise ChannelsNotFound(refs)
    return reply[1:]


def _ids(csv: bytes) -> tuple[ChannelId, ...]:
    return tuple(ChannelId(int(part)) for part in csv.split(b",")) if csv else ()


def _info(values: list[Any]) -> ChannelInfo:
    channel_id, name, ttl, expires_at, messages, last = values
    return ChannelInfo(
        id=ChannelId(int(channel_id)),
        name=name.decode() if name else None,
        expires_at=float(expires_at),
        ttl_s=float(ttl),
        messages=int(messages),
        last_message_id=MessageId(int(last)) if last else None,
    )


def _decode_publication(rest: bytes) -> tuple[list[Message], frozenset[ChannelId]]:
    """`<evicted ids>\\n` then per message `<id> <channel ids> <size>\\n<payload>`."""
    end = rest.index(b"\n")
    evicted = frozenset(_ids(rest[:end]))
    messages = []
    pos = end + 1
    while pos < len(rest):
        end = rest.index(b"\n", pos)
        raw_id, targets, size = rest[pos:end].split(b" ")
        message_id = int(raw_id)
        pos = end + 1 + int(size)
        messages.append(
            Message(
                MessageId(message_id), message_id / 1_000_000, _ids(targets), rest[end + 1 : pos]
            )
        )
    return messages, evicted


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


def _highest_wanted_id(end: float) -> int:
    """The largest id whose time (id / 1e6, a float) is at most `end`."""
    if end * 1_000_000 > MAX_ID:
        return MAX_ID
    by_time = math.floor(end * 1_000_000) + 2
    while by_time / 1_000_000 > end:
        by_time -= 1
    return by_time
