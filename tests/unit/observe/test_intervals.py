"""The dashboard's figures per interval: quantiles from bucket deltas, the busiest
channels from the per-channel counts (bounded), errors without the expected ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pushup.observe import metrics
from pushup.observe.intervals import Intervals, quantile
from pushup.observe.metrics import DELIVERY_BUCKETS_S, Figures

BOUNDS = (0.001, 0.01, 0.1)


@pytest.fixture(autouse=True)
def fresh_figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(metrics, "FIGURES", Figures())
    import pushup.observe.intervals as intervals

    monkeypatch.setattr(intervals, "FIGURES", metrics.FIGURES)
    yield


def test_quantiles_interpolate_within_a_bucket() -> None:
    assert quantile(0.5, [0, 0, 0, 0], BOUNDS) is None
    # 10 observations, all in (0.001, 0.01]: the median is halfway through it.
    assert quantile(0.5, [0, 10, 0, 0], BOUNDS) == pytest.approx(0.0055)
    assert quantile(0.99, [99, 0, 1, 0], BOUNDS) == pytest.approx(0.001)
    assert quantile(0.5, [0, 0, 0, 4], BOUNDS) == 0.1  # above every bound: the highest


def test_an_interval_is_what_changed_since_the_last() -> None:
    clock = iter([0.0, 2.0, 3.0]).__next__
    intervals = Intervals(clock)
    metrics.FIGURES.delivery.observe_n(0.0004, 10)
    metrics.published(6)
    for _ in range(6):
        metrics.published_to((1, 2))
    metrics.published_to((3,))
    metrics.count_error("name_taken")
    metrics.count_error("channel_not_found", expected=metrics.expected("channel_not_found", "GET"))
    metrics.count_error("channel_not_found", expected=metrics.expected("channel_not_found", "POST"))

    first = intervals.take(leave_out=(2,))
    assert first["seconds"] == 2.0
    assert first["publications"] == 6
    assert first["errors"] == 1  # the POST's only
    assert sum(first["delivery"]) == 10
    assert len(first["delivery"]) == len(DELIVERY_BUCKETS_S) + 1
    assert 0.00025 < first["delivery_p50_s"] <= 0.0005
    assert first["top_publishing"] == [[1, 3.0], [3, 0.5]]  # per second; 2 left out

    second = intervals.take(leave_out=())
    assert second["publications"] == 0 and second["errors"] == 0
    assert second["delivery_p50_s"] is None and second["top_publishing"] == []


def test_the_per_channel_counts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "CHANNEL_COUNTS_MAX", 100)
    for channel_id in range(1000):
        metrics.published_to((channel_id, 5))
    counts = metrics.take_channel_counts()
    assert len(counts) == 100
    assert counts[5] == 1001  # a channel already counted goes on being counted
    assert metrics.take_channel_counts() == {}
