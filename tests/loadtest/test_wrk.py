"""Reading wrk's report, checked against output captured from wrk 4.1.0 on this machine."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import astuple
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpRawServer

from loadtest.fake_provider import handle
from loadtest.processes import BenchError, free_port
from loadtest.wrk import (
    WrkResult,
    lua_string,
    parse_latency_ms,
    parse_wrk_output,
    request_script,
    run_wrk,
    wrk_command,
)

SAMPLES = Path(__file__).with_name("wrk_samples")
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("small_c32.txt", WrkResult(186773, 60186.04, 0.381, 1.09, 0, 0)),
        ("big_c1.txt", WrkResult(34838, 11240.03, 0.086, 0.407, 0, 0)),
        ("non_2xx.txt", WrkResult(178347, 84921.97, 0.085, 0.22, 178347, 0)),
        ("slow_ms.txt", WrkResult(12, 2.99, 643.71, 644.21, 0, 0)),
        # wrk pads the seconds unit with a trailing space: "1.54s ".
        ("seconds.txt", WrkResult(4, 1.0, 1540.0, 1540.0, 0, 0)),
        ("errors.txt", WrkResult(25, 8.32, 42.9, 44.07, 7, 11)),
    ],
)
def test_parses_captured_wrk_reports(name: str, expected: WrkResult) -> None:
    assert astuple(parse_wrk_output(sample(name))) == pytest.approx(astuple(expected))


def test_errors_count_bad_statuses_and_socket_errors() -> None:
    assert parse_wrk_output(sample("errors.txt")).errors == 18
    assert parse_wrk_output(sample("small_c32.txt")).errors == 0


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("381.00us", 0.381),
        ("1.09ms", 1.09),
        ("643.71ms", 643.71),
        ("1.54s ", 1540.0),
        ("2.00m", 120_000.0),
        ("1.00h", 3_600_000.0),
        ("7us", 0.007),
    ],
)
def test_latency_units(text: str, ms: float) -> None:
    assert parse_latency_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["", "12", "ms", "1.0 ms", "1.0xs", "-1ms", "1.2.3ms"])
def test_latency_rejects_what_wrk_does_not_print(text: str) -> None:
    with pytest.raises(ValueError, match="not a wrk latency"):
        parse_latency_ms(text)


def test_report_without_latency_distribution_is_rejected() -> None:
    text = sample("small_c32.txt")
    without = "\n".join(line for line in text.splitlines() if "%  " not in line)
    with pytest.raises(ValueError, match="50% latency"):
        parse_wrk_output(without)


def test_empty_report_is_rejected() -> None:
    with pytest.raises(ValueError, match="request count"):
        parse_wrk_output("")


def test_command_uses_one_thread_and_asks_for_latency() -> None:
    command = wrk_command("http://127.0.0.1:1/small", 32, 15, (), None)
    assert command == ["wrk", "-t1", "-c32", "-d15s", "--latency", "http://127.0.0.1:1/small"]


def test_command_sends_headers_and_pins_with_taskset() -> None:
    headers = (("Authorization", "Bearer k"), ("Connection-Id", "c"))
    command = wrk_command("http://h/x", 1, 3, headers, 1)
    assert command[:3] == ["taskset", "-c", "1"]
    assert command[3:] == [
        "wrk",
        "-t1",
        "-c1",
        "-d3s",
        "--latency",
        "-H",
        "Authorization: Bearer k",
        "-H",
        "Connection-Id: c",
        "http://h/x",
    ]


@needs_wrk
def test_run_wrk_reports_a_refused_connection_as_a_bench_error() -> None:
    with pytest.raises(BenchError, match="wrk failed"):
        run_wrk(f"http://127.0.0.1:{free_port()}/small", 1, 1, (), None)


@needs_wrk
async def test_run_wrk_measures_a_real_server(aiohttp_raw_server: AiohttpRawServer) -> None:
    server = await aiohttp_raw_server(handle)
    # wrk blocks; the server runs on this event loop, so wrk must run in a thread.
    ok, failing = await asyncio.gather(
        asyncio.to_thread(run_wrk, str(server.make_url("/small")), 2, 1, (), None),
        asyncio.to_thread(run_wrk, str(server.make_url("/status/503")), 1, 1, (), None),
    )
    assert ok.requests > 0
    assert ok.errors == 0
    assert 0 < ok.p50_ms <= ok.p99_ms
    assert failing.non_2xx == failing.requests > 0


@pytest.mark.parametrize(
    ("data", "literal"),
    [
        (b"", '""'),
        (b'{"a": [1, 2]}', '"{\\"a\\": [1, 2]}"'),
        (b"back\\slash", '"back\\\\slash"'),
        # Always three digits, so a digit after an escape is not read as part of it.
        (b"\n1", '"\\0101"'),
        (b"\x00\x7f\xff", '"\\000\\127\\255"'),
    ],
)
def test_lua_string_escapes(data: bytes, literal: str) -> None:
    assert lua_string(data) == literal


def test_request_script_sets_method_body_and_content_type() -> None:
    assert request_script("POST", b'{"x":1}', "application/json").splitlines() == [
        'wrk.method = "POST"',
        'wrk.body = "{\\"x\\":1}"',
        'wrk.headers["Content-Type"] = "application/json"',
    ]


def test_command_passes_the_script_before_the_url() -> None:
    command = wrk_command("http://h/x", 1, 3, (("A", "b"),), None, Path("/tmp/post.lua"))
    assert command[5:] == ["-s", "/tmp/post.lua", "-H", "A: b", "http://h/x"]


# Every byte value, then a 64 KiB run: what arrives must be exactly this.
SCRIPT_BODY = bytes(range(256)) + b"0123456789" * 6554


def body_checker(expected: bytes) -> Callable[[web.BaseRequest], Awaitable[web.Response]]:
    async def check(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        kind = request.headers.get("Content-Type")
        if request.method != "POST" or kind != "application/x-bench" or body != expected:
            return web.Response(status=400)
        return web.Response(body=b"ok")

    return check


@needs_wrk
@pytest.mark.parametrize(("expected", "bad"), [(SCRIPT_BODY, 0), (SCRIPT_BODY[:-1], 1)])
async def test_a_script_sends_its_body_byte_for_byte(
    aiohttp_raw_server: AiohttpRawServer, tmp_path: Path, expected: bytes, bad: int
) -> None:
    script = tmp_path / "post.lua"
    script.write_text(request_script("POST", SCRIPT_BODY, "application/x-bench"))
    server = await aiohttp_raw_server(body_checker(expected))
    url = str(server.make_url("/upload"))
    result = await asyncio.to_thread(run_wrk, url, 2, 1, (), None, script)
    assert result.requests > 0
    # The second case expects a different body: every request must then be refused.
    assert result.non_2xx == bad * result.requests
