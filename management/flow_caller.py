"""Who started an auth flow, what they asked for, and how a flow ends.

Shared by every route a browser (or the frontend SDK's `fetch`) uses to connect an
account: `/oauth/connect`, and the api-auth and client-credentials routes. None of them
carries a secret key; the caller is identified from the query:

- `connect_session_token` (preferred): the session's environment, its allowed
  integrations, its per-integration defaults, the end user and tags the connection
  will carry. The connection id is the server's (a UUID v4), or for a reconnect session
  the id of the connection it re-authorises; `connection_id` in the query is refused.
- `public_key` (legacy): the environment whose settings hold that key. When the
  environment has `hmac_enabled`, `hmac` must be the hex HMAC-SHA256, keyed by the
  environment's HMAC key, of `providerConfigKey` or `providerConfigKey:connectionId`
  (when a connection id is given), compared in constant time.

Errors are `FlowError`s (an `ApiError` whose code is the error type the frontend SDK
reports): JSON routes let the middleware answer them; the OAuth routes render them in
the popup.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web

from credentials.environment_settings import EnvironmentSettings, EnvironmentSettingsStore
from credentials.models import Connection, Environment, Integration, JsonDict, Provider
from credentials.sessions import ConnectSession, is_well_formed
from management.errors import ApiError, AuthenticationFailed
from management.params import parse_query
from management.request_context import AUTH_EVENTS, CORE
from management.sessions import (
    MALFORMED_SESSION_CODE,
    MALFORMED_SESSION_MESSAGE,
    session_store,
    unknown_session,
)

log = logging.getLogger("authgate.flows")

CONNECTION_ID_PATTERN: Final = re.compile(r"^[a-zA-Z0-9,.;:=+~\[\]|@${}\"'\\/_ -]+$")
MAX_CONNECTION_ID_LENGTH: Final = 255
MAX_PARAM_LENGTH: Final = 4096
# connection_config keys the browser may not set through `params[...]`: the webhook URL
# is the backend's to choose, and client overrides travel as `credentials[...]`.
RESERVED_CONFIG_KEYS: Final = frozenset(
    {
        "webhook_url",
        "oauth_client_id_override",
        "oauth_client_secret_override",
        "oauth_refresh_token_override",
        "overrideTokenRefresh",
    }
)
SCOPES_OVERRIDE_KEY: Final = "oauth_scopes_override"

Operation = Literal["creation", "override"]


class FlowError(ApiError):
    """A flow refused: `code` is the SDK's error type (`missing_hmac`, `state_err`, ...)."""


# --- what the connection inherits ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionLink:
    """What a new connection takes from its caller: the connect session's end user (in
    the stored shape), its tags and its webhook URL override. None: nothing given (an
    existing connection keeps its own)."""

    end_user: JsonDict | None = None
    tags: dict[str, str] | None = None
    webhook_url_override: str | None = None


@dataclass(frozen=True, slots=True)
class IntegrationDefaults:
    """A connect session's `integrations_config_defaults` entry for one integration;
    they win over what the browser asks for."""

    user_scopes: str | None = None
    authorization_params: dict[str, str] = field(default_factory=dict)
    connection_config: JsonDict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlowCaller:
    """An identified caller of one flow, for one integration and one connection id."""

    environment: Environment
    provider_config_key: str
    connection_id: str
    session: ConnectSession | None = None
    """The connect session when the caller used a token; None for a public key."""

    @property
    def link(self) -> ConnectionLink:
        if self.session is None:
            return ConnectionLink()
        spec = self.session.spec
        return ConnectionLink(
            end_user=_stored_end_user(spec.end_user, spec.organization),
            tags=spec.tags,
            webhook_url_override=spec.webhook_url_override,
        )

    @property
    def defaults(self) -> IntegrationDefaults:
        defaults = (self.session.spec.integrations_config_defaults or {}) if self.session else {}
        entry = defaults.get(self.provider_config_key)
        if not isinstance(entry, Mapping):
            return IntegrationDefaults()
        user_scopes = entry.get("user_scopes")
        return IntegrationDefaults(
            user_scopes=user_scopes if isinstance(user_scopes, str) else None,
            authorization_params=_text_map(entry.get("authorization_params")),
            connection_config=dict(entry.get("connection_config") or {}),
        )


def _stored_end_user(user: JsonDict | None, organization: JsonDict | None) -> JsonDict | None:
    """The end user as connections store it (every field present)."""
    if user is None:
        return None
    return {
        "id": user.get("id"),
        "email": user.get("email"),
        "display_name": user.get("display_name"),
        "tags": user.get("tags"),
        "organization": organization,
    }


