"""What routes read from a request: the environment, the services, the JSON body."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from credentials.models import Environment
from credentials.runtime import CoreServices
from management.errors import ApiError
from management.settings import ManagementSettings

CORE = web.AppKey("management_core", CoreServices)
SETTINGS = web.AppKey("management_settings", ManagementSettings)
ENVIRONMENT = web.RequestKey("environment", Environment)


async def json_body(request: web.Request) -> Any:
    """The parsed JSON body; an empty body counts as none."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as problem:
        raise ApiError(400, "invalid_json", str(problem)) from None


def reject_query(request: web.Request) -> None:
    """Endpoints that take no query parameters refuse any (Nango's strictness)."""
    if request.query_string:
        keys = ", ".join(sorted(set(request.query.keys()))) or request.query_string
        raise ApiError(400, "invalid_query_params", f"Unexpected query parameters: {keys}")
