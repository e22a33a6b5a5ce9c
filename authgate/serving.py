"""Building, running and stopping the three server processes on uvloop.

`authgate proxy` is the lean server (proxy.http.server) with the data plane;
`authgate management` is the management API on aiohttp; `authgate serve` is the lean
server with the data plane in front of the management API on a private Unix socket.
Every role stops the same way on SIGTERM or SIGINT (see `authgate.settings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import uvloop
from aiohttp import web

from authgate.bootstrap import start_core
from authgate.console import say
from authgate.delegate import delegate_to
from authgate.settings import ServingSettings
from credentials.activity import ActivitySettings
from credentials.runtime import CoreServices
from management.app import add_management_routes
from management.request_context import CORE
from management.settings import ManagementSettings
from proxy import metrics
from proxy.app import DataPlane, build_data_plane, routes
from proxy.http.client import ClientLimits, HttpClient
from proxy.http.server import HttpServer, ServerLimits
from proxy.settings import ProxySettings

log = logging.getLogger("authgate")

MAX_HEADER_FIELD = 64 * 1024
# aiohttp's default (8 KiB) is below what clients send: Node accepts 16 KiB request lines,
# and proxied query strings can be long.
MAX_REQUEST_LINE = 64 * 1024
# Management JSON bodies, as Nango allows; proxied bodies stream and are not bounded by it.
MAX_JSON_BODY = 75 * 1024 * 1024
DEFAULTS = ServingSettings()
DRAIN = web.AppKey("drain", list[bool])
"""The management app's stop flag, one element: True once the process is stopping."""


@dataclass
class Running:
    """A started server: its port, its parts (for tests and tools) and how to stop it."""

    port: int
    core: CoreServices
    plane: DataPlane | None = None
    app: web.Application | None = None  # the management API, when this role has it
    server: HttpServer | None = None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def begin_draining(self) -> None:
        """From now on `/ready` answers 503; requests are still served."""
        if self.plane is not None:
            self.plane.draining = True
        if self.app is not None:
            self.app[DRAIN][0] = True

    async def stop(self, serving: ServingSettings) -> bool:
        """The whole stop: readiness fails, then after `drain_delay` the listener closes
        and in-flight requests get `drain_timeout` to finish. True when none was cut."""
        self.begin_draining()
        if serving.drain_delay > 0:
            await asyncio.sleep(serving.drain_delay)
        return await self.close(grace=serving.drain_timeout)

    async def close(self, grace: float = 0.0) -> bool:
        drained = True
        if self.server is not None:
            self.server.stop_accepting()
            if grace > 0:
                drained = await self.server.drain(grace)
            await self.server.close()
        for closer in reversed(self._closers):
            await closer()
        self._closers.clear()
        return drained


async def start_proxy(
    proxy: ProxySettings,
    *,
    activity: ActivitySettings | None = None,
    port: int | None = None,
    reuse_port: bool = False,
    serving: ServingSettings = DEFAULTS,
) -> Running:
    """The data plane alone on `proxy.host`, `port` (default `proxy.port`; 0 for any)."""
    core, plane = await _data_plane(proxy, activity)
    running = Running(port=0, core=core, plane=plane, _closers=[core.close, plane.close])
    try:
        server = HttpServer(routes(plane), _server_limits(serving))
        await server.start(proxy.host, proxy.port if port is None else port, reuse_port=reuse_port)
    except BaseException:
        await running.close()
        raise
    running.server, running.port = server, server.port
    return running


async def start_serve(
    proxy: ProxySettings,
    management: ManagementSettings,
    *,
    activity: ActivitySettings | None = None,
    port: int | None = None,
    serving: ServingSettings = DEFAULTS,
) -> Running:
    """Data plane and management API on one port: `authgate serve`."""
    core, plane = await _data_plane(proxy, activity)
    running = Running(port=0, core=core, plane=plane, _closers=[core.close, plane.close])
    try:
        app = _management_app(core, management)
        await _deliver_webhooks(core, running)
        socket_dir = Path(tempfile.mkdtemp(prefix="authgate-"))
        running._closers.append(_remover(socket_dir))
        # The front drains the callers; by the time this runner cleans up, nothing of
        # theirs is left in it.
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=serving.keepalive_timeout)
        await runner.setup()
        running._closers.append(runner.cleanup)
        socket_path = str(socket_dir / "management.sock")
        await web.UnixSite(runner, socket_path).start()
        local = HttpClient(ClientLimits(read_timeout=300.0), unix_socket=socket_path)
        running._closers.append(local.close)
        server = HttpServer(routes(plane, fallback=delegate_to(local)), _server_limits(serving))
        await server.start(proxy.host, proxy.port if port is None else port)
    except BaseException:
        await running.close()
        raise
    running.app, running.server, running.port = app, server, server.port
    return running


