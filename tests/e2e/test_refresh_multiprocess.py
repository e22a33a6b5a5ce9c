"""Exactly-once token refresh across processes, with and without Redis.

Four `authgate proxy` processes share one PostgreSQL store and one private Redis. Twenty
connections hold an access token that has already expired, and the provider rotates
refresh tokens: each refresh token works once, a reuse is refused with `invalid_grant`
(with a real provider, that connection would now need its user to re-authorise). A
thousand concurrent proxied requests, spread over every process and every connection,
must each succeed, and the provider must see exactly one refresh per connection:

1. with Redis up;
2. with Redis stopped before the run (the processes started with it, then lost it);
3. with Redis stopped mid-run, as soon as the first refresh reaches the provider: no
   request fails and no rotated token is lost; extra refreshes are counted, not refused.

Afterwards every connection must still be refreshable: the provider revokes its access
token, one more proxied request gets a 401, forces one refresh and replays to a 200.

Each test prints its figures (run with `-s` or `-rP` to see them on success); a failing
test also prints the tail of every process's output.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from authgate.bootstrap import BOOTSTRAP_ENVIRONMENT, ensure_bootstrap_environment
from credentials.config import CoreSettings
from credentials.crypto import Keyring, encode_key, generate_key
from credentials.expiry import iso_expiry
from credentials.store import open_store
from credentials.tasks import spawn
from tests.e2e.processes import (
    ChildProcess,
    PrivateRedis,
    ProxyProcess,
    private_redis,
    proxy_processes,
    reports,
)
from tests.e2e.token_provider import TokenProvider, serve_token_provider
from tests.support import postgres_database

pytestmark = pytest.mark.postgres

PROCESSES = 4
CONNECTIONS = 20
REQUESTS = 1000
# The fake answers each refresh this late: a slow provider keeps refreshes in flight
# long enough for other processes to want the same token meanwhile.
TOKEN_DELAY = 0.2
REQUEST_TIMEOUT = 20.0
INTEGRATION = "fake"
PROVIDER = "fake-rotating-oauth"
CLIENT_ID = "authgate-test-client"
CLIENT_SECRET = "authgate-test-client-secret"
CHANGES_CHANNEL = "authgate:changes"
OK = "200 for the right connection"

PROVIDERS_YAML = f"""
{PROVIDER}:
    display_name: Fake OAuth with rotating refresh tokens
    categories: [dev-tools]
    docs: https://docs.example.com/fake-rotating-oauth
    auth_mode: OAUTH2
    authorization_url: http://127.0.0.1:${{connectionConfig.port}}/oauth/authorize
    token_url: http://127.0.0.1:${{connectionConfig.port}}/oauth/token
    proxy:
        base_url: http://127.0.0.1:${{connectionConfig.port}}
