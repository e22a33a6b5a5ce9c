"""decompress=True: gzip and deflate decoded incrementally; everything else untouched."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest

from proxy.http.client import HttpClient, ResponseInvalid
from proxy.http.client_decode import MAX_PIECE
from tests.proxy.http.test_client_support import RawRequest, RawServer, client, keep_alive, ok

__all__ = ["client"]  # the fixture, imported for pytest

TEXT = b"The quick brown fox jumps over the lazy dog. " * 2000


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def _chunked(encoding: str, body: bytes, sizes: tuple[int, ...]) -> bytes:
    """A chunked response whose chunks have the given sizes (the rest in one chunk)."""
    pieces = []
    start = 0
    for size in (*sizes, len(body)):
        piece = body[start : start + size]
        if piece:
            pieces.append(b"%x\r\n%b\r\n" % (len(piece), piece))
        start += len(piece)
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head.encode() + b"".join(pieces) + b"0\r\n\r\n"


async def _get(http: HttpClient, reply: bytes, decompress: bool = True) -> tuple[bool, bytes]:
    async with RawServer(keep_alive(lambda _: reply)) as server:
        response = await http.request("GET", server.url(), [], decompress=decompress)
        return response.decoded, await response.read()


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT)),
        ("GZip", gzip.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)),
        ("deflate", _raw_deflate(TEXT)),
        ("gzip", gzip.compress(TEXT[:1000]) + gzip.compress(TEXT[1000:])),  # two members
    ],
)
async def test_known_encodings_are_decoded(
    client: HttpClient, encoding: str, encoded: bytes
) -> None:
    reply = ok(encoded, f"Content-Encoding: {encoding}")
    assert await _get(client, reply) == (True, TEXT)


@pytest.mark.parametrize(
    "encoded",
    [zlib.compress(TEXT), _raw_deflate(TEXT), gzip.compress(TEXT)],
    ids=["zlib", "raw-deflate", "gzip"],
)
async def test_decoding_survives_any_chunk_boundaries(client: HttpClient, encoded: bytes) -> None:
    encoding = "gzip" if encoded[:2] == b"\x1f\x8b" else "deflate"
    reply = _chunked(encoding, encoded, (1, 1, 3, 7, 100))
    assert await _get(client, reply) == (True, TEXT)


async def test_without_decompress_the_bytes_pass_untouched(client: HttpClient) -> None:
    encoded = gzip.compress(TEXT)
    reply = ok(encoded, "Content-Encoding: gzip")
    assert await _get(client, reply, decompress=False) == (False, encoded)


@pytest.mark.parametrize(
    "headers",
    [
        ["Content-Encoding: br"],
        ["Content-Encoding: identity"],
        ["Content-Encoding: gzip, br"],
        ["Content-Encoding: gzip", "Content-Encoding: gzip"],
        [],
    ],
)
async def test_other_encodings_pass_through(client: HttpClient, headers: list[str]) -> None:
    body = b"\x1f\x8b not really anything"
    assert await _get(client, ok(body, *headers)) == (False, body)


async def test_corrupt_body_is_response_invalid(client: HttpClient) -> None:
    reply = ok(b"\x1f\x8b\x08\x00garbage-garbage-garbage", "Content-Encoding: gzip")
    with pytest.raises(ResponseInvalid):
        await _get(client, reply)
    assert client.stats().in_use == 0


async def test_a_small_body_that_inflates_hugely_comes_in_bounded_pieces(
    client: HttpClient,
) -> None:
    inflated = 64 * 1024 * 1024
    encoded = gzip.compress(bytes(inflated), compresslevel=9)
    assert len(encoded) < 100_000
    async with RawServer(keep_alive(lambda _: ok(encoded, "Content-Encoding: gzip"))) as server:
        response = await client.request("GET", server.url(), [], decompress=True)
        total = 0
        async for piece in response.iter_chunks():
            assert 0 < len(piece) <= MAX_PIECE
            total += len(piece)
    assert total == inflated


async def test_head_and_204_with_an_encoding_have_no_body(client: HttpClient) -> None:
    for method, reply in (
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n"),
    ):
        async with RawServer(keep_alive(_always(reply))) as server:
            response = await client.request(method, server.url(), [], decompress=True)
            # decoded as for any gzip response: whoever forwards it fixes the headers alike
            assert response.decoded
            assert await response.read() == b""


def _always(reply: bytes) -> Callable[[RawRequest], bytes]:
    return lambda _: reply
