"""The fake provider, served on a real socket and called with a real HTTP client."""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpRawServer

from loadtest.fake_provider import (
    BIG_BODY,
    MAX_STREAM_BYTES,
    SMALL_BODY,
    STREAM_CHUNK_SIZE,
    handle,
)

Client = TestClient[web.BaseRequest, None]


@pytest.fixture
async def client(aiohttp_raw_server: AiohttpRawServer, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(await aiohttp_raw_server(handle))


async def test_small_is_a_small_json_body(client: Client) -> None:
    async with client.get("/small") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.read()
    assert body == SMALL_BODY
    assert 150 <= len(body) <= 250
    assert isinstance(orjson.loads(body), dict)


async def test_big_is_a_64_kib_json_body(client: Client) -> None:
    async with client.get("/big") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert resp.headers["Content-Length"] == str(64 * 1024)
        body = await resp.read()
    assert body == BIG_BODY
    assert isinstance(orjson.loads(body), dict)


@pytest.mark.parametrize("code", [200, 201, 401, 404, 429, 500, 503, 599])
async def test_status_returns_that_code_with_a_json_body(client: Client, code: int) -> None:
    async with client.get(f"/status/{code}") as resp:
        assert resp.status == code
        assert await resp.json() == {"status": code}


@pytest.mark.parametrize("code", [204, 304])
async def test_status_without_content_has_an_empty_body(client: Client, code: int) -> None:
    async with client.get(f"/status/{code}") as resp:
        assert resp.status == code
        assert await resp.read() == b""


@pytest.mark.parametrize("arg", ["abc", "199", "600", "-1", "2.5"])
async def test_status_rejects_codes_it_cannot_send(client: Client, arg: str) -> None:
    async with client.get(f"/status/{arg}") as resp:
        assert resp.status == 400
        assert "status must be" in (await resp.json())["error"]


async def test_echo_returns_method_path_query_headers_and_body(client: Client) -> None:
    async with client.post(
        "/echo",
        params=[("a", "1"), ("a", "2"), ("b", "x y")],
        headers={"X-Custom": "yes", "Authorization": "Bearer token"},
        data=b'{"hello": "world"}',
    ) as resp:
        assert resp.status == 200
        echoed = await resp.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo"
    assert echoed["query"] == {"a": ["1", "2"], "b": ["x y"]}
    assert echoed["headers"]["x-custom"] == "yes"
    assert echoed["headers"]["authorization"] == "Bearer token"
    assert echoed["headers"]["content-length"] == "18"
    assert echoed["body"] == '{"hello": "world"}'


async def test_echo_joins_repeated_header_fields(client: Client) -> None:
    async with client.get("/echo", headers=[("X-Many", "a"), ("X-Many", "b")]) as resp:
        echoed = await resp.json()
    assert echoed["method"] == "GET"
    assert echoed["headers"]["x-many"] == "a, b"
    assert echoed["body"] == ""


@pytest.mark.parametrize(
    "size", [0, 1, STREAM_CHUNK_SIZE - 1, STREAM_CHUNK_SIZE, 3 * STREAM_CHUNK_SIZE + 5]
)
async def test_stream_sends_exactly_that_many_bytes_chunked(client: Client, size: int) -> None:
    async with client.get(f"/stream/{size}") as resp:
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in resp.headers
        body = await resp.read()
    assert len(body) == size


async def test_stream_splits_a_long_body_into_several_http_chunks(client: Client) -> None:
    chunks_ended = 0
    received = 0
    async with client.get(f"/stream/{3 * STREAM_CHUNK_SIZE}") as resp:
        async for data, end_of_http_chunk in resp.content.iter_chunks():
            received += len(data)
            chunks_ended += end_of_http_chunk
    assert received == 3 * STREAM_CHUNK_SIZE
    assert chunks_ended >= 3


@pytest.mark.parametrize("arg", ["abc", "-5", str(MAX_STREAM_BYTES + 1)])
async def test_stream_rejects_bad_sizes(client: Client, arg: str) -> None:
    async with client.get(f"/stream/{arg}") as resp:
        assert resp.status == 400


@pytest.mark.parametrize("path", ["/", "/nope", "/status/", "/stream", "/small/extra"])
async def test_unknown_paths_are_404(client: Client, path: str) -> None:
    async with client.get(path) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == f"no route for {path}"


async def test_command_line_serves_and_stops_cleanly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.fake_provider",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=15)).decode()
        assert line.startswith("fake provider listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        async with ClientSession() as session, session.get(f"{url}/small") as resp:
            assert resp.status == 200
            assert await resp.read() == SMALL_BODY
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
