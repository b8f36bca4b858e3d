"""What changed over one tick of the observer: the dashboard's figures per interval.

Taken every tick from what the process counts anyway: the publications, deliveries and
unexpected errors counted meanwhile, the delivery histogram's bucket deltas (and from
them its quantiles), and the channels that were published to most (counted per channel
by the hub, one increment per message and channel, in a table of bounded size that this
empties every tick). Nothing here runs on a request's path.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Collection, Sequence
from operator import itemgetter
from typing import Any

from pushup.observe import metrics
from pushup.observe.metrics import DELIVERY_BUCKETS_S, FIGURES

# The busiest channels each process tells of, by publications and by subscriptions:
# the dashboard sums them over processes and nodes.
TOP_N = 10


def quantile(q: float, counts: Sequence[int], bounds: Sequence[float]) -> float | None:
    """The `q` quantile of observations counted per bucket (`counts[i]` at most
    `bounds[i]`, the last one above every bound), by linear interpolation within the
    bucket that holds it, as Prometheus's `histogram_quantile`; None with no observation.
    In the last bucket it is the highest bound: all that is known."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i == len(bounds):
                return bounds[-1]
            lower = 0.0 if i == 0 else bounds[i - 1]
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


def unexpected_errors() -> int:
    """Error answers so far, less those that are a normal outcome (`metrics.expected`)."""
    return sum(FIGURES.errors.values()) - sum(FIGURES.expected_errors.values())


class Intervals:
    """The counters as they stood at the last tick, and what changed since."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at = clock()
        self._delivery = list(FIGURES.delivery.counts)
        self._publications = FIGURES.publications
        self._deliveries = FIGURES.deliveries
        self._errors = unexpected_errors()
        self.latest: dict[str, Any] = self._figures(1.0, [0] * len(self._delivery), 0, 0, 0, [])

    def take(self, leave_out: Collection[int]) -> dict[str, Any]:
        """What changed since the last call (kept as `latest`), `leave_out` channels
        aside (the dashboard's own)."""
        now = self._clock()
        seconds = max(now - self._at, 1e-6)
        counts = list(FIGURES.delivery.counts)
        delivered = [max(0, a - b) for a, b in zip(counts, self._delivery, strict=True)]
        errors = unexpected_errors()
        by_channel = metrics.take_channel_counts()
        for channel_id in leave_out:
            by_channel.pop(channel_id, None)
        busiest = heapq.nlargest(TOP_N, by_channel.items(), key=itemgetter(1))
        self.latest = self._figures(
            seconds,
            delivered,
            FIGURES.publications - self._publications,
            FIGURES.deliveries - self._deliveries,
            errors - self._errors,
            busiest,
        )
        self._at, self._delivery = now, counts
        self._publications, self._deliveries, self._errors = (
            FIGURES.publications,
            FIGURES.deliveries,
            errors,
        )
        return self.latest

    @staticmethod
    def _figures(
        seconds: float,
        delivered: list[int],
        publications: int,
        deliveries: int,
        errors: int,
        busiest: list[tuple[int, int]],
    ) -> dict[str, Any]:
        p50 = quantile(0.5, delivered, DELIVERY_BUCKETS_S)
        p99 = quantile(0.99, delivered, DELIVERY_BUCKETS_S)
        return {
            "seconds": round(seconds, 3),
            "publications": max(0, publications),
            "deliveries": max(0, deliveries),
            "errors": max(0, errors),
            # Bucket deltas (bounds: `DELIVERY_BUCKETS_S`, then +Inf), so that the
            # dashboard can merge processes before taking quantiles.
            "delivery": delivered,
            "delivery_p50_s": None if p50 is None or math.isnan(p50) else p50,
            "delivery_p99_s": None if p99 is None or math.isnan(p99) else p99,
            "top_publishing": [[channel_id, count / seconds] for channel_id, count in busiest],
        }
