"""The frontend SDK's WebSocket under a real `authgate serve`: through the lean front,
over its Unix socket, into the management app, and back; across two processes through
Redis; and when the process stops.

The flows publish through `app[PUBLISHER]`; these tests call it the same way, so what is
checked is the delivery path, not any flow. "Not delivered" is proved by order: the
publish that must not arrive is made first, then one that must.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from management.request_context import PUBLISHER
from management.websocket import WEBSOCKETS
from proxy.http.server import HttpServer
from tests.e2e.conftest import Authgate, Factory
from tests.support import sqlite_database

REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 10.0
MIB = 1024 * 1024


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    # The WebSocket never touches the store: one backend is enough here.
    async with sqlite_database(tmp_path) as url:
        yield url


def ws_url(gate: Authgate) -> str:
    return str(gate.url).replace("http://", "ws://")


def front(gate: Authgate) -> HttpServer:
    assert gate.running.server is not None
    return gate.running.server


async def acked(socket: aiohttp.ClientWebSocketResponse) -> str:
    ack = await socket.receive_json(timeout=WAIT)
    assert ack["message_type"] == "connection_ack"
    client_id: str = ack["ws_client_id"]
    parsed = uuid.UUID(client_id)
    assert (parsed.version, str(parsed)) == (4, client_id)
    return client_id


async def next_json(socket: aiohttp.ClientWebSocketResponse) -> Any:
    return await socket.receive_json(timeout=WAIT)


async def test_results_reach_their_own_socket_through_the_front(authgate: Authgate) -> None:
    publisher = authgate.app[PUBLISHER]
    async with (
        authgate.session.ws_connect(ws_url(authgate)) as first,
        authgate.session.ws_connect(ws_url(authgate)) as second,
    ):
        first_id, second_id = await acked(first), await acked(second)
        assert first_id != second_id
        await publisher.publish_success(first_id, "github", "user-1")
        await publisher.publish_error(second_id, "token_err", "The provider refused the code")
        assert await next_json(first) == {
            "message_type": "success",
            "provider_config_key": "github",
            "connection_id": "user-1",
            "is_pending": False,
        }
        assert await next_json(second) == {
            "message_type": "error",
            "error_type": "token_err",
            "error_desc": "The provider refused the code",
        }
        for socket in (first, second):
            closing = await socket.receive(timeout=WAIT)
            assert (closing.type, closing.data) == (WSMsgType.CLOSE, 1000)
    # The management app closed both sockets, and so the front's tunnels ended.
    assert await front(authgate).drain(WAIT)


async def test_a_plain_get_of_the_root_is_still_a_404(authgate: Authgate) -> None:
    async with authgate.session.get(authgate.url, headers=authgate.auth()) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_a_mebibyte_message_passes_the_front_intact(authgate: Authgate) -> None:
    description = "x" * MIB + "end"
    async with authgate.session.ws_connect(ws_url(authgate), max_msg_size=4 * MIB) as socket:
        client_id = await acked(socket)
        await authgate.app[PUBLISHER].publish_error(client_id, "callback_err", description)
        assert (await next_json(socket))["error_desc"] == description


async def test_the_browser_closing_closes_the_management_socket(authgate: Authgate) -> None:
    sockets = authgate.app[WEBSOCKETS]
    socket = await authgate.session.ws_connect(ws_url(authgate))
    await acked(socket)
    assert sockets.open_sockets == 1
    await socket.close()
    async with asyncio.timeout(WAIT):
        await sockets.until_open_sockets(0)
    assert await front(authgate).drain(WAIT)


async def test_a_stop_ends_an_open_socket(authgate: Authgate) -> None:
    async with authgate.session.ws_connect(ws_url(authgate)) as socket:
        await acked(socket)
        # No result is coming: the tunnel is still open when the drain time is up.
        assert not await authgate.running.close(grace=0.2)
        ended = await socket.receive(timeout=WAIT)
        assert ended.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)


async def test_a_result_published_by_another_process_arrives_through_redis(
    make_authgate: Factory,
) -> None:
    prefix = f"authgate-test-{uuid.uuid4().hex}"
    first = await make_authgate(REDIS_URL=REDIS_URL, AUTHGATE_REDIS_PREFIX=prefix)
    second = await make_authgate(share=first)
    for gate in (first, second):
        assert gate.app[WEBSOCKETS].subscribed.is_set()  # serving starts subscribed
    async with second.session.ws_connect(ws_url(second)) as socket:
        client_id = await acked(socket)
        await first.app[PUBLISHER].publish_success(client_id, "github", "elsewhere")
        assert (await next_json(socket))["connection_id"] == "elsewhere"


async def test_without_redis_another_process_cannot_reach_the_socket(
    make_authgate: Factory,
) -> None:
    first = await make_authgate()
    second = await make_authgate(share=first)
    async with second.session.ws_connect(ws_url(second)) as socket:
        client_id = await acked(socket)
        await first.app[PUBLISHER].publish_success(client_id, "github", "from-first")
        await second.app[PUBLISHER].publish_success(client_id, "github", "from-second")
        assert (await next_json(socket))["connection_id"] == "from-second"
