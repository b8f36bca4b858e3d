"""Token buckets on a hand-driven clock: the burst, the refill, debt, and the keys kept."""

from __future__ import annotations

import pytest

from pushup.http.ratelimit import TokenBuckets
from tests.unit.fakes import FakeClock


def test_a_burst_passes_then_the_rate_refills() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(2.0, 3, clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)  # one token comes every 0.5 s
    clock.advance(0.5)
    assert buckets.take("k") == 0.0
    assert buckets.take("k") == pytest.approx(0.5)
    clock.advance(100)  # saved up to the burst, no more
    assert [buckets.take("k") for _ in range(4)][-1] > 0


def test_keys_have_buckets_of_their_own() -> None:
    buckets = TokenBuckets(1.0, 1, FakeClock())
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_a_batch_larger_than_the_burst_passes_once_full_and_leaves_a_debt() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(10.0, 5, clock)
    assert buckets.take("k", 20) == 0.0
    # 5 - 20 = -15 tokens: 1.5 s to be back at zero, 0.1 s more for the next one.
    assert buckets.take("k") == pytest.approx(1.6)
    clock.advance(1.61)  # a hair more: float time
    assert buckets.take("k") == 0.0


def test_refused_takes_nothing() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(1.0, 2, clock)
    assert buckets.take("k", 2) == 0.0
    assert buckets.take("k", 2) == pytest.approx(2.0)
    clock.advance(1.0)
    assert buckets.take("k", 2) == pytest.approx(1.0)
    clock.advance(1.0)
    assert buckets.take("k", 2) == 0.0


def test_the_longest_untouched_key_is_forgotten_past_max_keys() -> None:
    buckets = TokenBuckets(1.0, 1, FakeClock(), max_keys=2)
    buckets.take("a")
    buckets.take("b")
    buckets.take("a")  # a is the most recent again
    buckets.take("c")
    assert len(buckets) == 2
    assert buckets.take("c") > 0  # kept: spent
    assert buckets.take("b") == 0.0  # forgotten, so full again


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("inf"), 1), (1.0, 0)])
def test_bad_settings_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate, burst, FakeClock())
