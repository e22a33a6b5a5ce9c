"""The shared services both the proxy and the management service run on.

Opened once per process at start-up and closed at shutdown; `authgate serve` hands the
same instance to both apps, so a change made through management is seen by the proxy's
caches at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    async def close(self) -> None:
        await self.store.close()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process can serve traffic, with one entry per dependency."""
        checks: dict[str, Any] = {"catalogue": {"ok": len(self.catalogue) > 0}}
        try:
            await self.store.ping()
            checks["store"] = {"ok": True}
        except Exception as failure:
            checks["store"] = {"ok": False, "error": type(failure).__name__}
        return all(check["ok"] for check in checks.values()), checks


async def open_core(settings: CoreSettings, keyring: Keyring) -> CoreServices:
    catalogue = load_catalogue(settings.providers_file)
    store = await open_store(settings.database_url, keyring)
    keys = SecretKeyResolver(store)
    store.subscribe(keys.on_change)
    return CoreServices(settings=settings, store=store, catalogue=catalogue, keys=keys)
