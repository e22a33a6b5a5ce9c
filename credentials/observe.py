"""What the credentials layer reports about itself, for whoever measures the process.

The credentials library must not depend on a metrics library or on the services that
expose one (`proxy.metrics` turns these reports into Prometheus metrics). Its modules
report events to the process's `Observer`, the way they write log records to a logger
the process configures: the running service installs one at start-up, and until then
(in tests of the library, in tools) the base class drops every report.

One process-wide observer rather than one passed to every constructor: the database
layer is opened deep inside the store, and what is observed (counts per process) is
process-wide anyway.

Every argument is one of a small fixed set (the Literal types below), so whatever the
observer does with them, it never sees a connection id, a key, a URL or a secret.
"""

from __future__ import annotations

from typing import Literal

CacheLayer = Literal["process", "redis"]
CacheResult = Literal["hit", "miss", "stale", "skipped", "error"]
"""`stale`: a last known value served while the store is down; `skipped`: the layer was
not asked (breaker open, or this process's own change in flight); `error`: asking failed."""
RedisOperation = Literal[
    "cache_read",
    "cache_fill",
    "cache_invalidate",
    "lock",
    "change_publish",
    "change_subscribe",
    "rate_limit",
]
StoreOperation = Literal["connect", "query", "transaction"]


class Observer:
    """Receives the credentials layer's reports; this base class ignores them all.

    Reports are synchronous and must be cheap: they run on request paths.
    """

    def refresh_event(self, credential_type: str, event: str) -> None:
        """A step of a credential renewal (`Refresher`'s counts): `attempt` (a token
        call), `refreshed`, `superseded`, `absorbed_reuse`, or a failure reason."""

    def cache_lookup(self, layer: CacheLayer, result: CacheResult) -> None:
        """One lookup of a connection in a cache layer."""

    def store_read(self) -> None:
        """A connection load that reached the store (every cache layer missed)."""

    def store_error(self, operation: StoreOperation) -> None:
        """The store could not be reached (a `StoreUnavailable` was raised)."""

    def redis_error(self, operation: RedisOperation) -> None:
        """A Redis call failed or timed out."""


_installed: Observer = Observer()


def current() -> Observer:
    """The observer reports go to now."""
    return _installed


def install(observer: Observer) -> Observer:
    """Send every later report to `observer`; returns the one it replaces."""
    global _installed
    previous, _installed = _installed, observer
    return previous
