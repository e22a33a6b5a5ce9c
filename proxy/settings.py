"""Data-plane settings: read once from the environment, frozen, validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from credentials.config import ConfigError, CoreSettings, read_bool, read_float, read_int, read_str
from ratelimit.policy import RateLimitConfigError, RateLimitPolicy, policy_from_env

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3003
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_TOTAL_TIMEOUT = 120.0
DEFAULT_RETRY_MAX_DELAY = 10.0
DEFAULT_MAX_BODY_BYTES = 4 * 1024**3
DEFAULT_REPLAY_BUFFER_BYTES = 1024**2
DEFAULT_CACHE_TTL = 300.0
# Per worker and provider host: enough for bursts, a bound a provider's limits can trust.
DEFAULT_CONNECTIONS_PER_HOST = 128
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Everything the proxy reads from the environment.

    `total_timeout` bounds the time until the provider's response headers arrive, retries
    and their waits included; a streamed body is then bounded by `read_timeout` between
    chunks, so a long download is never cut off while it is making progress. A wait for
    a rate-limit token counts against it too.

    `connections_per_host` bounds this process's pooled connections to one provider
    host (0: unbounded); a request beyond it waits its turn within `total_timeout`.

    `rate_limits` is off unless configured (`AUTHGATE_RATE_LIMIT*`, see
    `ratelimit.policy`).
    """

    core: CoreSettings = field(default_factory=CoreSettings)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allow_private_upstreams: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    replay_buffer_bytes: int = DEFAULT_REPLAY_BUFFER_BYTES
    cache_ttl: float = DEFAULT_CACHE_TTL
    connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST
    log_level: str = "INFO"
    rate_limits: RateLimitPolicy = field(default_factory=RateLimitPolicy)

    def __post_init__(self) -> None:
        if self.retry_max_delay > self.total_timeout:
            raise ConfigError(
                "AUTHGATE_RETRY_MAX_DELAY", "must not exceed AUTHGATE_UPSTREAM_TOTAL_TIMEOUT"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProxySettings:
        return cls(
            core=CoreSettings.from_env(environ),
            host=read_str(environ, "AUTHGATE_HOST", DEFAULT_HOST) or DEFAULT_HOST,
            port=read_int(environ, "AUTHGATE_PORT", DEFAULT_PORT, minimum=0, maximum=65535),
            allow_private_upstreams=read_bool(environ, "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS", False),
            connect_timeout=_positive(
                environ, "AUTHGATE_UPSTREAM_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT
            ),
            read_timeout=_positive(environ, "AUTHGATE_UPSTREAM_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
            total_timeout=_positive(
                environ, "AUTHGATE_UPSTREAM_TOTAL_TIMEOUT", DEFAULT_TOTAL_TIMEOUT
            ),
            retry_max_delay=read_float(
                environ, "AUTHGATE_RETRY_MAX_DELAY", DEFAULT_RETRY_MAX_DELAY
            ),
            max_body_bytes=read_int(
                environ, "AUTHGATE_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1
            ),
            replay_buffer_bytes=read_int(
                environ, "AUTHGATE_REPLAY_BUFFER_BYTES", DEFAULT_REPLAY_BUFFER_BYTES
            ),
            cache_ttl=_positive(environ, "AUTHGATE_CACHE_TTL", DEFAULT_CACHE_TTL),
            connections_per_host=read_int(
                environ,
                "AUTHGATE_UPSTREAM_CONNECTIONS_PER_HOST",
                DEFAULT_CONNECTIONS_PER_HOST,
                minimum=0,
            ),
            log_level=_log_level(environ),
            rate_limits=_rate_limits(environ),
        )


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    return read_float(environ, name, default, minimum=0.001)


def _rate_limits(environ: Mapping[str, str]) -> RateLimitPolicy:
    try:
        return policy_from_env(environ)
    except RateLimitConfigError as invalid:
        raise ConfigError(invalid.variable, invalid.problem) from None


def _log_level(environ: Mapping[str, str]) -> str:
    value = (read_str(environ, "AUTHGATE_LOG_LEVEL", "INFO") or "INFO").upper()
    if value not in _LOG_LEVELS:
        raise ConfigError("AUTHGATE_LOG_LEVEL", f"expected one of {', '.join(_LOG_LEVELS)}")
    return value
