"""`/environment-variables`: the environment's variables, decrypted, as a bare array (§9)."""

from __future__ import annotations

import orjson
from aiohttp import web

from management.params import add_lenient, reject_body, strict_query
from management.request_context import CORE, ENVIRONMENT


def add_routes(router: web.UrlDispatcher) -> None:
    add_lenient(router, "GET", "/environment-variables", list_environment_variables)


async def list_environment_variables(request: web.Request) -> web.Response:
    strict_query(request)
    await reject_body(request)
    variables = await request.app[CORE].store.list_environment_variables(request[ENVIRONMENT].id)
    # Not wrapped in `data`: the Node client returns this body as the array itself.
    payload = [{"name": name, "value": value} for name, value in variables]
    return web.Response(body=orjson.dumps(payload), content_type="application/json")
