"""The Lua scripts (`lua/*.lua`): loading, registering and calling them.

Every operation on channels is one script behind the shared head `common.lua` (which
also holds the key layout), so Redis runs it atomically: no node sees half a
publication, and ids come from one global sequence. The scripts about nodes
(`heartbeat.lua`, `ask.lua`) go without the head: they touch no channel.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushup.core.errors import EngineUnavailable, NotReplicated
from pushup.engines.redis.connect import ReplicaWait
from pushup.engines.redis.health import Health
from pushup.engines.redis.keys import Keys
from pushup.engines.redis.tasks import need_task

log = logging.getLogger("pushup.redis")
T = TypeVar("T")


class WritesRefused(RedisConnectionError):
    """The master refuses writes for now: fewer replicas are in sync with it than its
    `min-replicas-to-write` asks (Redis answers NOREPLICAS, an error redis-py does not
    know, so it would otherwise pass for a bug in a script)."""


# Errors meaning "Redis is out of reach now" (refused, reset, timed out, loading its
# data after a restart, a replica that cannot take writes, a master that will not take
# them without replicas): answered with 503.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
_SCRIPTS = (
    "init",
    "create",
    "renew",
    "close",
    "info",
    "list",
    "resolve",
    "publish",
    "read",
    "sweep",
)
# Scripts about nodes, not channels: without the common head (see heartbeat.lua).
_NODE_SCRIPTS = ("heartbeat", "ask")
# The scripts whose success a client is told of: with a `ReplicaWait`, each waits for
# replicas to confirm it. (The sweep and the heartbeats write too, but no one waits on
# them, and a failover that loses one only delays an expiry or a count.)
_ACKNOWLEDGED = frozenset(("create", "renew", "close", "publish"))


def source(name: str, *, head: bool = True) -> str:
    """A script's text, behind the shared head unless `head` is false."""
    lua = importlib.resources.files("pushup.engines.redis") / "lua"
    script = (lua / f"{name}.lua").read_text()
    return (lua / "common.lua").read_text() + "\n" + script if head else script


class Scripts:
    """The scripts registered on the node's connection pool, with the arguments every
    channel script takes first (`common.lua`: prefix, event channel, clock, TTL)."""

    __slots__ = (
        "_channel",
        "_clock",
        "_events",
        "_health",
        "_message_ttl",
        "_node",
        "_prefix",
        "_redis",
        "_unconfirmed",
        "_wait",
    )

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        message_ttl_s: float,
        clock: Callable[[], float] | None,
        health: Health,
        wait: ReplicaWait | None = None,
    ) -> None:
        self._redis = redis
        self._wait = wait
        self._unconfirmed = False  # the last write went unconfirmed by replicas
        register = redis.register_script
        self._channel = {name: register(source(name)) for name in _SCRIPTS}
        self._node = {name: register(source(name, head=False)) for name in _NODE_SCRIPTS}
        self._prefix = keys.prefix
        self._events = keys.events
        self._message_ttl = repr(float(message_ttl_s))
        self._clock = clock
        self._health = health

    async def init(self) -> list[Any]:
        """Where the store stands (`init.lua`); Redis errors are the caller's to report."""
        reply: list[Any] = await _writes_refused(self._channel["init"](args=self._args()))
        return reply

    async def run(self, name: str, *args: str | bytes) -> list[Any]:
        """Run a channel script: its status, the last event it published, its values.
        Raises EngineUnavailable while Redis is out of reach (and `health` says so), and
        NotReplicated when fewer replicas than `wait` asks for confirm a write."""
        await need_task()
        wait = self._wait if name in _ACKNOWLEDGED else None
        try:
            if wait is None:
                call = self._channel[name](args=self._args(*args))
                reply: list[Any] = await _writes_refused(call)
            else:
                reply, confirmed = await _writes_refused(self._run_replicated(name, args, wait))
        except UNREACHABLE as exc:
            self._health.unreachable(exc)
            raise EngineUnavailable(f"Redis is unreachable: {exc}") from exc
        self._health.reachable()
        if wait is not None:
            self._check_replicated(confirmed, wait)
        return reply

    def _check_replicated(self, confirmed: int, wait: ReplicaWait) -> None:
        """Raise NotReplicated unless enough replicas confirmed the write; log the
        first of a run of shortfalls, and the end of the run."""
        if confirmed >= wait.replicas:
            if self._unconfirmed:
                log.info("Redis replicas confirm writes again")
            self._unconfirmed = False
            return
        problem = (
            f"{confirmed} of {wait.replicas} Redis replicas confirmed a write "
            f"within {wait.timeout_ms} ms"
        )
        if not self._unconfirmed:
            log.warning("%s: answering 503 until they keep up", problem)
        self._unconfirmed = True
        raise NotReplicated(problem)

    async def _run_replicated(
        self, name: str, args: Sequence[str | bytes], wait: ReplicaWait
    ) -> tuple[list[Any], int]:
        """Run a script, then WAIT on the same connection (a pipeline holds one), which
        counts the replicas that have every write of that connection so far."""
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._channel[name](args=self._args(*args), client=pipe)
            pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
            reply, confirmed = await pipe.execute()
        return reply, int(confirmed)

    async def run_node(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run a script about nodes; Redis errors are the caller's to report."""
        await need_task()
        return await _writes_refused(self._node[name](keys=keys, args=args))

    def _args(self, *args: str | bytes) -> list[str | bytes]:
        # `clock` replaces Redis TIME (tests drive it by hand); '' lets Redis tell the time.
        if self._clock is None:
            now, now_us = "", ""
        else:
            now_s = float(self._clock())
            now, now_us = repr(now_s), str(int(now_s * 1_000_000))
        return [self._prefix, self._events, now, now_us, self._message_ttl, *args]


async def _writes_refused(call: Awaitable[T]) -> T:
    """`call`, with Redis's NOREPLICAS raised as WritesRefused (one of UNREACHABLE)."""
    try:
        return await call
    except ResponseError as exc:
        # Anywhere in the text: a pipeline's error begins with the failed command.
        if "NOREPLICAS " in str(exc):
            raise WritesRefused(str(exc)) from exc
        raise
