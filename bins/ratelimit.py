"""A token bucket per key: `rate` requests per second with bursts up to `rate`."""

from __future__ import annotations

import math
from collections.abc import Hashable


class RateLimiter:
    MAX_KEYS = 10_000

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def retry_after(self, key: Hashable, now: float) -> int:
        """0 if a request for `key` may pass now (and count it), else whole seconds to wait."""
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > self.MAX_KEYS:
                self._forget_idle(now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely holds no information.
        for key, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._buckets[key]
