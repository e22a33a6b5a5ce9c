"""Importing a GitHub App installation: `POST /connections` (§7.3) and the legacy
`POST /connection` (§7.4) with `app_id` and `installation_id`, end to end.

The caller names an installation; authgate mints the installation token through the
app (an RS256 app JWT to `POST /app/installations/{id}/access_tokens`) before storing
anything. The fake GitHub verifies that JWT with the public half of a key generated
here and refuses anything else, and its API accepts only the token it minted, so the
proxy proves what was stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from credentials.expiry import moment_to_epoch
from tests.e2e.conftest import Authgate, Factory
from tests.e2e.management_calls import CONNECTION_FIELDS, assert_error, call
from tests.e2e.mode_fakes import KeyPair, ModeFake, app_only_accounts, rsa_pair, serve

PROVIDERS = """
mode-app:
    display_name: Mode APP
    docs: https://docs.example.com/mode-app
    auth_mode: APP
    token_url: >-
        http://127.0.0.1:${connectionConfig.token_port}/app/installations/${connectionConfig.installation_id}/access_tokens
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/bearer
mode-basic:
    display_name: Mode BASIC
    docs: https://docs.example.com/mode-basic
    auth_mode: BASIC
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/basic
"""
APP_ID = "424242"
INSTALLATION_ID = "31337"
MINT_FAILED = "connection_test_failed"


@pytest.fixture(scope="module")
def app_key() -> KeyPair:
    return rsa_pair()


@pytest.fixture(scope="module")
def other_key() -> KeyPair:
    """A well-formed key GitHub does not know for this app."""
    return rsa_pair()


@pytest.fixture
async def fake(app_key: KeyPair) -> AsyncIterator[tuple[ModeFake, int]]:
    accounts = app_only_accounts(APP_ID, INSTALLATION_ID, app_key.public_pem)
    provider = ModeFake(accounts)
    async with serve(provider.app) as port:
        yield provider, port


def app_client(key: KeyPair) -> dict[str, str]:
    return {
        "type": "APP",
        "app_id": APP_ID,
        "app_link": "https://github.com/apps/authgate-test",
        "private_key": key.private_pem,
    }


@pytest.fixture
async def gate(
    make_authgate: Factory, tmp_path: Path, app_key: KeyPair, other_key: KeyPair
) -> Authgate:
    providers = tmp_path / "app-providers.yaml"
    providers.write_text(PROVIDERS)
    authgate = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
    await authgate.integration("app", "mode-app", credentials=app_client(app_key))
    await authgate.integration("app-other-key", "mode-app", credentials=app_client(other_key))
    await authgate.integration("basic", "mode-basic")
    return authgate


def import_body(port: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider_config_key": "app",
        "connection_id": "c1",
        "credentials": {"type": "APP", "app_id": APP_ID, "installation_id": INSTALLATION_ID},
        "connection_config": {"port": str(port), "token_port": str(port)},
    }
    body.update(overrides)
    return body


async def connection_or_none(gate: Authgate, connection_id: str, key: str = "app") -> Any:
    status, payload = await call(
        gate, "GET", f"/connections/{connection_id}?provider_config_key={key}"
    )
    if status == 404:
        return None
    assert status == 200, payload
    return payload


def assert_safe(payload: Any, *secrets_: str) -> None:
    text = str(payload)
    assert "eyJ" not in text  # no JWT (app or otherwise)
    assert "PRIVATE KEY" not in text
    for secret in secrets_:
        assert secret not in text


# --- POST /connections ---------------------------------------------------------------


async def test_import_mints_the_installation_token_and_the_proxy_uses_it(
    gate: Authgate, fake: tuple[ModeFake, int], app_key: KeyPair
) -> None:
    provider, port = fake
    given = {"port": str(port), "token_port": str(port), "installation_id": "1", "org": "acme"}

    status, payload = await call(
        gate, "POST", "/connections", body=import_body(port, connection_config=given)
    )

    assert status == 201, payload
    assert provider.refusals == []  # the app JWT verified; the installation was the body's
    (minted,) = provider.issued
    assert set(payload) == CONNECTION_FIELDS
    assert payload["connection_config"] == {
        **given,
        "installation_id": INSTALLATION_ID,
        "app_id": APP_ID,
    }
    credentials = payload["credentials"]
    assert credentials["type"] == "APP"
    assert credentials["access_token"] == minted.token
    assert credentials["raw"]["token"] == minted.token
    expires_at = moment_to_epoch(credentials["expires_at"])
    assert expires_at is not None
    assert abs(expires_at - minted.expires_at) < 2
    claims = jwt.decode(
        credentials["jwtToken"], app_key.public_pem, algorithms=["RS256"], issuer=APP_ID
    )
    assert claims["exp"] - claims["iat"] <= 600

    stored = await connection_or_none(gate, "c1")
    assert stored["credentials"]["access_token"] == minted.token
    response = await gate.proxy(
        "GET", "/proxy/repos", connection_id="c1", provider_config_key="app"
    )
    assert response.status == 200, await response.text()
    assert [served.credential for served in provider.served] == [minted.token]
    assert provider.token_calls == {"app": 1}  # the proxy used the minted token as stored


async def test_reimport_replaces_the_installation_token(
    gate: Authgate, fake: tuple[ModeFake, int]
) -> None:
    provider, port = fake
    for _ in range(2):
        status, payload = await call(gate, "POST", "/connections", body=import_body(port))
        assert status == 201, payload

    first, second = provider.issued
    stored = await connection_or_none(gate, "c1")
    assert stored["credentials"]["access_token"] == second.token != first.token


@pytest.mark.parametrize(
    ("key", "installation_id", "refusal"),
    [
        ("app-other-key", INSTALLATION_ID, "app: app JWT: InvalidSignatureError"),
        ("app", "999", "app: wrong installation"),
    ],
    ids=["key GitHub does not know", "unknown installation"],
)
async def test_a_refused_mint_is_a_400_and_stores_nothing(
    gate: Authgate,
    fake: tuple[ModeFake, int],
    other_key: KeyPair,
    key: str,
    installation_id: str,
    refusal: str,
) -> None:
    provider, port = fake
    credentials = {"type": "APP", "app_id": APP_ID, "installation_id": installation_id}
    body = import_body(port, provider_config_key=key, credentials=credentials)

    status, payload = await call(gate, "POST", "/connections", body=body)

    assert_error(status, payload, 400, MINT_FAILED)
    assert "provider_4xx" in payload["error"]["message"]
    assert "HTTP 401" in payload["error"]["message"]
    assert_safe(payload, other_key.private_pem)
    assert provider.refusals == [refusal]
    assert provider.issued == []
    assert await connection_or_none(gate, "c1", key) is None
    _, listed = await call(gate, "GET", "/connections")
    assert listed["connections"] == []


async def test_a_refused_reimport_keeps_the_stored_connection(
    gate: Authgate, fake: tuple[ModeFake, int]
) -> None:
    _, port = fake
    status, _ = await call(gate, "POST", "/connections", body=import_body(port))
    assert status == 201
    before = await connection_or_none(gate, "c1")
    wrong = {"type": "APP", "app_id": APP_ID, "installation_id": "999"}

    status, payload = await call(
        gate, "POST", "/connections", body=import_body(port, credentials=wrong)
    )

    assert_error(status, payload, 400, MINT_FAILED)
    after = await connection_or_none(gate, "c1")
    assert after["credentials"] == before["credentials"]
    assert after["connection_config"]["installation_id"] == INSTALLATION_ID
    assert after["updated_at"] == before["updated_at"]


async def test_an_unreachable_token_endpoint_is_a_400_and_stores_nothing(
    gate: Authgate, fake: tuple[ModeFake, int]
) -> None:
    _, port = fake
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused.
    config = {"port": str(port), "token_port": "9"}

    status, payload = await call(
        gate, "POST", "/connections", body=import_body(port, connection_config=config)
    )

    assert_error(status, payload, 400, MINT_FAILED)
    assert "network" in payload["error"]["message"]
    assert await connection_or_none(gate, "c1") is None


BAD_APP_BODIES: list[tuple[str, dict[str, Any], list[str], str]] = [
    (
        "no installation_id",
        {"type": "APP", "app_id": APP_ID},
        ["credentials", "installation_id"],
        "invalid_type",
    ),
    (
        "no app_id",
        {"type": "APP", "installation_id": INSTALLATION_ID},
        ["credentials", "app_id"],
        "invalid_type",
    ),
    (
        "empty installation_id",
        {"type": "APP", "app_id": APP_ID, "installation_id": ""},
        ["credentials", "installation_id"],
        "too_small",
    ),
    (
        "empty app_id",
        {"type": "APP", "app_id": "", "installation_id": INSTALLATION_ID},
        ["credentials", "app_id"],
        "too_small",
    ),
    (
        "numeric installation_id",
        {"type": "APP", "app_id": APP_ID, "installation_id": 31337},
        ["credentials", "installation_id"],
        "invalid_type",
    ),
    (
        "null app_id",
        {"type": "APP", "app_id": None, "installation_id": INSTALLATION_ID},
        ["credentials", "app_id"],
        "invalid_type",
    ),
    (
        "a token is not accepted",
        {
            "type": "APP",
            "app_id": APP_ID,
            "installation_id": INSTALLATION_ID,
            "access_token": "ghs_caller_supplied",
        },
        ["credentials"],
        "unrecognized_keys",
    ),
    (
        "CUSTOM stays refused",
        {"type": "CUSTOM", "app_id": APP_ID, "installation_id": INSTALLATION_ID},
        ["credentials", "type"],
        "invalid_union",
    ),
]


@pytest.mark.parametrize(
    ("credentials", "path", "code"),
    [case[1:] for case in BAD_APP_BODIES],
    ids=[case[0] for case in BAD_APP_BODIES],
)
async def test_bad_app_bodies_name_the_field_and_mint_nothing(
    gate: Authgate,
    fake: tuple[ModeFake, int],
    credentials: dict[str, Any],
    path: list[str],
    code: str,
) -> None:
    provider, port = fake

    status, payload = await call(
        gate, "POST", "/connections", body=import_body(port, credentials=credentials)
    )

    assert_error(status, payload, 400, "invalid_body")
    issues = [issue for issue in payload["error"]["errors"] if issue["path"] == path]
    assert issues, payload
    assert code in {issue["code"] for issue in issues}
    assert provider.token_calls == {}
    assert await connection_or_none(gate, "c1") is None


async def test_app_credentials_for_another_auth_mode_are_refused(
    gate: Authgate, fake: tuple[ModeFake, int]
) -> None:
    provider, port = fake

    status, payload = await call(
        gate, "POST", "/connections", body=import_body(port, provider_config_key="basic")
    )

    assert_error(status, payload, 400, "invalid_body", "Provider BASIC does not support APP auth")
    assert provider.token_calls == {}


# --- POST /connection (deprecated) ---------------------------------------------------


def legacy_body(port: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider_config_key": "app",
        "connection_id": "c1",
        "app_id": APP_ID,
        "installation_id": INSTALLATION_ID,
        "connection_config": {"port": str(port), "token_port": str(port)},
    }
    body.update(overrides)
    return body


async def test_legacy_import_mints_too(gate: Authgate, fake: tuple[ModeFake, int]) -> None:
    provider, port = fake
    body = legacy_body(port)

    status, payload = await call(gate, "POST", "/connection", body=body)

    assert (status, payload) == (201, body)
    (minted,) = provider.issued
    stored = await connection_or_none(gate, "c1")
    assert stored["credentials"]["access_token"] == minted.token
    assert stored["connection_config"]["installation_id"] == INSTALLATION_ID
    response = await gate.proxy(
        "GET", "/proxy/repos", connection_id="c1", provider_config_key="app"
    )
    assert response.status == 200, await response.text()


async def test_legacy_import_failures(gate: Authgate, fake: tuple[ModeFake, int]) -> None:
    provider, port = fake
    missing = legacy_body(port)
    del missing["installation_id"]

    status, payload = await call(gate, "POST", "/connection", body=missing)
    assert_error(status, payload, 400, "missing_installation_id")

    refused = legacy_body(port, installation_id="999")
    status, payload = await call(gate, "POST", "/connection", body=refused)
    assert_error(status, payload, 400, MINT_FAILED)
    assert_safe(payload)
    assert provider.refusals == ["app: wrong installation"]
    assert await connection_or_none(gate, "c1") is None
