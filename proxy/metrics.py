"""Every Prometheus metric authgate exports, its labels, and the `/metrics` exposition.

Proxied requests (recorded once per request, from its `Outcome`, when it ends):

    authgate_proxy_requests_total{environment, integration, method, status_class, error}
        `status_class` is the class of the status the caller got (`2xx` .. `5xx`), `none`
        when no answer was sent (the caller went away first). `error` is the
        `X-Authgate-Error` code when authgate answered itself (or `stream_aborted` when a
        provider's body broke off), empty for the provider's own answer.
    authgate_proxy_overhead_seconds{integration, waited}         histogram
        Time that was ours up to the first response byte: the whole request minus the
        time spent waiting for provider response headers. `waited="true"` marks requests
        whose overhead includes deliberate waiting (retry backoff, a rate-limit wait, a
        credential renewal); `waited="false"` is the proxy's own cost.
    authgate_proxy_upstream_seconds{integration}                 histogram
        Until the provider's response headers, every attempt summed (not the body).
    authgate_proxy_retries_total{integration, reason}            one per retry taken
    authgate_proxy_rate_limited_total{integration, kind}         `waited`, `rejected`
        (authgate's own limit) or `provider` (a provider 429)
    authgate_proxy_response_bytes_total{integration}             body bytes streamed back
    authgate_proxy_requests_in_flight                            gauge
    authgate_proxy_response_bytes_in_flight                      gauge: response body bytes
        read from providers and not yet written to callers
    authgate_upstream_pool_connections{state}                    gauge: `in_use`, `idle`
    authgate_upstream_pool_limit                                 gauge: 0 means unlimited

Credentials (reported through `credentials.observe` by `MetricsObserver`):

    authgate_token_refresh_attempts_total{credential_type}       token calls made
    authgate_token_refreshes_total{credential_type, outcome, reason}
        `outcome`: `refreshed`, `superseded` (another writer's credentials won),
        `absorbed_reuse` (a refused refresh token had been rotated elsewhere), `failed`
        with `reason` one of `credentials.grants.base.REASONS` or `lock_timeout`.
    authgate_credential_cache_lookups_total{layer, result}       `process` / `redis`;
        `hit`, `miss`, `stale`, `skipped`, `error`
    authgate_credential_store_reads_total                        loads that reached the store
    authgate_store_errors_total{operation}                       `connect`, `query`, `transaction`
    authgate_redis_errors_total{operation}                       see `credentials.observe`
    authgate_rate_limit_fail_open_total{reason}                  `redis_error`, `redis_skipped`

Labels. Every label value is one of a fixed set, or an environment name or integration
key, which operators create. Never a connection id, a path, a host (a caller's
`Base-Url-Override` picks any host), a query or a header value: values a caller controls
are mapped onto a fixed set (`other` for anything unexpected), and the integration is
only named once the connection was found, so a made-up `Provider-Config-Key` cannot mint
series. Nothing here ever carries a secret.

Several worker processes. With `PROMETHEUS_MULTIPROC_DIR` set (to a directory shared by
the workers, emptied before they start, and set before prometheus_client is first
imported, which is when the library picks its storage), prometheus-client's multiprocess
mode is used: every process writes its values to files there, and a scrape of any worker
merges all of them (counters and histograms sum; each gauge below declares `livesum`, so
only live processes count, once their supervisor calls `process_exited(pid)` for a dead
one). A value computed by a callback at scrape time would only ever show the scraped
process, so there are none: the upstream pool gauges are set in place at the end of
every request and before each scrape. Chosen over one metrics port per worker because a
scraper then needs to know every worker. Without the variable the default registry is
served (with prometheus-client's process and GC metrics).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from credentials import observe
from credentials.grants.base import REASONS as GRANT_FAILURE_REASONS
from credentials.models import AuthMode
from proxy.context import ProxyContext
from proxy.http.client import PoolStats

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# Sub-millisecond resolution where the proxy's own work lies, up to seconds for waits.
OVERHEAD_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# --- proxied requests -------------------------------------------------------------------

PROXY_REQUESTS = Counter(
    "authgate_proxy_requests",
    "Proxied requests answered, by status class and authgate error code (empty: the "
    "provider's answer).",
    ("environment", "integration", "method", "status_class", "error"),
)
PROXY_OVERHEAD = Histogram(
    "authgate_proxy_overhead_seconds",
    "Time up to the first response byte not spent waiting for provider response headers; "
    'waited="true" includes retry backoff, rate-limit waits or a credential renewal.',
    ("integration", "waited"),
    buckets=OVERHEAD_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "authgate_proxy_upstream_seconds",
    "Time until the provider's response headers, all attempts of a request summed.",
    ("integration",),
    buckets=UPSTREAM_BUCKETS,
)
PROXY_RETRIES = Counter(
    "authgate_proxy_retries", "Retries taken, by what triggered them.", ("integration", "reason")
)
PROXY_RATE_LIMITED = Counter(
    "authgate_proxy_rate_limited",
    "Requests a rate limit touched: waited or rejected by authgate, or a provider 429.",
    ("integration", "kind"),
)
RESPONSE_BYTES = Counter(
    "authgate_proxy_response_bytes", "Response body bytes streamed back.", ("integration",)
)
REQUESTS_IN_FLIGHT = Gauge(
    "authgate_proxy_requests_in_flight",
    "Proxied requests being handled.",
    multiprocess_mode="livesum",
)
BYTES_IN_FLIGHT = Gauge(
    "authgate_proxy_response_bytes_in_flight",
    "Response body bytes read from providers and not yet written to callers.",
    multiprocess_mode="livesum",
)
POOL_CONNECTIONS = Gauge(
    "authgate_upstream_pool_connections",
    "Pooled upstream connections, in use or idle (kept alive).",
    ("state",),
    multiprocess_mode="livesum",
)
POOL_LIMIT = Gauge(
    "authgate_upstream_pool_limit",
    "Most upstream connections the pool opens at once; 0 means unlimited.",
    multiprocess_mode="livesum",
)

# --- credentials, store, Redis ----------------------------------------------------------

TOKEN_REFRESH_ATTEMPTS = Counter(
    "authgate_token_refresh_attempts", "Token endpoint calls made.", ("credential_type",)
)
TOKEN_REFRESHES = Counter(
    "authgate_token_refreshes",
    "Credential renewals by outcome; failures by reason.",
    ("credential_type", "outcome", "reason"),
)
CACHE_LOOKUPS = Counter(
    "authgate_credential_cache_lookups",
    "Connection lookups per cache layer (process, redis) and result.",
    ("layer", "result"),
)
STORE_READS = Counter("authgate_credential_store_reads", "Connection loads that reached the store.")
STORE_ERRORS = Counter(
    "authgate_store_errors", "Times the store could not be reached.", ("operation",)
)
REDIS_ERRORS = Counter(
    "authgate_redis_errors", "Redis calls that failed or timed out.", ("operation",)
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "authgate_rate_limit_fail_open",
    "Requests let through unlimited because the shared limiter could not be asked.",
    ("reason",),
)

# --- label values -----------------------------------------------------------------------

OTHER = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_RETRY_REASONS = frozenset({"network", "retry_after", "rate_limit_reset", "provider_header"})
_STATUS_REASON = re.compile(r"status_[1-5][0-9]{2}")
_RATE_LIMIT_KINDS = frozenset({"waited", "rejected", "provider"})
# Error codes are constants of proxy/compat.py and proxy/errors.py, never input; the
# pattern only keeps an unexpected one from reaching a label as it is.
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CREDENTIAL_TYPES = frozenset(mode.value for mode in AuthMode)
_REFRESH_OUTCOMES = frozenset({"refreshed", "superseded", "absorbed_reuse"})
_REFRESH_FAILURES = GRANT_FAILURE_REASONS | {"lock_timeout"}

FailOpenReason = Literal["redis_error", "redis_skipped"]
# What each cache layer can report (see credentials.observe.CacheResult).
_CACHE_RESULTS: dict[str, tuple[str, ...]] = {
    "process": ("hit", "miss", "stale"),
    "redis": ("hit", "miss", "skipped", "error"),
}


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "none"


def method_label(method: str) -> str:
    return method if method in _METHODS else OTHER


def error_label(code: str | None) -> str:
    if code is None:
        return ""
    return code if _ERROR_CODE.fullmatch(code) else OTHER


def retry_reason_label(reason: str) -> str:
    if reason in _RETRY_REASONS or _STATUS_REASON.fullmatch(reason):
        return reason
    return OTHER


def rate_limit_label(kind: str) -> str:
    return kind if kind in _RATE_LIMIT_KINDS else OTHER


def credential_type_label(credential_type: str) -> str:
    return credential_type if credential_type in _CREDENTIAL_TYPES else OTHER


# --- recording --------------------------------------------------------------------------


# In-flight requests and bytes change twice per request (per chunk, for bytes): they are
# kept as plain numbers and copied to their gauges when sampled (at most once a second
# as requests finish, and at every scrape), not locked and written on every change.
_requests_in_flight = 0
_bytes_in_flight = 0


def request_started() -> None:
    global _requests_in_flight
    _requests_in_flight += 1


def request_finished(ctx: ProxyContext, *, now: float) -> None:
    """Everything one request contributes, read from its outcome once it has ended.

    `now` is `time.perf_counter()` at the end (the overhead of a request that never
    reached its first response byte runs until then).
    """
    global _requests_in_flight
    _requests_in_flight -= 1
    outcome = ctx.outcome
    # Named only once the connection was found: the header alone is caller input.
    integration = ctx.target.connection.provider_config_key if ctx.target is not None else ""
    environment = ctx.environment.name if ctx.environment is not None else ""
    _request_counter(
        environment, integration, ctx.request.method, outcome.status, outcome.error_code
    ).inc()
    for reason in outcome.retry_reasons:
        PROXY_RETRIES.labels(integration, retry_reason_label(reason)).inc()
    if outcome.rate_limit is not None:
        PROXY_RATE_LIMITED.labels(integration, rate_limit_label(outcome.rate_limit)).inc()
    series = _integration_series(integration)
    if outcome.bytes_out:
        series.response_bytes.inc(outcome.bytes_out)
    if outcome.upstream_host:
        series.upstream_seconds.observe(outcome.upstream_seconds)
    if outcome.status:
        responded = outcome.responded_at or now
        overhead = max(responded - ctx.started - outcome.upstream_seconds, 0.0)
        waited = _waited(ctx) == "true"
        (series.overhead_waited if waited else series.overhead).observe(overhead)
    sample_pool_gauges(now)


# Label children, memoised: `labels()` validates and locks on every call, and a request
# needs five of them. Keys are the raw values; the labels themselves still go through the
# label functions above, so the cardinality rules are unchanged. Bounded, like the label
# sets themselves should be; cleared if something unexpected floods them.
_MAX_MEMOISED = 10_000
_request_counters: dict[tuple[str, str, str, int, str | None], Counter] = {}


def _request_counter(
    environment: str, integration: str, method: str, status: int, error: str | None
) -> Counter:
    key = (environment, integration, method, status, error)
    child = _request_counters.get(key)
    if child is None:
        if len(_request_counters) >= _MAX_MEMOISED:
            _request_counters.clear()
        child = PROXY_REQUESTS.labels(
            environment, integration, method_label(method), status_class(status), error_label(error)
        )
        _request_counters[key] = child
    return child


@dataclass(frozen=True, slots=True)
class _IntegrationSeries:
    response_bytes: Counter
    upstream_seconds: Histogram
    overhead: Histogram
    overhead_waited: Histogram


_integration_series_cache: dict[str, _IntegrationSeries] = {}


def _integration_series(integration: str) -> _IntegrationSeries:
    series = _integration_series_cache.get(integration)
    if series is None:
        if len(_integration_series_cache) >= _MAX_MEMOISED:
            _integration_series_cache.clear()
        series = _IntegrationSeries(
            RESPONSE_BYTES.labels(integration),
            UPSTREAM_SECONDS.labels(integration),
            PROXY_OVERHEAD.labels(integration, "false"),
            PROXY_OVERHEAD.labels(integration, "true"),
        )
        _integration_series_cache[integration] = series
    return series


def _waited(ctx: ProxyContext) -> str:
    outcome = ctx.outcome
    waited = (
        outcome.retries > 0
        or outcome.rate_limit == "waited"
        or outcome.refresh is not None
        or outcome.reauthorized
    )
    return "true" if waited else "false"


def hold_bytes(size: int) -> None:
    """`size` response body bytes are now held in memory (pair with `release_bytes`)."""
    global _bytes_in_flight
    _bytes_in_flight += size


def release_bytes(size: int) -> None:
    global _bytes_in_flight
    _bytes_in_flight -= size


@contextmanager
def bytes_in_flight(size: int) -> Iterator[None]:
    """Count `size` body bytes as held in memory while the block runs."""
    hold_bytes(size)
    try:
        yield
    finally:
        release_bytes(size)


def rate_limit_failed_open(reason: FailOpenReason) -> None:
    """For the rate limiter: a request went through unlimited because Redis could not be
    asked (`redis_error`: the call failed, also counted as a Redis error; `redis_skipped`:
    its circuit breaker is open)."""
    RATE_LIMIT_FAIL_OPEN.labels(reason).inc()
    if reason == "redis_error":
        REDIS_ERRORS.labels("rate_limit").inc()


_CACHE_COUNTERS: dict[tuple[str, str], Counter] = {}


class MetricsObserver(observe.Observer):
    """Turns the credentials layer's reports into the metrics above."""

    def refresh_event(self, credential_type: str, event: str) -> None:
        kind = credential_type_label(credential_type)
        if event == "attempt":
            TOKEN_REFRESH_ATTEMPTS.labels(kind).inc()
        elif event in _REFRESH_OUTCOMES:
            TOKEN_REFRESHES.labels(kind, event, "").inc()
        else:
            reason = event if event in _REFRESH_FAILURES else OTHER
            TOKEN_REFRESHES.labels(kind, "failed", reason).inc()

    def cache_lookup(self, layer: observe.CacheLayer, result: observe.CacheResult) -> None:
        # Every proxied request reports one: the child counters are looked up once.
        counter = _CACHE_COUNTERS.get((layer, result))
        if counter is None:
            counter = _CACHE_COUNTERS[layer, result] = CACHE_LOOKUPS.labels(layer, result)
        counter.inc()

    def store_read(self) -> None:
        STORE_READS.inc()

    def store_error(self, operation: observe.StoreOperation) -> None:
        STORE_ERRORS.labels(operation).inc()

    def redis_error(self, operation: observe.RedisOperation) -> None:
        REDIS_ERRORS.labels(operation).inc()


