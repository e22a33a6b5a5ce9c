"""The HTTP/1.1 server: graceful shutdown (stop_accepting, drain) and close."""

from __future__ import annotations

import asyncio

import pytest

from proxy.http.server import HttpServer, Reply, Request
from tests.proxy.http.test_server_support import WAIT, RawClient, get, raw_client


class Gate:
    """A handler that holds `/slow` requests until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self, request: Request, reply: Reply) -> None:
        if request.raw_path == "/slow":
            self.entered.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        reply.respond(200, [], b"done " + request.raw_path.encode())

    async def wait_entered(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.entered.wait()


async def test_stop_accepting_then_drain_lets_the_request_in_flight_finish() -> None:
    gate = Gate()
    server = HttpServer(gate)
    await server.start("127.0.0.1", 0)
    port = server.port
    try:
        async with raw_client(port) as idle, raw_client(port) as busy:
            idle.send(get("/quick"))
            assert (await idle.response()).body == b"done /quick"
            busy.send(get("/slow"))
            await gate.wait_entered()
            assert server.in_flight == 1

            server.stop_accepting()
            assert await idle.closed_by_server()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)

            drained = asyncio.get_running_loop().create_task(server.drain(WAIT))
            await asyncio.sleep(0)
            assert not drained.done()
            gate.release.set()
            response = await busy.response()
            assert (response.body, response.header("Connection")) == (b"done /slow", "close")
            assert await busy.closed_by_server()
            assert await drained is True
            assert server.in_flight == 0
    finally:
        await server.close()


async def test_drain_returns_false_when_the_grace_runs_out() -> None:
    gate = Gate()
    server = HttpServer(gate)
    await server.start("127.0.0.1", 0)
    try:
        async with raw_client(server.port) as client:
            client.send(get("/slow"))
            await gate.wait_entered()
            server.stop_accepting()
            assert await server.drain(0.05) is False
            assert server.in_flight == 1
            gate.release.set()
            assert (await client.response()).status == 200
            assert await server.drain(WAIT) is True
    finally:
        await server.close()


async def test_drain_with_nothing_running_is_immediate() -> None:
    server = HttpServer(Gate())
    assert await server.drain(0) is True
    await server.start("127.0.0.1", 0)
    try:
        assert await server.drain(0) is True
    finally:
        await server.close()


async def test_close_aborts_connections_and_cancels_handlers() -> None:
    gate = Gate()
    server = HttpServer(gate)
    await server.start("127.0.0.1", 0)
    client = await RawClient.connect(server.port)
    try:
        client.send(get("/slow"))
        await gate.wait_entered()
        await server.close()
        assert gate.cancelled
        assert server.in_flight == 0
        assert await client.closed_by_server()
    finally:
        await client.close()
