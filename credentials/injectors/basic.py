"""HTTP Basic: `authorization: Basic base64(username:password)`.

An empty or absent password is allowed: Stripe and other APIs take a key as the username
and nothing after the colon. An empty username is allowed too (RFC 7617 permits it, and
Nango stores either field empty); only a username that is not text is refused.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from credentials.injectors.base import InvalidCredentialValue, Pairs, optional_text

AUTH_TYPES = ("BASIC",)


def default_auth(credentials: Mapping[str, Any]) -> Pairs:
    if credentials.get("username") is None:
        raise InvalidCredentialValue("BASIC", "username", "is missing")
    username = optional_text(credentials, "BASIC", "username")
    password = optional_text(credentials, "BASIC", "password")
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return (("authorization", f"Basic {token}"),)
