"""TWO_STEP: a provider-described login (and refresh) endpoint, validated by the fake."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from aiohttp import web

from credentials.grants import GrantError, TokenHttp, renew
from credentials.grants.two_step import expiry
from tests.credentials.grants.fakes import (
    NOW,
    Received,
    TokenServer,
    answer,
    grant_request,
    provider,
)

STORED = {
    "type": "TWO_STEP",
    "tenant": "acme corp",
    "username": "alice",
    "password": "p@ss word&more",
    "apiKey": "api-key-123",
}
SESSION = {"data": {"session": {"token": "session-1", "expires": 900, "refresh": "r-1"}}}


def definition(server: TokenServer, **extra: Any) -> dict[str, Any]:
    return {
        "token_url": server.url("/auth/${credentials.tenant}/login"),
        "token_headers": {"x-api-key": "${credentials.apiKey}"},
        "token_params": {
            "username": "${credentials.username}",
            "password": "${credentials.password}",
        },
        "body_format": "json",
        "token_response": {
            "token": "data.session.token",
            "token_expiration": "data.session.expires",
            "token_expiration_strategy": "expireIn",
            "refresh_token": "data.session.refresh",
        },
        **extra,
    }


async def login(request: web.Request, received: Received) -> web.StreamResponse:
    if received.headers.get("x-api-key") != "api-key-123":
        return web.json_response({"error": "invalid_client"}, status=401)
    if received.json() != {"username": "alice", "password": "p@ss word&more"}:
        return web.json_response({"error": "invalid_grant"}, status=400)
    return web.json_response(SESSION)


async def refresh(request: web.Request, received: Received) -> web.StreamResponse:
    if received.json() != {"refresh": "r-1"}:
        return web.json_response({"error": "invalid_grant"}, status=400)
    return web.json_response({"data": {"session": {"token": "session-2", "expires": 60}}})


async def test_login_then_refresh(server: TokenServer, http: TokenHttp) -> None:
    server.on("/auth/acme%20corp/login", login)
    server.on("/auth/refresh", refresh)
    provider_ = provider(
        "TWO_STEP",
        **definition(
            server,
            refresh_url=server.url("/auth/refresh"),
            refresh_token_params={"refresh": "${credentials.refresh_token}"},
        ),
    )
    first = await renew(grant_request(http, provider_, STORED))
    assert first.credentials == {
        **STORED,
        "token": "session-1",
        "refresh_token": "r-1",
        "expires_at": "2026-01-01T00:15:00.000Z",
        "raw": SESSION,
    }
    assert server.last.raw_path == "/auth/acme%20corp/login"

    second = await renew(grant_request(http, provider_, first.credentials))
    assert server.last.path == "/auth/refresh"
    assert second.credentials["token"] == "session-2"
    assert second.credentials["refresh_token"] == "r-1"  # not rotated: kept
    assert second.credentials["expires_at"] == "2026-01-01T00:01:00.000Z"
    # refresh used the token headers too (no refresh_token_headers declared)
    assert server.last.headers["x-api-key"] == "api-key-123"


async def test_get_request_sends_params_in_the_query(server: TokenServer, http: TokenHttp) -> None:
    server.on("/token", answer({"access_token": "plain", "expires_at": "2026-02-01T00:00:00Z"}))
    provider_ = provider(
        "TWO_STEP",
        token_url=server.url("/token"),
        token_request_method="GET",
        token_params={"user": "${credentials.username}"},
        token_response={"token_expiration": "expires_at", "token_expiration_strategy": "expireAt"},
    )
    grant = await renew(grant_request(http, provider_, STORED))
    assert server.last.method == "GET"
    assert server.last.query["user"] == "alice"
    assert server.last.body == b""
    assert grant.credentials["token"] == "plain"
    assert grant.credentials["expires_at"] == "2026-02-01T00:00:00.000Z"


def _jwt_with_exp(exp: int) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'exp': exp})}.sig"


def test_expiry_sources() -> None:
    token = _jwt_with_exp(int(NOW) + 77)
    spec = {"token_expiration": "ttl", "token_expiration_strategy": "expireIn"}
    assert expiry({"ttl": "30"}, spec, {}, "t", NOW) == NOW + 30
    assert expiry({}, spec, {"token_expires_in_ms": 5000}, token, NOW) == NOW + 5
    assert expiry({}, spec, {"token_expires_in_ms": 0}, token, NOW) is None  # 0: never
    assert expiry({}, spec, {}, token, NOW) == NOW + 77
    at = {"token_expiration": "at", "token_expiration_strategy": "expireAt"}
    assert expiry({"at": 1_800_000_000}, at, {}, "t", NOW) == 1_800_000_000
    assert expiry({"at": "garbage"}, at, {"token_expires_in_ms": 1000}, "t", NOW) == NOW + 1


async def test_no_expiry_drops_the_stale_one(server: TokenServer, http: TokenHttp) -> None:
    server.on("/token", answer({"token": "forever"}))
    provider_ = provider("TWO_STEP", token_url=server.url("/token"), token_expires_in_ms=0)
    stored = {**STORED, "token": "old", "expires_at": "2025-01-01T00:00:00.000Z"}
    grant = await renew(grant_request(http, provider_, stored))
    assert grant.credentials["token"] == "forever"
    assert "expires_at" not in grant.credentials


async def test_refusal_is_classified_without_echoing_stored_values(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/auth/acme%20corp/login",
        answer({"error": "invalid_grant", "error_description": "bad password p@ss word&more"}, 400),
    )
    with pytest.raises(GrantError) as caught:
        await renew(grant_request(http, provider("TWO_STEP", **definition(server)), STORED))
    assert (caught.value.reason, caught.value.permanent) == ("invalid_grant", True)
    assert "p@ss word&more" not in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "needs"),
    [
        ({"additional_steps": [{"token_url": "x"}]}, "additional_steps"),
        ({"assertion": "${token}"}, "assertion"),
        ({"body_format": "xml"}, "xml"),
        ({"token_headers": {"x": "${credentials.missing}"}}, "token_headers.x"),
    ],
)
async def test_misconfigured(
    server: TokenServer, http: TokenHttp, extra: dict[str, Any], needs: str
) -> None:
    provider_ = provider("TWO_STEP", **definition(server, **extra))
    with pytest.raises(GrantError) as caught:
        await renew(grant_request(http, provider_, STORED))
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)
    assert needs in str(caught.value)
    assert server.received == []
