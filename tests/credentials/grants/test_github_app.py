"""APP: a fake GitHub that verifies the app JWT with the app's public key."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest
from aiohttp import web

from credentials.grants import GrantError, TokenHttp, renew
from tests.credentials.grants.fakes import (
    Handler,
    Received,
    TokenServer,
    grant_request,
    provider,
    rsa_key,
)

APP_ID = "123456"
STORED = {"type": "APP", "access_token": "ghs_old", "expires_at": "2026-01-01T00:00:00.000Z"}
ANSWER = {
    "token": "ghs_new_installation_token",
    "expires_at": "2030-01-01T01:00:00Z",
    "permissions": {"contents": "read"},
    "repository_selection": "all",
}


def fake_github(public_pem: str, now: float, seen_claims: list[dict[str, Any]]) -> Handler:
    async def handle(request: web.Request, received: Received) -> web.StreamResponse:
        scheme, _, token = received.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            return web.json_response({"message": "Requires authentication"}, status=401)
        try:
            claims = jwt.decode(
                token, public_pem, algorithms=["RS256"], options={"require": ["iat", "exp", "iss"]}
            )
        except jwt.PyJWTError:
            return web.json_response(
                {"message": "A JSON web token could not be decoded"}, status=401
            )
        seen_claims.append(claims)
        if claims["iss"] != APP_ID or claims["exp"] - claims["iat"] > 600:
            return web.json_response({"message": "Bad claims"}, status=401)
        if received.headers.get("Accept") != "application/vnd.github+json":
            return web.json_response({"message": "Bad Accept"}, status=415)
        if received.json() != {}:
            return web.json_response({"message": "Unexpected body"}, status=422)
        return web.json_response(ANSWER, status=201)

    return handle


def app_provider(server: TokenServer) -> Any:
    template = "/app/installations/${connectionConfig.installation_id}/access_tokens"
    return provider("APP", token_url=server.url(template))


@pytest.mark.parametrize("key_form", ["pem", "base64", "one_line"])
async def test_installation_token(
    server: TokenServer, http: TokenHttp, rsa_pair: tuple[str, str], key_form: str
) -> None:
    private_pem, public_pem = rsa_pair
    key = {
        "pem": private_pem,
        "base64": base64.b64encode(private_pem.encode()).decode(),
        "one_line": private_pem.replace("\n", " "),  # what a form field does to a PEM
    }[key_form]
    now = time.time()
    claims: list[dict[str, Any]] = []
    server.on("/app/installations/42/access_tokens", fake_github(public_pem, now, claims))
    request = grant_request(
        http,
        app_provider(server),
        STORED,
        client={"type": "APP", "app_id": APP_ID, "app_link": "https://x", "private_key": key},
        connection_config={"installation_id": "42", "appPublicLink": "https://x"},
        now=now,
    )
    grant = await renew(request)

    assert claims == [{"iat": int(now) - 60, "exp": int(now) + 540, "iss": APP_ID}]
    app_jwt = server.last.headers["Authorization"].removeprefix("Bearer ")
    assert grant.credentials == {
        "type": "APP",
        "access_token": "ghs_new_installation_token",
        "expires_at": "2030-01-01T01:00:00.000Z",
        "raw": ANSWER,
        "jwtToken": app_jwt,
    }
    # The app JWT can mint tokens for every installation: never in connection_config.
    assert grant.connection_config is None
    assert server.last.method == "POST"


async def test_a_key_github_does_not_know_is_refused(
    server: TokenServer, http: TokenHttp, rsa_pair: tuple[str, str]
) -> None:
    other_private, _ = rsa_key()
    server.on("/app/installations/42/access_tokens", fake_github(rsa_pair[1], time.time(), []))
    request = grant_request(
        http,
        app_provider(server),
        STORED,
        client={"app_id": APP_ID, "private_key": other_private},
        connection_config={"installation_id": "42"},
        now=time.time(),
    )
    with pytest.raises(GrantError) as caught:
        await renew(request)
    assert (caught.value.reason, caught.value.status) == ("provider_4xx", 401)
    assert "could not be decoded" in str(caught.value)
    sent_jwt = server.last.headers["Authorization"].removeprefix("Bearer ")
    assert sent_jwt not in str(caught.value)


@pytest.mark.parametrize(
    ("client", "config", "needs"),
    [
        ({"app_id": APP_ID, "private_key": "KEY"}, {}, "private_key"),
        ({"app_id": APP_ID}, {"installation_id": "42"}, "private_key"),
        (
            {"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
            {},
            "app_id",
        ),
        (
            {
                "app_id": APP_ID,
                "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            },
            {"installation_id": "42"},
            "cannot sign",
        ),
    ],
)
async def test_misconfigured(
    server: TokenServer,
    http: TokenHttp,
    client: dict[str, Any],
    config: dict[str, Any],
    needs: str,
) -> None:
    request = grant_request(
        http, app_provider(server), STORED, client=client, connection_config=config
    )
    with pytest.raises(GrantError) as caught:
        await renew(request)
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)
    assert needs in str(caught.value)
    assert "AAAA" not in str(caught.value)
    assert server.received == []


async def test_missing_installation_id_is_misconfigured(
    server: TokenServer, http: TokenHttp, rsa_pair: tuple[str, str]
) -> None:
    request = grant_request(
        http,
        app_provider(server),
        STORED,
        client={"app_id": APP_ID, "private_key": rsa_pair[0]},
        connection_config={},
    )
    with pytest.raises(GrantError, match="installation_id") as caught:
        await renew(request)
    assert caught.value.reason == "misconfigured"
