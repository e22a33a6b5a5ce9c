"""Every auth mode end to end: caller → authgate (serve) → a fake provider, on real sockets.

For the modes authgate renews itself (OAUTH2_CC, APP, JWT, TWO_STEP) the fake's token
endpoints accept only a correct token request, and its APIs accept only a credential the
fake issued (or, for JWT, one whose signature and claims verify), so a request sent with
stale, missing or wrongly built credentials fails visibly. BASIC and API_KEY prove the
exact credential arrives and that nothing tries to renew them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from credentials.expiry import iso_expiry, stored_expiry
from credentials.models import Connection
from tests.e2e.conftest import Authgate, Factory, json_of
from tests.e2e.mode_fakes import (
    CC_AUDIENCE,
    JWT_AUDIENCE,
    JWT_ISSUER,
    JWT_KEY_ID,
    Accounts,
    KeyPair,
    ModeFake,
    basic_header,
    rsa_pair,
    serve,
)

PROVIDERS = """
mode-cc:
    display_name: Mode OAUTH2_CC
    docs: https://docs.example.com/mode-cc
    auth_mode: OAUTH2_CC
    token_url: http://127.0.0.1:${connectionConfig.token_port}/cc/token
    token_request_auth_method: basic
    token_params:
        audience: @CC_AUDIENCE@
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/bearer
mode-cc-brief:
    display_name: Mode OAUTH2_CC, renewed one second before expiry
    docs: https://docs.example.com/mode-cc-brief
    auth_mode: OAUTH2_CC
    token_url: http://127.0.0.1:${connectionConfig.token_port}/cc/token
    token_request_auth_method: basic
    token_expiration_buffer: 1
    token_params:
        audience: @CC_AUDIENCE@
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/bearer
mode-app:
    display_name: Mode APP
    docs: https://docs.example.com/mode-app
    auth_mode: APP
    token_url: >-
        http://127.0.0.1:${connectionConfig.token_port}/app/installations/${connectionConfig.installation_id}/access_tokens
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/bearer
mode-jwt-hs:
    display_name: Mode JWT (HMAC)
    docs: https://docs.example.com/mode-jwt-hs
    auth_mode: JWT
    signature:
        protocol: HMAC
        hmac_secret_encoding: hex
    token:
        signing_key: ${credentials.privateKey.secret}
        expires_in_ms: 3600000
        header:
            alg: HS256
            typ: JWT
            kid: ${credentials.privateKey.id}
        payload:
            aud: @JWT_AUDIENCE@
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/jwt-hs
mode-jwt-rs:
    display_name: Mode JWT (RSA)
    docs: https://docs.example.com/mode-jwt-rs
    auth_mode: JWT
    signature:
        protocol: RSA
    token:
        signing_key: ${credentials.private_key}
        expires_in_ms: 3600000
        header:
            alg: RS256
            typ: JWT
            kid: ${credentials.key_id}
        payload:
            aud: @JWT_AUDIENCE@
            iss: ${credentials.issuer}
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/jwt-rs
mode-two-step:
    display_name: Mode TWO_STEP
    docs: https://docs.example.com/mode-two-step
    auth_mode: TWO_STEP
    token_url: http://127.0.0.1:${connectionConfig.token_port}/two-step/${credentials.tenant}/login
    token_headers:
        x-api-key: ${credentials.loginKey}
    token_params:
        username: ${credentials.username}
        password: ${credentials.password}
    body_format: json
    token_response:
        token: data.token
        token_expiration: data.expires_in
        token_expiration_strategy: expireIn
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/bearer
mode-basic:
    display_name: Mode BASIC
    docs: https://docs.example.com/mode-basic
    auth_mode: BASIC
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/basic
mode-key:
    display_name: Mode API_KEY
    docs: https://docs.example.com/mode-key
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/key
        headers:
            x-api-key: ${apiKey}
        query:
            key: ${apiKey}
