"""`/connect/sessions*` and `/connect/session`: connect sessions (§8).

A backend creates a session with its secret key and hands the token to its frontend; the
frontend (the Connect UI) then reads the session and lists providers and integrations with
the token, and may end the session. Checks run in Nango's order, so a body that is wrong
in several ways gets the same answer: schema (400 issues), the reconnected connection
(400), integrations named in the body (400 issues), the docs-connect override (403).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from credentials.sessions import IssuedSession, ReconnectTarget, SessionSpec
from credentials.store import to_datetime
from management import end_users
from management.auth import connect_session_only
from management.errors import ApiError, ValidationFailed, issue
from management.formatters import iso_z
from management.params import add_lenient, reject_body, strict_query
from management.request_context import CONNECT_SESSION, CORE, ENVIRONMENT, SETTINGS, json_body
from management.sessions import ConnectSessionPrincipal, session_store, unknown_session
from management.validation import Checker, Path, type_name
from management.webhook_urls import webhook_url_problem

# Nango's integration-key and connection-id rules (the same as on every other route).
UNIQUE_KEY_PATTERN = re.compile(r"^[a-zA-Z0-9~:.@ _-]+$")
CONNECTION_ID_PATTERN = re.compile(r"^[a-zA-Z0-9,.;:=+~\[\]|@${}\"'\\/_ -]+$")
MAX_KEY_LENGTH = 255
DEPRECATED_WEBHOOK_NOTE = (
    ". Note: connection_config.webhook_url is deprecated; use top-level webhook_url_override"
    " instead."
)
DOCS_CONNECT_FORBIDDEN = "You are not allowed to override the docs connect url"
RECONNECT_TARGET_MISSING = "ConnectionID or IntegrationId does not exists"
END_USER_NOT_FOUND = "End user not found"
END_USER_OR_TAGS = "end_user is required unless tags are provided"
MISSING_INTEGRATION = "Integration does not exist"
# What the Connect UI shows when the environment has no settings of its own (Nango's).
DEFAULT_CONNECT_UI_SETTINGS: dict[str, Any] = {
    "theme": {"light": {"primary": "#00B2E3"}, "dark": {"primary": "#00B2E3"}},
    "defaultTheme": "system",
    "showWatermark": True,
}

_COMMON_FIELDS = (
    "end_user",
    "organization",
    "tags",
    "integrations_config_defaults",
    "overrides",
    "webhook_url_override",
)
_CREATE_FIELDS = (*_COMMON_FIELDS, "allowed_integrations")
_RECONNECT_FIELDS = (*_COMMON_FIELDS, "connection_id", "integration_id")
_DEFAULTS_FIELDS = ("user_scopes", "authorization_params", "connection_config")


def add_routes(router: web.UrlDispatcher) -> None:
    add_lenient(router, "POST", "/connect/sessions", create_session)
    add_lenient(router, "POST", "/connect/sessions/reconnect", create_reconnect_session)
    add_lenient(router, "GET", "/connect/session", get_session)
    add_lenient(router, "DELETE", "/connect/session", delete_session)


# --- create ------------------------------------------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    strict_query(request)
    spec = _validated_body(await json_body(request), reconnect=False)
    await _check_references(request, spec)
    return await _issue(request, spec)


async def create_reconnect_session(request: web.Request) -> web.Response:
    strict_query(request)
    spec = _validated_body(await json_body(request), reconnect=True)
    assert spec.reconnect is not None  # the reconnect schema requires both fields
    target = spec.reconnect
    store = request.app[CORE].store
    connection = await store.get_connection(
        request[ENVIRONMENT].id, target.integration, target.connection_id
    )
    if connection is None:
        raise ApiError(400, "invalid_body", RECONNECT_TARGET_MISSING)
    await _check_references(request, spec)
    return await _issue(request, spec)


async def _issue(request: web.Request, spec: SessionSpec) -> web.Response:
    issued = await session_store(request).create(request[ENVIRONMENT].id, spec)
    data = {
        "token": issued.token,
        "connect_link": connect_link(request.app[SETTINGS].connect_ui_url, issued.token),
        "expires_at": _iso(issued),
    }
    return _json(201, {"data": data})


def connect_link(connect_ui_url: str, token: str) -> str:
    """The Connect UI URL with the token as its query, as a WHATWG URL would print it
    (a bare origin gains its `/` path)."""
    base = connect_ui_url if urlsplit(connect_ui_url).path else connect_ui_url + "/"
    return f"{base}?session_token={token}"


def _iso(issued: IssuedSession) -> str | None:
    return iso_z(to_datetime(issued.session.expires_at))


async def _check_references(request: web.Request, spec: SessionSpec) -> None:
    """Every integration the body names must exist; then the docs-connect override is
    refused (authgate has no plans, so nobody may override it)."""
    references = _references(spec)
    if references:
        integrations = await request.app[CORE].store.list_integrations(request[ENVIRONMENT].id)
        known = {integration.unique_key for integration in integrations}
        missing = [
            issue("custom", MISSING_INTEGRATION, *path)
            for key, path in references
            if key not in known
        ]
        if missing:
            raise ValidationFailed("invalid_body", missing)
    if any(entry.get("docs_connect") for entry in (spec.overrides or {}).values()):
        raise ApiError(403, "forbidden", DOCS_CONNECT_FORBIDDEN)


def _references(spec: SessionSpec) -> list[tuple[str, tuple[str, ...]]]:
    """(integration key, issue path) for each integration the body names."""
    references: list[tuple[str, tuple[str, ...]]] = []
    if spec.reconnect is None:
        for index, key in enumerate(spec.allowed_integrations or ()):
            references.append((key, ("allowed_integrations", str(index))))
    for field in ("integrations_config_defaults", "overrides"):
        mapping: dict[str, Any] = getattr(spec, field) or {}
        references.extend((key, (field, key)) for key in mapping)
    return references


# --- read and end ------------------------------------------------------------------------


@connect_session_only
async def get_session(request: web.Request) -> web.Response:
    strict_query(request)
    await reject_body(request)
    principal = request[CONNECT_SESSION]
    session = await session_store(request).get(principal.environment.id, principal.session_id)
    if session is None:  # ended or expired since the token was checked
        raise unknown_session()
    user = await _end_user_of(request, principal, session.spec)
    if user is None and session.spec.tags is None:
        raise ApiError(400, "invalid_body", END_USER_OR_TAGS)
    data: dict[str, Any] = {"endUser": user, "connectUISettings": DEFAULT_CONNECT_UI_SETTINGS}
    spec = session.spec
    if spec.allowed_integrations is not None:
        data["allowed_integrations"] = list(spec.allowed_integrations)
    if spec.integrations_config_defaults is not None:
        data["integrations_config_defaults"] = _defaults_view(spec.integrations_config_defaults)
    if spec.reconnect is not None:
        data["isReconnecting"] = True
    if spec.overrides is not None:
        data["overrides"] = spec.overrides
    return _json(200, {"data": data})


@connect_session_only
async def delete_session(request: web.Request) -> web.Response:
    strict_query(request)
    await reject_body(request)
    principal = request[CONNECT_SESSION]
    deleted = await session_store(request).delete(principal.environment.id, principal.session_id)
    if not deleted:
        # Ended by a concurrent call between authentication and now (Nango's sic 400).
        payload = {"id": principal.session_id, "environment": principal.environment.name}
        raise PayloadError(400, "server_error", "Failed to delete connect session", payload)
    return web.Response(status=204)


class PayloadError(ApiError):
    """A modern-envelope error that also carries a `payload` object."""

    def __init__(self, status: int, code: str, message: str, payload: dict[str, Any]) -> None:
        super().__init__(status, code, message)
        self.payload = payload

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["payload"] = self.payload
        return body


async def _end_user_of(
    request: web.Request, principal: ConnectSessionPrincipal, spec: SessionSpec
) -> dict[str, Any] | None:
    """The end user as the Connect UI sees it. A reconnect session shows the end user of
    its connection, read now (it may have changed), and fails if the connection is gone."""
    user, org = spec.end_user, spec.organization
    if spec.reconnect is not None:
        connection = await request.app[CORE].store.get_connection(
            principal.environment.id, spec.reconnect.integration, spec.reconnect.connection_id
        )
        if connection is None:
            raise ApiError(404, "not_found", END_USER_NOT_FOUND)
        if connection.end_user:
            user, org = connection.end_user, connection.end_user.get("organization")
    return None if user is None else _end_user_view(user, org)


def _end_user_view(user: dict[str, Any], org: Any) -> dict[str, Any]:
    organization = None
    if isinstance(org, dict):
        organization = {"id": org.get("id"), "display_name": org.get("display_name") or None}
    return {
        "id": user.get("id"),
        "display_name": user.get("display_name") or None,
        "email": user.get("email") or None,
        "tags": user.get("tags") or None,
        "organization": organization,
    }


def _defaults_view(defaults: dict[str, Any]) -> dict[str, Any]:
    # user_scopes stays server-side; the UI gets what it fills forms with.
    view: dict[str, Any] = {}
    for key, entry in defaults.items():
        view[key] = {
            name: entry[name]
            for name in ("connection_config", "authorization_params")
            if name in entry
        }
    return view


# --- the body ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Hoisted:
    defaults: dict[str, Any] | None
    webhook_urls: list[str]


def _validated_body(raw: Any, *, reconnect: bool) -> SessionSpec:
    check = Checker()
    body = check.expect_object(raw) or {}
    check.strict(body, _RECONNECT_FIELDS if reconnect else _CREATE_FIELDS)
    user = _optional(check, body, "end_user", end_users.end_user)
    if not reconnect and "end_user" not in body and body.get("tags") is None:
        # Only top-level tags make the (deprecated) end user optional.
        message = "Invalid input: expected object, received undefined"
        check.add("invalid_type", message, ("end_user",))
    org = _optional(check, body, "organization", end_users.organization)
    explicit_tags = _optional(check, body, "tags", end_users.tag_map)
    hoisted = _config_defaults(check, body)
    spec = SessionSpec(
        end_user=user,
        organization=org,
        tags=_session_tags(check, user, org, explicit_tags),
        integrations_config_defaults=hoisted.defaults,
        overrides=_overrides(check, body),
        webhook_url_override=_webhook_url_override(check, body, hoisted.webhook_urls),
    )
    if reconnect:
        target = _reconnect_target(check, body)
        # A reconnect session may only ever reach the integration of its connection.
        allowed = None if target is None else (target.integration,)
        spec = replace(spec, reconnect=target, allowed_integrations=allowed)
    else:
        spec = replace(spec, allowed_integrations=_allowed_integrations(check, body))
    check.raise_if_invalid()
    return spec


def _optional(check: Checker, body: dict[str, Any], key: str, reader: Any) -> Any:
    return reader(check, body[key], (key,)) if key in body else None


def _session_tags(
    check: Checker,
    user: dict[str, Any] | None,
    org: dict[str, Any] | None,
    explicit: dict[str, str] | None,
) -> dict[str, str]:
    """Generated tags with the explicit ones on top. Nango answers a 500 when the union
    exceeds the limit; it is the caller's input, so here it is a 400 on `tags`."""
    tags = {**end_users.generated_tags(user, org), **(explicit or {})}
    if len(tags) > end_users.MAX_TAGS:
        message = (
            f"Too big: expected object to have <={end_users.MAX_TAGS} keys"
            " (including the tags generated from end_user and organization)"
        )
        check.add("too_big", message, ("tags",))
    return tags


