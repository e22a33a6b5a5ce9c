"""Who is calling: a secret key (one environment) or a connect-session token.

Most routes take only a secret key. A route that a frontend holding a connect-session
token may call says so with `@accepts_connect_session`; `@connect_session_only` marks
the routes that take nothing else (Nango's §2.3 rules); `@public` the routes of the
auth flows, which a browser reaches without any header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from aiohttp import web

from credentials.secret_keys import AUTH_ERROR_MESSAGES, parse_bearer
from management.errors import AuthenticationFailed
from management.request_context import CONNECT_SESSION, CORE, ENVIRONMENT
from management.sessions import (
    CONNECT_SESSION_PREFIX,
    MALFORMED_SESSION_CODE,
    MALFORMED_SESSION_MESSAGE,
    resolve_connect_session,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
SessionMode = Literal["never", "also", "only", "public"]

_ATTRIBUTE = "authgate_connect_session"


def accepts_connect_session(handler: H) -> H:
    setattr(handler, _ATTRIBUTE, "also")
    return handler


def connect_session_only(handler: H) -> H:
    setattr(handler, _ATTRIBUTE, "only")
    return handler


def public(handler: H) -> H:
    """A route that authenticates its caller itself (from the query: a connect-session
    token, a public key, an OAuth state), or serves what anyone may see (the Connect
    page). The middleware checks neither a secret key nor the content type."""
    setattr(handler, _ATTRIBUTE, "public")
    return handler


def session_mode(handler: Handler) -> SessionMode:
    mode: SessionMode = getattr(handler, _ATTRIBUTE, "never")
    return mode


async def authenticate(request: web.Request, mode: SessionMode) -> None:
    """Sets the request's environment (and session, for a session token) or raises."""
    header = request.headers.get("Authorization")
    token = _bearer_token(header)
    if mode != "never" and token is not None and token.startswith(CONNECT_SESSION_PREFIX):
        principal = await resolve_connect_session(request, token)
        request[ENVIRONMENT] = principal.environment
        request[CONNECT_SESSION] = principal
        return
    if mode == "only":
        raise AuthenticationFailed(401, MALFORMED_SESSION_CODE, MALFORMED_SESSION_MESSAGE)
    parsed = parse_bearer(header)
    if parsed.error is not None:
        raise AuthenticationFailed(401, parsed.error, AUTH_ERROR_MESSAGES[parsed.error])
    assert parsed.key is not None
    environment = await request.app[CORE].keys.environment_for(parsed.key)
    if environment is None:
        raise AuthenticationFailed(401, "unknown_account", AUTH_ERROR_MESSAGES["unknown_account"])
    request[ENVIRONMENT] = environment


def _bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    return header.rsplit("Bearer ", 1)[-1].strip()
