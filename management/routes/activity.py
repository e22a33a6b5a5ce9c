"""`GET /connections/{connection_id}/activity`: one connection's proxied requests.

Lists what the activity log recorded for the connection in the caller's environment,
newest first: status, timings, retries and the `Nango-Activity-Log-Id` each request
carried, so a group of requests is one `activity_log_id` filter away. Requests for a
connection that does not exist (or no longer does) are activity too, so an unknown
connection lists what was recorded for it, usually nothing, rather than a 404.

Pagination is by cursor: `next_cursor` of one page is the `cursor` of the next, and it
stays valid while rows are added or pruned.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from credentials.activity import ActivityPage, ActivityQuery, ActivityRecord, list_activity
from management.connection_fields import (
    MAX_ID_LENGTH,
    connection_id_param,
    provider_config_key_query,
)
from management.query import QueryReader
from management.request_context import CORE, ENVIRONMENT
from management.routes.connections import ID_SEGMENT

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
_KEYS = ("provider_config_key", "activity_log_id", "status", "since", "limit", "cursor")
# An exact status (`404`) or a class (`4xx`).
_STATUS = re.compile(r"[1-5](?:[0-9]{2}|xx)")
# A row id: positive, and within a signed 64-bit integer.
_CURSOR = re.compile(r"[1-9][0-9]{0,18}")
_MAX_CURSOR = 2**63 - 1
_MAX_TIMESTAMP_LENGTH = 64


def add_routes(router: web.UrlDispatcher) -> None:
    path = f"/connections/{ID_SEGMENT}/activity"
    router.add_get(path, list_connection_activity)
    router.add_get(path + "/", list_connection_activity)


async def list_connection_activity(request: web.Request) -> web.Response:
    query = _activity_query(QueryReader.of(request), connection_id_param(request))
    page = await list_activity(request.app[CORE].store.db, request[ENVIRONMENT].id, query)
    return web.Response(body=orjson.dumps(page_json(page)), content_type="application/json")


def _activity_query(query: QueryReader, connection_id: str) -> ActivityQuery:
    query.strict(_KEYS)
    key = provider_config_key_query(query)
    activity_log_id = query.string("activity_log_id", min_length=1, max_length=MAX_ID_LENGTH)
    status = query.string("status", pattern=_STATUS)
    since = _since(query)
    limit = query.integer("limit", minimum=1, maximum=MAX_PAGE_SIZE)
    cursor = _cursor(query)
    query.done()
    assert key is not None  # done() raised otherwise
    exact = status is not None and not status.endswith("xx")
    return ActivityQuery(
        provider_config_key=key,
        connection_id=connection_id,
        activity_log_id=activity_log_id,
        status=int(status) if exact and status is not None else None,
        status_class=int(status[0]) if status is not None and not exact else None,
        since=since,
        before_id=cursor,
        limit=limit or DEFAULT_PAGE_SIZE,
    )


def _since(query: QueryReader) -> int | None:
    """`since`: an ISO 8601 date-time with a UTC offset (`2026-01-02T03:04:05Z`), as epoch ms."""
    text = query.string("since", min_length=1, max_length=_MAX_TIMESTAMP_LENGTH)
    if text is None:
        return None
    try:
        # RFC 3339 allows a lower-case `t` and `z`; fromisoformat only the upper-case ones.
        moment = datetime.fromisoformat(text.upper())
        if moment.tzinfo is not None:
            return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        pass
    query.check.add(
        "invalid_format",
        "Invalid string: expected an ISO 8601 date-time with a time zone",
        ("since",),
    )
    return None


def _cursor(query: QueryReader) -> int | None:
    text = query.string("cursor", pattern=_CURSOR)
    if text is None:
        return None
    value = int(text)
    if value > _MAX_CURSOR:
        query.check.add("invalid_format", "Invalid string: not a cursor of this list", ("cursor",))
        return None
    return value


def page_json(page: ActivityPage) -> dict[str, Any]:
    return {
        "activities": [record_json(record) for record in page.records],
        "next_cursor": None if page.next_before_id is None else str(page.next_before_id),
    }


def record_json(record: ActivityRecord) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "activity_log_id": record.activity_log_id,
        "request_id": record.request_id,
        "method": record.method,
        "host": record.host,
        "path": record.path,
        "status": record.status,
        "error_code": record.error_code,
        "upstream_ms": record.upstream_ms,
        "overhead_ms": record.overhead_ms,
        "retries": record.retries,
        "created_at": _iso(record.created_at),
    }


def _iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
