"""`authgate serve`: what is not the data plane's goes to the management API in-process.

The lean server owns the port; the management API (aiohttp) listens on a private Unix
socket and gets every other request as it came, streamed both ways, through the same
pooled client the proxy uses upstream. One extra local hop for control-plane calls buys
one server implementation for every proxied request in every role.
"""

from __future__ import annotations

from proxy.headers import HOP_BY_HOP, response_headers
from proxy.http.client import ClientError, HttpClient
from proxy.http.server import Handler, Reply, Request
from proxy.urls import origin_form

_BAD_GATEWAY = b'{"error":{"code":"server_error","message":"The management API did not answer"}}'


def delegate_to(client: HttpClient) -> Handler:
    async def forward(request: Request, reply: Reply) -> None:
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
            reply.respond(502, [("Content-Type", "application/json")], _BAD_GATEWAY)
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