"""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """How the proxied requests ended: an outcome label per request, and how long."""

    outcomes: Counter[str]
    wall_seconds: float

    @property
    def failed(self) -> int:
        return sum(count for outcome, count in self.outcomes.items() if outcome != OK)


@dataclass(repr=False)
class Harness:
    provider: TokenProvider
    proxies: list[ProxyProcess]
    redis: PrivateRedis
    session: aiohttp.ClientSession
    secret_key: str
    connection_ids: list[str]

    def __repr__(self) -> str:
        ports = [proxy.url.port for proxy in self.proxies]
        return f"Harness(proxy ports={ports}, redis port={self.redis.port})"

    async def send_load(self) -> LoadReport:
        """REQUESTS concurrent requests. Request i is for connection i mod CONNECTIONS
        through process (i div CONNECTIONS) mod PROCESSES, so every connection is asked
        for through every process at the same time."""
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(
                self.proxied(
                    self.proxies[(index // CONNECTIONS) % PROCESSES],
                    self.connection_ids[index % CONNECTIONS],
                    f"/proxy/api/items/{index}",
                )
                for index in range(REQUESTS)
            )
        )
        return LoadReport(Counter(outcomes), time.monotonic() - started)

    async def proxied(self, proxy: ProxyProcess, connection_id: str, path: str) -> str:
        """One proxied GET; its outcome label (OK only for a 200 naming the connection)."""
        headers = {
            "Authorization": f"Bearer {self.secret_key}",
            "Connection-Id": connection_id,
            "Provider-Config-Key": INTEGRATION,
        }
        try:
            async with self.session.get(proxy.url.with_path(path), headers=headers) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as failure:
            return type(failure).__name__
        if response.status != 200:
            return f"status {response.status} {_error_code(body)}".rstrip()
        if _json(body).get("connection") != connection_id:
            return "200 for another connection"
        return OK

    async def refresh_each_again(self) -> Counter[tuple[str, int]]:
        """Revoke every connection's access token at the provider, then send one request
        per connection; (outcome, refreshes it caused) counted over connections."""
        before = self.provider.successful_refreshes()
        for connection_id in self.connection_ids:
            self.provider.revoke_access(connection_id)
        outcomes = await asyncio.gather(
            *(
                self.proxied(self.proxies[index % PROCESSES], connection_id, "/proxy/api/again")
                for index, connection_id in enumerate(self.connection_ids)
            )
        )
        after = self.provider.successful_refreshes()
        return Counter(
            (outcome, after[connection_id] - before[connection_id])
            for outcome, connection_id in zip(outcomes, self.connection_ids, strict=True)
        )

    def refresh_figures(self) -> dict[str, Any]:
        calls = self.provider.successful_refreshes()
        return {
            "connections by successful token calls": dict(Counter(calls.values())),
            "rejected refresh-token reuses": self.provider.rejected_reuses(),
            "unknown refresh tokens": self.provider.unknown_refresh_tokens,
            "rejected client authentications": self.provider.rejected_clients,
            "unsupported grants": self.provider.unsupported_grants,
        }

    def extra_token_calls(self) -> int:
        """Token calls beyond one successful refresh per connection."""
        successful = sum(self.provider.successful_refreshes().values())
        return successful - CONNECTIONS + self.provider.rejected_reuses()


def _json(body: bytes) -> dict[str, Any]:
    with suppress(ValueError):
        parsed = orjson.loads(body)
        if isinstance(parsed, dict):
            return parsed
    return {}


def _error_code(body: bytes) -> str:
    error = _json(body).get("error")
    if isinstance(error, dict):
        return str(error.get("code", ""))
    return str(error or "")


def _successful_request_line(line: str) -> bool:
    # One access-log line per proxied request: only the unsuccessful ones help debugging.
    return '"logger":"authgate.access"' in line and '"status":200,' in line


def _print_figures(case: str, report: LoadReport, harness: Harness) -> None:
    calls = harness.provider.successful_refreshes()
    print(f"\n=== {case} ===")
    print(f"{REQUESTS} requests, {PROCESSES} processes, {CONNECTIONS} connections")
    print(f"wall time: {report.wall_seconds:.2f} s")
    print(f"outcomes: {dict(report.outcomes)}")
    print(f"failed requests: {report.failed}")
    print("token calls per connection: " + " ".join(f"{c}={n}" for c, n in calls.items()))
    for name, value in harness.refresh_figures().items():
        print(f"{name}: {value}")
    print(f"extra token calls: {harness.extra_token_calls()}")
    api = harness.provider.api
    print(f"API calls served / refused: {api.served} / {api.unauthorized}")


def _print_refresh_again(again: Counter[tuple[str, int]]) -> None:
    print(f"refresh again, (outcome, token calls) by connections: {dict(again)}")


EXACTLY_ONCE = {
    "connections by successful token calls": {1: CONNECTIONS},
    "rejected refresh-token reuses": 0,
    "unknown refresh tokens": 0,
    "rejected client authentications": 0,
    "unsupported grants": 0,
}
REFRESHABLE = Counter({(OK, 1): CONNECTIONS})


# --- the store and the processes ----------------------------------------------------


async def _seed_store(
    settings: CoreSettings, provider: TokenProvider, provider_port: int
) -> list[str]:
    """What `authgate` would hold after bootstrap and 20 imported connections: the `dev`
    environment with the secret key, the integration, and connections whose access token
    has expired. Seeded before any process starts, so none of them races on bootstrap."""
    store = await open_store(settings.database_url, Keyring(settings.encryption_keys))
    try:
        await ensure_bootstrap_environment(store, settings, lambda _: None)
        environment = await store.get_environment(BOOTSTRAP_ENVIRONMENT)
        assert environment is not None
        integration = await store.create_integration(
            environment.id,
            unique_key=INTEGRATION,
            provider=PROVIDER,
            credentials={"type": "OAUTH2", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        )
        connection_ids = [f"user-{number:02d}" for number in range(CONNECTIONS)]
        for connection_id in connection_ids:
            seeded = provider.seed(connection_id)
            await store.upsert_connection(
                environment.id,
                integration,
                connection_id=connection_id,
                credentials={
                    "type": "OAUTH2",
                    "access_token": seeded.access_token,
                    "refresh_token": seeded.refresh_token,
                    "expires_at": iso_expiry(seeded.expired_at),
                },
                connection_config={"port": str(provider_port)},
            )
        return connection_ids
    finally:
        await store.close()


def _process_environment(
    settings: CoreSettings, redis_url: str, providers_file: Path
) -> dict[str, str]:
    assert settings.secret_key is not None
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url,
        "AUTHGATE_ENCRYPTION_KEY": encode_key(settings.encryption_keys[0]),
        "AUTHGATE_SECRET_KEY": settings.secret_key,
        "AUTHGATE_PROVIDERS_FILE": str(providers_file),
        "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS": "true",
        "AUTHGATE_DATA_DIR": str(settings.data_dir),
        # Below the client's timeout, so a stuck upstream call is reported by the proxy.
        "AUTHGATE_UPSTREAM_TOTAL_TIMEOUT": str(REQUEST_TIMEOUT / 2),
    }


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    logs = tmp_path / "logs"
    children: list[ChildProcess] = []
    async with AsyncExitStack() as stack:
        database_url = await stack.enter_async_context(postgres_database(tmp_path))
        provider = TokenProvider(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_delay=TOKEN_DELAY
        )
        provider_port = await stack.enter_async_context(serve_token_provider(provider))
        secret_key = str(uuid.uuid4())
        settings = CoreSettings(
            database_url=database_url,
            encryption_keys=(generate_key(),),
            secret_key=secret_key,
            data_dir=tmp_path / "data",
        )
        connection_ids = await _seed_store(settings, provider, provider_port)
        providers_file = tmp_path / "providers.yaml"
        providers_file.write_text(PROVIDERS_YAML)
        redis = await stack.enter_async_context(private_redis(logs))
        children.append(redis.child)
        # Runs after the processes have stopped (the stack unwinds in reverse), so the
        # logs are complete; pytest shows this output only when the test fails.
        stack.callback(lambda: print("\n" + reports(children, hide=_successful_request_line)))
        environ = _process_environment(settings, redis.url, providers_file)
        proxies = await stack.enter_async_context(proxy_processes(PROCESSES, environ, logs))
        children.extend(proxy.child for proxy in proxies)
        # Every process listens for changes before the run, so "Redis up" means up for all.
        await redis.wait_for_subscribers(CHANGES_CHANNEL, PROCESSES)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=REQUESTS + PROCESSES * CONNECTIONS),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            )
        )
        yield Harness(provider, proxies, redis, session, secret_key, connection_ids)


# --- the three cases -----------------------------------------------------------------


async def test_redis_up_refreshes_each_connection_exactly_once(harness: Harness) -> None:
    report = await harness.send_load()
    _print_figures("Redis up", report, harness)
    figures = harness.refresh_figures()
    again = await harness.refresh_each_again()
    _print_refresh_again(again)

    assert report.outcomes == {OK: REQUESTS}
    assert figures == EXACTLY_ONCE
    assert again == REFRESHABLE


async def test_redis_stopped_before_the_run_still_refreshes_exactly_once(
    harness: Harness,
) -> None:
    await harness.redis.stop()
    assert not harness.redis.running

    report = await harness.send_load()
    _print_figures("Redis stopped before the run", report, harness)
    figures = harness.refresh_figures()
    again = await harness.refresh_each_again()
    _print_refresh_again(again)

    assert report.outcomes == {OK: REQUESTS}
    assert figures == EXACTLY_ONCE
    assert again == REFRESHABLE


async def test_redis_stopped_mid_run_fails_no_request_and_loses_no_token(
    harness: Harness,
) -> None:
    load = spawn(harness.send_load(), name="refresh load")
    first_refresh = spawn(harness.provider.first_token_call.wait(), name="first token call")
    await asyncio.wait({load, first_refresh}, return_when=asyncio.FIRST_COMPLETED)
    stopped_in_flight = first_refresh.done() and not load.done()
    first_refresh.cancel()
    with suppress(asyncio.CancelledError):
        await first_refresh
    await harness.redis.stop()
    report = await load
    _print_figures("Redis stopped mid-run", report, harness)
    print(f"Redis stopped while requests were in flight: {stopped_in_flight}")
    figures = harness.refresh_figures()
    again = await harness.refresh_each_again()
    _print_refresh_again(again)

    assert report.outcomes == {OK: REQUESTS}
    assert stopped_in_flight, "no refresh reached the provider while requests were in flight"
    assert figures["unknown refresh tokens"] == 0
    assert figures["rejected client authentications"] == 0
    assert figures["unsupported grants"] == 0
    assert again == REFRESHABLE
