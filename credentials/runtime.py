"""The shared services both the proxy and the management service run on.

Opened once per process at start-up and closed at shutdown; `authgate serve` hands the
same instance to both apps, so a change made through management is seen by the proxy's
caches at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from credentials.changes import ChangeHub, RedisChangeBridge
from credentials.config import CoreSettings
from credentials.crypto import Keyring
from credentials.keys import SecretKeyResolver
from credentials.providers import Catalogue, load_catalogue
from credentials.store import SqlStore, open_store


@dataclass(frozen=True, slots=True)
class CoreServices:
    settings: CoreSettings
    store: SqlStore
    catalogue: Catalogue
    keys: SecretKeyResolver
    changes: ChangeHub
    bridge: RedisChangeBridge | None = None

    async def close(self) -> None:
        if self.bridge is not None:
            await self.bridge.close()
        await self.store.close()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process can serve traffic, with one entry per dependency."""
        checks: dict[str, Any] = {"catalogue": {"ok": len(self.catalogue) > 0}}
        checks["store"] = await _check(self.store.ping)
        if self.bridge is not None:
            checks["redis"] = await _check(self.bridge.ping)
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
    bridge = None
    if settings.redis_url is not None:
        bridge = RedisChangeBridge(changes, settings.redis_url, f"{settings.redis_prefix}:changes")
        await bridge.start()
    return CoreServices(settings, store, catalogue, keys, changes, bridge)
