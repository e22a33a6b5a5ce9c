"""The flows an end user finishes by typing credentials, which the frontend SDK (and the
Connect page) send with a `fetch` POST and a JSON body (reference §6.5, §6.6):

- `POST /api-auth/api-key/{key}`  `{apiKey}`
- `POST /api-auth/basic/{key}`    `{username, password}`
- `POST /oauth2/auth/{key}`       `{client_id, client_secret}`: the client credentials
  grant is run once now, so a connection is stored only with a token that was issued.
- `POST /auth/unauthenticated/{key}`  no body: a NONE provider's connection, which
  holds only its connection config (the SDK's `create`).

The caller is identified as for the OAuth popup (management/flow_caller.py: a connect
session token, or the legacy public key and HMAC). API-key and Basic credentials are
tested first with the provider's `proxy.verification` requests when it declares them
(credentials/verification.py). A success answers `200 {providerConfigKey,
connectionId}`; a failure is a JSON error whose code the SDK throws as the AuthError's
type (`connection_test_failed`, `invalid_auth_mode`, `missing_hmac`, ...). Failures of
the provider (a refused test, a refused grant) are also reported to the auth events.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson
from aiohttp import web

from credentials.authorization import draft_connection
from credentials.grants import GrantError, GrantRequest
from credentials.grants import client_credentials as cc_grant
from credentials.models import AuthMode, Connection, Integration, JsonDict, Provider
from credentials.verification import CredentialsRejected, verify_credentials
from management.auth import public
from management.flow_caller import (
    FlowCaller,
    FlowError,
    finish_connection,
    identify_caller,
    load_integration,
    report_failure,
    requested_connection_config,
)
from management.request_context import CORE, json_body
from management.validation import Checker

MAX_CREDENTIAL_LENGTH: Final = 1024
# Client certificates and private keys are PEM or JWK text, longer than a password.
MAX_CLIENT_MATERIAL_LENGTH: Final = 16 * 1024
TEST_FAILED: Final = "connection_test_failed"
GRANT_FAILED: Final = "client_credentials_fetch_error"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request's flow, once the caller and its integration are known."""

    caller: FlowCaller
    integration: Integration
    provider: Provider
    connection_config: JsonDict


Obtain = Callable[[web.Request, Attempt, dict[str, Any]], Awaitable[tuple[JsonDict, JsonDict]]]


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api-auth/api-key/{providerConfigKey}", api_key_auth)
    router.add_post("/api-auth/basic/{providerConfigKey}", basic_auth)
    router.add_post("/oauth2/auth/{providerConfigKey}", client_credentials_auth)
    router.add_post("/auth/unauthenticated/{providerConfigKey}", unauthenticated_auth)


@public
async def api_key_auth(request: web.Request) -> web.Response:
    return await _run(request, AuthMode.API_KEY, _api_key_body, _tested)


@public
async def basic_auth(request: web.Request) -> web.Response:
    return await _run(request, AuthMode.BASIC, _basic_body, _tested)


@public
async def client_credentials_auth(request: web.Request) -> web.Response:
    return await _run(request, AuthMode.OAUTH2_CC, _client_credentials_body, _granted)


@public
async def unauthenticated_auth(request: web.Request) -> web.Response:
    return await _run(request, AuthMode.NONE, _empty_body, _as_given)


async def _run(
    request: web.Request,
    auth_mode: str,
    read_body: Callable[[Any], dict[str, Any]],
    obtain: Obtain,
) -> web.Response:
    """The steps every one of these flows takes, in order."""
    _require_json(request)
    body = read_body(await json_body(request))
    caller = await identify_caller(request, request.match_info["providerConfigKey"])
    integration, provider = await load_integration(
        request, caller, (auth_mode,), wrong_mode_code="invalid_auth_mode"
    )
    attempt = Attempt(caller, integration, provider, requested_connection_config(request, caller))
    try:
        credentials, config = await obtain(request, attempt, body)
    except FlowError as failure:
        await _report(request, attempt, failure)
        raise
    connection = await finish_connection(
        request,
        caller.environment,
        integration,
        auth_mode=auth_mode,
        connection_id=caller.connection_id,
        credentials=credentials,
        connection_config=config,
        link=caller.link,
    )
    return _connected(connection)


def _require_json(request: web.Request) -> None:
    # A form post from another site must not be able to create connections: only a
    # JSON body, which a cross-site form cannot send without a CORS preflight.
    if request.content_type != "application/json":
        raise FlowError(415, "invalid_content_type", "Content-Type header must be application/json")


