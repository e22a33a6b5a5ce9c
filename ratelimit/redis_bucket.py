"""Buckets in Redis, so a limit holds across every replica of the proxy.

One atomic Lua script per take: it reads the clock with Redis `TIME` (every replica
shares that one clock, whatever their own clocks say), refills, takes, and writes the
bucket back, in one round trip. (A script may write after reading `TIME` because Redis
replicates its effects rather than the script: the default since Redis 5.) The
arithmetic is `ratelimit.bucket`'s, in integers (exact in Lua's doubles, see there). A
bucket is one hash per connection (`ratelimit.keys.redis_key`) with fields `l` (level,
in units), `t` (last update, µs) and `u` (the unit the level is counted in, so a changed
limit carries the level over); its TTL is the time until it is full again, when a
missing key means the same thing.

Redis is never something traffic waits on: an error or a timeout lets the request
through (fail open) with a verdict flagged `degraded`, and opens the circuit breaker so
later takes skip Redis (and fail open at once) until its cool-down ends. One warning is
logged per cool-down, not one per request. Every fail-open decision is counted in
`fail_open_total` (and by reason in `fail_open_counts`), and reported to `on_fail_open`
when given (the proxy passes its metrics hook).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal, Protocol

import redis.asyncio as redis
from redis.exceptions import MaxConnectionsError, RedisError

from ratelimit.bucket import MICROS, Limit, Verdict
from ratelimit.keys import BucketKey, redis_key

log = logging.getLogger("authgate.ratelimit")

# Takes in flight at once. The client's pool (shared with the other Redis users of the
# process) refuses calls past its size instead of queueing them; takes queue here instead,
# briefly (a take is one short script), rather than fail open under a burst of traffic,
# which is exactly when the limit matters.
DEFAULT_MAX_IN_FLIGHT = 32

FailOpenReason = Literal["redis_error", "redis_skipped"]
"""`redis_error`: the call failed or timed out; `redis_skipped`: the breaker was open."""

# Integer helpers first: `a / b` on doubles can round across an integer, so each
# quotient is corrected by one multiplication (exact while values stay below 2**53).
# Numbers written back are formatted with %.0f: Redis turns a bare Lua number into a
# string with 14 significant digits, which would truncate microsecond timestamps.
TAKE_SCRIPT = """
local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function ceil_div(a, b)
  return -floor_div(-a, b)
end

local unit = tonumber(ARGV[1])
local step = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3]) * unit
local need = tonumber(ARGV[4]) * unit
local max_wait = tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local level = capacity
local updated = now
local stored = redis.call('HMGET', KEYS[1], 'l', 't', 'u')
if stored[1] and stored[2] and stored[3] then
  level = tonumber(stored[1])
  updated = tonumber(stored[2])
  local stored_unit = tonumber(stored[3])
  if stored_unit ~= unit then
    level = math.floor(level * unit / stored_unit)
  end
  local elapsed = now - updated
  if elapsed > 0 then
    if elapsed * step >= capacity - level then
      level = capacity
    else
      level = level + elapsed * step
    end
    updated = now
  end
  if level > capacity then
    level = capacity
  end
end

local wait = 0
if level < need then
  wait = ceil_div(need - level, step)
end
local allowed = 0
if wait <= max_wait then
  allowed = 1
  level = level - need
end
local full_in = ceil_div(capacity - level, step)
if allowed == 1 then
  redis.call('HSET', KEYS[1], 'l', string.format('%.0f', level),
    't', string.format('%.0f', updated), 'u', string.format('%.0f', unit))
  redis.call('PEXPIRE', KEYS[1], ceil_div(full_in, 1000) + 1)
end
local remaining = 0
if level > 0 then
  remaining = floor_div(level, unit)
end
return {allowed, wait, remaining, full_in}
"""


class Breaker(Protocol):
    """What the buckets need of a circuit breaker (`credentials.redis_client`'s fits)."""

    @property
    def is_open(self) -> bool: ...

    @property
    def cooldown(self) -> float: ...

    def allow(self) -> bool: ...

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...


class RedisBuckets:
    backend = "redis"

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        breaker: Breaker,
        on_fail_open: Callable[[FailOpenReason], None] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prefix = prefix
        self._breaker = breaker
        self._on_fail_open = on_fail_open
        self._clock = clock
        self._script = client.register_script(TAKE_SCRIPT)
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._quiet_until = -math.inf
        self.fail_open_counts: Counter[FailOpenReason] = Counter()

    @property
    def fail_open_total(self) -> int:
        """Takes let through without a bucket because Redis failed or was skipped."""
        return self.fail_open_counts.total()

    def key(self, key: BucketKey) -> str:
        return redis_key(self._prefix, key)

    async def take(
        self, key: BucketKey, limit: Limit, *, cost: int = 1, max_wait: float = 0.0
    ) -> Verdict:
        if cost < 1 or cost > limit.burst:
            raise ValueError("cost must be between 1 and the burst")
        # Allowed while open means this take is the breaker's one probe.
        is_probe = self._breaker.is_open
        if not self._breaker.allow():
            return self._fail_open("redis_skipped")
        args = (limit.unit, limit.step, limit.burst, cost, math.floor(max_wait * MICROS))
        try:
            async with self._in_flight:
                # Redis may have failed while this take queued: then only the probe goes.
                if self._breaker.is_open and not is_probe:
                    return self._fail_open("redis_skipped")
                reply = await self._script(keys=[self.key(key)], args=args)
        except MaxConnectionsError as failure:
            # Our pool is full, Redis is fine: no reason to keep other takes away from it.
            self._warn(failure)
            return self._fail_open("redis_error")
        # RuntimeError: under uvloop, a command written to a connection the server has just
        # closed fails in the transport before redis-py can translate it.
        except (RedisError, OSError, RuntimeError) as failure:
            self._breaker.record_failure()
            self._warn(failure)
            return self._fail_open("redis_error")
        self._breaker.record_success()
        allowed, wait_us, remaining, full_in_us = (int(value) for value in reply)
        return Verdict(
            allowed=allowed == 1,
            wait_seconds=wait_us / MICROS,
            remaining=remaining,
            reset_seconds=full_in_us / MICROS,
        )

    def _fail_open(self, reason: FailOpenReason) -> Verdict:
        self.fail_open_counts[reason] += 1
        if self._on_fail_open is not None:
            self._on_fail_open(reason)
        return Verdict(
            allowed=True, wait_seconds=0.0, remaining=0, reset_seconds=0.0, degraded=True
        )

    def _warn(self, failure: BaseException) -> None:
        now = self._clock()
        # Calls already in flight when Redis went away fail together: one line for them.
        if now < self._quiet_until:
            return
        self._quiet_until = now + self._breaker.cooldown
        log.warning(
            "rate limiting unavailable (Redis failed); letting requests through",
            extra={"failure": type(failure).__name__},
        )
