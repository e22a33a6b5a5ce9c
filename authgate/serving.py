"""Building and running the three server processes on uvloop."""

from __future__ import annotations

import logging
import os
import sys

import uvloop
from aiohttp import web

from authgate.bootstrap import start_core
from credentials.activity import ActivitySettings
from credentials.config import CoreSettings
from credentials.runtime import CoreServices
from management.app import add_management_routes
from management.settings import ManagementSettings
from proxy import metrics
from proxy.access_log import install_activity_log
from proxy.app import add_health_routes, add_metrics_route, add_proxy_routes
from proxy.settings import ProxySettings

log = logging.getLogger("authgate")

# Longer than the common load-balancer idle timeouts (60 s), so the balancer, not us,
# closes idle keep-alive connections and never sends a request into a closing socket.
KEEPALIVE_SECONDS = 61.0
MAX_HEADER_FIELD = 64 * 1024
# aiohttp's default (8 KiB) is below what clients send: Node accepts 16 KiB request lines,
# and proxied query strings can be long.
MAX_REQUEST_LINE = 64 * 1024
# Management JSON bodies, as Nango allows; proxied bodies stream and are not bounded by it.
MAX_JSON_BODY = 75 * 1024 * 1024


def say(message: str) -> None:
    print(f"authgate: {message}", file=sys.stderr, flush=True)


async def build_serve_app(
    proxy: ProxySettings,
    management: ManagementSettings,
    *,
    activity: ActivitySettings | None = None,
) -> web.Application:
    return await _build(proxy.core, proxy=proxy, management=management, activity=activity)


async def build_proxy_app(
    proxy: ProxySettings, *, activity: ActivitySettings | None = None
) -> web.Application:
    return await _build(proxy.core, proxy=proxy, activity=activity)


async def build_management_app(management: ManagementSettings) -> web.Application:
    return await _build(management.core, management=management)


async def _build(
    core_settings: CoreSettings,
    *,
    proxy: ProxySettings | None = None,
    management: ManagementSettings | None = None,
    activity: ActivitySettings | None = None,
) -> web.Application:
    # Read before anything opens, so a bad value stops the start cleanly. The process
    # environment, as the CLI reads ProxySettings from it too.
    activity = activity or ActivitySettings.from_env(os.environ)
    # Before the core opens, so a store or Redis failure at start-up is counted too.
    metrics.install()
    core = await start_core(core_settings, say)
    app = _application(core)
    if proxy is not None:
        add_proxy_routes(app, proxy, core)
        install_activity_log(app, core.store.db, activity)
    if management is not None:
        add_management_routes(app, management, core)
    add_health_routes(app, core)
    add_metrics_route(app)
    return app


def run_serve(proxy: ProxySettings, management: ManagementSettings) -> None:
    _run(build_serve_app(proxy, management), proxy.host, proxy.port, "serve")


def run_proxy(proxy: ProxySettings) -> None:
    _run(build_proxy_app(proxy), proxy.host, proxy.port, "proxy")


def run_management(management: ManagementSettings) -> None:
    _run(build_management_app(management), management.host, management.port, "management")


def _application(core: CoreServices) -> web.Application:
    app = web.Application(
        client_max_size=MAX_JSON_BODY,
        handler_args={"max_field_size": MAX_HEADER_FIELD, "max_line_size": MAX_REQUEST_LINE},
    )

    async def close_core(_: web.Application) -> None:
        await core.close()

    app.on_cleanup.append(close_core)
    return app


def _run(app: object, host: str, port: int, role: str) -> None:
    def announce(*_: object) -> None:
        # aiohttp calls this once the socket is listening; tools wait for this line.
        say(f"{role} ready on http://{host}:{port}")

    web.run_app(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop=uvloop.new_event_loop(),
        access_log=None,
        print=announce,
        keepalive_timeout=KEEPALIVE_SECONDS,
    )
