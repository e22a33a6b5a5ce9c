"""Cross-origin calls from browsers, for the routes a browser may call.

The frontend SDK runs on the application's own origin and calls authgate with `fetch`
(`POST /api-auth/...` with a JSON body, which needs a CORS preflight), and a Connect UI
hosted elsewhere calls the connect-session routes with its token. Those routes
(`@public`, `@accepts_connect_session`, `@connect_session_only`) answer any origin:
they authenticate with what the request carries (a session token, a public key), never
with a cookie, so `*` without credentials gives a hostile page nothing it could not do
from a server. Routes that take only a secret key send no CORS headers at all: a
secret key has no business in a browser.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from management.auth import SessionMode, session_mode

BROWSER_MODES: Final[frozenset[SessionMode]] = frozenset({"public", "also", "only"})
ALLOWED_HEADERS: Final = "Authorization, Content-Type"
# How long a browser may reuse a preflight's answer.
PREFLIGHT_MAX_AGE: Final = "600"


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


async def preflight_response(request: web.Request) -> web.Response:
    """204 with the permissions when the requested method's route is open to browsers;
    403 (no CORS headers, so the browser refuses the call) otherwise."""
    method = request.headers["Access-Control-Request-Method"].upper()
    match = await request.app.router.resolve(request.clone(method=method))
    if match.http_exception is not None or session_mode(match.handler) not in BROWSER_MODES:
        return web.Response(status=403)
    response = web.Response(status=204)
    response.headers.update(
        {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": method,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }
    )
    return response


def allow_browsers(response: web.StreamResponse, mode: SessionMode) -> None:
    """Let a page on any origin read this answer (errors included) when the route is
    open to browsers; nothing can be added once the response has started."""
    if mode in BROWSER_MODES and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = "*"
