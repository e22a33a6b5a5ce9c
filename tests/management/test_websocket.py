"""The frontend SDK's WebSocket and the result publisher (management/websocket.py).

Real aiohttp apps on real sockets, aiohttp's WebSocket client, and the suite's Redis
(127.0.0.1:6379) with a prefix of its own per test. Each app is the management
middleware plus the WebSocket alone, so the limits can be made small.

"Not delivered" is proved by order, never by waiting: a publish that must not reach a
socket is made first, then one that must, by the same path (in-process, or through
Redis, which hands one subscriber its messages in publish order); the socket's first
message is the second.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as redis
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from credentials.redis_client import open_redis
from management.app import management_middleware
from management.request_context import PUBLISHER
from management.websocket import CAPACITY_CODE, Publisher, SocketLimits
from tests.tcp_relay import TcpRelay

REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 10.0


class Replica:
    """One management process's WebSocket: its app, server and publisher."""

    def __init__(self, server: TestServer, publisher: Publisher) -> None:
        self.server = server
        self.publisher = publisher

    @property
    def url(self) -> str:
        return str(self.server.make_url("/"))


Start = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[TestServer] = []

    async def start_replica(
        *, prefix: str | None = None, limits: SocketLimits | None = None, redis_url: str = REDIS_URL
    ) -> Replica:
        """A replica; with `prefix`, on the shared Redis under that prefix."""
        redis_client = open_redis(redis_url) if prefix is not None else None
        publisher = Publisher(redis_client, prefix=prefix or "unused", limits=limits)
        app = web.Application(middlewares=[management_middleware])
        publisher.install(app)
        if redis_client is not None:
            app.on_cleanup.append(lambda _: redis_client.aclose())
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Replica(server, publisher)

    yield start_replica
    for server in reversed(servers):
        await server.close()


def unique_prefix() -> str:
    return f"authgate-test-{uuid.uuid4().hex}"


async def acked(socket: aiohttp.ClientWebSocketResponse) -> str:
    ack = await socket.receive_json(timeout=WAIT)
    assert set(ack) == {"message_type", "ws_client_id"}
    assert ack["message_type"] == "connection_ack"
    client_id: str = ack["ws_client_id"]
    return client_id


async def next_json(socket: aiohttp.ClientWebSocketResponse) -> Any:
    return await socket.receive_json(timeout=WAIT)


async def closed_by_server(socket: aiohttp.ClientWebSocketResponse) -> int | None:
    message = await socket.receive(timeout=WAIT)
    assert message.type == WSMsgType.CLOSE, message
    return socket.close_code


def success(key: str = "github", connection: str = "conn-1") -> dict[str, Any]:
    return {
        "message_type": "success",
        "provider_config_key": key,
        "connection_id": connection,
        "is_pending": False,
    }


# --- the endpoint -----------------------------------------------------------------------


async def test_each_socket_is_acked_at_once_with_a_fresh_uuid4(
    start: Start, session: aiohttp.ClientSession
) -> None:
    replica = await start()
    ids = []
    for _ in range(3):
        async with session.ws_connect(replica.url) as socket:
            ids.append(await acked(socket))
    for client_id in ids:
        parsed = uuid.UUID(client_id)
        assert (parsed.version, str(parsed)) == (4, client_id)
    assert len(set(ids)) == 3


async def test_the_endpoint_needs_no_key_and_a_plain_get_is_still_a_404(
    start: Start, session: aiohttp.ClientSession
) -> None:
    replica = await start()
    async with session.get(replica.url) as response:
        assert response.status == 404
        assert await response.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    broken = {"Connection": "Upgrade", "Upgrade": "websocket"}  # no Sec-WebSocket-Key
    async with session.get(replica.url, headers=broken) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "bad_request"


async def test_the_registered_publisher_is_the_websocket_one(start: Start) -> None:
    replica = await start()
    assert replica.server.app is not None
    assert replica.server.app[PUBLISHER] is replica.publisher


async def test_a_success_reaches_its_own_socket_only_then_the_socket_closes(
    start: Start, session: aiohttp.ClientSession
) -> None:
    replica = await start()
    async with (
        session.ws_connect(replica.url) as first,
        session.ws_connect(replica.url) as second,
    ):
        first_id, second_id = await acked(first), await acked(second)
        await replica.publisher.publish_success(first_id, "github", "conn-1")
        await replica.publisher.publish_success(second_id, "slack", "conn-2", is_pending=True)
        assert await next_json(first) == success()
        assert await closed_by_server(first) == 1000
        assert await next_json(second) == {
            "message_type": "success",
            "provider_config_key": "slack",
            "connection_id": "conn-2",
            "is_pending": True,
        }
        assert await closed_by_server(second) == 1000
    async with asyncio.timeout(WAIT):
        await replica.publisher.until_open_sockets(0)


