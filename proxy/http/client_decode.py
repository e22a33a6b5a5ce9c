"""Incremental gzip/deflate decoding of a response body with bounded output per step.

Each compressed chunk is inflated in pieces of at most ``MAX_PIECE`` bytes, so a small
chunk that expands enormously (a compression bomb) never sits in memory whole: the
consumer takes one piece before the next is produced.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from proxy.http.client_errors import ResponseInvalid

MAX_PIECE = 256 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def decoder_for(content_encoding: bytes) -> BodyDecoder | None:
    """The decoder for a Content-Encoding value, or None when it is not one we decode."""
    encoding = content_encoding.strip().lower()
    if encoding in (b"gzip", b"x-gzip"):
        return BodyDecoder(gzip=True)
    if encoding == b"deflate":
        return BodyDecoder(gzip=False)
    return None


class BodyDecoder:
    __slots__ = ("_gzip", "_pending", "_zlib")

    def __init__(self, *, gzip: bool) -> None:
        self._gzip = gzip
        # deflate: which of zlib-wrapped or raw is only known from the first two bytes
        self._zlib = zlib.decompressobj(_GZIP_WBITS) if gzip else None
        self._pending = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces of ``data`` (none empty)."""
        inflater = self._zlib
        if inflater is None:
            data = self._pending + data
            if len(data) < 2:
                self._pending = data
                return
            self._pending = b""
            # Servers disagree on what "deflate" means (RFC 9110 §8.4.1.2 says zlib);
            # a stream without a valid zlib header is taken as raw deflate.
            inflater = self._zlib = zlib.decompressobj(
                zlib.MAX_WBITS if _has_zlib_header(data) else -zlib.MAX_WBITS
            )
        while True:
            try:
                piece = inflater.decompress(data, MAX_PIECE)
            except zlib.error:
                raise ResponseInvalid("response body could not be decoded") from None
            if piece:
                yield piece
            if inflater.eof:
                rest = inflater.unused_data
                if not (self._gzip and rest):
                    return  # bytes after the end of the stream are ignored
                inflater = self._zlib = zlib.decompressobj(_GZIP_WBITS)  # next gzip member
                data = rest
                continue
            data = inflater.unconsumed_tail
            if not data and len(piece) < MAX_PIECE:
                return

    def flush(self) -> bytes:
        """What the inflater still holds once the body has ended."""
        inflater = self._zlib
        if inflater is None:
            return b""
        try:
            return inflater.flush()
        except zlib.error:
            raise ResponseInvalid("response body could not be decoded") from None


def _has_zlib_header(data: bytes) -> bool:
    # RFC 1950 §2.2: CM = 8 (deflate) and the first two bytes, big-endian, divisible by 31.
    return data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
