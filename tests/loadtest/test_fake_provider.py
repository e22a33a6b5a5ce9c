"""The fake provider, served on a real socket and called with a real HTTP client."""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpRawServer

from loadtest.fake_provider import (
    BIG_BODY,
    MAX_STREAM_BYTES,
    REFRESH_TOKEN_PREFIX,
    SMALL_BODY,
    STREAM_CHUNK_SIZE,
    access_token_expiry,
    handle,
    issue_access_token,
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


# --- /trickle -----------------------------------------------------------------------------


async def test_trickle_sends_chunks_of_the_asked_size_spaced_by_the_interval(
    client: Client,
) -> None:
    sizes: list[int] = []
    started = time.monotonic()
    async with client.get("/trickle/4?size=100&interval_ms=50") as resp:
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        async for data, end_of_http_chunk in resp.content.iter_chunks():
            if data:
                sizes.append(len(data))
            assert end_of_http_chunk or not data
    elapsed = time.monotonic() - started
    assert sum(sizes) == 400
    assert len(sizes) == 4  # one HTTP chunk per interval
    assert elapsed >= 0.15  # three waits of 50 ms between four chunks


async def test_trickle_defaults_to_1_kib_chunks(client: Client) -> None:
    async with client.get("/trickle/3?interval_ms=0") as resp:
        assert len(await resp.read()) == 3 * 1024


@pytest.mark.parametrize(
    "path",
    [
        "/trickle/x",
        "/trickle/10001",
        "/trickle/2?size=0",
        f"/trickle/2?size={STREAM_CHUNK_SIZE + 1}",
        "/trickle/2?interval_ms=-1",
        "/trickle/2?interval_ms=10001",
    ],
)
async def test_trickle_rejects_bad_parameters(client: Client, path: str) -> None:
    async with client.get(path) as resp:
        assert resp.status == 400


# --- /upload ------------------------------------------------------------------------------


async def _pieces(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"p" * size


async def test_upload_counts_a_chunked_body(client: Client) -> None:
    async with client.post("/upload", data=_pieces(5, 70_000)) as resp:
        assert resp.status == 200
        assert await resp.json() == {"bytes": 350_000, "chunked": True}


async def test_upload_counts_a_body_with_a_length(client: Client) -> None:
    async with client.put("/upload", data=b"x" * 123_457) as resp:
        assert await resp.json() == {"bytes": 123_457, "chunked": False}


async def test_upload_of_nothing_is_zero_bytes(client: Client) -> None:
    async with client.post("/upload") as resp:
        assert (await resp.json())["bytes"] == 0


# --- /fail --------------------------------------------------------------------------------


async def test_fail_answers_the_status_then_200_with_the_attempt_count(client: Client) -> None:
    key = uuid.uuid4().hex
    for attempt in (1, 2):
        async with client.get(f"/fail/503/2?key={key}") as resp:
            assert resp.status == 503
            assert "Retry-After" not in resp.headers
            assert (await resp.json())["error"] == f"failure {attempt} of 2"
    async with client.get(f"/fail/503/2?key={key}") as resp:
        assert resp.status == 200
        assert await resp.json() == {"attempts": 3}
    # Forgotten after the success: the same key starts over.
    async with client.get(f"/fail/503/2?key={key}") as resp:
        assert resp.status == 503


async def test_fail_429_carries_retry_after(client: Client) -> None:
    key = uuid.uuid4().hex
    async with client.get(f"/fail/429/1?key={key}") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
    async with client.get(f"/fail/429/1?key={key}&retry_after=7") as resp:
        assert resp.status == 200
    async with client.get(f"/fail/429/1?key={uuid.uuid4().hex}&retry_after=7") as resp:
        assert resp.headers["Retry-After"] == "7"


async def test_fail_keys_are_counted_apart(client: Client) -> None:
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    async with client.get(f"/fail/500/1?key={first}") as resp:
        assert resp.status == 500
    async with client.get(f"/fail/500/1?key={second}") as resp:
        assert resp.status == 500
    async with client.get(f"/fail/500/1?key={first}") as resp:
        assert await resp.json() == {"attempts": 2}


async def test_fail_zero_times_succeeds_at_once(client: Client) -> None:
    async with client.post(f"/fail/500/0?key={uuid.uuid4().hex}") as resp:
        assert resp.status == 200
        assert await resp.json() == {"attempts": 1}


@pytest.mark.parametrize(
    "path",
    [
        "/fail/503/1",
        "/fail/503/1?key=",
        "/fail/399/1?key=k",
        "/fail/600/1?key=k",
        "/fail/503/11?key=k",
        "/fail/503?key=k",
        "/fail/503/1/x?key=k",
        "/fail/429/1?key=k&retry_after=61",
    ],
)
async def test_fail_rejects_bad_parameters(client: Client, path: str) -> None:
    async with client.get(path) as resp:
        assert resp.status == 400


# --- OAuth 2 ------------------------------------------------------------------------------


def test_an_issued_access_token_carries_its_expiry() -> None:
    token = issue_access_token(1_900_000_000)
    assert access_token_expiry(token) == 1_900_000_000
    assert token != issue_access_token(1_900_000_000)


@pytest.mark.parametrize(
    "token", ["", "fake-at.", "fake-at.123", "fake-at.123.", "fake-at.x.abc", "other.123.abc"]
)
def test_tokens_not_issued_here_have_no_expiry(token: str) -> None:
    assert access_token_expiry(token) is None


async def _refresh(client: Client, query: str = "", **fields: str) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "refresh_token", "refresh_token": "fake-rt.abc", "client_id": "c"}
    form.update(fields)
    async with client.post(f"/oauth/token{query}", data=form) as resp:
        return resp.status, await resp.json()


async def test_token_endpoint_issues_a_token_living_expires_in_seconds(client: Client) -> None:
    before = int(time.time())
    status, answer = await _refresh(client, "?expires_in=90")
    assert status == 200
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 90
    assert answer["refresh_token"].startswith(REFRESH_TOKEN_PREFIX)
    expiry = access_token_expiry(answer["access_token"])
    assert expiry is not None
    assert before + 90 <= expiry <= int(time.time()) + 90


async def test_token_endpoint_defaults_to_an_hour(client: Client) -> None:
    _, answer = await _refresh(client)
    assert answer["expires_in"] == 3600


async def test_token_endpoint_accepts_a_client_in_http_basic(client: Client) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": "fake-rt.abc"}
    basic = base64.b64encode(b"client:secret").decode()
    async with client.post(
        "/oauth/token", data=form, headers={"Authorization": f"Basic {basic}"}
    ) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
        ({"refresh_token": "someone-elses"}, 400, "invalid_grant"),
        ({"client_id": ""}, 401, "invalid_client"),
    ],
)
async def test_token_endpoint_refuses_bad_grants(
    client: Client, fields: dict[str, str], status: int, error: str
) -> None:
    assert await _refresh(client, **fields) == (status, {"error": error})


@pytest.mark.parametrize("query", ["?expires_in=0", "?expires_in=86401", "?expires_in=x"])
async def test_token_endpoint_rejects_bad_lifetimes(client: Client, query: str) -> None:
    status, _ = await _refresh(client, query)
    assert status == 400


async def test_token_endpoint_takes_only_post(client: Client) -> None:
    async with client.get("/oauth/token") as resp:
        assert resp.status == 405


async def test_me_accepts_an_issued_unexpired_token(client: Client) -> None:
    _, answer = await _refresh(client, "?expires_in=60")
    headers = {"Authorization": f"Bearer {answer['access_token']}"}
    async with client.get("/oauth/me", headers=headers) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {"token_expires_at": access_token_expiry(answer["access_token"])}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer fake-at.1000.expired",
        "Bearer not-ours",
        "Basic fake-at.4000000000.0123abcd",  # a valid token, in the wrong scheme
    ],
)
async def test_me_refuses_other_tokens_with_401(client: Client, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with client.get("/oauth/me", headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert await resp.json() == {"error": "invalid_token"}
