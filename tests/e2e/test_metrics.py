"""`/metrics` after a scripted sequence of proxied calls, as a scraper reads it.

Metrics are process-wide (every app a test process builds shares one registry), so each
test scrapes before and after and asserts the difference.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from authgate.serving import start_management, start_proxy
from credentials.expiry import iso_expiry
from credentials.tasks import spawn
from management.settings import ManagementSettings
from proxy.settings import ProxySettings
from tests.e2e.conftest import Authgate, Factory, settings_env
from tests.e2e.test_proxy_refresh import PROVIDERS as ROTATING_PROVIDER
from tests.e2e.token_provider import TokenProvider, serve_token_provider

PROVIDERS = (
    """
fake-static:
    display_name: Fake static key
    docs: https://docs.example.com/fake-static
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
        headers:
            x-api-key: ${apiKey}
"""
    + ROTATING_PROVIDER
)
CLIENT = {"type": "OAUTH2", "client_id": "metrics-client", "client_secret": "metrics-csecret"}
API_KEY = "metrics-api-key-value"
STATIC = "metrics-static"
ROTATING = "metrics-rot"
POLL_SECONDS = 0.02
POLL_ATTEMPTS = 500

SampleKey = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[SampleKey, float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def key(name: str, **labels: str) -> SampleKey:
    return (name, frozenset(labels.items()))


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    wanted = key(name, **labels)
    return after.get(wanted, 0.0) - before.get(wanted, 0.0)


async def scrape_text(session: aiohttp.ClientSession, base: URL) -> str:
    response = await session.get(base.with_path("/metrics"))  # no Authorization header
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    return await response.text()


async def scrape(gate: Authgate) -> Samples:
    return parse(await scrape_text(gate.session, gate.url))


@pytest.fixture
async def tokens() -> AsyncIterator[tuple[TokenProvider, int]]:
    provider = TokenProvider(client_id=CLIENT["client_id"], client_secret=CLIENT["client_secret"])
    async with serve_token_provider(provider) as port:
        yield provider, port


@pytest.fixture
async def gate(make_authgate: Factory, tmp_path: Path) -> Authgate:
    providers = tmp_path / "metrics-providers.yaml"
    providers.write_text(PROVIDERS)
    authgate = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
    await authgate.integration(STATIC, "fake-static")
    await authgate.integration(ROTATING, "fake-rotating", credentials=CLIENT)
    return authgate


async def test_a_scripted_sequence_shows_up_exactly(
    gate: Authgate, tokens: tuple[TokenProvider, int]
) -> None:
    token_provider, token_port = tokens
    tag = uuid.uuid4().hex[:10]
    static_id, rotating_id, unknown_id = f"mc-{tag}", f"mr-{tag}", f"mu-{tag}"
    ok_path, flaky_path, api_path = f"/ok-{tag}", f"/flaky-{tag}", f"/api/me-{tag}"
    await gate.connection(STATIC, static_id, {"type": "API_KEY", "apiKey": API_KEY})
    seeded = token_provider.seed(rotating_id)
    await gate.connection(
        ROTATING,
        rotating_id,
        {
            "type": "OAUTH2",
            "access_token": seeded.access_token,
            "refresh_token": seeded.refresh_token,
            "expires_at": iso_expiry(time.time() - 60),
        },
        connection_config={"port": str(token_port), "token_port": str(token_port)},
    )
    answers = iter([500, 200])

    async def flaky(request: web.Request) -> web.StreamResponse:
        return web.Response(status=next(answers), body=b"flaky")

    gate.provider.respond(flaky_path, flaky)
    before = await scrape(gate)

    static_bytes = 0
    for _ in range(3):
        ok = await gate.proxy(
            "GET", f"/proxy{ok_path}", connection_id=static_id, provider_config_key=STATIC
        )
        assert ok.status == 200, await ok.text()
        static_bytes += len(await ok.read())
    retried = await gate.proxy(
        "GET",
        f"/proxy{flaky_path}",
        connection_id=static_id,
        headers={"Retries": "1"},
        provider_config_key=STATIC,
    )
    assert retried.status == 200
    static_bytes += len(await retried.read())  # the 500 before it was never streamed back
    unknown = await gate.proxy(
        "GET", f"/proxy{ok_path}", connection_id=unknown_id, provider_config_key=STATIC
    )
    assert unknown.status == 404
    assert unknown.headers["X-Authgate-Error"] == "unknown_connection"
    await unknown.read()
    renewed = await gate.proxy(
        "GET", f"/proxy{api_path}", connection_id=rotating_id, provider_config_key=ROTATING
    )
    assert renewed.status == 200, await renewed.text()
    await renewed.read()
    assert token_provider.successful_refreshes() == {rotating_id: 1}

    text = await scrape_text(gate.session, gate.url)
    after = parse(text)

    def change(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    requests = "authgate_proxy_requests_total"
    ok_labels = {"environment": "dev", "method": "GET", "status_class": "2xx", "error": ""}
    assert change(requests, integration=STATIC, **ok_labels) == 4
    assert change(requests, integration=ROTATING, **ok_labels) == 1
    not_found = {"status_class": "4xx", "error": "unknown_connection"}
    assert change(requests, environment="dev", integration="", method="GET", **not_found) == 1
    assert _total_change(before, after, requests) == 6

    retries = "authgate_proxy_retries_total"
    assert change(retries, integration=STATIC, reason="status_500") == 1
    assert _total_change(before, after, retries) == 1

    assert change("authgate_token_refresh_attempts_total", credential_type="OAUTH2") == 1
    refreshed = {"credential_type": "OAUTH2", "outcome": "refreshed", "reason": ""}
    assert change("authgate_token_refreshes_total", **refreshed) == 1
    assert _total_change(before, after, "authgate_token_refreshes_total") == 1

    upstream = "authgate_proxy_upstream_seconds_count"
    assert change(upstream, integration=STATIC) == 4
    assert change(upstream, integration=ROTATING) == 1
    overhead = "authgate_proxy_overhead_seconds_count"
    assert change(overhead, integration=STATIC, waited="false") == 3
    assert change(overhead, integration=STATIC, waited="true") == 1  # the retry's backoff
    assert change(overhead, integration=ROTATING, waited="true") == 1  # the renewal
    assert change(overhead, integration="", waited="false") == 1
    assert change("authgate_proxy_upstream_seconds_sum", integration=STATIC) > 0

    # Each connection's first request misses the in-process cache, and without Redis
    # reads the store; the unknown connection is never cached.
    lookups = "authgate_credential_cache_lookups_total"
    assert change(lookups, layer="process", result="miss") == 3
    assert change(lookups, layer="process", result="hit") == 3
    assert change("authgate_credential_store_reads_total") == 3

    assert change("authgate_proxy_requests_in_flight") == 0
    assert after[key("authgate_proxy_response_bytes_in_flight")] == 0
    assert change("authgate_proxy_response_bytes_total", integration=STATIC) == static_bytes
    assert after[key("authgate_upstream_pool_connections", state="in_use")] == 0
    assert after[key("authgate_upstream_pool_connections", state="idle")] >= 1

    used = {static_id, rotating_id, unknown_id, ok_path, flaky_path, api_path}
    used |= {path.lstrip("/") for path in used}
    offenders = [
        (name, labels)
        for name, labels in after
        for _, value in labels
        if any(identifier in value for identifier in used)
    ]
    assert offenders == []
    secrets = {gate.secret_key, API_KEY, CLIENT["client_secret"], seeded.access_token}
    secrets |= {seeded.refresh_token}
    assert [secret for secret in secrets if secret in text] == []


def _total_change(before: Samples, after: Samples, name: str) -> float:
    def total(samples: Samples) -> float:
        return sum(value for (sample, _), value in samples.items() if sample == name)

    return total(after) - total(before)


async def test_in_flight_requests_and_connections_while_a_provider_holds_the_answer(
    gate: Authgate,
) -> None:
    tag = uuid.uuid4().hex[:10]
    await gate.connection(STATIC, f"mh-{tag}", {"type": "API_KEY", "apiKey": API_KEY})
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.Response(body=b"released")

    gate.provider.respond("/held", held)
    before = await scrape(gate)
    call = spawn(
        gate.proxy("GET", "/proxy/held", connection_id=f"mh-{tag}", provider_config_key=STATIC),
        name="held-call",
    )
    await arrived.wait()
    during = await scrape(gate)
    release.set()
    response = await call
    assert await response.read() == b"released"
    after = await scrape(gate)

    assert delta(before, during, "authgate_proxy_requests_in_flight") == 1
    assert during[key("authgate_upstream_pool_connections", state="in_use")] == 1
    assert delta(before, after, "authgate_proxy_requests_in_flight") == 0
    assert after[key("authgate_upstream_pool_connections", state="in_use")] == 0


async def test_response_bytes_in_flight_while_a_caller_does_not_read(gate: Authgate) -> None:
    tag = uuid.uuid4().hex[:10]
    await gate.connection(STATIC, f"mb-{tag}", {"type": "API_KEY", "apiKey": API_KEY})
    chunk, chunks = b"x" * 1024 * 1024, 48

    async def large(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(chunk)
        await response.write_eof()
        return response

    gate.provider.respond("/large", large)
    reader = aiohttp.ClientSession(auto_decompress=False)
    try:
        response = await reader.get(
            URL(str(gate.url).rstrip("/") + "/proxy/large", encoded=True),
            headers={**gate.auth(), "Connection-Id": f"mb-{tag}", "Provider-Config-Key": STATIC},
        )
        assert response.status == 200
        # The caller reads nothing more: the proxy's write blocks with a chunk in hand.
        await _poll(gate, lambda s: s[key("authgate_proxy_response_bytes_in_flight")] > 0)
        assert len(await response.read()) == len(chunk) * chunks
    finally:
        await reader.close()
    drained = await _poll(gate, lambda s: s[key("authgate_proxy_requests_in_flight")] == 0)
    assert drained[key("authgate_proxy_response_bytes_in_flight")] == 0


async def _poll(gate: Authgate, condition: Callable[[Samples], bool]) -> Samples:
    for _ in range(POLL_ATTEMPTS):
        samples = await scrape(gate)
        if condition(samples):
            return samples
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError("the metrics never showed the expected state")


Role = Callable[[dict[str, str]], Awaitable[tuple[URL, Callable[[], Awaitable[object]]]]]


async def _proxy_only(environ: dict[str, str]) -> tuple[URL, Callable[[], Awaitable[object]]]:
    running = await start_proxy(ProxySettings.from_env(environ), port=0)
    return URL(f"http://127.0.0.1:{running.port}/"), running.close


async def _management_only(
    environ: dict[str, str],
) -> tuple[URL, Callable[[], Awaitable[object]]]:
    running = await start_management(ManagementSettings.from_env(environ), port=0)
    return URL(f"http://127.0.0.1:{running.port}/"), running.close


@pytest.mark.parametrize("build", [_proxy_only, _management_only], ids=["proxy", "management"])
async def test_every_role_serves_metrics_without_authentication(
    build: Role, tmp_path: Path
) -> None:
    environ = settings_env(tmp_path, f"sqlite:///{tmp_path / 'roles.db'}")
    url, close = await build(environ)
    try:
        async with aiohttp.ClientSession() as session:
            text = await scrape_text(session, url)
    finally:
        await close()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"authgate_proxy_requests", "authgate_store_errors"} <= names
    assert environ["AUTHGATE_SECRET_KEY"] not in text
