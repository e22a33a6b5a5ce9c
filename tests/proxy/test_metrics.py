"""The metrics module: bounded labels, the credentials layer's reports, multiprocess mode.

Metrics are process-wide, so every assertion on a value compares before and after.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from credentials import observe
from credentials.changes import ChangeHub, RedisChangeBridge
from credentials.connection_cache import ConnectionCache
from credentials.crypto import Keyring, generate_key
from credentials.database import SqliteDatabase, StoreUnavailable
from credentials.locks import LockBackendDown, RedisLock
from credentials.redis_client import open_redis
from credentials.store import ChangeEvent, SqlStore, open_store
from proxy import metrics
from proxy.context import ProxyContext, ProxyParams
from proxy.http.server import HttpServer, Reply, Request
from tests.credentials.private_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
POLL_ATTEMPTS = 200


def value(name: str, **labels: str) -> float:
    metrics.refresh_gauges()  # sampled gauges (in flight) are copied when read
    return REGISTRY.get_sample_value(name, labels) or 0.0


def every_label_value(text: str) -> list[str]:
    return [
        label
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for label in sample.labels.values()
    ]


# --- label values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (101, "1xx"), (404, "4xx"), (599, "5xx"), (0, "none")]
)
def test_status_classes(status: int, label: str) -> None:
    assert metrics.status_class(status) == label


def test_caller_controlled_values_map_onto_fixed_sets() -> None:
    assert metrics.method_label("PATCH") == "PATCH"
    assert metrics.method_label("BREW-/etc/passwd") == "other"
    assert metrics.retry_reason_label("status_503") == "status_503"
    assert metrics.retry_reason_label("retry_after") == "retry_after"
    assert metrics.retry_reason_label("status_9999") == "other"
    assert metrics.retry_reason_label("status_6xx") == "other"
    assert metrics.rate_limit_label("provider") == "provider"
    assert metrics.rate_limit_label("someone-else") == "other"
    assert metrics.credential_type_label("OAUTH2") == "OAUTH2"
    assert metrics.credential_type_label("made-up-type") == "other"
    assert metrics.error_label(None) == ""
    assert metrics.error_label("unknown_connection") == "unknown_connection"
    assert metrics.error_label("Not A Code /x") == "other"


async def test_a_request_never_labels_its_connection_path_or_made_up_integration() -> None:
    """The label-cardinality rule: the integration is named only once it was found."""
    tag = uuid.uuid4().hex[:12]
    connection_id, integration, path = f"conn-{tag}", f"made-up-{tag}", f"/proxy/items-{tag}"
    # PURGE: a method the HTTP parser accepts but the method label does not list.
    request, reply = await received("PURGE", f"{path}?q={tag}")
    ctx = ProxyContext(request, reply, request_id="r1", started=time.perf_counter())
    ctx.params = ProxyParams(connection_id=connection_id, provider_config_key=integration)
    ctx.outcome.status = 404
    ctx.outcome.error_code = "unknown_connection"
    ctx.outcome.retry_reasons = ["status_500", f"header-{tag}"]
    ctx.outcome.upstream_host = f"{tag}.example.com"
    labels = {"environment": "", "integration": "", "method": "other", "status_class": "4xx"}
    before = value("authgate_proxy_requests_total", error="unknown_connection", **labels)
    odd_retries = value("authgate_proxy_retries_total", integration="", reason="other")

    metrics.request_started()
    metrics.request_finished(ctx, now=time.perf_counter())

    after = value("authgate_proxy_requests_total", error="unknown_connection", **labels)
    assert after - before == 1
    assert value("authgate_proxy_retries_total", integration="", reason="other") == odd_retries + 1
    assert [label for label in every_label_value(metrics.render().decode()) if tag in label] == []


async def received(method: str, target: str) -> tuple[Request, Reply]:
    """A real inbound request, as the server hands it to a handler, held open."""
    arrived: asyncio.Future[tuple[Request, Reply]] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def hold(request: Request, reply: Reply) -> None:
        arrived.set_result((request, reply))
        await done.wait()

    server = HttpServer(hold)
    await server.start("127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        return await asyncio.wait_for(arrived, 10)
    finally:
        done.set()
        writer.close()
        await server.close()


def test_refresh_reports_become_attempts_outcomes_and_reasons() -> None:
    observer = metrics.MetricsObserver()
    refreshes = "authgate_token_refreshes_total"
    attempts = value("authgate_token_refresh_attempts_total", credential_type="OAUTH2")
    refreshed = value(refreshes, credential_type="OAUTH2", outcome="refreshed", reason="")
    refused = value(refreshes, credential_type="APP", outcome="failed", reason="invalid_grant")
    unknown = value(refreshes, credential_type="other", outcome="failed", reason="other")

    observer.refresh_event("OAUTH2", "attempt")
    observer.refresh_event("OAUTH2", "refreshed")
    observer.refresh_event("APP", "invalid_grant")
    observer.refresh_event("weird-type", "weird-reason")

    assert value("authgate_token_refresh_attempts_total", credential_type="OAUTH2") == attempts + 1
    assert value(refreshes, credential_type="OAUTH2", outcome="refreshed", reason="") == (
        refreshed + 1
    )
    assert value(refreshes, credential_type="APP", outcome="failed", reason="invalid_grant") == (
        refused + 1
    )
    assert value(refreshes, credential_type="other", outcome="failed", reason="other") == (
        unknown + 1
    )


def test_a_rate_limiter_failing_open_counts_a_redis_error_only_when_redis_failed() -> None:
    errors = value("authgate_redis_errors_total", operation="rate_limit")
    failed = value("authgate_rate_limit_fail_open_total", reason="redis_error")
    skipped = value("authgate_rate_limit_fail_open_total", reason="redis_skipped")

    metrics.rate_limit_failed_open("redis_error")
    metrics.rate_limit_failed_open("redis_skipped")

    assert value("authgate_rate_limit_fail_open_total", reason="redis_error") == failed + 1
    assert value("authgate_rate_limit_fail_open_total", reason="redis_skipped") == skipped + 1
    assert value("authgate_redis_errors_total", operation="rate_limit") == errors + 1


def test_bytes_in_flight_are_released_even_when_the_write_fails() -> None:
    start = value("authgate_proxy_response_bytes_in_flight")
    during: list[float] = []

    def failing_write() -> None:
        with metrics.bytes_in_flight(4096):
            during.append(value("authgate_proxy_response_bytes_in_flight"))
            raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        failing_write()
    assert during == [start + 4096]
    assert value("authgate_proxy_response_bytes_in_flight") == start


# --- the credentials layer reports to the installed observer ----------------------------


class Recorder(observe.Observer):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def refresh_event(self, credential_type: str, event: str) -> None:
        self.events.append(("refresh", credential_type, event))

    def cache_lookup(self, layer: observe.CacheLayer, result: observe.CacheResult) -> None:
        self.events.append(("cache", layer, result))

    def store_read(self) -> None:
        self.events.append(("store_read",))

    def store_error(self, operation: observe.StoreOperation) -> None:
        self.events.append(("store_error", operation))

    def redis_error(self, operation: observe.RedisOperation) -> None:
        self.events.append(("redis_error", operation))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    previous = observe.install(recording)
    yield recording
    observe.install(previous)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_store(f"sqlite:///{tmp_path / 'observe.db'}", Keyring([generate_key()]))
    yield opened
    await opened.close()


async def _seeded_key(store: SqlStore) -> tuple[int, str, str]:
    environment = await store.create_environment(f"env-{uuid.uuid4().hex[:8]}")
    integration = await store.create_integration(
        environment.id,
        unique_key="oauth",
        provider="github",
        credentials={"type": "OAUTH2", "client_id": "cid", "client_secret": "cs"},
    )
    await store.upsert_connection(
        environment.id,
        integration,
        connection_id="conn-1",
        credentials={"type": "OAUTH2", "access_token": "observed-token"},
    )
    return (environment.id, "oauth", "conn-1")


async def test_the_redis_tier_reports_misses_hits_and_store_reads(
    recorder: Recorder, store: SqlStore
) -> None:
    key = await _seeded_key(store)
    client = open_redis(SHARED_REDIS_URL)
    prefix = f"authgate-test:{uuid.uuid4().hex}"
    cache = ConnectionCache(client, store, prefix=prefix)
    try:
        recorder.events.clear()
        assert await cache.load(key) is not None
        assert await cache.load(key) is not None
    finally:
        await cache.close()
        await _drop(client, prefix)
    assert recorder.events == [
        ("cache", "redis", "miss"),
        ("store_read",),
        ("cache", "redis", "hit"),
    ]


async def test_a_dead_redis_is_an_error_then_skipped_by_the_breaker(
    recorder: Recorder, store: SqlStore
) -> None:
    key = await _seeded_key(store)
    client = open_redis(f"redis://127.0.0.1:{free_port()}/0")
    cache = ConnectionCache(client, store, prefix="authgate-test:dead")
    try:
        recorder.events.clear()
        assert await cache.load(key) is not None
        assert await cache.load(key) is not None
    finally:
        await cache.close()
        await client.aclose()
    assert recorder.events == [
        ("redis_error", "cache_read"),
        ("cache", "redis", "error"),
        ("store_read",),
        ("cache", "redis", "skipped"),
        ("store_read",),
    ]


async def test_a_dead_redis_lock_and_change_bridge_report_redis_errors(
    recorder: Recorder,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = open_redis(url)
    try:
        with pytest.raises(LockBackendDown):
            await RedisLock(client, prefix="authgate-test:dead").try_acquire("refresh:1")
    finally:
        await client.aclose()
    hub = ChangeHub()
    bridge = RedisChangeBridge(hub, url, "authgate-test:dead:changes")
    await bridge.start()
    try:
        hub.local(ChangeEvent(kind="connection", environment_id=1))
        for _ in range(POLL_ATTEMPTS):
            if ("redis_error", "change_subscribe") in recorder.events:
                break
            await _tick()
    finally:
        await bridge.close()
    assert ("redis_error", "lock") in recorder.events
    assert ("redis_error", "change_publish") in recorder.events
    assert ("redis_error", "change_subscribe") in recorder.events


async def test_an_unreachable_store_reports_a_store_error(
    recorder: Recorder, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database directory should be")
    with pytest.raises(StoreUnavailable):
        await SqliteDatabase.open(str(blocker / "store.db"))
    assert recorder.events == [("store_error", "connect")]


async def _tick() -> None:
    # A bounded poll step: the bridge retries on its own schedule.
    await asyncio.sleep(0.05)


async def _drop(client: redis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --- several processes ------------------------------------------------------------------

WORKER = """
import os
from proxy import metrics

