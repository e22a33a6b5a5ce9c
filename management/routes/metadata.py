"""Connection metadata: `POST` replaces, `PATCH` shallow-merges (§7.7, §7.8).

`/connections/metadata` (and its `/connection/metadata` alias) takes one connection id or
a list and changes all of them or none. The deprecated per-id routes take the metadata
object itself as the body and answer errors in the legacy envelope. Either way the
answer echoes the request body.

This module registers before `connections`, so `/connections/metadata` is never read as
a connection named "metadata".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from management.connection_fields import (
    CONNECTION_ID_PATTERN,
    MAX_ID_LENGTH,
    PROVIDER_CONFIG_KEY_PATTERN,
)
from management.errors import ApiError
from management.legacy import missing, unknown_connection
from management.query import QueryReader
from management.request_context import CORE, ENVIRONMENT, json_body
from management.validation import Checker, Path, type_name

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FIELDS = ("connection_id", "provider_config_key", "metadata")
_BULK_SUFFIX = ". No actions were taken on any of the connections as a result of this failure."


def add_routes(router: web.UrlDispatcher) -> None:
    for path in ("/connections/metadata", "/connection/metadata"):
        _lenient(router, "POST", path, set_metadata)
        _lenient(router, "PATCH", path, update_metadata)
    # An empty id segment falls back to the Connection-Id header (Nango's rule).
    for path in ("/connection/{connection_id:[^/]+}/metadata", "/connection//metadata"):
        _lenient(router, "POST", path, set_metadata_legacy)
        _lenient(router, "PATCH", path, update_metadata_legacy)


def _lenient(router: web.UrlDispatcher, method: str, path: str, handler: Handler) -> None:
    router.add_route(method, path, handler)
    router.add_route(method, path + "/", handler)


def _json(payload: Any, status: int) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


# --- /connections/metadata -----------------------------------------------------------------


async def set_metadata(request: web.Request) -> web.Response:
    return await _write(request, merge=False, status=201)


async def update_metadata(request: web.Request) -> web.Response:
    return await _write(request, merge=True, status=200)


async def _write(request: web.Request, *, merge: bool, status: int) -> web.Response:
    query = QueryReader.of(request)
    query.strict()
    query.done()
    raw = await json_body(request)
    ids, key, metadata = _validated(raw)
    missing_ids = await request.app[CORE].store.write_metadata(
        request[ENVIRONMENT].id, key, ids, metadata, merge=merge
    )
    if missing_ids:
        message = (
            f"Connection with connection id {missing_ids[0]} and provider config key {key}"
            " not found. Please make sure the connection exists in the Nango dashboard"
        )
        # Nango adds the suffix when more than one id was sent, not for a list of one.
        if len(ids) > 1:
            message += _BULK_SUFFIX
        raise ApiError(404, "unknown_connection", message)
    return _json(raw, status)


def _validated(raw: Any) -> tuple[list[str], str, dict[str, Any]]:
    check = Checker()
    body = check.expect_object(raw)
    if body is None:
        check.raise_if_invalid()
        raise AssertionError("unreachable")
    check.strict(body, _FIELDS)
    ids = _connection_ids(check, body)
    key = check.string(
        body, "provider_config_key", pattern=PROVIDER_CONFIG_KEY_PATTERN, max_length=MAX_ID_LENGTH
    )
    metadata = _metadata(check, body)
    check.raise_if_invalid()
    assert key is not None
    assert metadata is not None
    return ids, key, metadata


def _connection_ids(check: Checker, body: dict[str, Any]) -> list[str]:
    """One id or a list of them, each under the connection-id rule."""
    value = body.get("connection_id")
    if isinstance(value, list):
        ids = [_connection_id(check, value, index) for index in range(len(value))]
        return [connection_id for connection_id in ids if connection_id is not None]
    if value is None or isinstance(value, str):
        connection_id = check.string(
            body, "connection_id", pattern=CONNECTION_ID_PATTERN, max_length=MAX_ID_LENGTH
        )
        return [] if connection_id is None else [connection_id]
    check.add("invalid_union", "Invalid input", ("connection_id",))
    return []


def _connection_id(check: Checker, ids: list[Any], index: int) -> str | None:
    path: Path = ("connection_id",)
    return check.string(
        {str(index): ids[index]},
        str(index),
        path,
        pattern=CONNECTION_ID_PATTERN,
        max_length=MAX_ID_LENGTH,
    )


def _metadata(check: Checker, body: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON object (zod's record): an array, a string or null is refused."""
    value = body.get("metadata")
    if isinstance(value, dict):
        return value
    received = type_name(value) if "metadata" in body else "undefined"
    check.add("invalid_type", f"Invalid input: expected record, received {received}", ("metadata",))
    return None


# --- /connection/{connection_id}/metadata (deprecated) -------------------------------------


async def set_metadata_legacy(request: web.Request) -> web.Response:
    return await _write_legacy(request, merge=False, status=201)


async def update_metadata_legacy(request: web.Request) -> web.Response:
    return await _write_legacy(request, merge=True, status=200)


async def _write_legacy(request: web.Request, *, merge: bool, status: int) -> web.Response:
    connection_id, key = _legacy_target(request)
    raw = await json_body(request)
    body = {} if raw is None else raw
    check = Checker()
    metadata = check.expect_object(body)
    check.raise_if_invalid()
    assert metadata is not None
    environment = request[ENVIRONMENT]
    missing_ids = await request.app[CORE].store.write_metadata(
        environment.id, key, [connection_id], metadata, merge=merge
    )
    if missing_ids:
        raise unknown_connection(connection_id, key, environment.name)
    return _json(body, status)


def _legacy_target(request: web.Request) -> tuple[str, str]:
    """The connection id (path, else `Connection-Id`) and the integration key (query,
    else `Provider-Config-Key`); a missing one is the legacy 400 naming it."""
    query = QueryReader.of(request)  # not strict: the deprecated routes never were
    key = query.string("provider_config_key") or request.headers.get("Provider-Config-Key")
    query.done()
    connection_id = request.match_info.get("connection_id") or request.headers.get("Connection-Id")
    if not connection_id:
        raise missing("missing_connection", "Missing param 'connection_id'.")
    if not key:
        raise missing("missing_provider_config", "Missing param 'provider_config_key'.")
    # Unlike Nango, refuse an id no other route could address (and NUL, which the
    # database cannot compare) instead of looking it up.
    check = Checker()
    check.string(
        {"connectionId": connection_id},
        "connectionId",
        pattern=CONNECTION_ID_PATTERN,
        max_length=MAX_ID_LENGTH,
    )
    check.raise_if_invalid("invalid_uri_params")
    return connection_id, key
