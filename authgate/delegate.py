"""`authgate serve`: what is not the data plane's goes to the management API in-process.

The lean server owns the port; the management API (aiohttp) listens on a private Unix
socket and gets every other request as it came, streamed both ways, through the same
pooled client the proxy uses upstream. One extra local hop for control-plane calls buys
one server implementation for every proxied request in every role.

An upgrade request (the frontend SDK's WebSocket) cannot use the pooled client, which
refuses a 101: its head goes over a fresh Unix connection, and once the management app
switches protocols the two connections are spliced byte for byte until either closes.
Any other answer goes back as a normal response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httptools

from credentials.tasks import spawn
from proxy.headers import HOP_BY_HOP, response_headers
from proxy.http.client import ClientError, HttpClient
from proxy.http.server import ClientDisconnected, Handler, Reply, Request, Tunnel
from proxy.urls import origin_form

_BAD_GATEWAY = b'{"error":{"code":"server_error","message":"The management API did not answer"}}'
_JSON = [("Content-Type", "application/json")]

# The management app answers an upgrade at once; this bounds connecting and the head.
UPGRADE_HEAD_TIMEOUT = 30.0
# A non-101 answer's body may pause this long between reads (the pooled client's figure).
ANSWER_READ_TIMEOUT = 300.0
_MAX_ANSWER_HEAD = 64 * 1024
_READ_SIZE = 64 * 1024


def delegate_to(client: HttpClient) -> Handler:
    socket_path = _management_socket(client)

    async def forward(request: Request, reply: Reply) -> None:
        # WebSockets open with GET (RFC 6455 §4.1); other upgrade offers (h2c on a POST,
        # say) are ordinary requests to the management app, as before.
        if request.upgrade and request.method == "GET" and socket_path is not None:
            await forward_upgrade(socket_path, request, reply)
            return
        headers = [pair for pair in request.headers.items() if pair[0].lower() not in HOP_BY_HOP]
        body = request.iter_chunks() if request.body_exists else None
        target = request.raw_path
        try:
            if not target.startswith("/"):
                target = origin_form(target)
            response = await client.request(
                request.method, "http://management" + target, headers, body
            )
        except (ClientError, OSError, TimeoutError, ValueError):
            reply.respond(502, _JSON, _BAD_GATEWAY)
            return
        raw = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response.raw_headers
        ]
        try:
            reply.start(response.status, response_headers(raw), response.reason)
            async for chunk in response.iter_chunks():
                await reply.write(chunk)
        except (ClientError, OSError, TimeoutError):
            response.close()
            reply.abort()
            return
        response.release()
        reply.finish()

    return forward


def _management_socket(client: HttpClient) -> str | None:
    # The pooled client was built for the management app's socket; the tunnel dials the
    # same one.
    return client.unix_socket


async def forward_upgrade(socket_path: str, request: Request, reply: Reply) -> None:
    """Send an upgrade request to the app on `socket_path`; splice on 101, else relay."""
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            async with asyncio.timeout(UPGRADE_HEAD_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(socket_path)
                writer.write(upgrade_request_head(request))
                answer = await _AnswerReader.read_head(reader)
        except (OSError, TimeoutError, ValueError, httptools.HttpParserError, _BadAnswer):
            reply.respond(502, _JSON, _BAD_GATEWAY)
            return
        if answer.switched:
            tunnel = reply.switch_protocols(answer.upgrade_headers())
            await splice(tunnel, answer.leftover, reader, writer)
        else:
            await answer.relay_to(reply, reader)
    finally:
        if writer is not None:
            writer.close()


def upgrade_request_head(request: Request) -> bytes:
    """The caller's request head for the management app: its own hop-by-hop fields (and
    those its `Connection` names) dropped, the upgrade offer restated."""
    target = request.raw_path
    if not target.startswith("/"):
        target = origin_form(target)
    offer = request.headers.get("Upgrade", "")
    lines = [f"GET {target} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in _end_to_end(request.headers.items()))
    lines.append(f"Upgrade: {offer}\r\nConnection: Upgrade\r\n\r\n")
    return "".join(lines).encode("latin-1")


def _end_to_end(headers: list[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    drop = HOP_BY_HOP | named
    return (pair for pair in headers if pair[0].lower() not in drop)


async def splice(
    tunnel: Tunnel, leftover: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Move bytes both ways until either side closes or fails; then both are done."""
    try:
        await tunnel.write(leftover)  # what the app sent right behind its 101 (an ack)
    except ClientDisconnected:
        return
    pumps = {
        spawn(_caller_to_app(tunnel, writer), name="upgrade-caller-to-app"),
        spawn(_app_to_caller(reader, tunnel), name="upgrade-app-to-caller"),
    }
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _caller_to_app(tunnel: Tunnel, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await tunnel.read():
            writer.write(data)
            await writer.drain()
    except OSError:
        return


async def _app_to_caller(reader: asyncio.StreamReader, tunnel: Tunnel) -> None:
    try:
        while data := await reader.read(_READ_SIZE):
            await tunnel.write(data)
    except OSError:  # ClientDisconnected included
        return


class _BadAnswer(Exception):
    """The management app's answer head was missing, too large or not HTTP."""


class _AnswerReader:
    """httptools callbacks over the management app's answer to an upgrade request."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.head_done = False
        self.complete = False
        self.switched = False
        self.leftover = b""
        self.body: list[bytes] = []

    @classmethod
    async def read_head(cls, reader: asyncio.StreamReader) -> _AnswerReader:
        answer = cls()
        received = 0
        while not answer.head_done:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise _BadAnswer
            answer.feed(data)
            received += len(data)
            if not answer.head_done and received > _MAX_ANSWER_HEAD:
                raise _BadAnswer
        return answer

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset: int = upgrade.args[0]
            self.switched = self.parser.get_status_code() == 101
            if not self.switched:
                raise _BadAnswer from None
            self.leftover = data[offset:]

    def upgrade_headers(self) -> list[tuple[str, str]]:
        """The 101's fields for the caller: end-to-end ones plus the chosen protocol."""
        chosen = [(name, value) for name, value in self.headers if name.lower() == "upgrade"]
        return chosen + response_headers(self.headers)

    async def relay_to(self, reply: Reply, reader: asyncio.StreamReader) -> None:
        """Send a non-101 answer on as a normal response, streamed."""
        reply.start(
            self.parser.get_status_code(),
            response_headers(self.headers),
            self.reason.decode("latin-1") or None,
        )
        try:
            await self._write_body(reply)
            while not self.complete:
                async with asyncio.timeout(ANSWER_READ_TIMEOUT):
                    data = await reader.read(_READ_SIZE)
                if not data:
                    raise _BadAnswer
                self.feed(data)
                await self._write_body(reply)
        except (OSError, TimeoutError, httptools.HttpParserError, _BadAnswer):
            reply.abort()  # the caller must not take a truncated body for a whole one
            return
        reply.finish()

    async def _write_body(self, reply: Reply) -> None:
        chunks, self.body = self.body, []
        for chunk in chunks:
            await reply.write(chunk)

    # --- httptools callbacks ------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
