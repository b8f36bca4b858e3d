"""`GET /metrics`: snapshots of this node's workers in the Prometheus text format.

Built at scrape time with `prometheus-client`'s metric families from snapshots (one
per worker, see `observe.observer`), each series labelled `worker`, plus the node's
sum under `worker="all"`: select `{worker="all"}` for the node, `{worker!="all"}` per
worker, and never sum over every value of the label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from pushup.observe.metrics import DELIVERY_BUCKETS_S, FANOUT_BUCKETS_S, REQUEST_BUCKETS_S

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
ALL = "all"

Snapshot = dict[str, Any]

# (snapshot key, metric name, help); absent (None) in a snapshot: not exposed for it.
GAUGES = (
    ("parked", "pushup_parked_subscribers", "Subscriptions parked now: polls and streams."),
    ("connections", "pushup_open_connections", "Open client connections."),
    ("streams", "pushup_open_streams", "Open Server-Sent Events and WebSocket streams."),
    ("channels", "pushup_channels", "Live channels (embedded engine only)."),
    (
        "cached_messages",
        "pushup_cached_messages",
        "Messages cached, counted once per channel holding them (embedded engine only).",
    ),
    (
        "cached_bytes",
        "pushup_cached_bytes",
        "Payload bytes of the distinct cached messages (embedded engine only).",
    ),
)
COUNTERS = (
    ("publications", "pushup_publications", "Messages published through this worker."),
    (
        "replays",
        "pushup_idempotent_replays",
        "Publication requests answered again from an earlier one with the same "
        "Idempotency-Key (nothing stored).",
    ),
    ("deliveries", "pushup_deliveries", "Receivers (polls, streams) written to by fan-outs."),
    (
        "engine_reconnects",
        "pushup_engine_reconnects",
        "Times the engine's link to a shared store (Redis events) came back.",
    ),
)


def render(snapshots: Sequence[Snapshot]) -> bytes:
    """The exposition of these snapshots, the first being this worker's own."""
    return generate_latest(_Collector(snapshots))


class _Collector:
    """A prometheus-client collector over fixed snapshots (one scrape)."""

    def __init__(self, snapshots: Sequence[Snapshot]) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterable[Metric]:
        snapshots = self.snapshots
        live = [snap for snap in snapshots if not snap.get("stale")]
        for key, name, doc in GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=["worker"])
            values: list[tuple[str, float]] = [
                (snap["worker"], snap[key]) for snap in live if snap.get(key) is not None
            ]
            if not values:
                continue
            for worker, value in values:
                gauge.add_metric([worker], value)
            gauge.add_metric([ALL], sum(value for _, value in values))
            yield gauge
        for key, name, doc in COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=["worker"])
            for snap in snapshots:
                counter.add_metric([snap["worker"]], snap.get(key, 0))
            counter.add_metric([ALL], sum(snap.get(key, 0) for snap in snapshots))
            yield counter
        yield _labelled_counter(
            snapshots,
            "errors",
            "pushup_errors",
            "Error answers by their JSON error code.",
            "code",
        )
        yield _labelled_counter(
            snapshots,
            "limits",
            "pushup_limit_rejections",
            "Requests refused by a limit, by the limit's name.",
            "limit",
        )
        yield _labelled_counter(
            snapshots,
            "key_publications",
            "pushup_key_publications",
            "Messages published, by the name of the publisher key that sent them.",
            "key",
        )
        yield _key_errors(snapshots)
        yield _labelled_counter(
            snapshots,
            "dropped",
            "pushup_cache_dropped_messages",
            "Messages the cache let go, once per channel, by reason: its message TTL "
            "(ttl), the per-channel count (count), the byte budget (bytes).",
            "reason",
        )
        yield from _histograms(snapshots)


