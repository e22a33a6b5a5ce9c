"""`GET /oauth/connect/{providerConfigKey}` and `GET /oauth/callback`: the popup's side of
the OAuth 2.0 and OAuth 1.0a flows (reference §6.1 to §6.3), and of a GitHub App
installation (§6.4), whose end is the app's Setup URL `GET /app-auth/connect`.

Connect identifies the caller (management/flow_caller.py), records the authorisation
in progress under a fresh `state` (credentials/oauth_sessions.py) and redirects the
browser to the provider. The callback redeems the state (once), trades the code or
verifier for tokens, stores the connection and ends on the callback page
(management/callback_page.py). Both answer every failure with that page too: the user
is in a popup, not a JSON client. The outcome also goes to the frontend's WebSocket
(`ws_client_id`) and to the auth events, when those are wired into the app.

The `oauth2-<state>` cookie set with the redirect is measure-only, as Nango's default:
a callback without it is logged, not refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Final

from aiohttp import web

from credentials.authorization import (
    AuthorizationError,
    draft_connection,
    github_app,
    oauth1,
    oauth2,
)
from credentials.authorization.common import check_outbound, scope_list, with_query
from credentials.database import StoreUnavailable
from credentials.environment_settings import EnvironmentSettingsStore
from credentials.grants import GrantError, GrantRequest, TokenCall, TokenReply, renew
from credentials.grants.base import clip
from credentials.grants.calls import ClientCredentials
from credentials.models import AuthMode, Connection, Environment, Integration, JsonDict, Provider
from credentials.oauth_sessions import (
    FlowSecrets,
    FlowStart,
    OAuthSession,
    OAuthSessionStore,
    new_state,
)
from management.auth import public
from management.callback_page import error_page, notice_page, success_page
from management.errors import ApiError
from management.flow_caller import (
    SCOPES_OVERRIDE_KEY,
    ConnectionLink,
    FlowCaller,
    FlowError,
    bracketed,
    finish_connection,
    identify_caller,
    load_integration,
    report_failure,
    requested_connection_config,
)
from management.request_context import CORE, PUBLISHER, SETTINGS

log = logging.getLogger("authgate.flows")

OAUTH_MODES: Final = (AuthMode.OAUTH2, AuthMode.OAUTH1, AuthMode.APP)
# Modes whose start sets the measure-only state cookie (OAuth 1.0a's callback carries
# no state of its own to name it by).
COOKIE_MODES: Final = (AuthMode.OAUTH2, AuthMode.APP)
CALLBACK_PATH: Final = "/oauth/callback"
APP_SETUP_PATH: Final = "/app-auth/connect"
STATE_COOKIE_PREFIX: Final = "oauth2-"
STATE_COOKIE_MAX_AGE: Final = 60 * 60
# Where providers put the state when not in `state` (Crisp, Shopline).
STATE_PARAMETERS: Final = ("state", "payload", "customField")
# Query parameters a provider uses to say why it sent no code.
PROVIDER_ERROR_PARAMETERS: Final = (
    "error",
    "error_description",
    "error_reason",
    "error_uri",
    "status_code",
    "error_message",
)
MAX_WS_CLIENT_ID: Final = 128
Failure = ApiError | AuthorizationError | GrantError


def add_routes(router: web.UrlDispatcher) -> None:
    # No HEAD: a link prefetcher's HEAD must neither start a flow nor redeem a state.
    router.add_get("/oauth/connect/{providerConfigKey}", oauth_connect, allow_head=False)
    router.add_get(CALLBACK_PATH, oauth_callback, allow_head=False)
    # A GitHub App's Setup URL: GitHub returns here after an installation.
    router.add_get(APP_SETUP_PATH, oauth_callback, allow_head=False)


# --- connect ------------------------------------------------------------------------


@public
async def oauth_connect(request: web.Request) -> web.StreamResponse:
    ws_client_id = _ws_client_id(request)
    try:
        return await _start(request, request.match_info["providerConfigKey"], ws_client_id)
    except Exception as failure:
        return await _failure_page(request, ws_client_id, failure)


def _ws_client_id(request: web.Request) -> str | None:
    value = request.query.get("ws_client_id") or None
    return value if value is not None and len(value) <= MAX_WS_CLIENT_ID else None


async def _start(request: web.Request, key: str, ws_client_id: str | None) -> web.StreamResponse:
    caller = await identify_caller(request, key)
    integration, provider = await load_integration(request, caller, OAUTH_MODES)
    if provider.auth_mode != AuthMode.APP:
        integration_client(integration)  # both OAuth flows need the integration's client
    overrides = _client_overrides(request)
    config = requested_connection_config(request, caller)
    draft = draft_connection(integration, caller.connection_id, config)
    link = caller.link
    start = FlowStart(
        environment_id=caller.environment.id,
        provider_config_key=key,
        provider=integration.provider,
        auth_mode=provider.auth_mode,
        connection_id=caller.connection_id,
        callback_url=await callback_url(request, caller.environment.id),
        connection_config=config,
        connect_session_id=caller.session.id if caller.session is not None else None,
        ws_client_id=ws_client_id,
        secrets=replace(
            overrides,
            end_user=link.end_user,
            tags=link.tags,
            webhook_url_override=link.webhook_url_override,
        ),
    )
    if provider.auth_mode == AuthMode.OAUTH1:
        return await _start_oauth1(request, caller, integration, provider, draft, start)
    if provider.auth_mode == AuthMode.APP:
        return await _start_app_installation(request, integration, start)
    return await _start_oauth2(request, caller, integration, provider, draft, start)


async def _start_oauth2(
    request: web.Request,
    caller: FlowCaller,
    integration: Integration,
    provider: Provider,
    draft: Connection,
    start: FlowStart,
) -> web.StreamResponse:
    oauth2.check_ready(provider, integration, draft)
    allow_private = request.app[CORE].settings.allow_private_upstreams
    token_url = oauth2.token_endpoint(provider, draft)
    check_outbound(token_url, allow_private=allow_private, what="token URL")
    verifier = oauth2.new_code_verifier() if oauth2.uses_pkce(provider) else None
    state = new_state()
    client = _client(integration, start.secrets)
    location = oauth2.authorization_url(
        provider,
        integration,
        draft,
        client_id=client.client_id,
        redirect_uri=start.callback_url,
        state=state,
        scopes=_scopes(integration, start.connection_config),
        code_verifier=verifier,
        request_params=_authorization_params(request, caller),
        user_scope=caller.defaults.user_scopes or request.query.get("user_scope"),
    )
    check_outbound(location, allow_private=allow_private, what="authorization URL")
    secrets = replace(start.secrets, code_verifier=verifier)
    return await _away(request, state, replace(start, secrets=secrets), location)


async def _start_oauth1(
    request: web.Request,
    caller: FlowCaller,
    integration: Integration,
    provider: Provider,
    draft: Connection,
    start: FlowStart,
) -> web.StreamResponse:
    oauth1.check_ready(provider, integration, draft)
    state = new_state()
    callback = with_query(start.callback_url, f"state={state}")
    client = _client(integration, start.secrets)
    core = request.app[CORE]
    call = oauth1.request_token_call(provider, integration, draft, client=client, callback=callback)
    try:
        reply = await core.token_http.send(call)
        token, token_secret = oauth1.request_token(
            reply, now=time.time(), secrets=_known(client.secret)
        )
    except GrantError as failure:
        raise AuthorizationError(
            "token_err", f"The provider refused the request token: {failure}"
        ) from None
    location = oauth1.authorization_url(
        provider,
        integration,
        draft,
        request_token=token,
        scopes=_scopes(integration, start.connection_config),
        callback=callback,
        request_params=_authorization_params(request, caller),
    )
    check_outbound(
        location, allow_private=core.settings.allow_private_upstreams, what="authorization URL"
    )
    secrets = replace(start.secrets, request_token=token, request_token_secret=token_secret)
    await OAuthSessionStore(core.store).create(state, replace(start, secrets=secrets))
    return _redirect(location)


async def _start_app_installation(
    request: web.Request, integration: Integration, start: FlowStart
) -> web.StreamResponse:
    state = new_state()
    location = with_query(github_app.installation_url(integration), f"state={state}")
    check_outbound(
        location,
        allow_private=request.app[CORE].settings.allow_private_upstreams,
        what="installation URL",
    )
    return await _away(request, state, start, location)


def _authorization_params(request: web.Request, caller: FlowCaller) -> dict[str, str]:
    """What the browser asked to add to the authorisation URL; the session's defaults win."""
    return {**bracketed(request, "authorization_params"), **caller.defaults.authorization_params}


