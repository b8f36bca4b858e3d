"""Limits on what clients hold and send: connections, parked subscriptions per client
address, slow request heads and bodies, publications per second; every refusal counted.

Each check is sized for the hot paths: a few attribute reads per request, and nothing
at all per connection that just sits idle or parked (timeouts are swept once a second
by the idle sweep, not timed per connection).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import resource
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pushup.http.errors import RateLimited, TooManyConnections, TooManySubscriptions
from pushup.http.ratelimit import TokenBuckets
from pushup.http.response import CLOSE, frame
from pushup.observe import metrics
from pushup.observe.requests import answered_error

if TYPE_CHECKING:
    from pushup.config import Settings
    from pushup.http.request import Request

# What a refused connection or publisher is told to wait before trying again.
RETRY_AFTER_S = 1

# Request phases watched for slowness.
IDLE, HEAD, BODY = 0, 1, 2


class TimedOut(Protocol):
    def request_timed_out(self, phase: int) -> None: ...


class RequestTimeouts:
    """Connections in the middle of receiving a request, oldest first, per phase.

    Every entry of one phase has the same timeout, so insertion order is deadline
    order: a sweep pops expired entries from the front and stops at the first that is
    not, whatever the number of connections. A request that arrives in one read (most
    do) is never entered at all.
    """

    def __init__(
        self, header_timeout_s: float, body_timeout_s: float, clock: Callable[[], float]
    ) -> None:
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self._clock = clock
        self._since: tuple[OrderedDict[TimedOut, float], ...] = (
            OrderedDict(),  # IDLE: never used, keeps phases as indexes
            OrderedDict(),
            OrderedDict(),
        )

    def watch(self, conn: TimedOut, phase: int, previous: int = IDLE) -> None:
        """`conn` moved from phase `previous` to `phase` now."""
        if previous:
            self._since[previous].pop(conn, None)
        if phase:
            self._since[phase][conn] = self._clock()

    def forget(self, conn: TimedOut) -> None:
        for since in self._since[1:]:
            since.pop(conn, None)

    def watched(self, phase: int) -> int:
        return len(self._since[phase])

    def sweep(self) -> None:
        """Tell every connection whose head or body is overdue (from the idle sweep)."""
        now = self._clock()
        for phase, timeout_s in ((HEAD, self.header_timeout_s), (BODY, self.body_timeout_s)):
            since = self._since[phase]
            horizon = now - timeout_s
            while since:
                conn, started = next(iter(since.items()))
                if started > horizon:
                    break
                del since[conn]
                conn.request_timed_out(phase)


class Quota:
    """One client address's parked subscriptions, shared by its connections."""

    __slots__ = ("count", "key", "table")

    def __init__(self, key: str, table: dict[str, Quota]) -> None:
        self.key = key
        self.table = table
        self.count = 0

    def release(self) -> None:
        self.count -= 1
        if not self.count:
            del self.table[self.key]