def _reconnect_target(check: Checker, body: dict[str, Any]) -> ReconnectTarget | None:
    connection_id = check.string(
        body, "connection_id", max_length=MAX_KEY_LENGTH, pattern=CONNECTION_ID_PATTERN
    )
    integration = check.string(
        body, "integration_id", max_length=MAX_KEY_LENGTH, pattern=UNIQUE_KEY_PATTERN
    )
    if connection_id is None or integration is None:
        return None
    return ReconnectTarget(integration=integration, connection_id=connection_id)


def _allowed_integrations(check: Checker, body: dict[str, Any]) -> tuple[str, ...] | None:
    field = "allowed_integrations"
    if field not in body:
        return None
    items = body[field]
    if not isinstance(items, list):
        message = f"Invalid input: expected array, received {type_name(items)}"
        check.add("invalid_type", message, (field,))
        return None
    by_index = {str(index): item for index, item in enumerate(items)}
    keys = [
        check.string(
            by_index, index, (field,), max_length=MAX_KEY_LENGTH, pattern=UNIQUE_KEY_PATTERN
        )
        for index in by_index
    ]
    # Nango stores an empty list as "no restriction".
    return tuple(key for key in keys if key is not None) or None


def _keyed_by_integration(check: Checker, body: dict[str, Any], field: str) -> dict[str, Any]:
    """An object whose keys are integration keys; bad keys are reported and skipped."""
    mapping = check.expect_object(body[field], (field,)) if field in body else None
    valid: dict[str, Any] = {}
    for key, value in (mapping or {}).items():
        if len(key) > MAX_KEY_LENGTH or not UNIQUE_KEY_PATTERN.fullmatch(key):
            check.add("invalid_key", "Invalid key in record", (field, key))
        else:
            valid[key] = value
    return valid


