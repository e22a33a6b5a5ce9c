"""Connect-session tokens as callers: resolving a token to its environment and session."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from credentials.models import Environment
from management.errors import AuthenticationFailed

CONNECT_SESSION_PREFIX = "nango_connect_session_"


@dataclass(frozen=True, slots=True)
class ConnectSessionPrincipal:
    """A caller holding a connect-session token; `allowed_integrations` None = all."""

    environment: Environment
    session_id: int
    allowed_integrations: tuple[str, ...] | None = None


async def resolve_connect_session(request: web.Request, token: str) -> ConnectSessionPrincipal:
    raise AuthenticationFailed(
        401,
        "unknown_connect_session_token",
        "Authentication failed. The provided connect session token does not match any account.",
    )
