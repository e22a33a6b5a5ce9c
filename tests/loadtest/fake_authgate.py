"""A stand-in for ``authgate serve`` that keeps only the contract loadtest.bench relies on.

It reads the same environment variables, answers ``GET /health``, accepts the two seeding
calls, and proxies ``GET /proxy/{path}`` to ``Base-Url-Override`` with the connection's
API key as ``Authorization: Bearer``. ``FAKE_AUTHGATE_BREAK=<path>`` makes that route
answer 500, to test how the bench reports a broken authgate.

Run as a script: ``python tests/loadtest/fake_authgate.py``.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import ClientSession, web

SESSION = web.AppKey("session", ClientSession)
CONNECTIONS = web.AppKey("connections", dict[tuple[str, str], str])
SECRET_KEY = web.AppKey("secret_key", str)

REQUIRED = (
    "AUTHGATE_PORT",
    "AUTHGATE_HOST",
    "AUTHGATE_DATA_DIR",
    "DATABASE_URL",
    "AUTHGATE_SECRET_KEY",
    "AUTHGATE_ENCRYPTION_KEY",
    "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS",
)


def check_environment() -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        sys.exit(f"missing environment: {', '.join(missing)}")
    if len(base64.b64decode(os.environ["AUTHGATE_ENCRYPTION_KEY"])) != 32:
        sys.exit("AUTHGATE_ENCRYPTION_KEY is not base64 of 32 bytes")
    if not os.environ["DATABASE_URL"].startswith("sqlite:///"):
        sys.exit("DATABASE_URL is not a sqlite URL")


def authorized(request: web.Request) -> bool:
    return request.headers.get("Authorization") == f"Bearer {request.app[SECRET_KEY]}"


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path == os.environ.get("FAKE_AUTHGATE_BREAK"):
        return web.json_response({"error": {"code": "broken"}}, status=500)
    if request.path != "/health" and not authorized(request):
        return web.json_response({"error": {"code": "unauthorized"}}, status=401)
    return await handler(request)


async def health(_: web.Request) -> web.Response:
    return web.json_response({"result": "ok"})


async def integrations(request: web.Request) -> web.Response:
    body = await request.json()
    if body != {"provider": "openai", "unique_key": "bench"}:
        return web.json_response({"error": {"code": "invalid_body"}}, status=400)
    return web.json_response({"data": body})


async def connections(request: web.Request) -> web.Response:
    body = await request.json()
    credentials = body["credentials"]
    if credentials["type"] != "API_KEY":
        return web.json_response({"error": {"code": "invalid_body"}}, status=400)
    key = (body["provider_config_key"], body["connection_id"])
    request.app[CONNECTIONS][key] = credentials["apiKey"]
    return web.json_response({"connection_id": body["connection_id"]}, status=201)


async def proxy(request: web.Request) -> web.Response:
    key = (request.headers["Provider-Config-Key"], request.headers["Connection-Id"])
    api_key = request.app[CONNECTIONS].get(key)
    if api_key is None:
        return web.json_response({"error": {"code": "unknown_connection"}}, status=404)
    url = f"{request.headers['Base-Url-Override']}/{request.match_info['tail']}"
    headers = {"Authorization": f"Bearer {api_key}"}
    async with request.app[SESSION].get(url, headers=headers) as upstream:
        body = await upstream.read()
        return web.Response(body=body, status=upstream.status)


async def client_session(app: web.Application) -> AsyncIterator[None]:
    async with ClientSession() as session:
        app[SESSION] = session
        yield


def make_app() -> web.Application:
    app = web.Application(middlewares=[guard])
    app[SECRET_KEY] = os.environ["AUTHGATE_SECRET_KEY"]
    app[CONNECTIONS] = {}
    app.cleanup_ctx.append(client_session)
    app.router.add_get("/health", health)
    app.router.add_post("/integrations", integrations)
    app.router.add_post("/connections", connections)
    app.router.add_get("/proxy/{tail:.*}", proxy)
    return app


if __name__ == "__main__":
    check_environment()
    host, port = os.environ["AUTHGATE_HOST"], int(os.environ["AUTHGATE_PORT"])
    web.run_app(make_app(), host=host, port=port, print=None, access_log=None)
