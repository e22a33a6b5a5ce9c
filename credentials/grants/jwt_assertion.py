"""JWT: a token signed here, no network (Ghost Admin, and providers like it).

The provider entry describes the token, every value a template over the stored
credentials:

    signature: {protocol: RSA | HMAC | EC, hmac_secret_encoding: hex | utf8}
    token: {signing_key, expires_in_ms, header: {alg, typ, kid}, payload: {aud, iss, sub, scope}}

A header or payload entry whose template does not complete is left out (those are the
optional ones); the signing key and the lifetime are required. An HMAC secret is
hex-decoded unless `hmac_secret_encoding: utf8`, Nango's default for that field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from credentials.expiry import iso_expiry
from credentials.grants.base import Grant, GrantRequest, misconfigured
from credentials.grants.calls import complete
from credentials.grants.signing import pem_text, sign
from credentials.models import Connection, Integration, JsonDict, Provider
from credentials.templates import interpolate_complete, template_values

CREDENTIAL_TYPE: Final = "JWT"
# Algorithm families per protocol, and the algorithm used when the header names none.
_FAMILIES: Final = {"RSA": ("RS", "PS"), "HMAC": ("HS",), "EC": ("ES",)}
_DEFAULT_ALGORITHMS: Final = {"RSA": "RS256", "HMAC": "HS256", "EC": "ES256"}
_SIGNING_KEY_ROLE: Final = "the token's signing_key"


async def sign_token(request: GrantRequest) -> Grant:
    return signed(request.connection, request.integration, request.provider, now=request.now)


# --- pure ---------------------------------------------------------------------------


def signed(
    connection: Connection, integration: Integration, provider: Provider, *, now: float
) -> Grant:
    definition = provider.definition
    signature = _block(definition, "signature")
    spec = _block(definition, "token")
    protocol = signature.get("protocol")
    if protocol not in _FAMILIES:
        raise misconfigured(f"signature.protocol {protocol!r} is not supported")
    values = template_values(connection, integration)
    header = optional_entries(spec.get("header"), values)
    payload = optional_entries(spec.get("payload"), values)
    algorithm = str(header.pop("alg", None) or _DEFAULT_ALGORITHMS[protocol])
    if not algorithm.startswith(_FAMILIES[protocol]):
        raise misconfigured(f"JWT algorithm {algorithm!r} does not fit protocol {protocol}")
    lifetime = lifetime_seconds(spec.get("expires_in_ms"))
    issued_at = int(now)
    claims = {**payload, "iat": issued_at, "exp": int(now + lifetime)}
    key = signing_key(spec.get("signing_key"), values, protocol, signature)
    token = sign(claims, key, algorithm=algorithm, headers=header, role=_SIGNING_KEY_ROLE)
    credentials: JsonDict = {
        **connection.credentials,
        "type": CREDENTIAL_TYPE,
        "token": token,
        "expires_at": iso_expiry(now + lifetime),
    }
    return Grant(credentials)


def _block(definition: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    block = definition.get(name)
    if not isinstance(block, Mapping):
        raise misconfigured(f"the provider has no {name} block")
    return block


def optional_entries(block: object, values: Mapping[str, Any]) -> JsonDict:
    """A header/payload template with entries that did not complete left out."""
    if not isinstance(block, Mapping):
        return {}
    entries: JsonDict = {}
    for key, value in block.items():
        if isinstance(value, str):
            completed = interpolate_complete(value, values)
            if completed is not None:
                entries[str(key)] = completed
        elif isinstance(value, list):
            items = [
                interpolate_complete(item, values) if isinstance(item, str) else item
                for item in value
            ]
            entries[str(key)] = [item for item in items if item is not None]
        elif value is not None:
            entries[str(key)] = value
    return entries


def lifetime_seconds(expires_in_ms: object) -> float:
    if isinstance(expires_in_ms, bool) or not isinstance(expires_in_ms, int | float | str):
        raise misconfigured("token.expires_in_ms must be a number")
    try:
        milliseconds = float(expires_in_ms)
    except ValueError:
        raise misconfigured("token.expires_in_ms must be a number") from None
    if not (math.isfinite(milliseconds) and milliseconds > 0):
        raise misconfigured("token.expires_in_ms must be a positive number")
    return milliseconds / 1000


def signing_key(
    template: object, values: Mapping[str, Any], protocol: str, signature: Mapping[str, Any]
) -> str | bytes:
    if not isinstance(template, str) or not template:
        raise misconfigured("token.signing_key is missing")
    text = complete(template, values, what="token.signing_key")
    if protocol != "HMAC":
        return pem_text(text, role=_SIGNING_KEY_ROLE)
    if signature.get("hmac_secret_encoding", "hex") == "utf8":
        return text.encode()
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise misconfigured(f"{_SIGNING_KEY_ROLE} is not hex") from None
