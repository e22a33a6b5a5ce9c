"""The per-host bound of the upstream pool (`AUTHGATE_UPSTREAM_CONNECTIONS_PER_HOST`):
requests beyond it wait their turn instead of opening more connections to the provider."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from aiohttp import web

from credentials.tasks import spawn
from tests.e2e.conftest import Factory
from tests.e2e.test_metrics import API_KEY, PROVIDERS, STATIC, key, scrape

CALLS = 3


async def test_requests_beyond_the_bound_wait_for_a_pooled_connection(
    make_authgate: Factory, tmp_path: Path
) -> None:
    providers = tmp_path / "pool-providers.yaml"
    providers.write_text(PROVIDERS)
    gate = await make_authgate(
        AUTHGATE_PROVIDERS_FILE=str(providers), AUTHGATE_UPSTREAM_CONNECTIONS_PER_HOST="1"
    )
    await gate.integration(STATIC, "fake-static")
    connection_id = f"pool-{uuid.uuid4().hex[:10]}"
    await gate.connection(STATIC, connection_id, {"type": "API_KEY", "apiKey": API_KEY})
    arrivals: list[asyncio.Event] = [asyncio.Event() for _ in range(CALLS)]
    releases: list[asyncio.Event] = [asyncio.Event() for _ in range(CALLS)]
    peers: set[tuple[str, int]] = set()
    seen = 0

    async def held(request: web.Request) -> web.StreamResponse:
        nonlocal seen
        index, seen = seen, seen + 1
        peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        arrivals[index].set()
        await releases[index].wait()
        return web.Response(body=str(index).encode())

    gate.provider.respond("/held", held)
    calls = [
        spawn(
            gate.proxy(
                "GET", "/proxy/held", connection_id=connection_id, provider_config_key=STATIC
            ),
            name=f"held-{number}",
        )
        for number in range(CALLS)
    ]
    for index in range(CALLS):
        await arrivals[index].wait()
        # Only the one holding the connection has reached the provider.
        assert seen == index + 1
        samples = await scrape(gate)
        assert samples[key("authgate_upstream_pool_limit")] == 1
        assert samples[key("authgate_upstream_pool_connections", state="in_use")] == 1
        releases[index].set()
    bodies = sorted([await (await call).read() for call in calls])
    assert bodies == [b"0", b"1", b"2"]
    assert len(peers) == 1, "every call should have reused the one pooled connection"
