"""Stopping a serving process on SIGTERM, as a load balancer or Kubernetes sees it.

Real `authgate` processes, a real provider on a socket, real signals:

- `/ready` fails first while requests are still served (the drain delay), and a second
  signal exits at once;
- a streamed download in flight across the SIGTERM completes intact, while new
  connections are refused and idle keep-alive connections are closed between responses,
  never in the middle of one;
- a stream that outlives the drain timeout is cut so the caller sees it incomplete, and
  the process still exits 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from authgate.bootstrap import BOOTSTRAP_ENVIRONMENT, ensure_bootstrap_environment
from credentials.config import CoreSettings
from credentials.crypto import Keyring, encode_key, generate_key
from credentials.store import open_store
from tests.e2e.processes import (
    ChildProcess,
    authgate_command,
    child_environment,
    free_port,
    start_child,
    stop_child,
    wait_for_output,
)

PROVIDER = "drain-fake"
INTEGRATION = "drain"
CONNECTION = "user-1"
API_KEY = "drain-test-api-key"
HALF = 256 * 1024
EXIT_WAIT = 30.0
POLL_SECONDS = 0.02
POLL_LIMIT = 30.0
PROVIDERS_YAML = f"""
{PROVIDER}:
    display_name: Drain fake
    categories: [dev-tools]
    docs: https://docs.example.com/drain-fake
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${{connectionConfig.port}}
        headers:
            authorization: Bearer ${{apiKey}}
