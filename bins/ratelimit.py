"""Rate limits: a token bucket per key, shared by every process through Redis when REDIS_URL is
set, else kept in this process.

Three limits, each 0 = off (settings): captures per bin (`BIN_RATE_LIMIT`, per second),
resends per bin (`RESEND_RATE_LIMIT`, per second) and new bins per client address
(`BIN_CREATE_RATE_LIMIT`, per minute). A limit never costs a capture its storage because Redis
is down: then each process counts on its own for a few seconds and tries Redis again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Hashable
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)


class Bucket:
    """In-process token buckets: `rate` per second with bursts up to `burst`."""

    MAX_KEYS = 10_000

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
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


def limit(name: str) -> tuple[float, float]:
    """(rate per second, burst) of a named limit; rate 0 means off."""
    if name == "capture":
        rate = settings.BIN_RATE_LIMIT
        return rate, max(rate, 1.0)
    if name == "resend":
        rate = settings.RESEND_RATE_LIMIT
        return rate, max(rate, 1.0)
    if name == "create":
        per_minute = settings.BIN_CREATE_RATE_LIMIT
        return per_minute / 60, float(per_minute)
    raise KeyError(name)


_local: dict[str, Bucket] = {}


def local_retry_after(name: str, key: Hashable) -> int:
    rate, burst = limit(name)
    bucket = _local.get(name)
    if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
        bucket = _local[name] = Bucket(rate, burst)
    return bucket.retry_after(key, time.monotonic())


# GCRA (a token bucket kept as one timestamp per key), atomic in Redis, on Redis' own clock so
# that every process agrees. Returns the microseconds to wait, 0 when the request may pass.
GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat + interval - burst * interval - now
if wait > 0 then return math.ceil(wait) end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1)
return 0
"""
REDIS_TIMEOUT = 0.5
# After Redis failed, count in this process for this long before trying Redis again: a dead
# Redis must not add a timeout to every request.
REDIS_RETRY_AFTER = 5.0
_redis_down_until = 0.0


def _args(name: str, key: Hashable) -> tuple[list[str], list[float]]:
    rate, burst = limit(name)
    # The limit is part of the key: a changed setting starts afresh instead of inheriting a
    # timestamp computed for another rate.
    return [f"webhook-inspector:rate:{name}:{rate:g}:{burst:g}:{key}"], [1_000_000 / rate, burst]


def _seconds(wait_us: int) -> int:
    return max(1, math.ceil(int(wait_us) / 1_000_000)) if wait_us else 0


def _redis_failed(exc: Exception) -> None:
    global _redis_down_until
    _redis_down_until = time.monotonic() + REDIS_RETRY_AFTER
    logger.warning("rate limit: Redis failed (%s); counting in this process for now", exc)


def _use_redis() -> bool:
    return bool(settings.REDIS_URL) and time.monotonic() >= _redis_down_until


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)


async def retry_after(name: str, key: Hashable) -> int:
    """0 if a request may pass now (and it is counted), else whole seconds to wait."""
    if limit(name)[0] <= 0:
        return 0
    if _use_redis():
        loop = asyncio.get_running_loop()
        client = _async_clients.get(loop)
        if client is None:
            import redis.asyncio

            client = _async_clients[loop] = redis.asyncio.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
            )
        try:
            keys, args = _args(name, key)
            return _seconds(await client.eval(GCRA, len(keys), *keys, *args))
        except Exception as exc:  # Redis down or slow: never let it refuse the request
            _redis_failed(exc)
    return local_retry_after(name, key)


_sync_client: Any = None


def retry_after_sync(name: str, key: Hashable) -> int:
    """`retry_after` for sync views (they run in a thread)."""
    global _sync_client
    if limit(name)[0] <= 0:
        return 0
    if _use_redis():
        if _sync_client is None:
            import redis

            _sync_client = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
            )
        try:
            keys, args = _args(name, key)
            return _seconds(_sync_client.eval(GCRA, len(keys), *keys, *args))
        except Exception as exc:
            _redis_failed(exc)
    return local_retry_after(name, key)


class RateLimited(Exception):
    """Over a rate limit; `retry_after` whole seconds until the next request may pass."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
