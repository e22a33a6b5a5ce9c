"""APP: a GitHub App installation token.

The app authenticates with a short-lived JWT signed by its private key (RS256, `iss` the
app id), then asks for a token scoped to one installation. GitHub accepts app JWTs of at
most ten minutes; `iat` is backdated a minute to absorb clock drift, as GitHub advises.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import orjson

from credentials.expiry import expiry_from_response, iso_expiry
from credentials.grants.base import Grant, GrantRequest, misconfigured
from credentials.grants.calls import JSON_CONTENT_TYPE, endpoint_url
from credentials.grants.http import TokenCall, TokenReply
from credentials.grants.responses import decoded_or_error, missing_token, text_at
from credentials.grants.signing import pem_text, sign
from credentials.models import Connection, Integration, JsonDict, Provider

CREDENTIAL_TYPE: Final = "APP"
JWT_BACKDATE_SECONDS: Final = 60
JWT_LIFETIME_SECONDS: Final = 540  # from now; iat is a minute earlier, so 10 min in all
GITHUB_ACCEPT: Final = "application/vnd.github+json"
GITHUB_API_VERSION: Final = "2022-11-28"


async def installation_token(request: GrantRequest) -> Grant:
    app_jwt = app_token(request.integration, request.now)
    call = installation_token_call(request.connection, request.provider, app_jwt)
    reply = await request.http.send(call)
    return installed(reply, request.connection, app_jwt, now=request.now, secrets=[app_jwt])


# --- pure ---------------------------------------------------------------------------


def app_token(integration: Integration, now: float) -> str:
    """The app's own JWT, signed with the integration's private key."""
    app = integration.credentials or {}
    app_id = app.get("app_id")
    if isinstance(app_id, int) and not isinstance(app_id, bool):
        app_id = str(app_id)
    if not isinstance(app_id, str) or not app_id:
        raise misconfigured("the integration has no app_id")
    private_key = app.get("private_key")
    if not isinstance(private_key, str) or not private_key:
        raise misconfigured("the integration has no private_key")
    issued_at = int(now)
    claims = {
        "iat": issued_at - JWT_BACKDATE_SECONDS,
        "exp": issued_at + JWT_LIFETIME_SECONDS,
        "iss": app_id,
    }
    key = pem_text(private_key, role="the integration's private_key")
    return sign(claims, key, algorithm="RS256", role="the integration's private_key")


def installation_token_call(connection: Connection, provider: Provider, app_jwt: str) -> TokenCall:
    headers = {
        "Authorization": f"Bearer {app_jwt}",
        "Accept": GITHUB_ACCEPT,
        "X-GitHub-Api-Version": GITHUB_API_VERSION,
        "Content-Type": JSON_CONTENT_TYPE,
    }
    url = endpoint_url(provider, CREDENTIAL_TYPE, connection)
    return TokenCall("POST", url, headers, orjson.dumps({}))


def installed(
    reply: TokenReply,
    connection: Connection,
    app_jwt: str,
    *,
    now: float,
    secrets: Iterable[str] = (),
) -> Grant:
    body = decoded_or_error(reply, now=now, secrets=secrets)
    token = text_at(body, "token")
    if token is None:
        raise missing_token(reply, "token")
    credentials: JsonDict = {"type": CREDENTIAL_TYPE, "access_token": token}
    expires_at = expiry_from_response(body, now)
    if expires_at is not None:
        credentials["expires_at"] = iso_expiry(expires_at)
    credentials["raw"] = body
    credentials["jwtToken"] = app_jwt
    # Nango also copies the app JWT into connection_config. Not here: that JWT can mint
    # tokens for every installation of the app, so it stays with the encrypted credentials.
    return Grant(credentials)
