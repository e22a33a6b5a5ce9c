"""Token refresh as a caller sees it: through the proxy and `GET /connections/{id}`.

The provider is `TokenProvider` on a real socket: it rotates refresh tokens, refuses a
reused one, and its API accepts only access tokens it issued and that have not expired,
so a request sent with stale credentials fails visibly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from credentials.expiry import iso_expiry
from tests.e2e.conftest import Authgate, Factory, json_of
from tests.e2e.token_provider import TokenProvider, serve_token_provider

PROVIDERS = """
fake-rotating:
    display_name: Fake rotating OAuth
    docs: https://docs.example.com/fake-rotating
    auth_mode: OAUTH2
    token_url: http://127.0.0.1:${connectionConfig.token_port}/oauth/token
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
"""
CLIENT = {"type": "OAUTH2", "client_id": "rot-client", "client_secret": "rot-secret"}
IN_AN_HOUR = 3600.0


@pytest.fixture
async def tokens() -> AsyncIterator[tuple[TokenProvider, int]]:
    provider = TokenProvider(client_id=CLIENT["client_id"], client_secret=CLIENT["client_secret"])
    async with serve_token_provider(provider) as port:
        yield provider, port


@pytest.fixture
async def gate(make_authgate: Factory, tmp_path: Path) -> Authgate:
    providers = tmp_path / "rotating-providers.yaml"
    providers.write_text(PROVIDERS)
    authgate = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
    await authgate.integration("rot", "fake-rotating", credentials=CLIENT)
    return authgate


async def connect(
    gate: Authgate,
    tokens: tuple[TokenProvider, int],
    name: str,
    *,
    expires_in: float = -60.0,
    api_port: int | None = None,
    refresh_token: str | None = None,
) -> None:
    provider, port = tokens
    seeded = provider.seed(name)
    credentials = {
        "type": "OAUTH2",
        "access_token": seeded.access_token,
        "refresh_token": refresh_token or seeded.refresh_token,
        "expires_at": iso_expiry(time.time() + expires_in),
    }
    config = {"port": str(api_port or port), "token_port": str(port)}
    await gate.connection("rot", name, credentials, connection_config=config)


async def test_an_expired_token_is_renewed_before_the_call(
    gate: Authgate, tokens: tuple[TokenProvider, int]
) -> None:
    provider, _ = tokens
    await connect(gate, tokens, "c1")

    first = await gate.proxy("GET", "/proxy/api/me", connection_id="c1", provider_config_key="rot")
    second = await gate.proxy("GET", "/proxy/api/me", connection_id="c1", provider_config_key="rot")

    assert first.status == 200, await first.text()
    assert (await json_of(first))["connection"] == "c1"
    assert second.status == 200
    assert provider.successful_refreshes() == {"c1": 1}


async def test_a_provider_401_renews_once_and_replays_the_body(
    gate: Authgate, tokens: tuple[TokenProvider, int]
) -> None:
    provider, _ = tokens
    # Stored as valid for an hour, but the provider no longer accepts it.
    await connect(gate, tokens, "c1", expires_in=IN_AN_HOUR)

    response = await gate.proxy(
        "POST",
        "/proxy/api/items",
        connection_id="c1",
        provider_config_key="rot",
        headers={"Content-Type": "application/json"},
        data=b'{"name": "replayed"}',
    )

    assert response.status == 200, await response.text()
    answer = await json_of(response)
    assert answer["method"] == "POST"
    assert answer["body"] == '{"name": "replayed"}'
    assert provider.successful_refreshes() == {"c1": 1}
    assert provider.api.unauthorized == 1


async def test_a_401_after_the_renewal_goes_back_to_the_caller_without_a_loop(
    gate: Authgate, tokens: tuple[TokenProvider, int]
) -> None:
    provider, _ = tokens

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "nope"}, status=401)

    gate.provider.respond("/refuses", refuse)
    await connect(gate, tokens, "c1", expires_in=IN_AN_HOUR, api_port=gate.provider_port)

    response = await gate.proxy(
        "GET", "/proxy/refuses", connection_id="c1", provider_config_key="rot"
    )

    assert response.status == 401
    assert "X-Authgate-Error" not in response.headers  # the provider's answer, unchanged
    assert len(gate.provider.received) == 2  # the call and one replay
    assert provider.successful_refreshes() == {"c1": 1}
    first, replay = gate.provider.received
    assert first.header("authorization") != replay.header("authorization")


async def test_a_refused_refresh_is_invalid_credentials_and_fails_fast_after(
    gate: Authgate, tokens: tuple[TokenProvider, int]
) -> None:
    provider, _ = tokens
    await connect(gate, tokens, "c1", refresh_token="rt-the-provider-never-issued")

    first = await gate.proxy("GET", "/proxy/api/me", connection_id="c1", provider_config_key="rot")
    second = await gate.proxy("GET", "/proxy/api/me", connection_id="c1", provider_config_key="rot")

    assert first.status == 401
    assert first.headers["X-Authgate-Error"] == "invalid_credentials"
    body = await json_of(first)
    assert body["error"]["code"] == "invalid_credentials"
    assert "invalid_grant" in body["error"]["message"]
    assert "rt-the-provider-never-issued" not in await first.text()
    assert second.status == 401
    assert provider.unknown_refresh_tokens == 1  # the second request made no token call


async def test_get_connection_renews_when_due_and_on_force_refresh(
    gate: Authgate, tokens: tuple[TokenProvider, int]
) -> None:
    provider, _ = tokens
    await connect(gate, tokens, "c1")

    due = await gate.session.get(
        gate.url.with_path("/connections/c1").with_query(
            provider_config_key="rot", refresh_token="true"
        ),
        headers=gate.auth(),
    )
    renewed = (await json_of(due))["credentials"]
    forced = await gate.session.get(
        gate.url.with_path("/connections/c1").with_query(
            provider_config_key="rot", force_refresh="true", refresh_token="true"
        ),
        headers=gate.auth(),
    )
    again = (await json_of(forced))["credentials"]

    assert due.status == 200
    assert forced.status == 200
    assert provider.successful_refreshes() == {"c1": 2}
    assert renewed["access_token"] != again["access_token"]
    assert renewed["refresh_token"] != again["refresh_token"]
    assert provider.ledgers["c1"].current_refresh_token == again["refresh_token"]


async def test_get_connection_reports_a_refused_refresh_with_the_connection(
    gate: Authgate, tokens: tuple[TokenProvider, int]
) -> None:
    await connect(gate, tokens, "c1", refresh_token="rt-the-provider-never-issued")

    response = await gate.session.get(
        gate.url.with_path("/connections/c1").with_query(provider_config_key="rot"),
        headers=gate.auth(),
    )

    body = await json_of(response)
    assert response.status in (400, 424)
    assert body["error"]["code"] == "invalid_credentials"
    assert body["error"]["payload"]["connection"]["connection_id"] == "c1"
    assert body["error"]["payload"]["connection"]["credentials"] == {}
