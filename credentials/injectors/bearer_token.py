"""Modes whose stored credential carries a `token`: `authorization: Bearer <token>`.

TWO_STEP is special: some providers put the token in their own header (a template using
`${accessToken}`) or send a session cookie (`${credentials._cookies}`); then a Bearer
header would be wrong, so the default is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from credentials.injectors.base import Pairs, bearer, required_text

AUTH_TYPES = ("OAUTH2_CC", "JWT", "SIGNATURE", "TWO_STEP")


def default_auth(credentials: Mapping[str, Any]) -> Pairs:
    credential_type = str(credentials.get("type", "OAUTH2_CC"))
    return bearer(required_text(credentials, credential_type, "token"))


def provider_carries_token(headers: Mapping[str, str]) -> bool:
    """True when a TWO_STEP provider sends the token itself, so no default header."""
    return any(
        "${accessToken}" in value or (name == "cookie" and "${credentials._cookies}" in value)
        for name, value in headers.items()
    )
