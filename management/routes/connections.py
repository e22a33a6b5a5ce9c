"""`/connections`: list, read, patch, delete and import end users' connections (§7.1 to 7.6),
plus the deprecated `/connection` spellings of the same routes.

Every write goes through the store, whose change events drop the proxy's cached copy of
the connection, so the proxy sees a patch or a delete on its very next request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from credentials.models import Connection
from credentials.refresh import NeedsReauthorization, RefreshBackoff, RefreshError
from credentials.store import UNCHANGED, CredentialsUnreadable
from management import end_users
from management.connection_fields import (
    connection_id_param,
    end_user_tags,
    provider_config_key_query,
    stored_end_user,
    webhook_url_override,
)
from management.errors import ApiError
from management.formatters import (
    connection_json,
    connection_list_item,
    iso_offset,
    without_refresh_tokens,
)
from management.query import MAX_OFFSET, QueryReader
from management.request_context import CORE, ENVIRONMENT, json_body
from management.routes.connection_import import import_connection, import_connection_legacy
from management.validation import Checker

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Nango lists up to 10000 connections when no limit is given, yet caps an explicit one.
DEFAULT_PAGE_SIZE = 10_000
MAX_PAGE_SIZE = 2000
MAX_FILTER_LENGTH = 255
_LIST_KEYS = (
    "connectionId",
    "search",
    "endUserId",
    "endUserOrganizationId",
    "integrationId",
    "tags",
    "limit",
    "page",
)
_REFRESH_FLAGS = ("force_refresh", "refresh_token", "refresh_github_app_jwt_token")
_PATCH_FIELDS = ("end_user", "tags", "webhook_url_override")


# aiohttp's default segment pattern refuses `{` and `}`, which Nango's ids allow (people
# stringify JSON into them); `/` still ends the segment, `%2F` decodes into the id.
ID_SEGMENT = "{connection_id:[^/]+}"


def add_routes(router: web.UrlDispatcher) -> None:
    for base in ("/connections", "/connection"):
        _lenient(router, "GET", base, list_connections)
        _lenient(router, "GET", f"{base}/{ID_SEGMENT}", get_connection)
        _lenient(router, "DELETE", f"{base}/{ID_SEGMENT}", delete_connection)
    _lenient(router, "PATCH", f"/connections/{ID_SEGMENT}", patch_connection)
    _lenient(router, "POST", "/connections", import_connection)
    _lenient(router, "POST", "/connection", import_connection_legacy)


def _lenient(router: web.UrlDispatcher, method: str, path: str, handler: Handler) -> None:
    """`path` and `path/` alike, as Express routes them."""
    router.add_route(method, path, handler)
    router.add_route(method, path + "/", handler)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


# --- GET /connections ----------------------------------------------------------------------


async def list_connections(request: web.Request) -> web.Response:
    filters = _list_filters(QueryReader.of(request))
    connections = await request.app[CORE].store.list_connections(
        request[ENVIRONMENT].id, include_credentials=False, **filters
    )
    return _json({"connections": [connection_list_item(item) for item in connections]})


def _list_filters(query: QueryReader) -> dict[str, Any]:
    query.strict(_LIST_KEYS)
    text: dict[str, str | None] = {
        name: query.string(name, min_length=1, max_length=MAX_FILTER_LENGTH)
        for name in ("connectionId", "search", "endUserId", "endUserOrganizationId")
    }
    integration_ids = query.string("integrationId", min_length=1)
    tags = query.tags("tags")
    limit = query.integer("limit", minimum=1, maximum=MAX_PAGE_SIZE)
    page = query.integer("page", minimum=0)
    query.done()
    size = limit or DEFAULT_PAGE_SIZE
    return {
        "connection_id": text["connectionId"],
        "search": text["search"],
        "end_user_id": text["endUserId"],
        "end_user_organization_id": text["endUserOrganizationId"],
        "provider_config_key": (
            None
            if integration_ids is None
            else tuple(dict.fromkeys(key.strip() for key in integration_ids.split(",")))
        ),
        "tags": tags,
        "limit": size,
        "offset": min((page or 0) * size, MAX_OFFSET),
    }


# --- GET /connections/{connection_id} ------------------------------------------------------


async def get_connection(request: web.Request) -> web.Response:
    query = QueryReader.of(request)
    query.strict(("provider_config_key", *_REFRESH_FLAGS))
    key = provider_config_key_query(query)
    flags = {name: query.boolean(name) for name in _REFRESH_FLAGS}
    query.done()
    assert key is not None
    connection = await _existing(request, key, connection_id_param(request))
    connection = await _fresh(request, connection, force=bool(flags["force_refresh"]))
    fetched_at = await request.app[CORE].store.touch_last_fetched(connection)
    connection = replace(connection, last_fetched_at=fetched_at)
    return _json(_with_credentials(connection, refresh_tokens=bool(flags["refresh_token"])))


async def _fresh(request: web.Request, connection: Connection, *, force: bool) -> Connection:
    """The connection with renewed credentials when they are due (or `force_refresh`)."""
    core = request.app[CORE]
    provider = core.catalogue.get(connection.provider)
    integration = await core.store.get_integration(
        connection.environment_id, connection.provider_config_key
    )
    if provider is None or integration is None:
        return connection
    try:
        return await core.refresher.fresh(
            connection, integration, provider, force=force, bypass_backoff=force
        )
    except RefreshError as failure:
        raise RefreshRefused(failure, connection) from None


def _with_credentials(connection: Connection, *, refresh_tokens: bool) -> dict[str, Any]:
    credentials: dict[str, Any] = connection.credentials
    config: dict[str, Any] = connection.connection_config
    if not refresh_tokens:
        credentials = without_refresh_tokens(credentials)
        config = without_refresh_tokens(config)
    return connection_json(
        connection, credentials=credentials, connection_config=config, render_time=iso_offset
    )


class RefreshRefused(ApiError):
    """Nango's refresh failure answer: `invalid_credentials`, with the connection minus
    its credentials in `payload` (424 while backing off or exhausted, else 400)."""

    def __init__(self, failure: RefreshError, connection: Connection) -> None:
        status = 424 if isinstance(failure, RefreshBackoff | NeedsReauthorization) else 400
        super().__init__(status, "invalid_credentials", str(failure))
        self.connection = replace(connection, credentials={})

    def body(self) -> dict[str, Any]:
        payload = {"connection": _with_credentials(self.connection, refresh_tokens=False)}
        return {"error": {"code": self.code, "message": self.message, "payload": payload}}


async def _existing(request: web.Request, key: str, connection_id: str) -> Connection:
    """The connection, or the errors Nango gives for a missing integration or connection."""
    store = request.app[CORE].store
    environment = request[ENVIRONMENT]
    if await store.get_integration(environment.id, key) is None:
        raise ApiError(400, "unknown_provider_config", "Provider does not exists")
    try:
        connection = await store.get_connection(environment.id, key, connection_id)
    except CredentialsUnreadable:
        raise ApiError(
            500,
            "server_error",
            "The stored credentials of this connection cannot be decrypted with the"
            " configured AUTHGATE_ENCRYPTION_KEY",
        ) from None
    if connection is None:
        raise ApiError(404, "not_found", "Failed to find connection")
    return connection


# --- DELETE /connections/{connection_id} ---------------------------------------------------


async def delete_connection(request: web.Request) -> web.Response:
    query = QueryReader.of(request)
    query.strict(("provider_config_key",))
    key = provider_config_key_query(query)
    query.done()
    assert key is not None
    connection_id = connection_id_param(request)
    deleted = await request.app[CORE].store.delete_connection(
        request[ENVIRONMENT].id, key, connection_id
    )
    if not deleted:
        # Nango's answer for an unknown integration or connection here: 400, no message.
        raise ApiError(400, "unknown_connection")
    return _json({"success": True})


# --- PATCH /connections/{connection_id} ----------------------------------------------------


async def patch_connection(request: web.Request) -> web.Response:
    # Nango's order: query, then body, then path.
    query = QueryReader.of(request)
    query.strict(("provider_config_key",))
    key = provider_config_key_query(query)
    query.done()
    assert key is not None
    body = _validated_patch(await json_body(request))
    connection = await _existing(request, key, connection_id_param(request))
    changes = _patch_changes(connection, body)
    updated = await request.app[CORE].store.update_connection_fields(
        connection.environment_id, key, connection.connection_id, **changes
    )
    if updated is None:  # deleted between the read and the write
        raise ApiError(404, "not_found", "Failed to find connection")
    return _json({"success": True})


def _validated_patch(raw: Any) -> dict[str, Any]:
    check = Checker()
    body = {} if raw is None else check.expect_object(raw)
    if body is None:
        check.raise_if_invalid()
        raise AssertionError("unreachable")
    check.strict(body, _PATCH_FIELDS)
    result: dict[str, Any] = {}
    if "end_user" in body:
        result["end_user"] = stored_end_user(check, body["end_user"], ("end_user",))
    if "tags" in body:
        result["tags"] = end_users.tag_map(check, body["tags"], ("tags",))
    if "webhook_url_override" in body:
        result["webhook_url_override"] = webhook_url_override(check, body)
    check.raise_if_invalid()
    return result


def _patch_changes(connection: Connection, body: dict[str, Any]) -> dict[str, Any]:
    """What PATCH writes (§7.5): the end user is linked only when none, or the same one,
    is linked already; tags are replaced by the end user's generated tags overlaid with
    the body's; `webhook_url_override: ""` clears the override."""
    changes: dict[str, Any] = {
        "webhook_url_override": body.get("webhook_url_override", UNCHANGED),
    }
    end_user = body.get("end_user")
    if end_user is not None:
        linked = connection.end_user
        if linked is None or linked.get("id") == end_user["id"]:
            # The PATCH schema has no organization: the linked end user keeps its own.
            end_user = {**end_user, "organization": (linked or {}).get("organization")}
            changes["end_user"] = end_user
    if "end_user" in body or "tags" in body:
        changes["tags"] = {**end_user_tags(end_user), **(body.get("tags") or {})}
    return changes