async def _away(
    request: web.Request, state: str, start: FlowStart, location: str
) -> web.StreamResponse:
    """Record the authorisation under `state` and send the browser to the provider, with
    the measure-only state cookie."""
    await OAuthSessionStore(request.app[CORE].store).create(state, start)
    response = _redirect(location)
    _set_state_cookie(request, response, state)
    return response


def integration_client(integration: Integration) -> ClientCredentials:
    """The integration's OAuth client; both its id and its secret must be configured."""
    stored = integration.credentials or {}
    client_id, secret = stored.get("client_id"), stored.get("client_secret")
    if not isinstance(client_id, str) or not client_id or not isinstance(secret, str) or not secret:
        raise FlowError(
            400,
            "provider_config_err",
            f"The integration {integration.unique_key!r} has no client id and client secret",
        )
    return ClientCredentials(client_id, secret)


def _client(integration: Integration, secrets: FlowSecrets) -> ClientCredentials:
    """The client the browser asked to use instead of the integration's, if any."""
    own = integration_client(integration)
    return ClientCredentials(
        secrets.client_id_override or own.client_id,
        secrets.client_secret_override or own.secret,
    )


def _client_overrides(request: web.Request) -> FlowSecrets:
    """`credentials[oauth_client_id_override]` and its kin: the browser's own client
    (and refresh token) for this one connection."""
    given = bracketed(request, "credentials")
    return FlowSecrets(
        client_id_override=given.get("oauth_client_id_override") or None,
        client_secret_override=given.get("oauth_client_secret_override") or None,
        refresh_token_override=given.get("oauth_refresh_token_override") or None,
    )