def _connected(connection: Connection) -> web.Response:
    payload = {
        "providerConfigKey": connection.provider_config_key,
        "connectionId": connection.connection_id,
    }
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def _report(request: web.Request, attempt: Attempt, failure: FlowError) -> None:
    await report_failure(
        request,
        attempt.caller.environment,
        provider_config_key=attempt.integration.unique_key,
        connection_id=attempt.caller.connection_id,
        provider=attempt.integration.provider,
        auth_mode=attempt.provider.auth_mode,
        error_type=failure.code,
        error_description=failure.message or failure.code,
        link=attempt.caller.link,
    )


# --- bodies -----------------------------------------------------------------------


def _api_key_body(raw: Any) -> dict[str, Any]:
    check = Checker()
    body = check.expect_object(raw) or {}
    check.strict(body, ("apiKey",))
    check.string(body, "apiKey", min_length=1, max_length=MAX_CREDENTIAL_LENGTH)
    check.raise_if_invalid()
    return {"type": AuthMode.API_KEY.value, "apiKey": body["apiKey"]}


def _basic_body(raw: Any) -> dict[str, Any]:
    check = Checker()
    body = check.expect_object(raw) or {}
    check.strict(body, ("username", "password"))
    for name in ("username", "password"):
        # Either may be empty (an API token sent as the username, say), neither missing.
        check.string(body, name, max_length=MAX_CREDENTIAL_LENGTH)
    check.raise_if_invalid()
    return {
        "type": AuthMode.BASIC.value,
        "username": body["username"],
        "password": body["password"],
    }


def _empty_body(raw: Any) -> dict[str, Any]:
    """Nothing, or an empty object (the SDK sends no body; other clients send `{}`)."""
    check = Checker()
    if raw is not None:
        check.strict(check.expect_object(raw) or {}, ())
    check.raise_if_invalid()
    return {}


def _client_credentials_body(raw: Any) -> dict[str, Any]:
    check = Checker()
    body = check.expect_object(raw) or {}
    check.strict(body, ("client_id", "client_secret", "client_certificate", "client_private_key"))
    check.string(body, "client_id", min_length=1, max_length=MAX_CREDENTIAL_LENGTH)
    # A private key may stand in for the secret (private_key_jwt).
    has_key = isinstance(body.get("client_private_key"), str)
    check.string(
        body, "client_secret", required=not has_key, min_length=1, max_length=MAX_CREDENTIAL_LENGTH
    )
    for name in ("client_certificate", "client_private_key"):
        check.string(body, name, required=False, max_length=MAX_CLIENT_MATERIAL_LENGTH)
    check.raise_if_invalid()
    client: dict[str, Any] = {"type": AuthMode.OAUTH2_CC.value}
    client.update((name, value) for name, value in body.items() if value)
    return client


# --- obtaining the credentials ----------------------------------------------------


async def _tested(
    request: web.Request, attempt: Attempt, credentials: dict[str, Any]
) -> tuple[JsonDict, JsonDict]:
    """API-key and Basic credentials, once the provider's verification accepts them."""
    candidate = replace(_draft(attempt), credentials=credentials)
    try:
        await verify_credentials(
            request.app[CORE].token_http, candidate, attempt.integration, attempt.provider
        )
    except CredentialsRejected as rejected:
        raise FlowError(400, TEST_FAILED, str(rejected)) from None
    return credentials, attempt.connection_config


async def _as_given(
    request: web.Request, attempt: Attempt, credentials: dict[str, Any]
) -> tuple[JsonDict, JsonDict]:
    """Nothing to obtain: the connection is its config."""
    return credentials, attempt.connection_config


async def _granted(
    request: web.Request, attempt: Attempt, client: dict[str, Any]
) -> tuple[JsonDict, JsonDict]:
    """The token the client credentials grant issues, with the client kept beside it
    so that the next token comes from running the grant again."""
    config = dict(attempt.connection_config)
    defaults = attempt.caller.defaults.authorization_params
    if defaults:
        config["authorization_params"] = defaults
    draft = replace(_draft(attempt), credentials=client, connection_config=config)
    http = request.app[CORE].token_http
    try:
        grant = await cc_grant.fetch(
            GrantRequest(draft, attempt.integration, attempt.provider, http, time.time())
        )
    except GrantError as failure:
        message = f"The provider did not issue a token for these client credentials: {failure}"
        raise FlowError(400, GRANT_FAILED, message) from None
    return grant.credentials, config


def _draft(attempt: Attempt) -> Connection:
    return draft_connection(
        attempt.integration, attempt.caller.connection_id, attempt.connection_config
    )
