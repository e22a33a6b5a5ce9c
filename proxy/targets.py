"""Connection → `Target`: everything the proxy needs per connection, cached in process.

All per-connection work (decryption, base URL interpolation, credential header blocks)
happens here on a cache fill, so a warm request does no store query and no template work.
Concurrent misses for one connection share a single read. With Redis, a miss reads
through the shared connection tier (`credentials/connection_cache.py`) before the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from credentials.cache import LocalCache
from credentials.connection_cache import ConnectionCache, ConnectionRecord
from credentials.database import StoreUnavailable
from credentials.injectors import Injection, InjectionError, UnsupportedAuth, build_injection
from credentials.models import Connection, Integration, Provider, RetryRules
from credentials.observe import current as observer
from credentials.providers import Catalogue
from credentials.single_flight import SingleFlight
from credentials.store import ChangeEvent, CredentialsUnreadable, SqlStore
from credentials.templates import UnresolvedTemplate, resolve_base_url, template_values
from proxy import compat
from proxy.context import Target
from proxy.errors import InvalidCredentials, ProviderConfigError, UnknownConnection

TargetKey = tuple[int, str, str]
NO_INJECTION = Injection(headers=())
DueAt = Callable[[Connection, Provider], float]


def _never_due(connection: Connection, provider: Provider) -> float:
    return math.inf


class TargetCache:
    def __init__(
        self,
        store: SqlStore,
        catalogue: Catalogue,
        *,
        ttl: float,
        due_at: DueAt = _never_due,
        shared: ConnectionCache | None = None,
    ) -> None:
        self._store = store
        self._catalogue = catalogue
        self._due_at = due_at
        self._shared = shared
        self._cache: LocalCache[TargetKey, Target] = LocalCache(ttl)
        self._loads: SingleFlight[TargetKey, Target] = SingleFlight("target-load")
        # Bumped by every change: a load that started before a change must not be cached,
        # or a stale read racing an invalidation would outlive it until the TTL.
        self._generation = 0

    def cached(
        self, environment_id: int, provider_config_key: str, connection_id: str
    ) -> Target | None:
        """The target if this process holds a fresh one, without I/O (a cache hit)."""
        target = self._cache.get((environment_id, provider_config_key, connection_id))
        if target is not None:
            observer().cache_lookup("process", "hit")
        return target

    async def get(
        self, environment_id: int, provider_config_key: str, connection_id: str
    ) -> Target:
        key = (environment_id, provider_config_key, connection_id)
        target = self._cache.get(key)
        if target is not None:
            observer().cache_lookup("process", "hit")
            return target
        observer().cache_lookup("process", "miss")
        try:
            return await self._loads.do(key, lambda: self._load(key))
        except StoreUnavailable:
            # The last known target beats a 503 while the store is down; it was never
            # invalidated (a change drops it for good), only due for a re-check.
            target = self._cache.stale(key)
            if target is None:
                raise
            observer().cache_lookup("process", "stale")
            return target

    def clear(self) -> None:
        self._generation += 1
        self._cache.clear()

    def on_change(self, event: ChangeEvent) -> None:
        self._generation += 1
        if event.kind == "connection" and event.provider_config_key and event.connection_id:
            self._cache.discard(
                (event.environment_id, event.provider_config_key, event.connection_id)
            )
        else:
            # Integration, key and environment changes are rare: drop the whole tenant.
            self._cache.discard_matching(lambda key: key[0] == event.environment_id)

    async def _load(self, key: TargetKey) -> Target:
        _, provider_config_key, connection_id = key
        generation = self._generation
        try:
            record = await self._read(key)
        except CredentialsUnreadable:
            raise InvalidCredentials(
                f"The stored credentials of connection {connection_id} cannot be decrypted "
                "with the configured AUTHGATE_ENCRYPTION_KEY"
            ) from None
        if record is None:
            raise UnknownConnection(connection_id, provider_config_key)
        integration, connection = record.integration, record.connection
        provider = self._provider(integration)
        target = build_target(connection, integration, provider, self._due_at(connection, provider))
        if generation == self._generation:
            self._cache.put(key, target)
        return target

    async def _read(self, key: TargetKey) -> ConnectionRecord | None:
        if self._shared is not None:
            return await self._shared.load(key)
        environment_id, provider_config_key, connection_id = key
        observer().store_read()
        integration = await self._store.get_integration(environment_id, provider_config_key)
        if integration is None:
            return None
        connection = await self._store.get_connection(
            environment_id, provider_config_key, connection_id
        )
        return None if connection is None else ConnectionRecord(integration, connection)

    def renewed(self, target: Target, connection: Connection) -> Target:
        """`target` with renewed credentials, also replacing an older cached entry.

        Only an entry that is still there and older is replaced: an absent one was
        discarded by a change event, and the next load reads the store, which is never
        older. (Without Redis another process's renewal sends no event here; replacing
        the entry keeps every later request from renewing again.)
        """
        if connection == target.connection:
            return target
        provider = target.provider
        renewed = build_target(
            connection, target.integration, provider, self._due_at(connection, provider)
        )
        key = (connection.environment_id, connection.provider_config_key, connection.connection_id)
        cached = self._cache.get(key)
        if cached is not None and cached.connection.version < connection.version:
            self._cache.put(key, renewed)
        return renewed

    def _provider(self, integration: Integration) -> Provider:
        provider = self._catalogue.get(integration.provider)
        if provider is None:
            raise ProviderConfigError(
                f"Provider {integration.provider!r} is not in the catalogue",
                code=compat.UNKNOWN_PROVIDER,
            )
        return provider


def build_target(
    connection: Connection,
    integration: Integration,
    provider: Provider,
    refresh_due_at: float = math.inf,
) -> Target:
    injection_problem = None
    try:
        injection = build_injection(connection, provider, integration)
    except UnsupportedAuth as problem:
        raise ProviderConfigError(str(problem), code=compat.UNSUPPORTED_AUTH) from None
    except InjectionError as problem:
        # The message names the field and the problem, never the value. Not raised yet:
        # a renewal before the call may still produce usable credentials.
        injection = NO_INJECTION
        injection_problem = (
            f"The credentials of connection {connection.connection_id} cannot be used: {problem}"
        )
    base_url, base_url_problem = _base_url(connection, integration, provider)
    proxy = provider.proxy
    return Target(
        connection=connection,
        integration=integration,
        provider=provider,
        injection=injection,
        base_url=base_url,
        base_url_problem=base_url_problem,
        retry_rules=proxy.retry if proxy else RetryRules(),
        forward_headers_on_redirect=proxy.forward_headers_on_redirect if proxy else False,
        refresh_due_at=refresh_due_at,
        injection_problem=injection_problem,
    )


def _base_url(
    connection: Connection, integration: Integration, provider: Provider
) -> tuple[str | None, str | None]:
    template = provider.proxy.base_url if provider.proxy else None
    if not template:
        return None, f"Provider {provider.name!r} has no proxy base URL; send Base-Url-Override"
    try:
        return resolve_base_url(template, template_values(connection, integration)), None
    except UnresolvedTemplate as unresolved:
        missing = ", ".join(unresolved.missing)
        return None, (
            f"The base URL of provider {provider.name!r} needs {missing} "
            f"in the connection_config of connection {connection.connection_id}"
        )
