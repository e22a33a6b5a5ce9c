"""Redis servers a test may break: a private redis-server, and one that never answers.

Tests that need Redis to go down start their own `redis-server` on a free port and
terminate it; the shared one on 6379 is never touched.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import RedisError

START_ATTEMPTS = 100
START_POLL_SECONDS = 0.05


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test alone, that can be stopped and started again."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._workdir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await self._wait_until_answering()

    async def stop(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.returncode is None:
            process.terminate()
        await process.wait()

    async def _wait_until_answering(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            for _ in range(START_ATTEMPTS):
                try:
                    if await client.ping():
                        return
                except (RedisError, OSError):
                    pass
                await asyncio.sleep(START_POLL_SECONDS)
        finally:
            await client.aclose()
        raise RuntimeError(f"redis-server on port {self.port} did not start")


class SilentServer:
    """Accepts TCP connections and never replies: a Redis that hangs. Counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
