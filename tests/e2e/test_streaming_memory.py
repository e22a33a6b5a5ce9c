"""Large bodies stream through a real `authgate serve` process with bounded memory.

authgate runs as its own process so its resident memory can be read from /proc; the
fake provider runs in the test process and produces/consumes the bytes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.e2e.conftest import settings_env
from tests.e2e.fake_provider import FakeProvider, streams_request

MIB = 1024 * 1024
CHUNK = bytes(range(256)) * 256  # 64 KiB with a recognisable pattern
DOWNLOAD_BYTES = 1024 * MIB
UPLOAD_BYTES = 256 * MIB
ALLOWED_GROWTH = 50 * MIB


@dataclass
class Served:
    base: str
    pid: int
    headers: dict[str, str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    port = _free_port()
    environ = settings_env(tmp_path, f"sqlite:///{tmp_path / 'stream.db'}", AUTHGATE_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "authgate", "serve"],
        env={**os.environ, **environ},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    ready = threading.Event()
    # Keep draining stderr (one log line per request) so the child never blocks on a full pipe.
    drain = threading.Thread(target=_watch_stderr, args=(process, ready), daemon=True)
    drain.start()
    try:
        assert ready.wait(timeout=60), "authgate serve did not become ready"
        yield process, {**environ, "port": str(port)}
    finally:
        process.terminate()
        process.wait(timeout=30)
        drain.join(timeout=30)


def _watch_stderr(process: subprocess.Popen[bytes], ready: threading.Event) -> None:
    assert process.stderr is not None
    with process.stderr:
        for line in process.stderr:
            if b"ready on" in line:
                ready.set()


@pytest.fixture
async def served(
    serve_process: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> AsyncIterator[tuple[Served, FakeProvider]]:
    process, environ = serve_process
    provider = FakeProvider()
    provider.respond("/download", _download)
    provider.respond("/upload", streams_request(_upload))
    provider_server = TestServer(provider.app, host="127.0.0.1")
    await provider_server.start_server()
    base = f"http://127.0.0.1:{environ['port']}"
    auth = {"Authorization": f"Bearer {environ['AUTHGATE_SECRET_KEY']}"}
    async with aiohttp.ClientSession() as session:
        created = await session.post(
            f"{base}/integrations",
            json={"unique_key": "big", "provider": "fake-basic"},
            headers=auth,
        )
        assert created.status == 200, await created.text()
        imported = await session.post(
            f"{base}/connections",
            json={
                "provider_config_key": "big",
                "connection_id": "c",
                "credentials": {"type": "BASIC", "username": "u", "password": "p"},
                "connection_config": {"port": str(provider_server.port)},
            },
            headers=auth,
        )
        assert imported.status == 201, await imported.text()
    headers = {**auth, "Connection-Id": "c", "Provider-Config-Key": "big"}
    yield Served(base, process.pid, headers), provider
    await provider_server.close()


async def _download(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = DOWNLOAD_BYTES
    await response.prepare(request)
    for _ in range(DOWNLOAD_BYTES // len(CHUNK)):
        await response.write(CHUNK)
    await response.write_eof()
    return response


async def _upload(request: web.Request) -> web.StreamResponse:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"sha256": digest.hexdigest(), "size": size})


def _expected_digest(total: int) -> str:
    digest = hashlib.sha256()
    for _ in range(total // len(CHUNK)):
        digest.update(CHUNK)
    return digest.hexdigest()


async def _upload_body() -> AsyncIterator[bytes]:
    for _ in range(UPLOAD_BYTES // len(CHUNK)):
        yield CHUNK


async def test_one_gib_download_streams_intact_in_bounded_memory(
    served: tuple[Served, FakeProvider],
) -> None:
    target, _ = served
    async with aiohttp.ClientSession() as session:
        warm = await session.get(f"{target.base}/proxy/warm", headers=target.headers)
        await warm.read()
        idle_kib = _memory_kib(target.pid, "VmRSS")
        digest = hashlib.sha256()
        size = 0
        async with session.get(f"{target.base}/proxy/download", headers=target.headers) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(DOWNLOAD_BYTES)
            async for chunk in response.content.iter_chunked(256 * 1024):
                digest.update(chunk)
                size += len(chunk)
    assert size == DOWNLOAD_BYTES
    assert digest.hexdigest() == _expected_digest(DOWNLOAD_BYTES)
    peak_kib = _memory_kib(target.pid, "VmHWM")
    assert (peak_kib - idle_kib) * 1024 < ALLOWED_GROWTH, (idle_kib, peak_kib)


async def test_256_mib_upload_streams_intact_in_bounded_memory(
    served: tuple[Served, FakeProvider],
) -> None:
    target, provider = served
    async with aiohttp.ClientSession() as session:
        warm = await session.get(f"{target.base}/proxy/warm", headers=target.headers)
        await warm.read()
        idle_kib = _memory_kib(target.pid, "VmRSS")
        headers = {
            **target.headers,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(UPLOAD_BYTES),
        }
        async with session.post(
            f"{target.base}/proxy/upload", headers=headers, data=_upload_body()
        ) as response:
            assert response.status == 200
            result = await response.json()
    assert result == {"sha256": _expected_digest(UPLOAD_BYTES), "size": UPLOAD_BYTES}
    assert provider.last().header("Content-Length") == str(UPLOAD_BYTES)
    peak_kib = _memory_kib(target.pid, "VmHWM")
    assert (peak_kib - idle_kib) * 1024 < ALLOWED_GROWTH, (idle_kib, peak_kib)
