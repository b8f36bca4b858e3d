"""Where the node's Redis clients connect: the one Redis a `redis://` URL names, or the
master that Redis Sentinel names for a `redis+sentinel://` URL, found again after a
failover.

With Sentinel, every new connection asks the Sentinels for the master's address first
(redis-py's `SentinelConnectionPool`). A connection to a master that died fails, and so
does one to a master that was demoted (`READONLY`, turned into a connection error), so
the calls in flight get 503 and the next connection goes to whichever master the
Sentinels name then; while they name none (the old master is down, the failover not
done yet), connecting fails at once, again a 503. The event connection reconnects the
same way (`subscription.py`), and its hub re-reads the store from the new master.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushup.engine_urls import SENTINEL_SCHEMES, SentinelUrl

log = logging.getLogger("pushup.redis")

# A Sentinel that does not answer is skipped for the next: ask each only briefly.
_SENTINEL_TIMEOUT_S = 1.0


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool, waiting up to `timeout` for a free connection as the plain
    Redis pool does, rather than failing at once: a burst of re-polls queues for the
    pool instead of getting 503."""

    async def get_master_address(self) -> tuple[str, int]:
        """Ask the Sentinels (before each new connection); say so when the master
        they name is another."""
        before = self.master_address
        host, port = await super().get_master_address()  # type: ignore[no-untyped-call]
        if (host, port) != before:
            log.info("Sentinel names %s:%s the Redis master of %r", host, port, self.service_name)
        return host, port


class Sentinels(Sentinel):
    """redis-py's Sentinel client, saying in one short line why no master was found
    (redis-py's own message repeats each Sentinel client's whole configuration)."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        problems = []
        for index, sentinel in enumerate(self.sentinels):
            options = sentinel.connection_pool.connection_kwargs
            where = f"{options['host']}:{options['port']}"
            try:
                masters = await sentinel.sentinel_masters()
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            # By name, as RESP2 (the protocol used here) answers; RESP3 would list them.
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if state is None:
                problems.append(f"{where}: monitors no {service_name!r}")
            elif not self.check_master_state(state, service_name):
                problems.append(f"{where}: the master is down or not agreed on")
            else:
                # Ask the one that answered first next time, as redis-py does.
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return str(state["ip"]), int(state["port"])
        raise MasterNotFoundError(
            f"no Sentinel names a master of {service_name!r} that is up ({'; '.join(problems)})"
        )


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """Replicas that must confirm a write before the node acknowledges it (WAIT)."""

    replicas: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Clients:
    """The node's clients: `store` for calls (a pool), `events` for the one subscribed
    connection, and the database both use (pub/sub channels are named after it)."""

    store: Redis
    events: Redis
    db: int
    sentinel: Sentinel | None = None
    wait: ReplicaWait | None = None

    async def aclose(self) -> None:
        await self.events.aclose()
        await self.store.aclose()
        if self.sentinel is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.sentinel.aclose()


def connect(url: str, *, timeout_s: float, max_connections: int) -> Clients:
    """The clients for `url` (checked already by the settings); nothing connects yet."""
    # Never retry by ourselves: a publication whose answer was lost may have been
    # stored, and a retry would store it twice. The caller gets a 503 instead.
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": min(timeout_s, 2.0),
        "retry": Retry(NoBackoff(), 0),
    }
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        return _sentinel_clients(
            SentinelUrl.parse(url), options, timeout_s=timeout_s, max_connections=max_connections
        )
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, **options
    )
    return Clients(
        store=Redis.from_pool(pool),
        # A client of its own: its connection stays subscribed.
        events=Redis.from_url(url, **options),
        db=int(pool.connection_kwargs.get("db", 0)),
    )


def _sentinel_clients(
    target: SentinelUrl, options: dict[str, Any], *, timeout_s: float, max_connections: int
) -> Clients:
    sentinel_options: dict[str, Any] = {
        "socket_timeout": _SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": _SENTINEL_TIMEOUT_S,
        "password": target.sentinel_password,
    }
    sentinel = Sentinels(
        target.sentinels,
        sentinel_kwargs=sentinel_options,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    store = sentinel.master_for(
        target.service,
        connection_pool_class=BlockingSentinelPool,
        max_connections=max_connections,
        timeout=timeout_s,
    )
    wait = None
    if target.wait_replicas:
        wait = ReplicaWait(target.wait_replicas, round(target.wait_timeout_s * 1000))
    return Clients(
        store=store,
        events=sentinel.master_for(target.service),
        db=target.db,
        sentinel=sentinel,
        wait=wait,
    )
