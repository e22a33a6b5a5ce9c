"""JWT mode: tokens signed locally; each test verifies the signature it got."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import jwt
import pytest

from credentials.grants import GrantError, TokenHttp, renew
from tests.credentials.grants.fakes import NOW, grant_request, provider

GHOST_TOKEN: dict[str, Any] = {
    "signing_key": "${credentials.privateKey.secret}",
    "expires_in_ms": 300000,
    "header": {"alg": "HS256", "typ": "JWT", "kid": "${credentials.privateKey.id}"},
    "payload": {"aud": "/admin/", "sub": "${credentials.subject}"},
}
GHOST: dict[str, Any] = {
    "signature": {"protocol": "HMAC", "hmac_secret_encoding": "hex"},
    "token": GHOST_TOKEN,
}


def decode(token: str, key: str | bytes, algorithm: str, **options: Any) -> dict[str, Any]:
    # The fixed test clock is in the past of the real one: verify the signature, and
    # compare the time claims by value instead.
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[algorithm], options={"verify_exp": False}, **options
    )
    return claims


async def test_hmac_with_a_hex_secret(http: TokenHttp) -> None:
    secret = secrets.token_hex(32)
    stored = {"type": "JWT", "privateKey": {"id": "key-id-1", "secret": secret}, "raw": {}}
    grant = await renew(grant_request(http, provider("JWT", **GHOST), stored))

    token = grant.credentials["token"]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": "key-id-1"}
    claims = decode(token, bytes.fromhex(secret), "HS256", audience="/admin/")
    # `sub` did not resolve (no credentials.subject): left out, not sent as a template
    assert claims == {"aud": "/admin/", "iat": int(NOW), "exp": int(NOW) + 300}
    assert grant.credentials == {
        **stored,
        "token": token,
        "expires_at": "2026-01-01T00:05:00.000Z",
    }
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, secret.encode(), "HS256", audience="/admin/")  # the hex text is not the key


async def test_hmac_with_a_utf8_secret(http: TokenHttp) -> None:
    definition = {**GHOST, "signature": {"protocol": "HMAC", "hmac_secret_encoding": "utf8"}}
    secret = "a plain text secret of at least 32 bytes"
    stored = {"type": "JWT", "privateKey": {"id": "k", "secret": secret}}
    grant = await renew(grant_request(http, provider("JWT", **definition), stored))
    claims = decode(grant.credentials["token"], secret.encode(), "HS256", audience="/admin/")
    assert claims["aud"] == "/admin/"


async def test_a_short_hmac_key_signs_without_a_warning(http: TokenHttp) -> None:
    # pytest turns warnings into errors: PyJWT's short-key warning must not escape.
    stored = {"type": "JWT", "privateKey": {"id": "k", "secret": "00ff"}}
    grant = await renew(grant_request(http, provider("JWT", **GHOST), stored))
    header, payload, signature = grant.credentials["token"].split(".")
    digest = hmac.new(bytes.fromhex("00ff"), f"{header}.{payload}".encode(), hashlib.sha256)
    assert base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() == signature


async def test_rsa(http: TokenHttp, rsa_pair: tuple[str, str]) -> None:
    private_pem, public_pem = rsa_pair
    definition = {
        "signature": {"protocol": "RSA"},
        "token": {
            "signing_key": "${credentials.private_key}",
            "expires_in_ms": 3_600_000,
            "header": {"alg": "RS256", "typ": "JWT"},
            "payload": {
                "iss": "${credentials.client_email}",
                "aud": "https://oauth2.example.com/token",
                "scope": ["read", "${credentials.extra_scope}"],
            },
        },
    }
    stored = {
        "type": "JWT",
        "private_key": private_pem.replace("\n", "\\n"),  # escaped newlines, as pasted
        "client_email": "svc@example.com",
        "expires_at": "2025-01-01T00:00:00.000Z",
    }
    grant = await renew(grant_request(http, provider("JWT", **definition), stored))
    claims = decode(
        grant.credentials["token"],
        public_pem,
        "RS256",
        audience="https://oauth2.example.com/token",
        issuer="svc@example.com",
    )
    assert claims["scope"] == ["read"]
    assert claims["exp"] - claims["iat"] == 3600
    assert grant.credentials["expires_at"] == "2026-01-01T01:00:00.000Z"


async def test_ec(http: TokenHttp, ec_pair: tuple[str, str]) -> None:
    private_pem, public_pem = ec_pair
    definition = {
        "signature": {"protocol": "EC"},
        "token": {
            "signing_key": "${credentials.key}",
            "expires_in_ms": 60000,
            "header": {"alg": "ES256"},
            "payload": {"iss": "team"},
        },
    }
    grant = await renew(grant_request(http, provider("JWT", **definition), {"key": private_pem}))
    assert decode(grant.credentials["token"], public_pem, "ES256")["iss"] == "team"
    assert grant.credentials["type"] == "JWT"


@pytest.mark.parametrize(
    ("change", "needs"),
    [
        ({"signature": {"protocol": "DSA"}}, "protocol"),
        ({"signature": {"protocol": "RSA"}}, "does not fit"),  # header alg is HS256
        ({"token": {**GHOST_TOKEN, "expires_in_ms": "soon"}}, "expires_in_ms"),
        ({"token": {**GHOST_TOKEN, "signing_key": "${credentials.nope}"}}, "credentials.nope"),
        ({"token": {**GHOST_TOKEN, "header": {"alg": "none"}}}, "'none'"),
    ],
)
async def test_misconfigured(http: TokenHttp, change: dict[str, Any], needs: str) -> None:
    stored = {"type": "JWT", "privateKey": {"id": "k", "secret": "00ff"}}
    with pytest.raises(GrantError) as caught:
        await renew(grant_request(http, provider("JWT", **{**GHOST, **change}), stored))
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)
    assert needs in str(caught.value)


async def test_a_secret_that_is_not_hex_is_not_echoed(http: TokenHttp) -> None:
    stored = {"type": "JWT", "privateKey": {"id": "k", "secret": "not-hex-secret-value"}}
    with pytest.raises(GrantError) as caught:
        await renew(grant_request(http, provider("JWT", **GHOST), stored))
    assert caught.value.reason == "misconfigured"
    assert "not-hex-secret-value" not in str(caught.value)