metrics.PROXY_REQUESTS.labels("dev", "shared", "GET", "2xx", "").inc()
metrics.PROXY_OVERHEAD.labels("shared", "false").observe(0.002)
metrics.request_started()
metrics.refresh_gauges()  # what the worker's next sample (or scrape) does
metrics.MetricsObserver().redis_error("lock")
print(os.getpid())
"""


def _worker(directory: Path) -> int:
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout.strip())


def test_multiprocess_mode_merges_every_worker_and_forgets_dead_ones(tmp_path: Path) -> None:
    first, second = _worker(tmp_path), _worker(tmp_path)

    merged = _samples(metrics.render(str(tmp_path)).decode())
    assert merged[("authgate_proxy_requests_total", "shared")] == 2
    assert merged[("authgate_proxy_overhead_seconds_count", "shared")] == 2
    assert merged[("authgate_redis_errors_total", "lock")] == 2
    assert merged[("authgate_proxy_requests_in_flight", "")] == 2  # one series, summed

    metrics.process_exited(first, str(tmp_path))
    assert second != first
    remaining = _samples(metrics.render(str(tmp_path)).decode())
    assert remaining[("authgate_proxy_requests_in_flight", "")] == 1
    assert remaining[("authgate_proxy_requests_total", "shared")] == 2  # counters stay


def _samples(text: str) -> dict[tuple[str, str], float]:
    """(name, the sample's `integration` or `operation` label) -> value; fails on a
    series split per process, which an unsuitable gauge mode would produce."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert "pid" not in sample.labels, sample
            label = sample.labels.get("integration", sample.labels.get("operation", ""))
            if sample.name.endswith("_bucket"):
                continue
            found[(sample.name, label)] = found.get((sample.name, label), 0.0) + sample.value
    return found
