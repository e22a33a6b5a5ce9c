"""The caller's request body, forwarded as raw bytes whatever its content type.

Small bodies (up to the replay buffer) are read into memory so a retry or a redirect can
send them again; larger or unknown-length bodies are streamed through and cannot be
replayed, which the retry loop respects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.errors import PayloadTooLarge
from proxy.http.server import Request

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class RequestBody:
    data: bytes | AsyncIterator[bytes] | None
    length: int | None

    @property
    def replayable(self) -> bool:
        return not isinstance(self.data, AsyncIterator)


NO_BODY = RequestBody(data=None, length=None)


async def read_body(request: Request, *, limit: int, replay_buffer: int) -> RequestBody:
    if request.method not in BODY_METHODS or not request.body_exists:
        return NO_BODY
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The request body is {length} bytes; the limit is {limit}")
    if length is not None and length <= replay_buffer:
        return RequestBody(data=await request.read_exactly(length), length=length)
    return RequestBody(data=_bounded_stream(request, limit), length=length)


async def _bounded_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.iter_chunks():
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes")
        yield chunk
