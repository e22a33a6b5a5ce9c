"""The control plane: Nango's management REST API as a lightweight aiohttp application.

One middleware does what every route needs: Nango's Content-Type gate, secret-key
authentication (the key picks the environment), and turning errors into envelopes.
Routes read the parsed JSON body and the environment from the request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from credentials.database import StoreUnavailable
from credentials.runtime import CoreServices
from management.auth import SessionMode, authenticate, session_mode
from management.cors import allow_browsers, is_preflight, preflight_response
from management.errors import ApiError, error_response, store_unavailable_response
from management.request_context import AUTH_EVENTS, CORE, SETTINGS
from management.routes import (
    activity,
    api_auth,
    connect,
    connect_page,
    connections,
    environment_settings,
    environment_variables,
    integrations,
    metadata,
    oauth,
    openapi,
    providers,
)
from management.settings import ManagementSettings
from management.websocket import install_websocket

log = logging.getLogger("authgate.management")


_PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_management_routes(
    app: web.Application, settings: ManagementSettings, core: CoreServices
) -> None:
    app[CORE] = core
    app[SETTINGS] = settings
    app.middlewares.append(management_middleware)
    # Order matters: /connections/metadata must win over /connections/{connection_id}.
    for routes in (
        providers,
        integrations,
        metadata,
        connections,
        activity,
        connect,
        connect_page,
        environment_settings,
        environment_variables,
        oauth,
        api_auth,
        openapi,
    ):
        routes.add_routes(app.router)
    install_websocket(app, core)
    if core.webhooks is not None:
        # The flows report connection outcomes as auth webhooks.
        app[AUTH_EVENTS] = core.webhooks


@web.middleware
async def management_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/proxy"):
        return await handler(request)
    if is_preflight(request):
        return await preflight_response(request)
    mode = session_mode(handler)
    response = await _answer(request, handler, mode)
    allow_browsers(response, mode)
    return response


async def _answer(request: web.Request, handler: Handler, mode: SessionMode) -> web.StreamResponse:
    try:
        if request.path not in _PUBLIC_PATHS and mode != "public":
            _check_content_type(request)
            await authenticate(request, mode)
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except StoreUnavailable as outage:
        # Expected while the database is down: one line, no traceback, and an answer
        # that tells the client to come back rather than a 500.
        log.warning("credential store unavailable: %s", outage, extra={"path": request.path})
        return store_unavailable_response()
    except web.HTTPException as error:
        if error.status < 400:
            raise
        # aiohttp's own answers (no such route, wrong method) get our envelope too.
        response = error_response(ApiError(error.status, _http_error_code(error), error.reason))
        if "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except Exception:
        log.exception("unexpected management failure", extra={"path": request.path})
        return error_response(ApiError(500, "server_error", "Internal error"))


def _http_error_code(error: web.HTTPException) -> str:
    """`not_found`, `method_not_allowed`, ...: the reason phrase as an error code."""
    return error.reason.lower().replace(" ", "_").replace("-", "_")


def _check_content_type(request: web.Request) -> None:
    content_type = request.headers.get("Content-Type")
    if content_type is not None and not content_type.startswith("application/json"):
        raise ApiError(415, "invalid_content_type", "Content-Type header must be application/json")
