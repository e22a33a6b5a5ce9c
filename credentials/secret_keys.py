"""Secret keys: issuing them, hashing them for storage, and reading them off a request.

A secret key is a UUID v4, as Nango issues them, sent as `Authorization: Bearer <key>`.
Only a hash is stored. `parse_bearer` reproduces Nango's header rules exactly, including
its quirks, because clients written against Nango rely on the same error codes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Literal

BearerErrorCode = Literal[
    "missing_auth_header",
    "malformed_auth_header",
    "invalid_secret_key_format",
]

# Nango's exact texts: clients written against Nango may show or match them.
AUTH_ERROR_MESSAGES: dict[str, str] = {
    "missing_auth_header": (
        "Authentication failed. The request is missing the Authorization header."
    ),
    "malformed_auth_header": "Authentication failed. The Authorization header is malformed.",
    "invalid_secret_key_format": (
        "Authentication failed. The provided secret key is not a UUID v4."
    ),
    "unknown_account": (
        "Authentication failed. The provided authorization header does not match any account."
    ),
}

_BEARER = "Bearer "
_UUID_V4 = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class BearerParse:
    """Either `key` (a syntactically valid secret key) or `error` (a Nango error code)."""

    key: str | None = None
    error: BearerErrorCode | None = None

    @property
    def ok(self) -> bool:
        return self.key is not None


def generate_secret_key() -> str:
    """A new secret key in canonical lower-case UUID v4 form."""
    return str(uuid.uuid4())


def hash_secret_key(key: str) -> bytes:
    """The value stored and looked up for a secret key.

    A UUID v4 carries 122 random bits, far beyond brute-force reach, so a slow password
    hash would buy nothing and would cost every request; one SHA-256 is the right tool.
    Keys are lower-cased first because UUIDs are case-insensitive.
    """
    return hashlib.sha256(key.lower().encode("utf-8")).digest()


def keys_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison, for callers that compare hashes in memory."""
    return hmac.compare_digest(a, b)


def is_uuid_v4(value: str) -> bool:
    return _UUID_V4.fullmatch(value) is not None


def parse_bearer(header_value: str | None) -> BearerParse:
    """Apply Nango's `Authorization` header rules.

    Missing or empty header: `missing_auth_header` (Nango tests the header for
    truthiness, so an empty value counts as missing). The token is whatever follows the last
    `"Bearer "` (case-sensitive), or the whole value when there is none. An empty token:
    `malformed_auth_header`. Anything but a UUID v4: `invalid_secret_key_format`.
    """
    if not header_value:
        return BearerParse(error="missing_auth_header")
    token = header_value.rsplit(_BEARER, 1)[-1]
    if not token:
        return BearerParse(error="malformed_auth_header")
    if not is_uuid_v4(token):
        return BearerParse(error="invalid_secret_key_format")
    return BearerParse(key=token)