# --- identifying the caller ---------------------------------------------------------


async def identify_caller(request: web.Request, provider_config_key: str) -> FlowCaller:
    """The caller of a flow for `provider_config_key`, from the request's query; raises
    FlowError (or the connect session's AuthenticationFailed)."""
    token = request.query.get("connect_session_token")
    if token:
        return await _session_caller(request, token, provider_config_key)
    return await _public_key_caller(request, provider_config_key)


async def _session_caller(request: web.Request, token: str, key: str) -> FlowCaller:
    if request.query.get("connection_id"):
        raise FlowError(
            400,
            "invalid_query_params",
            "connection_id cannot be given with a connect session token",
        )
    if not is_well_formed(token):
        raise AuthenticationFailed(401, MALFORMED_SESSION_CODE, MALFORMED_SESSION_MESSAGE)
    resolved = await session_store(request).resolve(token)
    if resolved is None:
        raise unknown_session()
    session = resolved.session
    allowed = session.spec.allowed_integrations
    if allowed is not None and key not in allowed:
        raise FlowError(
            400, "integration_not_allowed", "This integration is not allowed by the connect session"
        )
    reconnect = session.spec.reconnect
    if reconnect is not None and reconnect.integration == key:
        connection_id = reconnect.connection_id
    else:
        connection_id = str(uuid.uuid4())
    return FlowCaller(resolved.environment, key, connection_id, session)


async def _public_key_caller(request: web.Request, key: str) -> FlowCaller:
    public_key = request.query.get("public_key")
    if not public_key:
        raise FlowError(
            401, "missing_public_key", "A connect_session_token or public_key is required"
        )
    store = request.app[CORE].store
    settings = await EnvironmentSettingsStore(store).find_by_public_key(public_key)
    environment = None
    if settings is not None:
        environment = await store.get_environment_by_id(settings.environment_id)
    if settings is None or environment is None:
        raise FlowError(401, "unknown_user_account", "No environment has this public key")
    given_id = request.query.get("connection_id") or None
    check_hmac(settings, key, given_id, request.query.get("hmac"))
    if given_id is not None and not _valid_connection_id(given_id):
        raise FlowError(400, "invalid_query_params", "connection_id is not a valid connection id")
    return FlowCaller(environment, key, given_id or str(uuid.uuid4()))


def _valid_connection_id(connection_id: str) -> bool:
    return (
        len(connection_id) <= MAX_CONNECTION_ID_LENGTH
        and CONNECTION_ID_PATTERN.fullmatch(connection_id) is not None
    )


def expected_hmac(hmac_key: str, provider_config_key: str, connection_id: str | None) -> str:
    message = provider_config_key if not connection_id else f"{provider_config_key}:{connection_id}"
    return hmac.new(hmac_key.encode(), message.encode(), hashlib.sha256).hexdigest()


def check_hmac(
    settings: EnvironmentSettings,
    provider_config_key: str,
    connection_id: str | None,
    digest: str | None,
) -> None:
    """The public-key caller's HMAC, when the environment requires one."""
    if not settings.hmac_enabled:
        return
    if not digest:
        raise FlowError(400, "missing_hmac", "This environment requires an hmac parameter")
    # Enabled without a key: nothing can match, and nothing should get through.
    expected = expected_hmac(settings.hmac_key or "", provider_config_key, connection_id)
    if not settings.hmac_key or not hmac.compare_digest(expected.encode(), digest.encode()):
        raise FlowError(400, "invalid_hmac", "The hmac parameter does not match")


# --- the integration and what the browser asked for ---------------------------------


async def load_integration(
    request: web.Request,
    caller: FlowCaller,
    auth_modes: Collection[str],
    *,
    wrong_mode_code: str = "auth_mode_err",
) -> tuple[Integration, Provider]:
    """The caller's integration and its provider, which must use one of `auth_modes`."""
    core = request.app[CORE]
    key = caller.provider_config_key
    integration = await core.store.get_integration(caller.environment.id, key)
    if integration is None:
        raise FlowError(400, "unknown_config_key", f"There is no integration {key!r}")
    provider = core.catalogue.get(integration.provider)
    if provider is None:
        raise FlowError(
            400, "provider_config_err", f"The provider {integration.provider!r} is not known"
        )
    if provider.auth_mode not in auth_modes:
        raise FlowError(
            400,
            wrong_mode_code,
            f"The provider {provider.name!r} uses {provider.auth_mode}, not this flow",
        )
    return integration, provider


