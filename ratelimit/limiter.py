"""The rate limiter the proxy holds: the policy, and the buckets it draws from.

`RateLimiter.take` picks nothing itself; the caller asks `limit_for` first (a dict
lookup), so a connection without a limit costs no bucket and no Redis round trip.
`counts` tallies every verdict by kind and `fail_open_total` those let through without
a bucket, for whoever exports metrics.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, Protocol

from ratelimit.bucket import Limit, Verdict
from ratelimit.keys import BucketKey
from ratelimit.policy import RateLimitPolicy

VerdictKind = Literal["allowed", "waited", "rejected", "fail_open"]


class Buckets(Protocol):
    """Where bucket state lives: `LocalBuckets` (in process) or `RedisBuckets`."""

    @property
    def backend(self) -> str: ...

    @property
    def fail_open_total(self) -> int: ...

    async def take(
        self, key: BucketKey, limit: Limit, *, cost: int = 1, max_wait: float = 0.0
    ) -> Verdict: ...


class RateLimiter:
    def __init__(self, policy: RateLimitPolicy, buckets: Buckets) -> None:
        self.policy = policy
        self.buckets = buckets
        self.counts: Counter[VerdictKind] = Counter()

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    @property
    def backend(self) -> str:
        """`redis` or `local`."""
        return self.buckets.backend

    @property
    def fail_open_total(self) -> int:
        """Requests let through because the bucket store (Redis) failed or was skipped."""
        return self.buckets.fail_open_total

    def limit_for(self, environment: str, integration: str) -> Limit | None:
        return self.policy.limit_for(environment, integration)

    async def take(self, key: BucketKey, limit: Limit, *, max_wait: float = 0.0) -> Verdict:
        """One token from the connection's bucket; a wait of up to `max_wait` seconds
        may be reserved (see `ratelimit.bucket`)."""
        verdict = await self.buckets.take(key, limit, max_wait=max(max_wait, 0.0))
        self.counts[_kind(verdict)] += 1
        return verdict


def _kind(verdict: Verdict) -> VerdictKind:
    if verdict.degraded:
        return "fail_open"
    if not verdict.allowed:
        return "rejected"
    return "waited" if verdict.wait_seconds > 0 else "allowed"