def _scopes(integration: Integration, connection_config: JsonDict) -> list[str]:
    stored = (integration.credentials or {}).get("scopes")
    return scope_list(connection_config.get(SCOPES_OVERRIDE_KEY), stored)


async def callback_url(request: web.Request, environment_id: int) -> str:
    """The environment's own callback URL, or this server's."""
    settings = await EnvironmentSettingsStore(request.app[CORE].store).get(environment_id)
    return settings.callback_url or request.app[SETTINGS].public_url + CALLBACK_PATH


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _set_state_cookie(request: web.Request, response: web.Response, state: str) -> None:
    secure = request.app[SETTINGS].public_url.startswith("https://")
    response.set_cookie(
        STATE_COOKIE_PREFIX + state,
        "1",
        max_age=STATE_COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        secure=secure,
        samesite="None" if secure else "Lax",
    )


# --- callback -----------------------------------------------------------------------


@public
async def oauth_callback(request: web.Request) -> web.StreamResponse:
    state = next((request.query[name] for name in STATE_PARAMETERS if request.query.get(name)), "")
    try:
        session = await OAuthSessionStore(request.app[CORE].store).take(state) if state else None
    except Exception as failure:
        return await _failure_page(request, None, failure)
    if session is None:
        if not state and request.path == APP_SETUP_PATH:
            # An installation changed from GitHub's settings, not from a flow.
            return notice_page("Installation saved", "GitHub saved the installation.")
        message = "This authorisation is unknown, expired or already finished; start again"
        return error_page("state_err", message)
    cookie_name = STATE_COOKIE_PREFIX + session.id
    if session.start.auth_mode in COOKIE_MODES and cookie_name not in request.cookies:
        log.info(
            "OAuth callback without its state cookie",
            extra={"provider_config_key": session.start.provider_config_key},
        )
    try:
        response = await _finish(request, session)
    except Exception as failure:
        response = await _failure_page(request, session.start.ws_client_id, failure)
    if session.start.auth_mode in COOKIE_MODES:
        response.del_cookie(cookie_name, path="/")
    return response


