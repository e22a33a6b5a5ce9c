"""The client's tunables and its pool snapshot (re-exported by :mod:`proxy.http.client`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientLimits:
    connect_timeout: float = 10.0
    """Seconds for name resolution, TCP connect and TLS handshake together."""
    read_timeout: float = 60.0
    """Longest silence while waiting for head or body bytes (or for the peer to take
    more of a streamed upload)."""
    keepalive_timeout: float = 30.0
    """An idle pooled connection older than this is closed, never reused."""
    limit_per_host: int = 0
    """0 = unlimited; else at most N connections per (scheme, host, port). Extra
    requests wait in FIFO order, bounded by their deadline (unbounded without one)."""
    dns_cache_seconds: float = 30.0
    """Resolver answers are cached per (host, port) this long; 0 disables the cache."""
    max_head_bytes: int = 64 * 1024
    """Status line + headers of a response (interim 1xx heads included)."""
    high_water: int = 256 * 1024
    """Buffered response body bytes before reading pauses; resumes below a quarter."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    in_use: int
    """Connections checked out (or being opened) for a request."""
    idle: int
    """Pooled connections waiting for reuse."""
    limit: int
    """limit_per_host (0 = unlimited)."""
