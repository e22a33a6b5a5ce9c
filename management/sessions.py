"""Connect-session tokens as callers: resolving a token to its environment and session.

A frontend holding a token may call the few routes marked for it (§2.3). A token that
starts with the session prefix is judged as a token only: a bad one gets the token's own
401, never a second chance as a secret key.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from credentials.models import Environment
from credentials.sessions import TOKEN_PREFIX, ConnectSessionStore, is_well_formed
from management.errors import AuthenticationFailed

CONNECT_SESSION_PREFIX = TOKEN_PREFIX

# Nango's exact texts (§2.1), unbalanced parenthesis included: clients may match them.
MALFORMED_SESSION_CODE = "invalid_connect_session_token_format"
MALFORMED_SESSION_MESSAGE = (
    "Authentication failed. The provided connect session token is not following correct "
    "format: nango_connect_session_RANDOM)"
)
UNKNOWN_SESSION_CODE = "unknown_connect_session_token"
UNKNOWN_SESSION_MESSAGE = (
    "Authentication failed. The provided connect session token does not match any account."
)


@dataclass(frozen=True, slots=True)
class ConnectSessionPrincipal:
    """A caller holding a connect-session token; `allowed_integrations` None = all.

    A reconnect session allows exactly the integration of the connection it is bound to.
    The session's other details (end user, defaults, ...) are read by `session_id`
    through `session_store(request)` by the routes that need them.
    """

    environment: Environment
    session_id: int
    allowed_integrations: tuple[str, ...] | None = None


def session_store(request: web.Request) -> ConnectSessionStore:
    """The connect sessions of the store's database. Cheap: it holds only the handle."""
    # Imported here: request_context imports this module for the principal's type.
    from management.request_context import CORE

    return ConnectSessionStore(request.app[CORE].store.db)


def unknown_session() -> AuthenticationFailed:
    return AuthenticationFailed(401, UNKNOWN_SESSION_CODE, UNKNOWN_SESSION_MESSAGE)


async def resolve_connect_session(request: web.Request, token: str) -> ConnectSessionPrincipal:
    if not is_well_formed(token):
        raise AuthenticationFailed(401, MALFORMED_SESSION_CODE, MALFORMED_SESSION_MESSAGE)
    resolved = await session_store(request).resolve(token)
    if resolved is None:
        raise unknown_session()
    return ConnectSessionPrincipal(
        environment=resolved.environment,
        session_id=resolved.session.id,
        allowed_integrations=resolved.session.spec.allowed_integrations,
    )