class ParkedPerClient:
    """Parked polls and open streams per client address, at most `limit` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self._quotas: dict[str, Quota] = {}

    def __len__(self) -> int:
        return len(self._quotas)

    def count(self, key: str) -> int:
        quota = self._quotas.get(key)
        return 0 if quota is None else quota.count

    def admit(self, key: str | None) -> Quota | None:
        """One more for `key` (None: not limited), or TooManySubscriptions."""
        if key is None or not self.limit:
            return None
        quota = self._quotas.get(key)
        if quota is None:
            quota = self._quotas[key] = Quota(key, self._quotas)
        elif quota.count >= self.limit:
            raise TooManySubscriptions(
                f"this client address already holds {self.limit} parked polls and open "
                "streams; close some first"
            )
        quota.count += 1
        return quota


def client_key(
    peer: str | None, forwarded_for: str | None, trust_forwarded_for: bool
) -> str | None:
    """The address a subscription counts against, or None for one not limited.

    A loopback peer is this host: usually a reverse proxy whose clients are many, so it
    is not limited as one. With `trust_forwarded_for`, such a proxy's clients count by
    the last `X-Forwarded-For` entry (the one the proxy itself added).
    """
    if not peer:
        return None
    if not is_loopback(peer):
        return peer
    if trust_forwarded_for and forwarded_for:
        last = forwarded_for.rpartition(",")[2].strip()
        return last or None
    return None


@functools.lru_cache(maxsize=4096)
def is_loopback(peer: str | None) -> bool:
    """Whether a peer address is this host's. Cached: a client sends many requests
    from one address, and parsing it costs more than the rest of a check."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class Limits:
    """The limits of one server process and the state they need."""

    def __init__(
        self,
        *,
        max_connections: int = 0,
        max_parked_per_ip: int = 0,
        trust_forwarded_for: bool = False,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
        publish_rate: float = 0.0,
        publish_burst: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections or math.inf  # 0: no limit
        self.parked = ParkedPerClient(max_parked_per_ip)
        self.trust_forwarded_for = trust_forwarded_for
        self.timeouts = RequestTimeouts(header_timeout_s, body_timeout_s, clock)
        self.publish_buckets: TokenBuckets | None = None
        if publish_rate > 0:
            burst = publish_burst or max(1, math.ceil(publish_rate))
            self.publish_buckets = TokenBuckets(publish_rate, burst, clock)
        # Refusals by limit, as also told to the metrics.
        self.hits: Counter[str] = Counter()
        self.refusal = TooManyConnections(
            "the server holds as many connections as it may; retry shortly",
            headers=(("Retry-After", str(RETRY_AFTER_S)),),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_connections=settings.max_connections,
            max_parked_per_ip=settings.max_parked_per_ip,
            trust_forwarded_for=settings.trust_forwarded_for,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            publish_rate=settings.publish_rate,
            publish_burst=settings.publish_burst,
        )

    def hit(self, limit: str) -> None:
        """A request or connection was refused by `limit`: the one place that counts."""
        self.hits[limit] += 1
        metrics.count_limit(limit)

    def check_publish(self, request: Request, count: int) -> None:
        """`count` messages from this publisher (its key, else its address), or
        RateLimited with the seconds to wait."""
        buckets = self.publish_buckets
        if buckets is None:
            return
        token = request.headers.get("authorization")
        key = ("key", token) if token else ("peer", request.peer)
        wait_s = buckets.take(key, count)
        if wait_s:
            raise RateLimited(
                f"over {buckets.rate_per_s:g} messages a second for this publisher; "
                "retry after the time in Retry-After",
                headers=(("Retry-After", str(max(1, math.ceil(wait_s)))),),
            )


def raise_open_files(max_connections: int) -> str | None:
    """Raise this process's open-files limit (the soft one, up to the hard one) to fit
    `max_connections`; a warning if it cannot: the process would run out of descriptors,
    and stop accepting, before the limit could answer 503."""
    # Descriptors besides connections: the listening socket, logs, the journal, Redis.
    wanted = max_connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised >= wanted:
        return None
    return (
        f"the open-files limit ({raised}) is below --max-connections ({max_connections}) "
        "plus 64 spare: raise it (ulimit -n) or lower --max-connections"
    )


class Refused(asyncio.Protocol):
    """A connection past `max_connections`: answered 503 as it opens, so the client
    learns why rather than waiting in the accept queue, and closed once the client
    closes its side (or after the header timeout), never with its request unread (a
    close with unread bytes would reset the connection and could lose the answer)."""

    __slots__ = ("_limits", "_transport")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        limits = self._limits
        error = limits.refusal
        limits.hit("connections")
        headers = error.headers + answered_error(error, in_request=False)
        writer: Any = transport
        writer.write(frame(error.status, error.body(), CLOSE, headers))
        if writer.can_write_eof():
            writer.write_eof()
        limits.timeouts.watch(self, HEAD)

    def data_received(self, data: bytes) -> None:
        pass  # read and dropped

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._limits.timeouts.forget(self)
        self._transport = None

    def request_timed_out(self, phase: int) -> None:
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]
