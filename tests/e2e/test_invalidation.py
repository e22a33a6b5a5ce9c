"""A change made through one authgate process is seen at once by another (via Redis)."""

from __future__ import annotations

import asyncio
import uuid

from credentials.secret_keys import hash_secret_key
from credentials.store import ChangeEvent
from tests.e2e.conftest import Authgate, Factory

REDIS_URL = "redis://127.0.0.1:6379/0"


class Arrivals:
    """The change events the second process received, in order."""

    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []
        self._arrived = asyncio.Event()
        self._seen = 0

    def on_change(self, event: ChangeEvent) -> None:
        self.events.append(event)
        self._arrived.set()

    def reset(self) -> None:
        return None

    async def kind(self, kind: str) -> ChangeEvent:
        """The next not yet consumed event of this kind, waiting for it if needed."""
        while True:
            while self._seen < len(self.events):
                event = self.events[self._seen]
                self._seen += 1
                if event.kind == kind:
                    return event
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout=10)


async def _pair(make_authgate: Factory) -> tuple[Authgate, Authgate, Arrivals]:
    prefix = f"authgate-test-{uuid.uuid4().hex}"
    first = await make_authgate(REDIS_URL=REDIS_URL, AUTHGATE_REDIS_PREFIX=prefix)
    second = await make_authgate(share=first)
    for instance in (first, second):
        bridge = instance.core.bridge
        assert bridge is not None
        await asyncio.wait_for(bridge.subscribed.wait(), timeout=10)
    arrivals = Arrivals()
    second.core.changes.subscribe(arrivals.on_change, reset=arrivals.reset)
    await first.integration("oauth", "fake-oauth")
    await first.connection("oauth", "conn-1", {"type": "OAUTH2", "access_token": "token-1"})
    # Consume the set-up's own events, so each test waits for the one its action causes.
    await arrivals.kind("integration")
    await arrivals.kind("connection")
    return first, second, arrivals


async def test_a_new_token_written_elsewhere_is_used_at_once(make_authgate: Factory) -> None:
    first, second, arrivals = await _pair(make_authgate)
    assert (await second.proxy("GET", "/proxy/a")).status == 200  # warms the second's cache
    assert first.provider.last().header("Authorization") == "Bearer token-1"
    await first.connection("oauth", "conn-1", {"type": "OAUTH2", "access_token": "token-2"})
    await arrivals.kind("connection")
    assert (await second.proxy("GET", "/proxy/b")).status == 200
    assert first.provider.last().header("Authorization") == "Bearer token-2"


async def test_a_deleted_connection_is_gone_everywhere(make_authgate: Factory) -> None:
    first, second, arrivals = await _pair(make_authgate)
    assert (await second.proxy("GET", "/proxy/a")).status == 200
    core = first.core
    environment = await core.store.get_environment("dev")
    assert environment is not None
    assert await core.store.delete_connection(environment.id, "oauth", "conn-1")
    await arrivals.kind("connection")
    assert (await second.proxy("GET", "/proxy/b")).status == 404


async def test_a_revoked_key_stops_working_everywhere(make_authgate: Factory) -> None:
    first, second, arrivals = await _pair(make_authgate)
    assert (await second.proxy("GET", "/proxy/a")).status == 200
    assert await first.core.store.revoke_secret_key(hash_secret_key(first.secret_key))
    await arrivals.kind("secret_key")
    response = await second.proxy("GET", "/proxy/b")
    assert response.status == 401
