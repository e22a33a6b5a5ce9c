"""Stage: one token from the connection's bucket, or a wait, or authgate's own 429.

Runs after resolve (an unknown connection never takes a token) and before the
credentials are renewed or injected. A connection whose integration has no limit moves
on after a dict lookup; a limited one costs one Redis round trip with Redis, none
without. With `AUTHGATE_RATE_LIMIT_MODE=wait` a request that finds the bucket empty
reserves the next token and waits for it, if that wait fits both
`AUTHGATE_RATE_LIMIT_MAX_WAIT` and what is left of the request deadline
(`AUTHGATE_UPSTREAM_TOTAL_TIMEOUT`, counted from the request's arrival); the forward
stage then has that much less time. Otherwise the answer is a 429 flagged as authgate's
(`X-Authgate-Error: rate_limited`) with `Retry-After` and the IETF draft headers
`RateLimit-Limit` (the burst), `RateLimit-Remaining` and `RateLimit-Reset` (seconds
until the bucket is full again).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as redis

from credentials.redis_client import CircuitBreaker
from proxy import metrics
from proxy.context import ProxyContext
from proxy.errors import ProxyError
from proxy.pipeline_types import Stage
from proxy.settings import ProxySettings
from ratelimit.bucket import Limit, Verdict
from ratelimit.keys import BucketKey
from ratelimit.limiter import RateLimiter
from ratelimit.local import LocalBuckets
from ratelimit.policy import RateLimitPolicy
from ratelimit.redis_bucket import RedisBuckets

RATE_LIMITED = "rate_limited"


class RateLimited(ProxyError):
    """authgate's own limit for this connection is used up (not the provider's)."""

    status = 429
    code = RATE_LIMITED

    def __init__(self, limit: Limit, verdict: Verdict) -> None:
        self.retry_after = max(1, math.ceil(verdict.wait_seconds))
        super().__init__(
            f"authgate rate limit reached for this connection ({_describe(limit)}); "
            f"retry after {self.retry_after} s"
        )
        self.headers = {
            "RateLimit-Limit": str(limit.burst),
            "RateLimit-Remaining": str(verdict.remaining),
            "RateLimit-Reset": str(math.ceil(verdict.reset_seconds)),
        }


def rate_limiter(
    policy: RateLimitPolicy, client: redis.Redis | None, *, prefix: str
) -> RateLimiter:
    """Buckets in Redis when the process has a client, else in process."""
    if client is None:
        return RateLimiter(policy, LocalBuckets())
    buckets = RedisBuckets(
        client,
        prefix=prefix,
        breaker=CircuitBreaker(),
        on_fail_open=metrics.rate_limit_failed_open,
    )
    return RateLimiter(policy, buckets)


def rate_limit(limiter: RateLimiter, settings: ProxySettings) -> Stage:
    policy = limiter.policy

    async def take(ctx: ProxyContext, limit: Limit) -> None:
        params = ctx.control
        key = BucketKey(ctx.env.id, params.provider_config_key, params.connection_id)
        budget = min(policy.wait_budget(), _time_left(ctx, settings))
        verdict = await limiter.take(key, limit, max_wait=budget)
        if not verdict.allowed:
            ctx.outcome.rate_limit = "rejected"
            raise RateLimited(limit, verdict)
        if verdict.wait_seconds > 0:
            ctx.outcome.rate_limit = "waited"
            ctx.rate_limit_wait = verdict.wait_seconds
            # The token is reserved; this wait is the limit doing its job.
            await asyncio.sleep(verdict.wait_seconds)

    def stage(ctx: ProxyContext) -> Coroutine[Any, Any, None] | None:
        limit = policy.limit_for(ctx.env.name, ctx.control.provider_config_key)
        return None if limit is None else take(ctx, limit)

    return stage


def _time_left(ctx: ProxyContext, settings: ProxySettings) -> float:
    return max(settings.total_timeout - (time.perf_counter() - ctx.started), 0.0)


def _describe(limit: Limit) -> str:
    seconds = limit.period_us / 1_000_000
    period = "second" if seconds == 1 else f"{seconds:g} seconds"
    return f"{limit.count} per {period}, burst {limit.burst}"
