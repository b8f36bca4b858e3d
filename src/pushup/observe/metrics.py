"""The figures one process counts as it serves: counters and histograms in plain
Python numbers.

The hot paths (a request, a fan-out) pay an integer addition or a bisect, never a
lock or a label lookup of a metrics library: a fan-out counts its receivers once
(`deliveries += n`), not once per receiver. Gauges (parked polls, connections, the
cache) are not counted here at all: they are read from the server's own structures
when a snapshot is taken (`observe.observer`). Prometheus objects are built from
snapshots only at scrape time (`observe.exposition`).

Other modules count through the functions at the bottom, e.g.
`metrics.count_error("rate_limited")` or `metrics.count_limit("connections")`; a
process serves one server, so one `Figures` per process is all there is.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Upper bounds in seconds: a fan-out to a handful of receivers takes tens of µs, one
# to tens of thousands some ms; a request is answered (or parked) in well under a ms
# unless it waits on a journal commit or on Redis.
FANOUT_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# From a message's timestamp (taken when it was published, on any node) to its fan-out
# here: under a ms in one process, a few ms over Redis or NATS, more under load.
DELIVERY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# Why the cache let a message go before anyone could read it again.
DROP_REASONS = ("ttl", "count", "bytes")
REQUEST_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

# Channels whose publications are counted one by one between two ticks of the
# observer (which takes the busiest and starts again): a publisher spraying new
# channels cannot grow the table past this.
CHANNEL_COUNTS_MAX = 10_000
# Error answers that are a normal outcome rather than a fault, whatever the request:
# a name already taken (what a create-unless-it-exists expects), parked polls told
# that their channel closed or expired.
EXPECTED_CODES = frozenset(("name_taken", "channel_closed"))

# Methods httptools parses are a fixed set, but a label must stay bounded whatever
# the parser accepts: the rest are counted as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Histogram:
    """Counts per bucket (the last is +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, as Prometheus's `le` means.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_n(self, value: float, n: int) -> None:
        """`n` observations of one value, for the cost of one."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    def dump(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}

    def absorb(self, dumped: dict[str, Any]) -> None:
        counts = dumped.get("counts")
        if isinstance(counts, list) and len(counts) == len(self.counts):
            self.counts = [a + int(b) for a, b in zip(self.counts, counts, strict=True)]
            self.sum += float(dumped.get("sum", 0.0))


class Figures:
    """Everything this process counts; see the module docstring for what is not."""

    def __init__(self) -> None:
        self.publications = 0
        # Publication requests answered again from an earlier one with the same key.
        self.replays = 0
        self.deliveries = 0
        self.engine_reconnects = 0
        self.errors: dict[str, int] = {}
        # The part of `errors` that is a normal outcome (`expected`): the dashboard
        # leaves it out of its error chart; Prometheus counts every answer alike.
        self.expected_errors: dict[str, int] = {}
        # Publications per channel since the observer last took them (`take_channel_counts`).
        self.channel_publications: dict[int, int] = {}
        self.limits: dict[str, int] = {}
        self.fanout = Histogram(FANOUT_BUCKETS_S)
        self.delivery = Histogram(DELIVERY_BUCKETS_S)
        # Messages dropped from the cache, by reason (`DROP_REASONS`); a message cached
        # in several channels counts once per channel that dropped it.
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.requests: dict[tuple[str, str], Histogram] = {}
        # Per publisher key (names from --publisher-keys, so bounded): messages
        # published, and error answers by code.
        self.key_publications: dict[str, int] = {}
        self.key_errors: dict[str, dict[str, int]] = {}

    def request_done(self, route: str, method: str, seconds: float) -> None:
        histogram = self.requests.get((route, method))
        if histogram is None:
            if method not in _METHODS:
                method = "other"
            histogram = self.requests.setdefault((route, method), Histogram(REQUEST_BUCKETS_S))
        histogram.observe(seconds)

    def dump(self) -> dict[str, Any]:
        """The counters as JSON-ready data, for a snapshot."""
        return {
            "publications": self.publications,
            "replays": self.replays,
            "deliveries": self.deliveries,
            "engine_reconnects": self.engine_reconnects,
            "errors": dict(self.errors),
            "expected_errors": dict(self.expected_errors),
            "limits": dict(self.limits),
            "fanout": self.fanout.dump(),
            "delivery": self.delivery.dump(),
            "dropped": dict(self.dropped),
            "key_publications": dict(self.key_publications),
            "key_errors": {key: dict(codes) for key, codes in self.key_errors.items()},
            "requests": [
                [route, method, histogram.dump()]
                for (route, method), histogram in sorted(self.requests.items())
            ],
        }

    def absorb(self, dumped: dict[str, Any]) -> None:
        """Add counters dumped by this worker's predecessor, so that a restarted worker
        counts on from where the one it replaces stopped (within its last second)."""
        self.publications += int(dumped.get("publications", 0))
        self.replays += int(dumped.get("replays", 0))
        self.deliveries += int(dumped.get("deliveries", 0))
        self.engine_reconnects += int(dumped.get("engine_reconnects", 0))
        for mine, theirs in (
            (self.errors, dumped.get("errors")),
            (self.expected_errors, dumped.get("expected_errors")),
            (self.limits, dumped.get("limits")),
            (self.dropped, dumped.get("dropped")),
        ):
            if isinstance(theirs, dict):
                for key, count in theirs.items():
                    mine[str(key)] = mine.get(str(key), 0) + int(count)
        key_publications = dumped.get("key_publications")
        if isinstance(key_publications, dict):
            for name, count in key_publications.items():
                self.key_publications[name] = self.key_publications.get(name, 0) + int(count)
        key_errors = dumped.get("key_errors")
        if isinstance(key_errors, dict):
            for name, codes in key_errors.items():
                mine = self.key_errors.setdefault(str(name), {})
                for code, count in codes.items():
                    mine[str(code)] = mine.get(str(code), 0) + int(count)
        for mine_h, theirs_h in (
            (self.fanout, dumped.get("fanout")),
            (self.delivery, dumped.get("delivery")),
        ):
            if isinstance(theirs_h, dict):
                mine_h.absorb(theirs_h)
        for item in dumped.get("requests", ()):
            route, method, histogram = item
            mine_h = self.requests.setdefault((route, method), Histogram(REQUEST_BUCKETS_S))
            mine_h.absorb(histogram)


FIGURES = Figures()


def count_error(code: str, n: int = 1, *, expected: bool = False) -> None:
    """An error answered with this JSON error code (e.g. `not_found`); `expected`
    when the answer is a normal outcome (see `expected`)."""
    errors = FIGURES.errors
    errors[code] = errors.get(code, 0) + n
    if expected or code in EXPECTED_CODES:
        normal = FIGURES.expected_errors
        normal[code] = normal.get(code, 0) + n


def expected(code: str, method: str) -> bool:
    """Whether an error answer is a normal outcome: `EXPECTED_CODES`, and a read (GET:
    a poll, a stream, a channel's state) of a channel that does not exist, most often
    one that expired under a subscriber. Publishing to, renewing or closing a channel
    that does not exist stays an error: the application lost track of it."""
    return code in EXPECTED_CODES or (code == "channel_not_found" and method == "GET")


def count_limit(name: str, n: int = 1) -> None:
    """A request refused by the limit of this name (e.g. `connections`)."""
    limits = FIGURES.limits
    limits[name] = limits.get(name, 0) + n


def published(n: int) -> None:
    """Messages published through this process."""
    FIGURES.publications += n


def published_to(channels: tuple[int, ...]) -> None:
    """One message published to these channels: counted per channel, for the
    observer's busiest channels, in a table of bounded size."""
    counts = FIGURES.channel_publications
    for channel_id in channels:
        count = counts.get(channel_id)
        if count is not None:
            counts[channel_id] = count + 1
        elif len(counts) < CHANNEL_COUNTS_MAX:
            counts[channel_id] = 1


def take_channel_counts() -> dict[int, int]:
    """The publications per channel counted since the last call, and a fresh table."""
    counts = FIGURES.channel_publications
    FIGURES.channel_publications = {}
    return counts


def key_published(key: str, n: int) -> None:
    """Messages published with the publisher key of this name."""
    counts = FIGURES.key_publications
    counts[key] = counts.get(key, 0) + n


def count_key_error(key: str, code: str) -> None:
    """An error answered to a request made with the publisher key of this name."""
    codes = FIGURES.key_errors.setdefault(key, {})
    codes[code] = codes.get(code, 0) + 1


def replayed() -> None:
    """A publication request answered again from an earlier one with the same
    idempotency key: nothing was stored."""
    FIGURES.replays += 1


def fanned_out(receivers: int, seconds: float, since_published_s: float) -> None:
    """One fan-out wrote to `receivers` local receivers in `seconds`, its oldest message
    `since_published_s` after it was published: one delivery time per receiver."""
    FIGURES.deliveries += receivers
    FIGURES.fanout.observe(seconds)
    FIGURES.delivery.observe_n(max(since_published_s, 0.0), receivers)


def dropped(reason: str, n: int = 1) -> None:
    """The cache let `n` messages go (`reason`: one of `DROP_REASONS`)."""
    FIGURES.dropped[reason] += n


def engine_reconnected() -> None:
    """The engine got its link to a shared store back."""
    FIGURES.engine_reconnects += 1