def _config_defaults(check: Checker, body: dict[str, Any]) -> _Hoisted:
    field = "integrations_config_defaults"
    if field not in body:
        return _Hoisted(None, [])
    defaults: dict[str, Any] = {}
    webhook_urls: list[str] = []
    for key, raw in _keyed_by_integration(check, body, field).items():
        entry = _config_default(check, raw, (field, key), webhook_urls)
        if entry is not None:
            defaults[key] = entry
    return _Hoisted(defaults, webhook_urls)


def _config_default(
    check: Checker, raw: Any, path: Path, webhook_urls: list[str]
) -> dict[str, Any] | None:
    entry = check.expect_object(raw, path)
    if entry is None:
        return None
    check.strict(entry, _DEFAULTS_FIELDS, path)
    result: dict[str, Any] = {}
    user_scopes = check.string(entry, "user_scopes", path, required=False)
    if user_scopes is not None:
        result["user_scopes"] = user_scopes
    params = check.string_map(entry, "authorization_params", path)
    if params is not None:
        result["authorization_params"] = params
    config = _connection_config(check, entry, path, webhook_urls)
    if config:
        result["connection_config"] = config
    return result


def _connection_config(
    check: Checker, entry: dict[str, Any], path: Path, webhook_urls: list[str]
) -> dict[str, Any] | None:
    """A loose object; `oauth_scopes_override` must be a string. The deprecated
    `webhook_url` is checked like `webhook_url_override`, removed, and remembered so the
    first non-empty one can stand in for an absent `webhook_url_override`."""
    config = check.optional_object(entry, "connection_config", path)
    if config is None:
        return None
    where = (*path, "connection_config")
    check.string(config, "oauth_scopes_override", where, required=False)
    if "webhook_url" not in config:
        return config
    rest = {key: value for key, value in config.items() if key != "webhook_url"}
    url = _webhook_url(check, config["webhook_url"], (*where, "webhook_url"), deprecated=True)
    if url:
        webhook_urls.append(url)
    return rest


