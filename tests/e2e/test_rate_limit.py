"""authgate's own per-connection rate limit, end to end on real sockets.

The 429 it answers (flagged as authgate's, with `Retry-After` and `RateLimit-*`), the
wait mode, per-integration overrides, the limit holding across two processes that share
Redis (checked against the bucket's arithmetic, not against latencies), and traffic
flowing on when Redis is stopped.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis.asyncio as redis
from aiohttp import web

from credentials.redis_client import open_redis
from tests.credentials.private_redis import PrivateRedis
from tests.e2e.conftest import Authgate, Factory

REDIS_URL = "redis://127.0.0.1:6379/0"
API_KEY = {"type": "API_KEY", "apiKey": "ak-ratelimit-0c5e"}


async def _ready(authgate: Authgate, *connections: str, key: str = "api") -> None:
    await authgate.integration(key, "fake-api-key")
    for connection_id in connections:
        await authgate.connection(key, connection_id, API_KEY, connection_config={"tenant": "t1"})


async def _call(
    authgate: Authgate, connection_id: str = "conn-1", key: str = "api"
) -> tuple[int, dict[str, str], bytes]:
    response = await authgate.proxy(
        "GET", "/proxy/items", connection_id=connection_id, provider_config_key=key
    )
    body = await response.read()
    return response.status, dict(response.headers), body


@pytest.fixture
def prefix() -> str:
    return f"authgate-test-{uuid.uuid4().hex}"


@pytest.fixture
async def shared_redis(prefix: str) -> AsyncIterator[redis.Redis]:
    client = open_redis(REDIS_URL)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --- the 429 -----------------------------------------------------------------------------


async def test_an_empty_bucket_answers_authgates_own_429(make_authgate: Factory) -> None:
    authgate = await make_authgate(AUTHGATE_RATE_LIMIT="1/h", AUTHGATE_RATE_LIMIT_BURST="2")
    await _ready(authgate, "conn-1")
    assert [(await _call(authgate))[0] for _ in range(2)] == [200, 200]

    status, headers, body = await _call(authgate)
    assert status == 429
    assert headers["X-Authgate-Error"] == "rate_limited"
    assert headers["X-Authgate-Request-Id"]
    # One token an hour: the next one is an hour away, a full bucket two.
    assert 3590 <= int(headers["Retry-After"]) <= 3600
    assert headers["RateLimit-Limit"] == "2"
    assert headers["RateLimit-Remaining"] == "0"
    assert 7190 <= int(headers["RateLimit-Reset"]) <= 7200
    error = orjson.loads(body)["error"]
    assert error["code"] == "rate_limited"
    assert "authgate" in error["message"]
    assert len(authgate.provider.received) == 2, "a limited call never reaches the provider"
    assert authgate.plane.rate_limiter.counts == {"allowed": 2, "rejected": 1}


async def test_every_connection_has_its_own_bucket(make_authgate: Factory) -> None:
    authgate = await make_authgate(AUTHGATE_RATE_LIMIT="1/h", AUTHGATE_RATE_LIMIT_BURST="1")
    await _ready(authgate, "conn-1", "conn-2")
    assert (await _call(authgate, "conn-1"))[0] == 200
    assert (await _call(authgate, "conn-1"))[0] == 429
    assert (await _call(authgate, "conn-2"))[0] == 200
    # An unknown connection is a 404 and takes no token from anyone.
    response = await authgate.proxy("GET", "/proxy/items", connection_id="nobody")
    assert response.status == 404


async def test_without_configuration_nothing_is_limited(make_authgate: Factory) -> None:
    authgate = await make_authgate()
    await _ready(authgate, "conn-1")
    statuses = [(await _call(authgate))[0] for _ in range(30)]
    assert statuses == [200] * 30
    assert not authgate.plane.rate_limiter.enabled
    assert authgate.plane.rate_limiter.counts.total() == 0


async def test_overrides_per_integration_and_per_environment(
    make_authgate: Factory, tmp_path: Path
) -> None:
    limits = tmp_path / "limits.yaml"
    limits.write_text("open: off\nstrict: {rate: 1/h, burst: 1}\nother-env/api: off\n")
    authgate = await make_authgate(
        AUTHGATE_RATE_LIMIT="1/h",
        AUTHGATE_RATE_LIMIT_BURST="2",
        AUTHGATE_RATE_LIMITS_FILE=str(limits),
    )
    for key in ("open", "strict", "api"):
        await _ready(authgate, "conn-1", key=key)
    assert [(await _call(authgate, key="open"))[0] for _ in range(5)] == [200] * 5
    assert [(await _call(authgate, key="strict"))[0] for _ in range(2)] == [200, 429]
    assert [(await _call(authgate, key="api"))[0] for _ in range(3)] == [200, 200, 429]


# --- wait mode ---------------------------------------------------------------------------


async def test_wait_mode_waits_for_the_next_token_then_forwards(make_authgate: Factory) -> None:
    authgate = await make_authgate(
        AUTHGATE_RATE_LIMIT="5/s",
        AUTHGATE_RATE_LIMIT_BURST="1",
        AUTHGATE_RATE_LIMIT_MODE="wait",
        AUTHGATE_RATE_LIMIT_MAX_WAIT="2",
    )
    await _ready(authgate, "conn-1")
    arrivals = record_arrivals(authgate)
    started = time.monotonic()
    results = await asyncio.gather(*(_call(authgate) for _ in range(4)))
    assert [status for status, _, _ in results] == [200] * 4
    assert authgate.plane.rate_limiter.counts == {"allowed": 1, "waited": 3}
    # At most one token (the burst) was there at the start and the next come every
    # 200 ms, so the last call cannot reach the provider before 600 ms have passed (the
    # waits are reservations: never early, however they interleave). Measured from the
    # start, not from the first arrival, which a busy machine may delay.
    assert max(arrivals) - started >= 0.6 - CLOCK_SLACK


# asyncio may wake a sleeper up to one clock tick early.
CLOCK_SLACK = 0.005


def record_arrivals(authgate: Authgate) -> list[float]:
    """When each call reached the provider (monotonic seconds)."""
    arrivals: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        arrivals.append(time.monotonic())
        return web.json_response({})

    authgate.provider.respond("/api/items", handler)
    return arrivals


async def test_wait_mode_answers_429_when_the_wait_is_too_long(make_authgate: Factory) -> None:
    authgate = await make_authgate(
        AUTHGATE_RATE_LIMIT="1/h",
        AUTHGATE_RATE_LIMIT_BURST="1",
        AUTHGATE_RATE_LIMIT_MODE="wait",
        AUTHGATE_RATE_LIMIT_MAX_WAIT="5",
    )
    await _ready(authgate, "conn-1")
    assert (await _call(authgate))[0] == 200
    status, headers, _ = await _call(authgate)
    assert (status, headers["X-Authgate-Error"]) == (429, "rate_limited")


async def test_a_wait_never_passes_the_request_deadline(make_authgate: Factory) -> None:
    # One token a second and a 0.5 s deadline: the wait a second call needs (about a
    # second) fits the configured maximum but not the deadline.
    authgate = await make_authgate(
        AUTHGATE_RATE_LIMIT="1/s",
        AUTHGATE_RATE_LIMIT_BURST="1",
        AUTHGATE_RATE_LIMIT_MODE="wait",
        AUTHGATE_RATE_LIMIT_MAX_WAIT="10",
        AUTHGATE_UPSTREAM_TOTAL_TIMEOUT="0.5",
        AUTHGATE_RETRY_MAX_DELAY="0.1",
    )
    await _ready(authgate, "conn-1")
    assert (await _call(authgate))[0] == 200
    status, headers, _ = await _call(authgate)
    assert (status, headers["X-Authgate-Error"]) == (429, "rate_limited")
    assert headers["Retry-After"] == "1"


async def test_time_spent_waiting_for_a_token_is_taken_from_the_deadline(
    make_authgate: Factory,
) -> None:
    # Two tokens a second and a 1 s deadline: the second call waits about 0.5 s for its
    # token, so when the provider then asks for 0.7 s there is not enough left to wait
    # (there would be, had the forward stage started a fresh second).
    authgate = await make_authgate(
        AUTHGATE_RATE_LIMIT="2/s",
        AUTHGATE_RATE_LIMIT_BURST="1",
        AUTHGATE_RATE_LIMIT_MODE="wait",
        AUTHGATE_RATE_LIMIT_MAX_WAIT="1",
        AUTHGATE_UPSTREAM_TOTAL_TIMEOUT="1",
        AUTHGATE_RETRY_MAX_DELAY="1",
    )
    await _ready(authgate, "conn-1")
    calls = 0

    async def limited_after_the_first(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.json_response({})
        return web.json_response({}, status=429, headers={"Retry-After": "0.7"})

    authgate.provider.respond("/api/items", limited_after_the_first)
    assert (await _call(authgate))[0] == 200
    response = await authgate.proxy(
        "GET", "/proxy/items", provider_config_key="api", headers={"Retries": "1"}
    )
    await response.read()
    assert (response.status, response.headers["Retry-After"]) == (429, "1")
    assert "X-Authgate-Error" not in response.headers
    assert calls == 2
    assert authgate.plane.rate_limiter.counts["waited"] == 1


# --- two processes, one limit ------------------------------------------------------------


@dataclass
class Call:
    sent: float
    answered: float
    status: int


async def _hammer(authgate: Authgate, until: float, calls: list[Call]) -> None:
    while time.time() < until:
        sent = time.time()
        status, _, _ = await _call(authgate)
        calls.append(Call(sent, time.time(), status))


async def test_two_processes_sharing_redis_share_one_limit(
    make_authgate: Factory, prefix: str, shared_redis: redis.Redis
) -> None:
    rate, burst, duration = 20, 5, 2.0
    first = await make_authgate(
        REDIS_URL=REDIS_URL,
        AUTHGATE_REDIS_PREFIX=prefix,
        AUTHGATE_RATE_LIMIT=f"{rate}/s",
        AUTHGATE_RATE_LIMIT_BURST=str(burst),
    )
    second = await make_authgate(share=first)
    await _ready(first, "conn-1")
    calls: list[Call] = []
    until = time.time() + duration
    await asyncio.gather(*(_hammer(p, until, calls) for p in (first, second, first, second)))

    allowed = [call for call in calls if call.status == 200]
    refused = [call for call in calls if call.status == 429]
    assert len(allowed) + len(refused) == len(calls), {call.status for call in calls}
    assert refused, "the callers outran the limit, so some calls must have been refused"
    # Redis's clock and ours are the same host clock. The bucket was created full by the
    # first take, no earlier than the first call was sent, and every allowed take came
    # before its answer: at most burst + rate * that span can have been allowed.
    start = min(call.sent for call in calls)
    last_allowed = max(call.answered for call in allowed)
    ceiling = burst + rate * (last_allowed - start)
    # A refusal means the bucket was empty then: everything it had gained was taken,
    # except what it could not hold while full. Half the refill is kept as the floor, so
    # an event-loop stall (this one process runs both servers and all the callers) that
    # leaves the bucket full for a while cannot fail the test.
    first_answer = min(call.answered for call in calls)
    last_refusal = max(call.sent for call in refused)
    floor = burst + rate * (last_refusal - first_answer) / 2 - 1
    assert floor <= len(allowed) <= ceiling, (floor, len(allowed), ceiling, len(calls))
    # Each process alone would have allowed about this many again.
    assert first.plane.rate_limiter.counts["allowed"] > 0
    assert second.plane.rate_limiter.counts["allowed"] > 0
    assert first.plane.rate_limiter.backend == "redis"
    assert len(await shared_redis.keys(f"{prefix}:rl:*")) == 1


# --- Redis goes away ---------------------------------------------------------------------


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = PrivateRedis(workdir)
    await server.start()
    yield server
    await server.stop()


async def test_with_redis_stopped_requests_pass_and_are_counted(
    make_authgate: Factory, private_redis: PrivateRedis
) -> None:
    authgate = await make_authgate(
        REDIS_URL=private_redis.url, AUTHGATE_RATE_LIMIT="1/h", AUTHGATE_RATE_LIMIT_BURST="1"
    )
    await _ready(authgate, "conn-1")
    limiter = authgate.plane.rate_limiter
    assert (await _call(authgate))[0] == 200
    assert (await _call(authgate))[0] == 429
    assert limiter.fail_open_total == 0

    await private_redis.stop()
    statuses = [(await _call(authgate))[0] for _ in range(5)]
    assert statuses == [200] * 5
    assert limiter.fail_open_total == 5
    assert limiter.counts["fail_open"] == 5