def install() -> None:
    """Send the credentials layer's reports to the metrics (once per process)."""
    if not isinstance(observe.current(), MetricsObserver):
        observe.install(MetricsObserver())


# --- the upstream connection pool -------------------------------------------------------

PoolStatsSource = Callable[[], PoolStats]
_pools: list[PoolStatsSource] = []
# Pool gauges are sampled, not kept exact on every request: once a second at most, and
# at every scrape.
POOL_SAMPLE_SECONDS = 1.0
_pool_sampled_at = -math.inf


def track_pool(stats: PoolStatsSource) -> None:
    _pools.append(stats)
    refresh_pool_gauges()


def untrack_pool(stats: PoolStatsSource) -> None:
    if stats in _pools:
        _pools.remove(stats)
    refresh_pool_gauges()


def sample_pool_gauges(now: float) -> None:
    """`refresh_gauges`, at most once per `POOL_SAMPLE_SECONDS` of `now`."""
    global _pool_sampled_at
    if now - _pool_sampled_at >= POOL_SAMPLE_SECONDS:
        _pool_sampled_at = now
        refresh_gauges()


def refresh_gauges() -> None:
    """Copy the sampled values (in flight, pool occupancy) to their gauges."""
    REQUESTS_IN_FLIGHT.set(_requests_in_flight)
    BYTES_IN_FLIGHT.set(_bytes_in_flight)
    refresh_pool_gauges()


