"""Secret key → environment, with an in-process cache in front of the store.

Only hashes are cached and compared; unknown keys are cached too (briefly), so a
caller spraying bad keys cannot turn every request into a store query.
"""

from __future__ import annotations

import hmac

from credentials.cache import LocalCache
from credentials.models import Environment
from credentials.secret_keys import hash_secret_key
from credentials.store import ChangeEvent, SqlStore

KNOWN_KEY_TTL = 300.0
UNKNOWN_KEY_TTL = 5.0


class SecretKeyResolver:
    def __init__(self, store: SqlStore, *, ttl: float = KNOWN_KEY_TTL) -> None:
        self._store = store
        self._known: LocalCache[bytes, tuple[bytes, Environment]] = LocalCache(ttl)
        self._unknown: LocalCache[bytes, bool] = LocalCache(UNKNOWN_KEY_TTL, max_entries=10_000)
        self._generation = 0

    def known_environment(self, secret_key: str) -> Environment | None:
        """The environment of a key this process has already seen, without I/O; None
        when the key is not in the cache (unknown, or not looked up yet)."""
        key_hash = hash_secret_key(secret_key)
        cached = self._known.get(key_hash)
        if cached is None:
            return None
        stored_hash, environment = cached
        return environment if hmac.compare_digest(stored_hash, key_hash) else None

    async def environment_for(self, secret_key: str) -> Environment | None:
        key_hash = hash_secret_key(secret_key)
        cached = self._known.get(key_hash)
        if cached is not None:
            stored_hash, environment = cached
            # The dict lookup matched on the hash already; compare in constant time anyway
            # so no code path ever branches on a secret with a short-circuiting `==`.
            return environment if hmac.compare_digest(stored_hash, key_hash) else None
        if self._unknown.get(key_hash):
            return None
        generation = self._generation
        found = await self._store.find_environment_by_key_hash(key_hash)
        if generation != self._generation:
            # A key changed while we read: what we read may predate it, so don't keep it.
            return found
        if found is None:
            self._unknown.put(key_hash, True)
        else:
            self._known.put(key_hash, (key_hash, found))
        return found

    def on_change(self, event: ChangeEvent) -> None:
        if event.kind in ("secret_key", "environment"):
            self.clear()

    def clear(self) -> None:
        self._generation += 1
        self._known.clear()
        self._unknown.clear()