def bracketed(request: web.Request, name: str) -> dict[str, str]:
    """`name[key]=value` query parameters as a map (`params`, `authorization_params`,
    `credentials`); other shapes of `name` are ignored."""
    value = parse_query(request).get(name)
    if not isinstance(value, dict):
        return {}
    for key, item in value.items():
        if not key or len(item) > MAX_PARAM_LENGTH:
            raise FlowError(400, "invalid_query_params", f"{name}[{key}] is not acceptable")
    return dict(value)


def requested_connection_config(request: web.Request, caller: FlowCaller) -> JsonDict:
    """`params[...]` from the browser, then the connect session's defaults on top.

    Only a public-key caller may override scopes through params; with a session, only
    the backend's defaults can."""
    config: JsonDict = {
        key: value
        for key, value in bracketed(request, "params").items()
        if key not in RESERVED_CONFIG_KEYS
    }
    if caller.session is not None:
        config.pop(SCOPES_OVERRIDE_KEY, None)
    defaults = {
        key: value
        for key, value in caller.defaults.connection_config.items()
        if key not in RESERVED_CONFIG_KEYS
    }
    return {**config, **defaults}


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(key): str(item) for key, item in value.items() if item is not None}


# --- finishing --------------------------------------------------------------------


async def finish_connection(
    request: web.Request,
    environment: Environment,
    integration: Integration,
    *,
    auth_mode: str,
    connection_id: str,
    credentials: JsonDict,
    connection_config: JsonDict,
    link: ConnectionLink,
) -> Connection:
    """Store the new credentials (create, or override the connection of that id) and
    report the outcome to the auth events when they are wired.

    An override replaces credentials and config; metadata always carries over, and the
    end user, tags and webhook override carry over unless the link gives new ones."""
    store = request.app[CORE].store
    # Read without decrypting: re-authorising is how a connection whose credentials no
    # longer decrypt (its key retired) is repaired.
    found = await store.list_connections(
        environment.id,
        provider_config_key=integration.unique_key,
        connection_id=connection_id,
        include_credentials=False,
        limit=1,
    )
    existing = found[0] if found else None
    operation: Operation = "override" if existing is not None else "creation"
    connection = await store.upsert_connection(
        environment.id,
        integration,
        connection_id=connection_id,
        credentials=credentials,
        connection_config=connection_config,
        **_inherited(link, existing),
    )
    log.info(
        "connection authorised",
        extra={
            "environment": environment.name,
            "provider_config_key": integration.unique_key,
            "connection_id": connection_id,
            "auth_mode": auth_mode,
            "operation": operation,
        },
    )
    events = request.app.get(AUTH_EVENTS)
    if events is not None:
        try:
            await events.connection_created(environment, connection, auth_mode, operation=operation)
        except Exception:
            # The connection is stored; a failing reporter must not turn that into an error.
            log.exception("reporting a new connection failed")
    return connection


def _inherited(link: ConnectionLink, existing: Connection | None) -> dict[str, Any]:
    """The upsert's other fields: an existing connection's metadata always carries over,
    its end user, tags and webhook override unless the link brings new ones."""
    if existing is None:
        return {
            "metadata": None,
            "tags": link.tags or {},
            "end_user": link.end_user,
            "webhook_url_override": link.webhook_url_override,
        }
    return {
        "metadata": existing.metadata,
        "tags": link.tags if link.tags is not None else existing.tags,
        "end_user": link.end_user if link.end_user is not None else existing.end_user,
        "webhook_url_override": link.webhook_url_override or existing.webhook_url_override,
    }


async def report_failure(
    request: web.Request,
    environment: Environment,
    *,
    provider_config_key: str,
    connection_id: str | None,
    provider: str,
    auth_mode: str,
    error_type: str,
    error_description: str,
    link: ConnectionLink,
) -> None:
    """Tell the auth events (when wired) that a connection could not be created."""
    log.info(
        "connection authorisation failed",
        extra={
            "environment": environment.name,
            "provider_config_key": provider_config_key,
            "error_type": error_type,
        },
    )
    events = request.app.get(AUTH_EVENTS)
    if events is None:
        return
    try:
        await events.connection_creation_failed(
            environment,
            provider_config_key=provider_config_key,
            connection_id=connection_id,
            provider=provider,
            auth_mode=auth_mode,
            error_type=error_type,
            error_description=error_description,
            end_user=link.end_user,
            tags=link.tags,
        )
    except Exception:
        log.exception("reporting a failed connection failed")
