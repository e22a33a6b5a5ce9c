"""Which grant renews which credentials, and whether one can.

The stored credential `type` decides (it is what the connection actually holds); the
provider's auth mode stands in for credentials imported without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from credentials.grants import client_credentials, github_app, jwt_assertion, oauth2, two_step
from credentials.grants.base import Grant, GrantRequest, misconfigured
from credentials.models import Connection, Provider

Renewer = Callable[[GrantRequest], Awaitable[Grant]]

RENEWERS: Final[Mapping[str, Renewer]] = {
    oauth2.CREDENTIAL_TYPE: oauth2.refresh,
    client_credentials.CREDENTIAL_TYPE: client_credentials.fetch,
    github_app.CREDENTIAL_TYPE: github_app.installation_token,
    jwt_assertion.CREDENTIAL_TYPE: jwt_assertion.sign_token,
    two_step.CREDENTIAL_TYPE: two_step.fetch,
}


def credential_type(connection: Connection, provider: Provider) -> str:
    stored = (connection.credentials or {}).get("type")
    return stored if isinstance(stored, str) and stored else provider.auth_mode


def renewable(connection: Connection, provider: Provider) -> bool:
    """True when `renew` can produce new credentials for this connection: OAUTH2 with a
    refresh token; OAUTH2_CC, APP, JWT and TWO_STEP always."""
    kind = credential_type(connection, provider)
    if kind == oauth2.CREDENTIAL_TYPE:
        token = connection.credentials.get("refresh_token")
        return isinstance(token, str) and bool(token)
    return kind in RENEWERS


async def renew(request: GrantRequest) -> Grant:
    """New credentials for the request's connection; raises GrantError."""
    kind = credential_type(request.connection, request.provider)
    renewer = RENEWERS.get(kind)
    if renewer is None:
        raise misconfigured(f"credentials of type {kind!r} cannot be renewed")
    return await renewer(request)
