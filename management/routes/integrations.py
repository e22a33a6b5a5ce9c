"""`/integrations`: one environment's configurations of catalogue providers (§6).

Every route validates the query, then the path, then the body, before touching the store,
so a malformed request never reaches SQL. Deletes and renames go through the store, whose
change events drop the proxy's cached targets at once.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from credentials.models import AuthMode, Environment, Integration, Provider
from credentials.store import AlreadyExists
from management.auth import accepts_connect_session
from management.errors import ApiError, ValidationFailed, issue
from management.integration_settings import merged_settings
from management.integration_views import client_credentials, public_integration, webhook_url
from management.params import QueryValue, add_lenient, path_param, strict_query
from management.request_context import CONNECT_SESSION, CORE, ENVIRONMENT, SETTINGS, json_body
from management.validation import Checker

PROVIDER_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
UNIQUE_KEY_PATTERN = re.compile(r"^[a-zA-Z0-9~:.@ _-]+$")
SCOPES_PATTERN = re.compile(r"^$|^[0-9a-zA-Z:/_.*-]+(,[0-9a-zA-Z:/_.*-]+)*$")
_NEEDS_CLIENT = frozenset({AuthMode.OAUTH1, AuthMode.OAUTH2, AuthMode.APP, AuthMode.CUSTOM})
_QUICKSTART_MODES = frozenset({AuthMode.OAUTH1, AuthMode.OAUTH2, AuthMode.APP})
_OAUTH_TYPES = frozenset({AuthMode.OAUTH1, AuthMode.OAUTH2, AuthMode.TBA})
_INCLUDES = ("webhook", "credentials")
_COMMON_FIELDS = (
    "display_name",
    "forward_webhooks",
    "credentials",
    "integration_config",
    "custom",
)
_CREATE_FIELDS = ("provider", "unique_key", *_COMMON_FIELDS)
_PATCH_FIELDS = ("unique_key", *_COMMON_FIELDS)
_QUICKSTART_FIELDS = ("provider", "unique_key", "display_name", "forward_webhooks")
_OAUTH_FIELDS = ("type", "client_id", "client_secret", "scopes", "webhook_secret")
_APP_FIELDS = ("type", "app_id", "app_link", "private_key")
_CUSTOM_FIELDS = ("type", "client_id", "client_secret", "app_id", "app_link", "private_key")
_RSA_BEGIN = "-----BEGIN RSA PRIVATE KEY----"
_RSA_END = "-----END RSA PRIVATE KEY-----"

INCOMPATIBLE_CREDENTIALS = "incompatible credentials auth type and provider auth"
RENAME_TAKEN = "uniqueKey is already used by another integration"
RENAME_WITH_CONNECTIONS = "Can't rename an integration with active connections"
QUICKSTART_UNSUPPORTED = "Quickstart is only available for providers that require a developer app"
QUICKSTART_NO_APP = "No Nango-provided developer app is configured for this provider"


def add_routes(router: web.UrlDispatcher) -> None:
    add_lenient(router, "GET", "/integrations", list_integrations)
    add_lenient(router, "POST", "/integrations", create_integration)
    # Before `{uniqueKey}`: only POST is routed here, and no other route takes POST there.
    add_lenient(router, "POST", "/integrations/quickstart", create_quickstart_integration)
    add_lenient(router, "GET", "/integrations/{uniqueKey}", get_integration)
    add_lenient(router, "PATCH", "/integrations/{uniqueKey}", update_integration)
    add_lenient(router, "DELETE", "/integrations/{uniqueKey}", delete_integration)


# --- handlers ----------------------------------------------------------------------------


@accepts_connect_session
async def list_integrations(request: web.Request) -> web.Response:
    strict_query(request)
    core = request.app[CORE]
    integrations = await core.store.list_integrations(request[ENVIRONMENT].id)
    session = request.get(CONNECT_SESSION)
    if session is not None and session.allowed_integrations is not None:
        allowed = frozenset(session.allowed_integrations)
        integrations = [item for item in integrations if item.unique_key in allowed]
    public_url = request.app[SETTINGS].public_url
    return _data(
        [
            public_integration(item, core.catalogue.get(item.provider), public_url)
            for item in integrations
        ]
    )


async def get_integration(request: web.Request) -> web.Response:
    include = _includes(strict_query(request, ("include",)))
    unique_key = path_param(request, "uniqueKey", UNIQUE_KEY_PATTERN)
    environment = request[ENVIRONMENT]
    integration = await _existing(request, environment, unique_key)
    provider = request.app[CORE].catalogue.get(integration.provider)
    public_url = request.app[SETTINGS].public_url
    data = public_integration(integration, provider, public_url)
    if "webhook" in include:
        data["webhook_url"] = webhook_url(integration, provider, environment, public_url)
    # Every secret key has full access (environment:*), so read_credentials always holds.
    if "credentials" in include:
        data["credentials"] = client_credentials(integration, provider)
    return _data(data)


async def create_integration(request: web.Request) -> web.Response:
    strict_query(request)
    core = request.app[CORE]
    body = _validated_body(await json_body(request), _CREATE_FIELDS, creating=True)
    provider = _catalogue_provider(request, body["provider"])
    credentials = body.get("credentials")
    if credentials is not None and credentials["type"] != provider.auth_mode:
        raise ApiError(400, "invalid_body", INCOMPATIBLE_CREDENTIALS)
    if credentials is None and provider.auth_mode in _NEEDS_CLIENT:
        raise ApiError(400, "invalid_body", "Missing credentials")
    custom = merged_settings(
        provider, None, integration_config=body.get("integration_config"), custom=body.get("custom")
    )
    try:
        integration = await core.store.create_integration(
            request[ENVIRONMENT].id,
            unique_key=body["unique_key"],
            provider=provider.name,
            display_name=body.get("display_name"),
            forward_webhooks=body.get("forward_webhooks", True),
            credentials=None if credentials is None else _client(credentials, None),
            custom=custom,
        )
    except AlreadyExists:
        raise ValidationFailed(
            "invalid_body", [issue("invalid_string", "Unique key already exists", "uniqueKey")]
        ) from None
    return _data(public_integration(integration, provider, request.app[SETTINGS].public_url))


async def create_quickstart_integration(request: web.Request) -> web.Response:
    """authgate has no shared developer apps, so after the checks Nango makes first, every
    request ends in the error Nango gives when no shared app is configured."""
    strict_query(request)
    body = _validated_body(await json_body(request), _QUICKSTART_FIELDS, creating=True)
    provider = _catalogue_provider(request, body["provider"])
    if provider.auth_mode not in _QUICKSTART_MODES:
        raise ApiError(400, "invalid_body", QUICKSTART_UNSUPPORTED)
    raise ApiError(400, "invalid_body", QUICKSTART_NO_APP)


async def update_integration(request: web.Request) -> web.Response:
    strict_query(request)
    unique_key = path_param(request, "uniqueKey", UNIQUE_KEY_PATTERN)
    body = _validated_body(await json_body(request), _PATCH_FIELDS, creating=False)
    environment = request[ENVIRONMENT]
    store = request.app[CORE].store
    integration = await _existing(request, environment, unique_key)
    provider = request.app[CORE].catalogue.get(integration.provider)
    changes = _changes(body, integration, provider)
    new_key = body.get("unique_key")
    if new_key is not None and new_key != unique_key:
        await _refuse_rename_with_connections(request, environment, unique_key)
        changes["new_unique_key"] = new_key
    try:
        updated = await store.update_integration(environment.id, unique_key, **changes)
    except AlreadyExists:
        raise ApiError(400, "invalid_body", RENAME_TAKEN) from None
    if updated is None:  # deleted while we were checking
        raise _integration_not_found(unique_key)
    return _data(public_integration(updated, provider, request.app[SETTINGS].public_url))


async def delete_integration(request: web.Request) -> web.Response:
    strict_query(request)
    unique_key = path_param(request, "uniqueKey", UNIQUE_KEY_PATTERN)
    deleted = await request.app[CORE].store.delete_integration(request[ENVIRONMENT].id, unique_key)
    if not deleted:
        raise ApiError(404, "not_found", "Integration does not exist")
    return _data_response({"success": True})


# --- helpers -----------------------------------------------------------------------------


def _data(data: Any) -> web.Response:
    return _data_response({"data": data})


def _data_response(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _integration_not_found(unique_key: str) -> ApiError:
    return ApiError(404, "not_found", f'Integration "{unique_key}" does not exist')


async def _existing(request: web.Request, environment: Environment, unique_key: str) -> Integration:
    integration = await request.app[CORE].store.get_integration(environment.id, unique_key)
    if integration is None:
        raise _integration_not_found(unique_key)
    return integration


def _catalogue_provider(request: web.Request, name: str) -> Provider:
    provider = request.app[CORE].catalogue.get(name)
    if provider is None:
        raise ValidationFailed(
            "invalid_body", [issue("invalid_string", "Invalid provider", "provider")]
        )
    return provider


def _includes(query: dict[str, QueryValue]) -> frozenset[str]:
    """`include` as one value or repeated (`include=a&include=b`, `include[]=a`)."""
    raw = query.get("include")
    if raw is None:
        return frozenset()
    check = Checker()
    if isinstance(raw, dict):
        check.add("invalid_type", "Invalid input: expected array, received object", ("include",))
        values: list[str] = []
    elif isinstance(raw, list):
        values = raw
        for index, value in enumerate(raw):
            _check_include(check, value, ("include", str(index)))
    else:
        values = [raw]
        _check_include(check, raw, ("include",))
    check.raise_if_invalid("invalid_query_params")
    return frozenset(values)


def _check_include(check: Checker, value: str, path: tuple[str, ...]) -> None:
    if value not in _INCLUDES:
        expected = "|".join(f'"{name}"' for name in _INCLUDES)
        check.add("invalid_value", f"Invalid option: expected one of {expected}", path)


def _changes(
    body: dict[str, Any], integration: Integration, provider: Provider | None
) -> dict[str, Any]:
    """The store's update arguments for a PATCH body (rename excluded)."""
    changes: dict[str, Any] = {}
    for name in ("display_name", "forward_webhooks"):
        if name in body:
            changes[name] = body[name]
    credentials = body.get("credentials")
    if credentials is not None:
        if provider is None or credentials["type"] != provider.auth_mode:
            raise ApiError(400, "invalid_body", INCOMPATIBLE_CREDENTIALS)
        changes["credentials"] = _client(credentials, integration.credentials)
    if "integration_config" in body or "custom" in body:
        changes["custom"] = merged_settings(
            provider,
            integration.custom,
            integration_config=body.get("integration_config"),
            custom=body.get("custom"),
        )
    return changes