async def test_an_error_is_sent_as_the_sdk_reads_it(
    start: Start, session: aiohttp.ClientSession
) -> None:
    replica = await start()
    async with session.ws_connect(replica.url) as socket:
        client_id = await acked(socket)
        await replica.publisher.publish_error(client_id, "token_err", "The provider said no")
        assert await next_json(socket) == {
            "message_type": "error",
            "error_type": "token_err",
            "error_desc": "The provider said no",
        }
        assert await closed_by_server(socket) == 1000


async def test_publishing_to_an_unknown_or_spent_id_is_a_quiet_no_op(
    start: Start, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    replica = await start()
    unknown = str(uuid.uuid4())
    with caplog.at_level(logging.DEBUG, logger="authgate.management.websocket"):
        await replica.publisher.publish_success(unknown, "github", "conn-1")
        await replica.publisher.publish_error("not-a-uuid", "state_err", "x")
        async with session.ws_connect(replica.url) as socket:
            client_id = await acked(socket)
            await replica.publisher.publish_error(client_id, "token_err", "first")
            await replica.publisher.publish_error(client_id, "token_err", "second")  # spent
            assert (await next_json(socket))["error_desc"] == "first"
            assert await closed_by_server(socket) == 1000
    notes = [r.getMessage() for r in caplog.records if r.name == "authgate.management.websocket"]
    assert len(notes) == 3
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.getMessage() in notes)
    assert not any(unknown in note or client_id in note for note in notes)


# --- limits -------------------------------------------------------------------------------


async def test_a_socket_without_a_result_is_closed_after_the_idle_timeout(
    start: Start, session: aiohttp.ClientSession
) -> None:
    replica = await start(limits=SocketLimits(idle_timeout=0.2))
    async with session.ws_connect(replica.url) as socket:
        await acked(socket)
        message = await socket.receive(timeout=WAIT)
        assert (message.type, message.data, message.extra) == (WSMsgType.CLOSE, 1001, "idle")
    async with asyncio.timeout(WAIT):
        await replica.publisher.until_open_sockets(0)


async def test_a_peer_that_stops_answering_pings_is_dropped(
    start: Start, session: aiohttp.ClientSession
) -> None:
    replica = await start(limits=SocketLimits(heartbeat=0.2))
    # autoping off: the client never answers the server's pings, like a dead peer.
    async with session.ws_connect(replica.url, autoping=False) as socket:
        await acked(socket)
        kinds = []
        while (message := await socket.receive(timeout=WAIT)).type == WSMsgType.PING:
            kinds.append(message.type)
        assert kinds  # pinged, never answered...
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)  # ...dropped
    async with asyncio.timeout(WAIT):
        await replica.publisher.until_open_sockets(0)


async def test_sockets_past_the_cap_are_refused_cleanly(
    start: Start, session: aiohttp.ClientSession
) -> None:
    replica = await start(limits=SocketLimits(max_sockets=2))
    first = await session.ws_connect(replica.url)
    second = await session.ws_connect(replica.url)
    await acked(first)
    await acked(second)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(replica.url)
    assert refused.value.status == 503
    handshake = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with session.get(replica.url, headers=handshake) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["code"] == CAPACITY_CODE
    await first.close()
    async with asyncio.timeout(WAIT):
        await replica.publisher.until_open_sockets(1)
    async with session.ws_connect(replica.url) as third:
        await acked(third)
    await second.close()


async def test_shutdown_closes_every_socket_as_going_away(
    start: Start, session: aiohttp.ClientSession
) -> None:
    replica = await start()
    async with session.ws_connect(replica.url) as socket:
        await acked(socket)
        closing = asyncio.ensure_future(replica.server.close())
        assert await closed_by_server(socket) == 1001
        async with asyncio.timeout(WAIT):
            await closing


# --- across replicas --------------------------------------------------------------------


async def test_a_result_published_on_one_replica_reaches_the_socket_on_another(
    start: Start, session: aiohttp.ClientSession
) -> None:
    prefix = unique_prefix()
    a, b = await start(prefix=prefix), await start(prefix=prefix)
    # A replica starts serving once its subscription is confirmed: nothing to wait for.
    assert a.publisher.subscribed.is_set()
    assert b.publisher.subscribed.is_set()
    async with session.ws_connect(b.url) as on_b, session.ws_connect(a.url) as on_a:
        b_id, a_id = await acked(on_b), await acked(on_a)
        await a.publisher.publish_success(b_id, "github", "remote")
        assert await next_json(on_b) == success(connection="remote")
        assert await closed_by_server(on_b) == 1000
        await b.publisher.publish_error(a_id, "token_err", "from b")
        assert (await next_json(on_a))["error_desc"] == "from b"


