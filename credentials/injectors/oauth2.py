"""OAuth 2 style access tokens: `authorization: Bearer <access_token>`.

GitHub App installations (APP) and MCP servers store the same `access_token` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from credentials.injectors.base import Pairs, bearer, required_text

AUTH_TYPES = ("OAUTH2", "APP", "MCP_OAUTH2", "MCP_OAUTH2_GENERIC")


def default_auth(credentials: Mapping[str, Any]) -> Pairs:
    credential_type = str(credentials.get("type", "OAUTH2"))
    return bearer(required_text(credentials, credential_type, "access_token"))
