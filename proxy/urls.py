"""URL building for the upstream call, treating path and query as opaque bytes.

The caller's request target reaches the provider byte for byte: no decoding, no
re-encoding, no dot-segment removal, repeated query keys and their order kept (a classic
proxy bug is to round-trip the query through a dict). The only bytes ever changed are
those that cannot appear in an HTTP/1.1 request line at all (see :func:`request_url`).

Known limit: yarl cannot represent an empty query, so ``/path?`` goes upstream as
``/path``.
"""

from __future__ import annotations

import re

from yarl import URL

from credentials.urls import add_query, join_url

__all__ = [
    "add_query",
    "endpoint_from_target",
    "join_url",
    "origin_form",
    "path_for_log",
    "request_url",
    "wire_url",
]

_PREFIX = "/proxy"
_PREFIX_LEN = len(_PREFIX)


def endpoint_from_target(raw_target: str) -> str:
    """The upstream endpoint (path + query) from the raw request target of a proxy call.

    ``/proxy`` and at most one following ``/`` become ``/``: ``/proxy/users?x=1`` ->
    ``/users?x=1``, ``/proxy`` and ``/proxy/`` -> ``/``, ``/proxy?x=1`` -> ``/?x=1``,
    ``/proxy//a`` -> ``//a``. Percent-encoding is left untouched. The absolute form
    (``http://host/proxy/x``, RFC 9112 §3.2.2, which aiohttp reports as the raw path) is
    reduced to its origin form first. Raises ValueError for a target outside ``/proxy``.
    """
    target = raw_target
    if not target.startswith("/"):
        target = origin_form(target)
    if not target.startswith(_PREFIX):
        raise ValueError(f"request target is not under {_PREFIX}")
    rest = target[_PREFIX_LEN:]
    if not rest:
        return "/"
    first = rest[0]
    if first == "/":
        return rest
    if first == "?":
        return "/" + rest
    raise ValueError(f"request target is not under {_PREFIX}")


def origin_form(target: str) -> str:
    """The origin form (`/path?query`) of an absolute-form request target."""
    scheme_end = target.find("://")
    if scheme_end < 0:
        raise ValueError("request target is neither origin nor absolute form")
    authority_start = scheme_end + 3
    for i in range(authority_start, len(target)):
        ch = target[i]
        if ch == "/":
            return target[i:]
        if ch == "?":
            return "/" + target[i:]
    return "/"


def path_for_log(endpoint: str) -> str:
    """The endpoint without its query or fragment: query values often carry secrets
    (api keys, signatures), paths rarely do."""
    end = len(endpoint)
    for mark in "?#":
        i = endpoint.find(mark, 0, end)
        if i >= 0:
            end = i
    return endpoint[:end]


# Bytes that can never appear raw in an HTTP/1.1 request line: controls, space, DEL,
# and anything outside ASCII (RFC 9112 §3.2; RFC 3986 §2.1 says how to escape them).
# Everything else, including characters that RFC 3986 would escape but that servers
# accept and callers send (`|`, `{`, `"`, `[`), is left exactly as given.
_NOT_ON_THE_WIRE = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")


def wire_url(url: str) -> str:
    """``url`` as it goes on the wire: path and query exactly as given (no requoting, no
    ``..`` removal), except that bytes an HTTP request line cannot carry get
    percent-encoded (UTF-8) and a non-ASCII host is IDNA-encoded. Sending spaces or CR/LF
    raw would break the request line.
    """
    if _NOT_ON_THE_WIRE.search(url) is None:
        return url
    scheme_end = url.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    path_start = len(url)
    for mark in "/?#":
        i = url.find(mark, start)
        if 0 <= i < path_start:
            path_start = i
    origin, rest = url[:path_start], url[path_start:]
    if not origin.isascii():
        origin = str(URL(origin))
    return origin + _NOT_ON_THE_WIRE.sub(_escape, rest)


def request_url(url: str) -> URL:
    """:func:`wire_url` as a yarl URL that aiohttp sends unchanged (``encoded=True``)."""
    return URL(wire_url(url), encoded=True)


def _escape(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))