async def _finish(request: web.Request, session: OAuthSession) -> web.Response:
    start = session.start
    link = ConnectionLink(
        end_user=start.secrets.end_user,
        tags=start.secrets.tags,
        webhook_url_override=start.secrets.webhook_url_override,
    )
    environment = await request.app[CORE].store.get_environment_by_id(start.environment_id)
    if environment is None:
        return error_page("state_err", "The environment of this authorisation no longer exists")
    try:
        connection = await _connect(request, environment, session, link)
    except (ApiError, AuthorizationError, GrantError) as failure:
        error_type, message = _described(failure)
        await report_failure(
            request,
            environment,
            provider_config_key=start.provider_config_key,
            connection_id=start.connection_id,
            provider=start.provider,
            auth_mode=start.auth_mode,
            error_type=error_type,
            error_description=message,
            link=link,
        )
        await _publish_error(request, start.ws_client_id, error_type, message)
        return error_page(error_type, message, status=_status(failure))
    await _publish_success(request, start.ws_client_id, connection)
    return success_page()


async def _connect(
    request: web.Request, environment: Environment, session: OAuthSession, link: ConnectionLink
) -> Connection:
    start = session.start
    integration = await request.app[CORE].store.get_integration(
        environment.id, start.provider_config_key
    )
    if integration is None:
        raise FlowError(400, "unknown_config_key", "The integration no longer exists")
    provider = request.app[CORE].catalogue.get(integration.provider)
    if provider is None or provider.auth_mode != start.auth_mode:
        raise FlowError(400, "auth_mode_err", "The integration's provider changed during the flow")
    if start.auth_mode == AuthMode.OAUTH1:
        credentials, config = await _oauth1_tokens(request, integration, provider, start)
    elif start.auth_mode == AuthMode.APP:
        credentials, config = await _installation_token(request, integration, provider, start)
    else:
        credentials, config = await _oauth2_tokens(request, integration, provider, start)
    return await finish_connection(
        request,
        environment,
        integration,
        auth_mode=start.auth_mode,
        connection_id=start.connection_id,
        credentials=credentials,
        connection_config=config,
        link=link,
    )


async def _oauth2_tokens(
    request: web.Request, integration: Integration, provider: Provider, start: FlowStart
) -> tuple[JsonDict, JsonDict]:
    """The credentials, and the connection config with what the provider said (callback
    and token metadata) over what the browser asked for. Nango lets a non-empty
    requested value win; here an end user cannot pre-set, say, the `instance_url` the
    proxy will send the tokens to."""
    code = request.query.get(oauth2.code_parameter(provider))
    if not code:
        raise AuthorizationError("callback_err", _no_code_message(request))
    secrets = start.secrets
    client = _client(integration, secrets)
    draft = draft_connection(integration, start.connection_id, start.connection_config)
    call = oauth2.code_exchange_call(
        provider,
        integration,
        draft,
        client=client,
        code=code,
        redirect_uri=start.callback_url,
        code_verifier=secrets.code_verifier,
    )
    reply = await _send(request, call)
    credentials, token_metadata = oauth2.exchanged_credentials(
        reply,
        provider,
        now=time.time(),
        config_override=_config_override(secrets, client),
        secrets=_known(client.secret, code, secrets.code_verifier),
    )
    config = {
        **start.connection_config,
        **oauth2.callback_metadata(provider, request.query),
        **token_metadata,
    }
    if secrets.refresh_token_override:
        credentials["refresh_token"] = secrets.refresh_token_override
        config["overrideTokenRefresh"] = True
    return credentials, config


