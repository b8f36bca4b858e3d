"""Token buckets, one per key: a steady rate with a burst, and how long to wait."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable

# Buckets kept at most; the one untouched longest goes first. A bucket left alone
# refills to full, so forgetting it changes nothing unless its key comes back within
# the refill time with more keys than this in between.
MAX_KEYS = 10_000


class TokenBuckets:
    """`rate_per_s` tokens a second per key, at most `burst` saved up.

    A request for `count` tokens passes while the bucket holds `min(count, burst)`
    (so a batch larger than the burst is not refused forever) and then takes all
    `count`, which may leave the bucket in debt: the long-run rate stays bounded.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        clock: Callable[[], float],
        *,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
            raise ValueError("rate_per_s must be a positive number")
        if not burst >= 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        # key -> [tokens, time of that count]
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, count: int = 1) -> float:
        """Take `count` tokens from `key`'s bucket: 0.0 if granted, else the seconds
        until it would be (nothing is taken then)."""
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = [self.burst, now]
            if len(buckets) > self._max_keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
            tokens, then = bucket
            bucket[0] = min(self.burst, tokens + (now - then) * self.rate_per_s)
            bucket[1] = now
        needed = min(count, self.burst)
        if bucket[0] >= needed:
            bucket[0] -= count
            return 0.0
        return (needed - bucket[0]) / self.rate_per_s
