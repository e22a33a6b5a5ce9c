"""The shared services both the proxy and the management service run on.

Opened once per process at start-up and closed at shutdown; `authgate serve` hands the
same instance to both apps, so a change made through management is seen by the proxy's
caches at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

from credentials.change_waiters import ChangeWaiters
from credentials.changes import ChangeHub, RedisChangeBridge
from credentials.config import CoreSettings
from credentials.connection_cache import ConnectionCache
from credentials.crypto import Keyring
from credentials.grants import TokenHttp
from credentials.keys import SecretKeyResolver
from credentials.locks import RedisLock, RefreshLocks, StoreLease
from credentials.providers import Catalogue, load_catalogue
from credentials.redis_client import open_redis
from credentials.refresh import Refresher, RefreshSettings
from credentials.store import SqlStore, open_store
from credentials.webhooks import AuthWebhooks


@dataclass(frozen=True, slots=True)
class CoreServices:
    settings: CoreSettings
    store: SqlStore
    catalogue: Catalogue
    keys: SecretKeyResolver
    changes: ChangeHub
    refresher: Refresher
    token_http: TokenHttp
    bridge: RedisChangeBridge | None = None
    redis: redis.Redis | None = None
    connection_cache: ConnectionCache | None = None
    """The shared Redis tier of connection rows; None without REDIS_URL."""
    webhooks: AuthWebhooks | None = None
    """Queues auth webhooks in the store's outbox (the refresher reports to it); a role
    that delivers them runs `webhooks.sender()`."""

    async def close(self) -> None:
        # The cache first: its pending tombstones publish their events through the bridge.
        if self.connection_cache is not None:
            await self.connection_cache.close()
        if self.bridge is not None:
            await self.bridge.close()
        await self.token_http.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.store.close()

    async def readiness(self, *, draining: bool = False) -> tuple[bool, dict[str, Any]]:
        """Whether this process can serve traffic, with one entry per dependency.

        `draining`: the process is stopping; it fails readiness so that balancers stop
        sending it traffic, while the dependencies are still reported."""
        checks: dict[str, Any] = {"catalogue": {"ok": len(self.catalogue) > 0}}
        checks["store"] = await _check(self.store.ping)
        if self.bridge is not None:
            checks["redis"] = await _check(self.bridge.ping)
        if draining:
            checks["shutdown"] = {"ok": False, "error": "draining"}
        return all(check["ok"] for check in checks.values()), checks


async def _check(probe: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    try:
        await probe()
    except Exception as failure:
        return {"ok": False, "error": type(failure).__name__}
    return {"ok": True}


async def open_core(settings: CoreSettings, keyring: Keyring) -> CoreServices:
    catalogue = load_catalogue(settings.providers_file)
    store = await open_store(settings.database_url, keyring)
    changes = ChangeHub()
    store.subscribe(changes.local)
    keys = SecretKeyResolver(store)
    changes.subscribe(keys.on_change, reset=keys.clear)
    waiters = ChangeWaiters()
    changes.subscribe(waiters.on_change, reset=waiters.reset)
    bridge = client = connection_cache = None
    if settings.redis_url is not None:
        bridge = RedisChangeBridge(changes, settings.redis_url, f"{settings.redis_prefix}:changes")
        await bridge.start()
        client = open_redis(settings.redis_url)
        connection_cache = ConnectionCache(client, store, prefix=settings.redis_prefix)
        _invalidate_before_publishing(changes, connection_cache)
    token_http = TokenHttp(allow_private=settings.allow_private_upstreams)
    webhooks = AuthWebhooks(store, allow_private=settings.allow_private_upstreams)
    refresher = Refresher(
        store,
        _refresh_locks(store, client, settings.redis_prefix),
        token_http,
        waiters,
        RefreshSettings(margin=settings.refresh_margin),
        listener=webhooks,
    )
    return CoreServices(
        settings,
        store,
        catalogue,
        keys,
        changes,
        refresher,
        token_http,
        bridge,
        client,
        connection_cache,
        webhooks=webhooks,
    )


def _invalidate_before_publishing(changes: ChangeHub, cache: ConnectionCache) -> None:
    """Route this process's changes through the Redis tier on their way out.

    The hub hands every write of this process to its outbox (the bridge's publisher) and
    never a remote one, so the writing process alone retires the cached value; and it
    publishes only after that, so no other process re-reads the old value on the event.
    """
    publish = changes.outbox
    if publish is None:
        raise RuntimeError("the change bridge must be started before the connection cache")
    changes.outbox = cache.publishing_after_invalidation(publish)


def _refresh_locks(store: SqlStore, client: redis.Redis | None, prefix: str) -> RefreshLocks:
    redis_lock = None if client is None else RedisLock(client, prefix=prefix)
    return RefreshLocks(redis_lock, StoreLease(store.db))