"""


@dataclass
class Provider:
    """Serves `/stream`: half of a sized body at once, the rest when released."""

    port: int = 0
    body: bytes = field(default_factory=lambda: bytes(range(256)) * (2 * HALF // 256))
    first_half_sent: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(self.body)
        await response.prepare(request)
        await response.write(self.body[:HALF])
        self.first_half_sent.set()
        await self.release.wait()
        await response.write(self.body[HALF:])
        await response.write_eof()
        return response

    async def small(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


@dataclass
class Stack:
    port: int
    child: ChildProcess
    provider: Provider
    secret_key: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def proxy_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.secret_key}",
            "Connection-Id": CONNECTION,
            "Provider-Config-Key": INTEGRATION,
        }

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        self.child.popen.send_signal(signum)

    async def exit_code(self) -> int:
        return await asyncio.to_thread(self.child.popen.wait, EXIT_WAIT)


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    provider = Provider()
    app = web.Application()
    app.router.add_get("/stream", provider.stream)
    app.router.add_get("/small", provider.small)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    provider.port = runner.addresses[0][1]
    try:
        yield provider
    finally:
        provider.release.set()
        await runner.cleanup()


@pytest.fixture
async def launch(tmp_path: Path, provider: Provider) -> AsyncIterator[Launcher]:
    async with AsyncExitStack() as stack:
        yield Launcher(tmp_path, provider, stack)


class Launcher:
    """Starts an `authgate` role on a store seeded with one API-key connection."""

    def __init__(self, tmp_path: Path, provider: Provider, stack: AsyncExitStack) -> None:
        self._tmp_path = tmp_path
        self._provider = provider
        self._stack = stack
        self._environment: dict[str, str] | None = None

    async def __call__(self, argv: list[str], **overrides: str) -> Stack:
        environment = await self._seeded_environment()
        port = free_port()
        env = child_environment(
            {
                **environment,
                **overrides,
                "AUTHGATE_HOST": "127.0.0.1",
                "AUTHGATE_PORT": str(port),
            }
        )
        child = start_child(
            argv[0], [authgate_command(), *argv], log_dir=self._tmp_path / "logs", env=env
        )
        self._stack.push_async_callback(stop_child, child)
        await wait_for_output(child, f"{argv[0]} ready on http://127.0.0.1:{port}")
        return Stack(port, child, self._provider, environment["AUTHGATE_SECRET_KEY"])

    async def _seeded_environment(self) -> dict[str, str]:
        if self._environment is None:
            self._environment = await _seed(self._tmp_path, self._provider.port)
        return self._environment


async def _seed(tmp_path: Path, provider_port: int) -> dict[str, str]:
    providers_file = tmp_path / "providers.yaml"
    providers_file.write_text(PROVIDERS_YAML)
    settings = CoreSettings(
        database_url=f"sqlite:///{tmp_path}/drain.db",
        encryption_keys=(generate_key(),),
        secret_key=str(uuid.uuid4()),
        data_dir=tmp_path / "data",
    )
    store = await open_store(settings.database_url, Keyring(settings.encryption_keys))
    try:
        await ensure_bootstrap_environment(store, settings, lambda _: None)
        environment = await store.get_environment(BOOTSTRAP_ENVIRONMENT)
        assert environment is not None
        integration = await store.create_integration(
            environment.id, unique_key=INTEGRATION, provider=PROVIDER
        )
        await store.upsert_connection(
            environment.id,
            integration,
            connection_id=CONNECTION,
            credentials={"type": "API_KEY", "apiKey": API_KEY},
            connection_config={"port": str(provider_port)},
        )
    finally:
        await store.close()
    assert settings.secret_key is not None
    return {
        "DATABASE_URL": settings.database_url,
        "AUTHGATE_ENCRYPTION_KEY": encode_key(settings.encryption_keys[0]),
        "AUTHGATE_SECRET_KEY": settings.secret_key,
        "AUTHGATE_PROVIDERS_FILE": str(providers_file),
        "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS": "true",
        "AUTHGATE_DATA_DIR": str(settings.data_dir),
    }


# --- waiting on conditions, never on the clock alone ---------------------------------


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + POLL_LIMIT
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(POLL_SECONDS)


async def status_of(session: aiohttp.ClientSession, url: str, **kwargs: object) -> int:
    async with session.get(url, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        return response.status


async def health_command(port: int, *flags: str) -> int:
    process = await asyncio.create_subprocess_exec(
        authgate_command(),
        "health",
        "--port",
        str(port),
        *flags,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


def refuses_connections(port: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return False
        except ConnectionRefusedError:
            return True

    return check


def idle_keepalive_connection(port: int) -> socket.socket:
    """A connection that has had one complete response and now sits idle, kept alive."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    headers, _, body = head.partition(b"\r\n\r\n")
    length = int(headers.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    assert headers.startswith(b"HTTP/1.1 200"), headers
    return sock


# --- the tests ---------------------------------------------------------------------------

ROLES = {
    "proxy": ["proxy", "--workers", "1"],
    "serve": ["serve"],
    "management": ["management"],
}


@pytest.mark.parametrize("role", sorted(ROLES))
async def test_ready_fails_first_while_requests_are_still_served(
    launch: Launcher, role: str
) -> None:
    # A drain delay far longer than the test: only the second signal can end it soon.
    stack = await launch(ROLES[role], AUTHGATE_DRAIN_DELAY="600")
    async with aiohttp.ClientSession() as session:
        assert await status_of(session, f"{stack.base}/ready") == 200
        stack.signal()

        async def ready_fails() -> bool:
            return await status_of(session, f"{stack.base}/ready") == 503

        await until(ready_fails, "/ready answers 503")
        async with session.get(f"{stack.base}/ready") as response:
            body = await response.json()
        assert body["ready"] is False
        assert body["checks"]["shutdown"] == {"ok": False, "error": "draining"}
        assert body["checks"]["store"] == {"ok": True}
        # Still serving: alive, and (where the role proxies) proxying.
        assert await status_of(session, f"{stack.base}/health") == 200
        # What a container health check runs sees the same.
        assert await health_command(stack.port) == 0
        assert await health_command(stack.port, "--ready") == 1
        if role != "management":
            url = f"{stack.base}/proxy/small"
            assert await status_of(session, url, headers=stack.proxy_headers()) == 200

    started = time.monotonic()
    stack.signal()
    assert await stack.exit_code() == 0
    assert time.monotonic() - started < EXIT_WAIT / 2, "the second signal did not exit at once"
    assert "second SIGTERM: exiting without waiting" in stack.child.output()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_stream_in_flight_completes_and_new_connections_are_refused(
    launch: Launcher, provider: Provider, workers: str
) -> None:
    stack = await launch(["proxy", "--workers", workers], AUTHGATE_DRAIN_TIMEOUT="60")
    idle = idle_keepalive_connection(stack.port)
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{stack.base}/proxy/stream", headers=stack.proxy_headers()
        ) as download:
            assert download.status == 200
            received = await download.content.readexactly(HALF)
            await provider.first_half_sent.wait()

            stack.signal()
            await until(refuses_connections(stack.port), "new connections are refused")
            # The idle keep-alive connection is closed cleanly: an end of stream, not
            # a reset and not a partial response.
            assert await asyncio.to_thread(idle.recv, 4096) == b""
            idle.close()

            provider.release.set()
            received += await download.content.read()
        assert download.headers["Content-Length"] == str(len(provider.body))
    assert hashlib.sha256(received).digest() == hashlib.sha256(provider.body).digest()
    assert await stack.exit_code() == 0
    output = stack.child.output()
    assert "proxy stopping: draining" in output
    assert "proxy stopped" in output
    assert "cut" not in output


async def test_a_stream_outliving_the_drain_timeout_is_cut_visibly(
    launch: Launcher, provider: Provider
) -> None:
    stack = await launch(["proxy", "--workers", "1"], AUTHGATE_DRAIN_TIMEOUT="0.2")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.base}/proxy/stream", headers=stack.proxy_headers()) as download,
    ):
        await download.content.readexactly(HALF)
        stack.signal()
        # Sized by Content-Length: a cut body can never pass for a whole one.
        with pytest.raises(aiohttp.ClientPayloadError):
            await download.content.read()
    assert await stack.exit_code() == 0
    assert "requests still running were cut" in stack.child.output()