async def start_management(
    management: ManagementSettings,
    *,
    port: int | None = None,
    serving: ServingSettings = DEFAULTS,
) -> Running:
    """The management API alone on aiohttp: `authgate management`."""
    metrics.install()
    core = await start_core(management.core, say)
    running = Running(port=0, core=core, _closers=[core.close])
    try:
        app = _management_app(core, management)
        await _deliver_webhooks(core, running)
        # The drain of this role is aiohttp's: the listener closes, then in-flight
        # handlers get the shutdown timeout.
        runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=serving.keepalive_timeout,
            shutdown_timeout=serving.drain_timeout,
        )
        await runner.setup()
        running._closers.append(runner.cleanup)
        site = web.TCPSite(runner, management.host, management.port if port is None else port)
        await site.start()
    except BaseException:
        await running.close()
        raise
    running.app, running.port = app, _bound_port(runner)
    return running


async def build_management_app(management: ManagementSettings) -> web.Application:
    """The management API as an aiohttp app that closes the core on cleanup (tests)."""
    metrics.install()
    core = await start_core(management.core, say)
    app = _management_app(core, management)

    async def close_core(_: web.Application) -> None:
        await core.close()

    app.on_cleanup.append(close_core)
    return app


def run_serve(
    proxy: ProxySettings, management: ManagementSettings, serving: ServingSettings
) -> None:
    start = lambda: start_serve(proxy, management, serving=serving)  # noqa: E731
    uvloop.run(_serve_until_stopped(start, serving, "serve", proxy.host))


def run_proxy(proxy: ProxySettings, serving: ServingSettings, *, reuse_port: bool = False) -> None:
    start = lambda: start_proxy(proxy, reuse_port=reuse_port, serving=serving)  # noqa: E731
    uvloop.run(_serve_until_stopped(start, serving, "proxy", proxy.host))


def run_management(management: ManagementSettings, serving: ServingSettings) -> None:
    start = lambda: start_management(management, serving=serving)  # noqa: E731
    uvloop.run(_serve_until_stopped(start, serving, "management", management.host))


async def _serve_until_stopped(
    start: Callable[[], Awaitable[Running]], serving: ServingSettings, role: str, host: str
) -> None:
    running = await start()
    # Everything built at start-up (catalogue, settings, modules) lives as long as the
    # process: moved out of the collector's sight, a full collection under load scans
    # only what requests create. Measured: p99 at 32 connections ~20 ms -> ~6 ms.
    gc.freeze()
    # Requests allocate many short-lived objects; collecting the youngest generation
    # every 700 allocations costs ~5 µs a request, every 50,000 almost nothing.
    gc.set_threshold(50_000, 20, 100)
    # Tools and tests wait for this line.
    say(f"{role} ready on http://{host}:{running.port}")
    await _first_stop_signal()
    say(f"{role} stopping: draining for up to {serving.stop_seconds:g} s")
    drained = await running.stop(serving)
    say(f"{role} stopped" if drained else f"{role} stopped; requests still running were cut")


async def _first_stop_signal() -> None:
    """Waits for SIGTERM or SIGINT; from then on, a second one exits at once."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _exit_now, signum)


def _exit_now(signum: int) -> None:
    say(f"second {signal.Signals(signum).name}: exiting without waiting")
    # Skips cleanup on purpose: the operator asked twice.
    os._exit(0)


async def _data_plane(
    proxy: ProxySettings, activity: ActivitySettings | None
) -> tuple[CoreServices, DataPlane]:
    # Read before anything opens, so a bad value stops the start cleanly.
    activity = activity or ActivitySettings.from_env(os.environ)
    # Before the core opens, so a store or Redis failure at start-up is counted too.
    metrics.install()
    core = await start_core(proxy.core, say)
    try:
        plane = build_data_plane(proxy, core, activity)
        await plane.start()
    except BaseException:
        await core.close()
        raise
    return core, plane


def _management_app(core: CoreServices, management: ManagementSettings) -> web.Application:
    app = web.Application(
        client_max_size=MAX_JSON_BODY,
        handler_args={"max_field_size": MAX_HEADER_FIELD, "max_line_size": MAX_REQUEST_LINE},
    )
    app[DRAIN] = [False]
    add_management_routes(app, management, core)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    return app


async def _health(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    is_ready, checks = await request.app[CORE].readiness(draining=request.app[DRAIN][0])
    return _json(200 if is_ready else 503, {"ready": is_ready, "checks": checks})


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = await metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _deliver_webhooks(core: CoreServices, running: Running) -> None:
    """The roles with the management API deliver the auth webhooks every process queues
    (the outbox is shared through the store; several senders never send one row twice)."""
    if core.webhooks is None:
        return
    sender = core.webhooks.sender()
    await sender.start()
    running._closers.append(sender.close)


def _server_limits(serving: ServingSettings) -> ServerLimits:
    return ServerLimits(
        keepalive_timeout=serving.keepalive_timeout, max_request_line=MAX_REQUEST_LINE
    )


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the management server is not listening")


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _remover(directory: Path) -> Callable[[], Awaitable[None]]:
    async def remove() -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)

    return remove
