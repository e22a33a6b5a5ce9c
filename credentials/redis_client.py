"""A Redis client that fails fast, and a circuit breaker that stops asking a dead one.

Redis is an accelerator for authgate, never a dependency a request may hang on. Every
call therefore has a short connect and read timeout and no client-side retries: a
failure surfaces at once and the caller takes its fallback. The breaker then keeps
callers away from Redis for a cool-down that doubles while it stays dead, so an outage
costs one timeout per cool-down rather than one per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

REDIS_FAILURES: Final = (RedisError, OSError, RuntimeError)
"""What a failed Redis call raises. RuntimeError too: under uvloop, a command written to
a connection the server has just closed fails in the transport ("unable to perform
operation on <TCPTransport closed=True>") before redis-py can translate it."""

DEFAULT_TIMEOUT = 0.5
# Pooled connections idle longer than this are PINGed before reuse, so a connection the
# server dropped (restart, idle timeout) is noticed before a real command is lost on it.
DEFAULT_HEALTH_CHECK_INTERVAL = 15

FIRST_COOLDOWN = 1.0
MAX_COOLDOWN = 5.0


def open_redis(
    url: str,
    *,
    connect_timeout: float = DEFAULT_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    health_check_interval: int = DEFAULT_HEALTH_CHECK_INTERVAL,
) -> redis.Redis:
    """A client for `url` whose every call gives up after `timeout` seconds.

    Connections are made lazily, so this never touches the network.
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=health_check_interval,
        # Zero retries: the breaker above decides when to try again, not the client.
        retry=Retry(NoBackoff(), 0),
    )


class CircuitBreaker:
    """Closed: calls go through. Open: calls are skipped until the cool-down ends.

    When the cool-down ends, exactly one caller is let through as a probe (others keep
    being skipped for another cool-down, so concurrent requests do not all pay the
    timeout). A failed probe doubles the cool-down up to `max_cooldown`; any success
    closes the breaker and resets the cool-down. Pure logic with an injectable clock.
    """

    def __init__(
        self,
        *,
        first_cooldown: float = FIRST_COOLDOWN,
        max_cooldown: float = MAX_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if first_cooldown <= 0 or max_cooldown < first_cooldown:
            raise ValueError("need 0 < first_cooldown <= max_cooldown")
        self._first_cooldown = first_cooldown
        self._max_cooldown = max_cooldown
        self._clock = clock
        self._cooldown = first_cooldown
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        """True from a failure until the next success (probe windows included)."""
        return self._open_until is not None

    @property
    def cooldown(self) -> float:
        """The current cool-down in seconds (doubles with each failed probe)."""
        return self._cooldown

    def allow(self) -> bool:
        """Whether the caller may try the backend now (and must report the outcome)."""
        if self._open_until is None:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        # Reserve the probe: until it reports (or another cool-down passes, should its
        # caller be cancelled and never report), everyone else is skipped.
        self._open_until = now + self._cooldown
        self._probing = True
        return True

    def record_success(self) -> None:
        self._open_until = None
        self._probing = False
        self._cooldown = self._first_cooldown

    def record_failure(self) -> None:
        now = self._clock()
        if self._open_until is None:
            self._cooldown = self._first_cooldown
            self._open_until = now + self._cooldown
        elif self._probing:
            self._cooldown = min(self._cooldown * 2, self._max_cooldown)
            self._open_until = now + self._cooldown
            self._probing = False
        # Otherwise a call that started before the breaker opened failed late: the same
        # outage, already accounted for.