def _overrides(check: Checker, body: dict[str, Any]) -> dict[str, Any] | None:
    if "overrides" not in body:
        return None
    overrides: dict[str, Any] = {}
    for key, raw in _keyed_by_integration(check, body, "overrides").items():
        entry = check.expect_object(raw, ("overrides", key))
        if entry is None:
            continue
        # Unknown keys are dropped, not refused: Nango's schema for an entry is not strict.
        docs = check.string(entry, "docs_connect", ("overrides", key), required=False)
        overrides[key] = {} if docs is None else {"docs_connect": docs}
    return overrides


def _webhook_url_override(check: Checker, body: dict[str, Any], hoisted: list[str]) -> str | None:
    """The explicit override wins, even `""` (which means none); else the first
    deprecated per-integration `webhook_url`."""
    if "webhook_url_override" not in body:
        return hoisted[0] if hoisted else None
    url = _webhook_url(check, body["webhook_url_override"], ("webhook_url_override",))
    return url or None


def _webhook_url(check: Checker, value: Any, path: Path, *, deprecated: bool = False) -> str | None:
    suffix = DEPRECATED_WEBHOOK_NOTE if deprecated else ""
    if not isinstance(value, str):
        message = f"Invalid input: expected string, received {type_name(value)}"
        check.add("invalid_type", message + suffix, path)
        return None
    problem = webhook_url_problem(value)
    if problem is not None:
        check.add("invalid_format", problem + suffix, path)
        return None
    return value


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
