"""OAUTH2_CC against a fake endpoint that checks the grant, the client and the scope."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jwt
import jwt.algorithms
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from credentials.grants import GrantError, TokenHttp, renew
from credentials.grants.client_assertion import ASSERTION_TYPE
from credentials.grants.client_credentials import scope_list
from tests.credentials.grants.fakes import (
    NOW,
    Handler,
    Received,
    TokenServer,
    answer,
    client_is,
    grant_request,
    oauth_error,
    provider,
    rsa_key,
)

STORED = {"type": "OAUTH2_CC", "client_id": "cc-id", "client_secret": "cc-secret"}


def cc_endpoint(
    answer_with: Mapping[str, Any],
    *,
    client: tuple[str, str] = ("cc-id", "cc-secret"),
    grant_type: str = "client_credentials",
    scope: str | None = None,
    basic: bool = False,
    in_query: bool = False,
) -> Handler:
    async def handle(request: web.Request, received: Received) -> web.StreamResponse:
        params = dict(received.query) if in_query else received.params()
        if in_query and received.body:
            return oauth_error("invalid_request", 400, "query requests have no body")
        if params.get("grant_type") != grant_type:
            return oauth_error("unsupported_grant_type", 400)
        if params.get("scope") != scope:
            return oauth_error("invalid_scope", 400)
        if not client_is(received, params, client, basic=basic):
            return oauth_error("invalid_client", 401)
        return web.json_response(dict(answer_with))

    return handle


def cc_provider(server: TokenServer, **definition: Any) -> Any:
    return provider("OAUTH2_CC", token_url=server.url("/cc"), **definition)


async def test_client_credentials_grant_with_stored_client(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on("/cc", cc_endpoint({"access_token": "cc-token", "expires_in": 600}, scope="a b"))
    stored = {**STORED, "client_certificate": "CERT", "client_private_key": "KEY"}
    request = grant_request(
        http,
        cc_provider(server),
        stored,
        client={"client_id": "integration-id", "client_secret": "integration-secret"},
        connection_config={"oauth_scopes": "a,b"},
    )
    grant = await renew(request)
    assert grant.credentials == {
        "type": "OAUTH2_CC",
        "token": "cc-token",
        "expires_at": "2026-01-01T00:10:00.000Z",
        "client_id": "cc-id",
        "client_secret": "cc-secret",
        "client_certificate": "CERT",
        "client_private_key": "KEY",
        "raw": {"access_token": "cc-token", "expires_in": 600},
    }
    assert grant.connection_config is None


async def test_integration_client_basic_auth_and_scope_separator(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/cc",
        cc_endpoint(
            {"data": {"token": "data-token"}},
            client=("integration-id", "integration-secret"),
            scope="x,y",
            basic=True,
        ),
    )
    request = grant_request(
        http,
        cc_provider(server, token_request_auth_method="basic", scope_separator=","),
        {"type": "OAUTH2_CC"},
        client={
            "client_id": "integration-id",
            "client_secret": "integration-secret",
            "scopes": "x,y",
        },
    )
    grant = await renew(request)
    assert grant.credentials["token"] == "data-token"
    # no expiry in the answer: Nango's 55 minutes
    assert grant.credentials["expires_at"] == "2026-01-01T00:55:00.000Z"
    # the integration's client stays with the integration
    assert "client_secret" not in grant.credentials


async def test_zoom_style_grant_type_in_the_query_and_milliseconds(
    server: TokenServer, http: TokenHttp
) -> None:
    server.on(
        "/cc",
        cc_endpoint(
            {"jwt": "jwt-token", "expires_in": 120_000},
            grant_type="account_credentials",
            in_query=True,
        ),
    )
    definition = {
        "token_params": {
            "grant_type": "account_credentials",
            "account_id": "${connectionConfig.acct}",
        },
        "body_format": "query",
        "expires_in_unit": "milliseconds",
    }
    request = grant_request(
        http, cc_provider(server, **definition), STORED, connection_config={"acct": "A1"}
    )
    grant = await renew(request)
    assert grant.credentials["token"] == "jwt-token"
    assert grant.credentials["expires_at"] == "2026-01-01T00:02:00.000Z"
    assert server.last.query["account_id"] == "A1"


async def test_json_body_and_absolute_expiry(server: TokenServer, http: TokenHttp) -> None:
    server.on("/cc", cc_endpoint({"access_token": "t", "expires_at": "2026-01-02T00:00:00Z"}))
    grant = await renew(grant_request(http, cc_provider(server, body_format="json"), STORED))
    assert server.last.headers["Content-Type"].startswith("application/json")
    assert grant.credentials["expires_at"] == "2026-01-02T00:00:00.000Z"


async def test_refusal_is_classified(server: TokenServer, http: TokenHttp) -> None:
    server.on("/cc", cc_endpoint({"access_token": "t"}, client=("other", "other-secret")))
    with pytest.raises(GrantError) as caught:
        await renew(grant_request(http, cc_provider(server), STORED))
    assert (caught.value.reason, caught.value.permanent, caught.value.status) == (
        "invalid_client",
        True,
        401,
    )
    assert "cc-secret" not in str(caught.value)


async def test_no_token_in_the_answer(server: TokenServer, http: TokenHttp) -> None:
    server.on("/cc", answer({"expires_in": 5}))
    with pytest.raises(GrantError) as caught:
        await renew(grant_request(http, cc_provider(server), STORED, now=NOW))
    assert (caught.value.reason, caught.value.permanent) == ("bad_response", False)


@pytest.mark.parametrize(
    ("definition", "stored", "client"),
    [
        # private_key_jwt without a key to sign with
        ({"token_request_auth_method": "private_key_jwt"}, STORED, None),
        (
            {"token_request_auth_method": "private_key_jwt"},
            {**STORED, "client_private_key": '{"kty": "RSA", "n": "not a key"}'},
            None,
        ),
        ({"token_request_auth_method": "client_secret_jwt"}, STORED, None),
        ({"require_client_certificate": True}, STORED, None),
        ({}, {"type": "OAUTH2_CC"}, None),
    ],
)
async def test_misconfigured(
    server: TokenServer,
    http: TokenHttp,
    definition: dict[str, Any],
    stored: dict[str, Any],
    client: dict[str, Any] | None,
) -> None:
    with pytest.raises(GrantError) as caught:
        await renew(grant_request(http, cc_provider(server, **definition), stored, client=client))
    assert caught.value.reason == "misconfigured"
    assert server.received == []


def assertion_endpoint(public_pem: str, token_url: str, *, kid: str | None) -> Handler:
    """A token endpoint that accepts only a valid, fresh private_key_jwt assertion."""

    async def handle(request: web.Request, received: Received) -> web.StreamResponse:
        params = received.params()
        if params.get("client_assertion_type") != ASSERTION_TYPE or "client_secret" in params:
            return oauth_error("invalid_request", 400)
        assertion = params.get("client_assertion", "")
        try:
            claims = jwt.decode(
                assertion,
                public_pem,
                algorithms=["RS256"],
                audience=token_url,
                issuer="cc-id",
                options={"verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return oauth_error("invalid_client", 401)
        fresh = claims["exp"] - claims["iat"] == 300 and claims["iat"] == int(NOW)
        if claims["sub"] != "cc-id" or params.get("client_id") != "cc-id" or not fresh:
            return oauth_error("invalid_client", 401)
        if jwt.get_unverified_header(assertion).get("kid") != kid:
            return oauth_error("invalid_client", 401)
        if claims["jti"] in seen_ids:  # a replayed assertion
            return oauth_error("invalid_client", 401)
        seen_ids.append(claims["jti"])
        return web.json_response({"access_token": f"assert-token-{len(seen_ids)}"})

    seen_ids: list[str] = []
    return handle


@pytest.mark.parametrize("form", ["jwk", "pem"])
async def test_private_key_jwt_signs_a_fresh_assertion(
    server: TokenServer, http: TokenHttp, form: str
) -> None:
    private_pem, public_pem = rsa_key()
    if form == "jwk":
        key = load_pem_private_key(private_pem.encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
        key_text, kid = json.dumps({**jwk, "kid": "key-2026"}), "key-2026"
    else:
        key_text, kid = private_pem, None
    server.on("/cc", assertion_endpoint(public_pem, server.url("/cc"), kid=kid))
    stored = {"type": "OAUTH2_CC", "client_id": "cc-id", "client_private_key": key_text}
    provider = cc_provider(server, token_request_auth_method="private_key_jwt")

    first = await renew(grant_request(http, provider, stored))
    second = await renew(grant_request(http, provider, stored))

    assert (first.credentials["token"], second.credentials["token"]) == (
        "assert-token-1",
        "assert-token-2",
    )
    assert first.credentials["client_private_key"] == key_text  # kept to sign the next one


async def test_custom_method_sends_the_client_as_username_and_password(
    server: TokenServer, http: TokenHttp
) -> None:
    async def handle(request: web.Request, received: Received) -> web.StreamResponse:
        params = received.params()
        if (params.get("username"), params.get("password")) != ("cc-id", "cc-secret"):
            return oauth_error("invalid_client", 401)
        if "client_secret" in params or "Authorization" in received.headers:
            return oauth_error("invalid_request", 400)
        return web.json_response({"access_token": "custom-token"})

    server.on("/cc", handle)
    provider = cc_provider(server, token_request_auth_method="custom")
    grant = await renew(grant_request(http, provider, STORED))
    assert grant.credentials["token"] == "custom-token"


def test_scope_list() -> None:
    assert scope_list("a, b,,c") == ["a", "b", "c"]
    assert scope_list(["a", " ", 3, "b"]) == ["a", "b"]
    assert scope_list(None) == []