""".replace("@CC_AUDIENCE@", CC_AUDIENCE).replace("@JWT_AUDIENCE@", JWT_AUDIENCE)

APP_ID = "424242"
INSTALLATION_ID = "31337"
AN_HOUR_AGO = time.time() - 3600
LONG_AGO = iso_expiry(AN_HOUR_AGO)
BRIEF_LIFETIME = 3  # seconds; mode-cc-brief renews from one second before expiry
BRIEF_MARGIN = 1.0
POLL_DEADLINE = 15.0


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_key() -> KeyPair:
    return rsa_pair()


@pytest.fixture(scope="module")
def jwt_key() -> KeyPair:
    return rsa_pair()


@pytest.fixture
def accounts(app_key: KeyPair, jwt_key: KeyPair) -> Accounts:
    return Accounts(
        client_id="cc-client",
        client_secret=secrets.token_urlsafe(16),
        app_id=APP_ID,
        installation_id=INSTALLATION_ID,
        app_public_key=app_key.public_pem,
        tenant="acme",
        username="alice",
        password="p@ss word&more",
        login_key=secrets.token_urlsafe(12),
        basic_username="bob",
        basic_password="pa:ss word",
        api_key=secrets.token_urlsafe(16),
        jwt_hmac_secret=secrets.token_bytes(32),
        jwt_public_key=jwt_key.public_pem,
    )


@pytest.fixture
async def fake(accounts: Accounts) -> AsyncIterator[tuple[ModeFake, int]]:
    provider = ModeFake(accounts)
    async with serve(provider.app) as port:
        yield provider, port


@pytest.fixture
async def gate(make_authgate: Factory, tmp_path: Path, app_key: KeyPair) -> Authgate:
    providers = tmp_path / "mode-providers.yaml"
    providers.write_text(PROVIDERS)
    authgate = await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))
    app_client = {
        "type": "APP",
        "app_id": APP_ID,
        "app_link": "https://github.com/apps/authgate-test",
        "private_key": app_key.private_pem,
    }
    await authgate.integration("app", "mode-app", credentials=app_client)
    for key in ("cc", "cc-brief", "jwt-hs", "jwt-rs", "two-step", "basic", "key"):
        await authgate.integration(key, f"mode-{key}")
    return authgate


# --- helpers -------------------------------------------------------------------------


def config(port: int, **extra: str) -> dict[str, str]:
    """The fake serves both the token endpoints and the APIs."""
    return {"port": str(port), "token_port": str(port), **extra}


async def seed(
    gate: Authgate, key: str, connection_id: str, credentials: dict[str, Any], **settings: str
) -> Connection:
    """Create a connection straight in the running app's own store.

    POST /connections refuses JWT and TWO_STEP credentials (as Nango's importer does), and
    an APP import always mints a fresh token; so expired or token-less credentials of
    those modes, which the proxy must renew, can only be put in place through the store
    the app itself uses. The store's change event reaches the app's caches as for any
    other write.
    """
    core = gate.core
    environment = await core.keys.environment_for(gate.secret_key)
    assert environment is not None
    integration = await core.store.get_integration(environment.id, key)
    assert integration is not None
    return await core.store.upsert_connection(
        environment.id,
        integration,
        connection_id=connection_id,
        credentials=credentials,
        connection_config=settings,
    )


async def stored(gate: Authgate, key: str, connection_id: str) -> Connection:
    core = gate.core
    environment = await core.keys.environment_for(gate.secret_key)
    assert environment is not None
    connection = await core.store.get_connection(environment.id, key, connection_id)
    assert connection is not None
    return connection


async def call(gate: Authgate, key: str, connection_id: str, path: str = "/items") -> Any:
    """One proxied GET that must succeed; returns the fake API's answer."""
    response = await gate.proxy(
        "GET", "/proxy" + path, connection_id=connection_id, provider_config_key=key
    )
    body = await json_of(response)
    assert response.status == 200, body
    return body


def credentials_of(provider: ModeFake) -> list[str]:
    return [served.credential for served in provider.served]


# --- OAUTH2_CC -----------------------------------------------------------------------


async def import_cc(gate: Authgate, key: str, accounts: Accounts, port: int) -> None:
    credentials = {
        "type": "OAUTH2_CC",
        "token": "cc-token-the-provider-never-issued",
        "client_id": accounts.client_id,
        "client_secret": accounts.client_secret,
        "expires_at": LONG_AGO,
    }
    settings = config(port, oauth_scopes="read,write")
    await gate.connection(key, "c1", credentials, connection_config=settings)


async def test_client_credentials_expired_token_is_renewed_before_the_call(
    gate: Authgate, fake: tuple[ModeFake, int], accounts: Accounts
) -> None:
    provider, port = fake
    await import_cc(gate, "cc", accounts, port)

    first = await call(gate, "cc", "c1")
    second = await call(gate, "cc", "c1", "/items?page=2")

    assert provider.refusals == []
    assert provider.unauthorized == 0  # the expired token was never sent
    assert provider.token_calls == {"cc": 1}  # the second request reused the new token
    (issued,) = provider.issued
    assert first["kind"] == second["kind"] == "cc"
    assert credentials_of(provider) == [issued.token, issued.token]
    kept = (await stored(gate, "cc", "c1")).credentials
    assert kept["token"] == issued.token
    assert (kept["client_id"], kept["client_secret"]) == (
        accounts.client_id,
        accounts.client_secret,
    )
    expiry = stored_expiry(kept)
    assert expiry is not None
    assert abs(expiry - issued.expires_at) < 5


async def test_concurrent_requests_share_one_client_credentials_grant(
    gate: Authgate, fake: tuple[ModeFake, int], accounts: Accounts
) -> None:
    provider, port = fake
    await import_cc(gate, "cc", accounts, port)

    await asyncio.gather(*(call(gate, "cc", "c1") for _ in range(8)))

    assert provider.refusals == []
    assert provider.unauthorized == 0
    assert provider.token_calls == {"cc": 1}
    (issued,) = provider.issued
    assert credentials_of(provider) == [issued.token] * 8


async def test_client_credentials_token_is_cached_until_it_is_due(
    gate: Authgate, fake: tuple[ModeFake, int], accounts: Accounts
) -> None:
    provider, port = fake
    provider.lifetimes["cc"] = BRIEF_LIFETIME
    await import_cc(gate, "cc-brief", accounts, port)

    await call(gate, "cc-brief", "c1")
    await call(gate, "cc-brief", "c1")
    deadline = time.monotonic() + POLL_DEADLINE
    while provider.token_calls["cc"] < 2 and time.monotonic() < deadline:
        await call(gate, "cc-brief", "c1")
        await asyncio.sleep(0.05)  # poll interval; the loop condition is the check

    assert provider.refusals == []
    assert provider.token_calls == {"cc": 2}
    first, renewed = provider.issued
    used = credentials_of(provider)
    assert used.count(first.token) >= 2
    assert used[-1] == renewed.token
    # Renewed ahead of expiry (the fake refused nothing), but not before it was due:
    # the stored expiry is the first token's, renewal starts `margin` (+10% jitter) before.
    assert provider.unauthorized == 0
    earliest_due = first.issued_at + BRIEF_LIFETIME - BRIEF_MARGIN * 1.1
    assert renewed.issued_at >= earliest_due - 0.25
    assert renewed.issued_at < first.expires_at


async def test_client_credentials_token_revoked_upstream_is_replaced_after_its_401(
    gate: Authgate, fake: tuple[ModeFake, int], accounts: Accounts
) -> None:
    provider, port = fake
    await import_cc(gate, "cc", accounts, port)
    await call(gate, "cc", "c1")
    provider.revoke("cc")

    await call(gate, "cc", "c1")

    assert provider.refusals == []
    assert provider.unauthorized == 1  # the revoked token once, then the replay
    assert provider.token_calls == {"cc": 2}
    assert credentials_of(provider) == [token.token for token in provider.issued]


# --- APP -----------------------------------------------------------------------------


async def test_app_expired_installation_token_is_minted_before_the_call(
    gate: Authgate, fake: tuple[ModeFake, int], app_key: KeyPair
) -> None:
    provider, port = fake
    expired = {"type": "APP", "access_token": "ghs-never-issued", "expires_at": LONG_AGO}
    settings = config(port, installation_id=INSTALLATION_ID, app_id=APP_ID)
    await seed(gate, "app", "c1", expired, **settings)

    await call(gate, "app", "c1")
    await call(gate, "app", "c1")

    assert provider.refusals == []  # the app JWT verified with the app's public key
    assert provider.unauthorized == 0
    assert provider.token_calls == {"app": 1}
    (issued,) = provider.issued
    assert credentials_of(provider) == [issued.token, issued.token]
    kept = await stored(gate, "app", "c1")
    assert kept.credentials["access_token"] == issued.token
    claims = jwt.decode(
        kept.credentials["jwtToken"], app_key.public_pem, algorithms=["RS256"], issuer=APP_ID
    )
    assert claims["exp"] - claims["iat"] <= 600
    assert kept.connection_config == settings  # the app JWT is not copied there


# --- JWT -----------------------------------------------------------------------------


def jwt_credentials(key: str, accounts: Accounts, jwt_pair: KeyPair) -> dict[str, Any]:
    if key == "jwt-hs":
        secret = {"id": JWT_KEY_ID, "secret": accounts.jwt_hmac_secret.hex()}
        return {"type": "JWT", "privateKey": secret}
    return {
        "type": "JWT",
        "private_key": jwt_pair.private_pem,
        "key_id": JWT_KEY_ID,
        "issuer": JWT_ISSUER,
    }


@pytest.mark.parametrize("key", ["jwt-hs", "jwt-rs"])
async def test_jwt_expired_token_is_signed_again_before_the_call(
    gate: Authgate,
    fake: tuple[ModeFake, int],
    accounts: Accounts,
    jwt_key: KeyPair,
    key: str,
) -> None:
    provider, port = fake
    expired = {
        **jwt_credentials(key, accounts, jwt_key),
        "token": "not.a.jwt",
        "expires_at": LONG_AGO,
    }
    before = await seed(gate, key, "c1", expired, **config(port))

    first = await call(gate, key, "c1")
    await call(gate, key, "c1")

    assert provider.unauthorized == 0  # signature, header and claims verified
    token = credentials_of(provider)[0]
    assert credentials_of(provider) == [token, token]  # the second reused the first
    assert first["claims"]["exp"] - first["claims"]["iat"] == 3600
    kept = await stored(gate, key, "c1")
    assert kept.credentials["token"] == token
    assert kept.version == before.version + 1  # signed once, not per request
    assert provider.token_calls == {}


# --- TWO_STEP ------------------------------------------------------------------------


def two_step_credentials(accounts: Accounts) -> dict[str, Any]:
    return {
        "type": "TWO_STEP",
        "tenant": accounts.tenant,
        "username": accounts.username,
        "password": accounts.password,
        "loginKey": accounts.login_key,
    }


async def test_two_step_expired_token_logs_in_again_before_the_call(
    gate: Authgate, fake: tuple[ModeFake, int], accounts: Accounts
) -> None:
    provider, port = fake
    expired = {**two_step_credentials(accounts), "token": "sess-stale", "expires_at": LONG_AGO}
    await seed(gate, "two-step", "c1", expired, **config(port))

    await call(gate, "two-step", "c1")
    await call(gate, "two-step", "c1")

    assert provider.refusals == []  # tenant, api key header and JSON credentials as configured
    assert provider.unauthorized == 0
    assert provider.token_calls == {"two_step": 1}
    (issued,) = provider.issued
    assert credentials_of(provider) == [issued.token, issued.token]
    kept = (await stored(gate, "two-step", "c1")).credentials
    assert kept == {
        **two_step_credentials(accounts),
        "token": issued.token,
        "expires_at": kept["expires_at"],
        "raw": {"data": {"token": issued.token, "expires_in": 3600}},
    }


# --- credentials without a token yet -------------------------------------------------


def tokenless(key: str, accounts: Accounts, jwt_pair: KeyPair) -> dict[str, Any]:
    """Credentials as they stand before their first token: everything needed to get one."""
    if key == "app":
        return {"type": "APP"}
    if key == "two-step":
        return two_step_credentials(accounts)
    if key == "cc":
        return {
            "type": "OAUTH2_CC",
            "client_id": accounts.client_id,
            "client_secret": accounts.client_secret,
        }
    return jwt_credentials(key, accounts, jwt_pair)


@pytest.mark.parametrize("key", ["cc", "app", "jwt-hs", "two-step"])
async def test_credentials_without_a_token_get_one_before_the_call(
    gate: Authgate,
    fake: tuple[ModeFake, int],
    accounts: Accounts,
    jwt_key: KeyPair,
    key: str,
) -> None:
    provider, port = fake
    extra = {"installation_id": INSTALLATION_ID, "app_id": APP_ID} if key == "app" else {}
    settings = config(port, oauth_scopes="read,write", **extra)
    await seed(gate, key, "c1", tokenless(key, accounts, jwt_key), **settings)

    await call(gate, key, "c1")
    await call(gate, key, "c1")

    assert provider.refusals == []
    assert provider.unauthorized == 0
    token = credentials_of(provider)[0]
    assert credentials_of(provider) == [token, token]
    assert sum(provider.token_calls.values()) == (0 if key.startswith("jwt") else 1)


# --- BASIC and API_KEY ---------------------------------------------------------------


async def test_basic_credentials_arrive_exactly_and_are_never_renewed(
    gate: Authgate, fake: tuple[ModeFake, int], accounts: Accounts
) -> None:
    provider, port = fake
    credentials = {
        "type": "BASIC",
        "username": accounts.basic_username,
        "password": accounts.basic_password,
    }
    await gate.connection("basic", "c1", credentials, connection_config=config(port))

    await call(gate, "basic", "c1")
    await call(gate, "basic", "c1")

    expected = basic_header(accounts.basic_username, accounts.basic_password)
    assert credentials_of(provider) == [expected, expected]
    assert provider.unauthorized == 0
    assert provider.token_calls == {}
    assert (await stored(gate, "basic", "c1")).version == 1


async def test_api_key_arrives_in_header_and_query_and_is_never_renewed(
    gate: Authgate, fake: tuple[ModeFake, int], accounts: Accounts
) -> None:
    provider, port = fake
    credentials = {"type": "API_KEY", "apiKey": accounts.api_key}
    await gate.connection("key", "c1", credentials, connection_config=config(port))

    answer = await call(gate, "key", "c1", "/items?page=2")
    await call(gate, "key", "c1")

    assert answer["path"] == "/key/items"
    assert credentials_of(provider) == [accounts.api_key, accounts.api_key]
    assert provider.unauthorized == 0
    assert provider.token_calls == {}
    assert (await stored(gate, "key", "c1")).version == 1