def _labelled_counter(
    snapshots: Sequence[Snapshot], key: str, name: str, doc: str, label: str
) -> CounterMetricFamily:
    counter = CounterMetricFamily(name, doc, labels=["worker", label])
    totals: dict[str, int] = {}
    for snap in snapshots:
        for value, count in sorted(snap.get(key, {}).items()):
            counter.add_metric([snap["worker"], value], count)
            totals[value] = totals.get(value, 0) + count
    for value, count in sorted(totals.items()):
        counter.add_metric([ALL, value], count)
    return counter


def _key_errors(snapshots: Sequence[Snapshot]) -> CounterMetricFamily:
    counter = CounterMetricFamily(
        "pushup_key_errors",
        "Error answers to requests made with a publisher key, by the key's name and the "
        "JSON error code.",
        labels=["worker", "key", "code"],
    )
    totals: dict[tuple[str, str], int] = {}
    for snap in snapshots:
        for key, codes in sorted(snap.get("key_errors", {}).items()):
            for code, count in sorted(codes.items()):
                counter.add_metric([snap["worker"], key, code], count)
                totals[(key, code)] = totals.get((key, code), 0) + count
    for (key, code), count in sorted(totals.items()):
        counter.add_metric([ALL, key, code], count)
    return counter


def _histograms(snapshots: Sequence[Snapshot]) -> Iterator[Metric]:
    fanout = HistogramMetricFamily(
        "pushup_fanout_seconds",
        "Time from a publication reaching the hub to the last local write of its fan-out.",
        labels=["worker"],
    )
    total_fanout: list[Any] = []
    for snap in snapshots:
        dumped = snap.get("fanout")
        if dumped:
            fanout.add_metric([snap["worker"]], *_buckets(FANOUT_BUCKETS_S, dumped))
            total_fanout.append(dumped)
    fanout.add_metric([ALL], *_buckets(FANOUT_BUCKETS_S, _summed(FANOUT_BUCKETS_S, total_fanout)))
    yield fanout
    delivery = HistogramMetricFamily(
        "pushup_delivery_seconds",
        "Time from a message's publication (its timestamp, on any node) to its fan-out "
        "to a parked poll or stream here, one observation per receiver.",
        labels=["worker"],
    )
    total_delivery: list[Any] = []
    for snap in snapshots:
        dumped = snap.get("delivery")
        if dumped:
            delivery.add_metric([snap["worker"]], *_buckets(DELIVERY_BUCKETS_S, dumped))
            total_delivery.append(dumped)
    summed = _summed(DELIVERY_BUCKETS_S, total_delivery)
    delivery.add_metric([ALL], *_buckets(DELIVERY_BUCKETS_S, summed))
    yield delivery
    requests = HistogramMetricFamily(
        "pushup_request_seconds",
        "Time to handle a request, until its answer or until it is parked or streaming.",
        labels=["worker", "route", "method"],
    )
    totals: dict[tuple[str, str], list[Any]] = {}
    for snap in snapshots:
        for route, method, dumped in snap.get("requests", ()):
            requests.add_metric(
                [snap["worker"], route, method], *_buckets(REQUEST_BUCKETS_S, dumped)
            )
            totals.setdefault((route, method), []).append(dumped)
    for (route, method), dumps in sorted(totals.items()):
        summed = _summed(REQUEST_BUCKETS_S, dumps)
        requests.add_metric([ALL, route, method], *_buckets(REQUEST_BUCKETS_S, summed))
    yield requests


def _summed(bounds: tuple[float, ...], dumps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for dumped in dumps:
        if len(dumped["counts"]) != len(counts):
            continue  # from a version with other buckets
        counts = [a + b for a, b in zip(counts, dumped["counts"], strict=True)]
        total += dumped["sum"]
    return {"counts": counts, "sum": total}


def _buckets(
    bounds: tuple[float, ...], dumped: dict[str, Any]
) -> tuple[list[tuple[str, float]], float]:
    """Per-bucket counts to Prometheus's cumulative `le` buckets, and the sum."""
    counts = dumped["counts"]
    if len(counts) != len(bounds) + 1:
        counts = [0] * (len(bounds) + 1)
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        buckets.append(("+Inf" if math.isinf(bound) else repr(bound), running))
    return buckets, dumped["sum"]