async def test_replicas_of_another_prefix_do_not_hear_each_other(
    start: Start, session: aiohttp.ClientSession
) -> None:
    ours, theirs = unique_prefix(), unique_prefix()
    stranger = await start(prefix=theirs)
    holder, sibling = await start(prefix=ours), await start(prefix=ours)
    async with session.ws_connect(holder.url) as socket:
        client_id = await acked(socket)
        # Both go through Redis, in this order: the first must not arrive, the second must.
        await stranger.publisher.publish_success(client_id, "github", "from-another-prefix")
        await sibling.publisher.publish_success(client_id, "github", "from-a-sibling")
        assert (await next_json(socket))["connection_id"] == "from-a-sibling"


async def test_without_redis_delivery_is_local_only(
    start: Start, session: aiohttp.ClientSession
) -> None:
    a, b = await start(), await start()
    async with session.ws_connect(b.url) as on_b, session.ws_connect(a.url) as on_a:
        b_id, a_id = await acked(on_b), await acked(on_a)
        await a.publisher.publish_success(b_id, "github", "from-a")  # a no-op: not held here
        await b.publisher.publish_success(b_id, "github", "from-b")
        assert (await next_json(on_b))["connection_id"] == "from-b"
        await a.publisher.publish_success(a_id, "github", "local")
        assert (await next_json(on_a))["connection_id"] == "local"


async def test_a_result_goes_out_on_its_ids_channel_and_malformed_ids_not_at_all(
    start: Start,
) -> None:
    prefix = unique_prefix()
    replica = await start(prefix=prefix)
    listener = redis.Redis.from_url(REDIS_URL)
    try:
        async with listener.pubsub() as pubsub:
            await pubsub.psubscribe(f"{prefix}:*")
            async with asyncio.timeout(WAIT):
                confirmed = await pubsub.get_message(timeout=WAIT)
            assert confirmed is not None
            assert confirmed["type"] == "psubscribe"
            unknown = str(uuid.uuid4())
            await replica.publisher.publish_success("../" + unknown, "github", "malformed")
            await replica.publisher.publish_success(unknown.upper(), "github", "not canonical")
            await replica.publisher.publish_success(unknown, "github", "conn-1")
            async with asyncio.timeout(WAIT):
                heard = await pubsub.get_message(ignore_subscribe_messages=True, timeout=WAIT)
    finally:
        await listener.aclose()
    assert heard is not None
    assert heard["channel"] == f"{prefix}:ws:{unknown}".encode()
    assert orjson.loads(heard["data"]) == success()


async def test_a_result_published_while_the_holder_is_cut_off_arrives_once_it_is_back(
    start: Start, session: aiohttp.ClientSession
) -> None:
    prefix = unique_prefix()
    async with TcpRelay("127.0.0.1", 6379) as relay:
        holder = await start(prefix=prefix, redis_url=f"redis://127.0.0.1:{relay.port}/0")
        sibling = await start(prefix=prefix)
        assert holder.publisher.subscribed.is_set()
        async with session.ws_connect(holder.url) as socket:
            client_id = await acked(socket)
            relay.cut()  # the holder's subscription is gone: pub/sub cannot reach it
            await sibling.publisher.publish_success(client_id, "github", "during-the-blip")
            relay.restore()
            # Re-subscribing takes the reconnect backoff (at most 5 s), hence the bound.
            assert await socket.receive_json(timeout=3 * WAIT) == success(
                connection="during-the-blip"
            )
            assert await closed_by_server(socket) == 1000
        # Delivered, so no longer kept.
        checker = redis.Redis.from_url(REDIS_URL)
        try:
            assert await checker.exists(f"{prefix}:ws-result:{client_id}") == 0
        finally:
            await checker.aclose()


async def test_a_replica_starts_and_serves_locally_while_redis_is_down(
    start: Start, session: aiohttp.ClientSession
) -> None:
    # Nobody listens on port 1: the subscription keeps failing, behind the start.
    replica = await start(prefix=unique_prefix(), redis_url="redis://127.0.0.1:1/0")
    assert not replica.publisher.subscribed.is_set()
    async with session.ws_connect(replica.url) as socket:
        client_id = await acked(socket)
        await replica.publisher.publish_success(client_id, "github", "conn-1")
        assert await next_json(socket) == success()


async def test_a_dead_redis_does_not_break_a_publish(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # A port nobody listens on: the publish for a socket held elsewhere fails, quietly.
    publisher = Publisher(open_redis("redis://127.0.0.1:1/0"), prefix=unique_prefix())
    with caplog.at_level(logging.WARNING, logger="authgate.management.websocket"):
        await publisher.publish_success(str(uuid.uuid4()), "github", "conn-1")
    assert [r.getMessage() for r in caplog.records] == [
        "could not publish an authorisation result to the other processes"
    ]