def _client(new: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """The client to store. New credentials replace the old ones, except that an OAuth
    webhook secret left out is kept, and an empty one clears it (Nango's PATCH rule)."""
    if new["type"] not in _OAUTH_TYPES:
        return new
    client = {name: value for name, value in new.items() if name != "webhook_secret"}
    secret = (
        new["webhook_secret"] if "webhook_secret" in new else (stored or {}).get("webhook_secret")
    )
    if secret:
        client["webhook_secret"] = secret
    return client


async def _refuse_rename_with_connections(
    request: web.Request, environment: Environment, unique_key: str
) -> None:
    """Refuse a rename while connections exist. A taken key is left to the store's unique
    constraint (see update_integration), which no concurrent create can slip past."""
    store = request.app[CORE].store
    # Connections follow the integration by id, so one created after this check is renamed
    # along with it rather than orphaned; the check exists because callers (webhooks,
    # stored Provider-Config-Key values) know connections by the old key.
    live = await store.list_connections(
        environment.id, provider_config_key=unique_key, limit=1, include_credentials=False
    )
    if live:
        raise ApiError(400, "invalid_body", RENAME_WITH_CONNECTIONS)


# --- body validation ---------------------------------------------------------------------


def _validated_body(raw: Any, fields: tuple[str, ...], *, creating: bool) -> dict[str, Any]:
    check = Checker()
    body = check.expect_object(raw)
    if body is None:
        check.raise_if_invalid()
        raise AssertionError("unreachable")
    check.strict(body, fields)
    result: dict[str, Any] = {}
    if "provider" in fields:
        result["provider"] = check.string(
            body, "provider", pattern=PROVIDER_PATTERN, max_length=255
        )
    unique_key = check.string(
        body, "unique_key", required=creating, pattern=UNIQUE_KEY_PATTERN, max_length=255
    )
    if unique_key is not None:
        result["unique_key"] = unique_key
    display_name = check.string(body, "display_name", required=False, min_length=1, max_length=255)
    if display_name is not None:
        result["display_name"] = display_name
    forward = check.boolean(body, "forward_webhooks")
    if forward is not None:
        result["forward_webhooks"] = forward
    for key in ("integration_config", "custom"):
        if key in fields:
            mapping = check.string_map(body, key, max_value=8192)
            if mapping is not None:
                result[key] = mapping
    if "credentials" in fields and "credentials" in body:
        result["credentials"] = _validated_credentials(check, body["credentials"])
    check.raise_if_invalid()
    return result


def _validated_credentials(check: Checker, raw: Any) -> dict[str, Any] | None:
    path = ("credentials",)
    credentials = check.expect_object(raw, path)
    if credentials is None:
        return None
    kind = credentials.get("type")
    if kind in ("OAUTH1", "OAUTH2", "TBA"):
        return _oauth_client(check, credentials, path)
    if kind == "APP":
        return _app_client(check, credentials, path, _APP_FIELDS)
    if kind == "CUSTOM":
        return _app_client(check, credentials, path, _CUSTOM_FIELDS)
    check.add("invalid_union", "invalid credentials object", (*path, "type"))
    return None


def _oauth_client(
    check: Checker, credentials: dict[str, Any], path: tuple[str, ...]
) -> dict[str, Any]:
    check.strict(credentials, _OAUTH_FIELDS, path)
    result: dict[str, Any] = {
        "type": credentials["type"],
        "client_id": check.string(credentials, "client_id", path, min_length=1, max_length=255),
        "client_secret": check.string(credentials, "client_secret", path, min_length=1),
    }
    scopes = check.string(credentials, "scopes", path, required=False, pattern=SCOPES_PATTERN)
    if scopes is not None:
        result["scopes"] = scopes
    secret = check.string(credentials, "webhook_secret", path, required=False, max_length=255)
    if secret is not None:
        result["webhook_secret"] = secret
    return result


def _app_client(
    check: Checker, credentials: dict[str, Any], path: tuple[str, ...], fields: tuple[str, ...]
) -> dict[str, Any]:
    check.strict(credentials, fields, path)
    result: dict[str, Any] = {"type": credentials["type"]}
    for name in fields[1:]:
        minimum = 1 if name != "private_key" else 0
        result[name] = check.string(credentials, name, path, min_length=minimum, max_length=None)
    key = result.get("private_key")
    if isinstance(key, str) and not (
        key.startswith(_RSA_BEGIN) and key.rstrip().endswith(_RSA_END)
    ):
        check.add(
            "invalid_format", "Invalid private key: expected an RSA PEM key", (*path, "private_key")
        )
    return result