async def _oauth1_tokens(
    request: web.Request, integration: Integration, provider: Provider, start: FlowStart
) -> tuple[JsonDict, JsonDict]:
    token = request.query.get("oauth_token")
    verifier = request.query.get("oauth_verifier")
    secrets = start.secrets
    if not token or not verifier:
        raise AuthorizationError(
            "callback_err", "The provider sent back no oauth_token and oauth_verifier"
        )
    if not secrets.request_token or not secrets.request_token_secret:
        raise AuthorizationError("state_err", "This authorisation has no request token")
    if token != secrets.request_token:
        raise AuthorizationError("callback_err", "The provider sent back another request token")
    client = _client(integration, secrets)
    draft = draft_connection(integration, start.connection_id, start.connection_config)
    call = oauth1.access_token_call(
        provider,
        integration,
        draft,
        client=client,
        request_token=token,
        request_token_secret=secrets.request_token_secret,
        verifier=verifier,
    )
    reply = await _send(request, call)
    credentials = oauth1.access_credentials(
        reply,
        now=time.time(),
        secrets=_known(client.secret, secrets.request_token_secret, verifier),
    )
    return credentials, dict(start.connection_config)


async def _installation_token(
    request: web.Request, integration: Integration, provider: Provider, start: FlowStart
) -> tuple[JsonDict, JsonDict]:
    """The token of the installation GitHub reported, minted through the app."""
    installation = github_app.installation_id(request.query)
    config = github_app.installation_config(start.connection_config, integration, installation)
    draft = replace(
        draft_connection(integration, start.connection_id, config), credentials={"type": "APP"}
    )
    http = request.app[CORE].token_http
    grant = await renew(GrantRequest(draft, integration, provider, http, time.time()))
    return grant.credentials, grant.connection_config or config


async def _send(request: web.Request, call: TokenCall) -> TokenReply:
    """Through the SSRF-checked token client, which raises GrantError on any failure."""
    return await request.app[CORE].token_http.send(call)


def _config_override(secrets: FlowSecrets, client: ClientCredentials) -> dict[str, str] | None:
    if not secrets.client_id_override and not secrets.client_secret_override:
        return None
    return {"client_id": client.client_id, "client_secret": client.secret or ""}


def _no_code_message(request: web.Request) -> str:
    """Why the provider sent no code, from the error parameters it sent instead."""
    details = [
        f"{name}: {clip(request.query[name])}"
        for name in PROVIDER_ERROR_PARAMETERS
        if request.query.get(name)
    ]
    message = "The provider sent back no authorization code"
    return f"{message} ({'; '.join(details)})" if details else message


def _known(*values: str | None) -> list[str]:
    return [value for value in values if value]


# --- outcomes -----------------------------------------------------------------------


def _described(failure: Failure) -> tuple[str, str]:
    if isinstance(failure, AuthorizationError):
        return failure.error_type, failure.message
    if isinstance(failure, GrantError):
        return "token_err", f"The token request failed: {failure}"
    return failure.code, failure.message or failure.code


def _status(failure: Failure) -> int:
    return failure.status if isinstance(failure, ApiError) else 400


async def _failure_page(
    request: web.Request, ws_client_id: str | None, failure: Exception
) -> web.Response:
    """The popup's page for any failure, also told to the frontend's WebSocket."""
    if isinstance(failure, ApiError | AuthorizationError | GrantError):
        error_type, message = _described(failure)
        status = _status(failure)
    elif isinstance(failure, StoreUnavailable):
        error_type, message, status = "unknown_err", "The service is briefly unavailable", 503
    else:
        log.exception("unexpected failure in an OAuth flow", extra={"path": request.path})
        error_type, message, status = "unknown_err", "An unexpected error occurred", 500
    await _publish_error(request, ws_client_id, error_type, message)
    return error_page(error_type, message, status=status)


async def _publish_success(
    request: web.Request, ws_client_id: str | None, connection: Connection
) -> None:
    publisher = request.app.get(PUBLISHER)
    if publisher is None or ws_client_id is None:
        return
    try:
        await publisher.publish_success(
            ws_client_id, connection.provider_config_key, connection.connection_id
        )
    except Exception:
        log.exception("publishing an authorisation result failed")


async def _publish_error(
    request: web.Request, ws_client_id: str | None, error_type: str, message: str
) -> None:
    publisher = request.app.get(PUBLISHER)
    if publisher is None or ws_client_id is None:
        return
    try:
        await publisher.publish_error(ws_client_id, error_type, message)
    except Exception:
        log.exception("publishing an authorisation result failed")
