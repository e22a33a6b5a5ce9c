"""`private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9): the
client proves itself with a short-lived JWT signed by its private key instead of
sending a secret.

The key is what the end user pasted as `client_private_key`: a private JWK as JSON
(its `kid` goes into the JWT header, as identity providers match keys by it) or a PEM.
Each assertion is unique (`jti`) and lives five minutes.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import jwt
import orjson
from cryptography.hazmat.primitives import serialization

from credentials.grants.base import misconfigured
from credentials.grants.signing import pem_text, sign
from credentials.models import JsonDict

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHM: Final = "RS256"
LIFETIME_SECONDS: Final = 300
_ROLE: Final = "the client_private_key"


def assertion_fields(
    client_id: str, private_key: str, audience: str, *, now: float, jti: str | None = None
) -> JsonDict:
    """The token request's client authentication fields."""
    key, kid = signing_key(private_key)
    issued_at = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + LIFETIME_SECONDS,
        "jti": jti or str(uuid.uuid4()),
    }
    headers = {"kid": kid} if kid else {}
    return {
        "client_id": client_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": sign(claims, key, algorithm=ALGORITHM, headers=headers, role=_ROLE),
    }


def signing_key(private_key: str) -> tuple[str, str | None]:
    """PEM text to sign with, and the key id a JWK names; GrantError when it is neither
    a private JWK nor a PEM (the message never quotes the key)."""
    text = private_key.strip()
    if not text.startswith("{"):
        return pem_text(text, role=_ROLE), None
    try:
        jwk: Any = orjson.loads(text)
        key = jwt.PyJWK(jwk).key
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    except (orjson.JSONDecodeError, jwt.PyJWTError, AttributeError, TypeError, ValueError):
        raise misconfigured(f"{_ROLE} is not a private JWK") from None
    kid = jwk.get("kid") if isinstance(jwk, dict) else None
    return pem.decode("ascii"), kid if isinstance(kid, str) and kid else None
