"""A tiny third-party API stand-in for the benchmark, the locust scenario and tests.

Routes (any method):

- ``/small``            a ~200 B JSON body
- ``/big``              a 64 KiB JSON body
- ``/status/{code}``    that status code (200-599), a short JSON body unless the code forbids one
- ``/echo``             the request's method, path, query, headers and body as JSON
- ``/stream/{bytes}``   a chunked ``application/octet-stream`` body of exactly that many bytes

Run it with ``python -m loadtest.fake_provider --port N``. It uses aiohttp's low-level
``web.Server`` (no router, no access log) so that it costs as little CPU as possible next
to the proxy it is feeding.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import orjson
import uvloop
from aiohttp import web

__all__ = ["BIG_BODY", "SMALL_BODY", "STREAM_CHUNK_SIZE", "handle", "make_server", "serve"]

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
ParamHandler = Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]]

SMALL_BODY: Final = orjson.dumps(
    {
        "id": "cmpl-7a1f0c2e9b",
        "object": "fake.small",
        "created": 1700000000,
        "owner": "loadtest",
        "items": [{"id": 1, "name": "alpha"}, {"id": 2, "name": "beta"}],
        "has_more": False,
        "note": "about the size of a typical API answer",
    }
)
_BIG_SIZE: Final = 64 * 1024
_BIG_PREFIX: Final = b'{"object":"fake.big","data":"'
_BIG_SUFFIX: Final = b'"}'
BIG_BODY: Final = (
    _BIG_PREFIX + b"x" * (_BIG_SIZE - len(_BIG_PREFIX) - len(_BIG_SUFFIX)) + _BIG_SUFFIX
)

STREAM_CHUNK_SIZE: Final = 16 * 1024
# A typo in a load script must not turn into an endless download.
MAX_STREAM_BYTES: Final = 1024**3
_STREAM_CHUNK: Final = b"s" * STREAM_CHUNK_SIZE
# RFC 9110 §15.2, §15.3.5, §15.4.5: these responses never carry content.
_NO_CONTENT: Final = frozenset({204, 304})
_JSON: Final = "application/json"


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON)


def _error(status: int, message: str) -> web.Response:
    return _json(orjson.dumps({"error": message}), status)


async def _small(_: web.BaseRequest) -> web.StreamResponse:
    return _json(SMALL_BODY)


async def _big(_: web.BaseRequest) -> web.StreamResponse:
    return _json(BIG_BODY)


def _header_map(request: web.BaseRequest) -> dict[str, str]:
    # Lower-case names make lookups deterministic; repeated fields are joined with ", "
    # as RFC 9110 §5.3 allows for list-valued fields.
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _echo(request: web.BaseRequest) -> web.StreamResponse:
    body = await request.read()
    query: dict[str, list[str]] = {}
    for name, value in request.query.items():
        query.setdefault(name, []).append(value)
    echoed = {
        "method": request.method,
        "path": request.path,
        "query": query,
        "headers": _header_map(request),
        "body": body.decode("utf-8", errors="replace"),
    }
    return _json(orjson.dumps(echoed))


async def _status(_: web.BaseRequest, arg: str) -> web.StreamResponse:
    if not arg.isdigit() or not 200 <= int(arg) <= 599:
        return _error(400, "status must be an integer from 200 to 599")
    code = int(arg)
    if code in _NO_CONTENT:
        return web.Response(status=code)
    return _json(orjson.dumps({"status": code}), code)


async def _stream(request: web.BaseRequest, arg: str) -> web.StreamResponse:
    if not arg.isdigit() or int(arg) > MAX_STREAM_BYTES:
        return _error(400, f"bytes must be an integer from 0 to {MAX_STREAM_BYTES}")
    remaining = int(arg)
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.enable_chunked_encoding()
    await response.prepare(request)
    while remaining > 0:
        size = min(remaining, STREAM_CHUNK_SIZE)
        await response.write(_STREAM_CHUNK[:size])
        remaining -= size
    await response.write_eof()
    return response


_FIXED: Final[Mapping[str, Handler]] = {"/small": _small, "/big": _big, "/echo": _echo}
_PARAM: Final[Mapping[str, ParamHandler]] = {"status": _status, "stream": _stream}


async def handle(request: web.BaseRequest) -> web.StreamResponse:
    """Answer one request; unknown paths get a JSON 404."""
    fixed = _FIXED.get(request.path)
    if fixed is not None:
        return await fixed(request)
    prefix, _, arg = request.path[1:].partition("/")
    param = _PARAM.get(prefix)
    if param is not None and arg:
        return await param(request, arg)
    return _error(404, f"no route for {request.path}")


def make_server() -> web.Server:
    # access_log=None: formatting a log line per request would cost more than the answer.
    return web.Server(handle, access_log=None)


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    runner = web.ServerRunner(make_server(), handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        # Report the bound port, not the requested one, so that --port 0 is usable.
        host_, port_ = runner.addresses[0][:2]
        print(f"fake provider listening on http://{host_}:{port_}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A tiny fake third-party API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