def refresh_pool_gauges() -> None:
    in_use = idle = limit = 0
    unlimited = False
    for source in _pools:
        stats = source()
        in_use += stats.in_use
        idle += stats.idle
        limit += stats.limit
        unlimited = unlimited or stats.limit == 0
    POOL_CONNECTIONS.labels("in_use").set(in_use)
    POOL_CONNECTIONS.labels("idle").set(idle)
    POOL_LIMIT.set(0 if unlimited else limit)


# --- exposition -------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


def render(directory: str | None = None) -> bytes:
    """The Prometheus text format: of every process writing to `directory` (multiprocess
    mode), else of this process's default registry."""
    if directory is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    # prometheus-client leaves its multiprocess module unannotated.
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def exposition() -> tuple[bytes, str]:
    """The body and content type of a `/metrics` answer."""
    refresh_gauges()
    # Off the event loop: collecting reads every worker's files in multiprocess mode.
    body = await asyncio.to_thread(render, multiprocess_dir())
    return body, CONTENT_TYPE_LATEST


def process_exited(pid: int, directory: str | None = None) -> None:
    """For a supervisor of worker processes: drop a dead worker's live gauges."""
    directory = directory or multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _initialise() -> None:
    """Series of the fixed label sets exist from the start, so `rate()` sees the first
    error; the rest appear with their first sample."""
    for redis_operation in typing.get_args(observe.RedisOperation):
        REDIS_ERRORS.labels(redis_operation)
    for store_operation in typing.get_args(observe.StoreOperation):
        STORE_ERRORS.labels(store_operation)
    for layer, results in _CACHE_RESULTS.items():
        for result in results:
            CACHE_LOOKUPS.labels(layer, result)
    for reason in typing.get_args(FailOpenReason):
        RATE_LIMIT_FAIL_OPEN.labels(reason)
    refresh_pool_gauges()


_initialise()
