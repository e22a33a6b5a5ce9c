"""Turning (method, URL, headers, body) into the request head bytes, validated.

The head is built as one ``str`` and encoded once. Header names are validated as RFC
9110 tokens once per distinct name (a small cache: the proxy sends the same few dozen
names over and over); CR, LF and NUL are detected with three C-level scans over the
whole head instead of per value, since names, method, target and host are already known
to be free of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from proxy.http.client_errors import RequestInvalid
from proxy.http.tokens import TOKEN

_DEFAULT_PORTS = {"http": 80, "https": 443}

# What the client does with a caller's header, by (case-insensitive) name.
_KEEP = 0
_HOST = 1
_CONTENT_LENGTH = 2
_DROP = 3  # the client owns the connection and the framing
_SPECIAL_KINDS = {
    "host": _HOST,
    "content-length": _CONTENT_LENGTH,
    "transfer-encoding": _DROP,
    "connection": _DROP,
    "keep-alive": _DROP,
}
_NAME_KINDS: dict[str, int] = {}
_NAME_CACHE_LIMIT = 4096
_METHODS_SEEN: set[str] = set()
# RFC 9110 §9.3: these say nothing may be in the body when none is given, but a server
# may insist on a length for them (411), so an absent body is framed as zero bytes.
_EMPTY_BODY_NEEDS_LENGTH = frozenset({"POST", "PUT", "PATCH"})


class Target(NamedTuple):
    """Where a request goes and what its head says about it."""

    scheme: str
    host: str  # without IPv6 brackets; what the resolver and TLS see
    port: int
    host_header: str  # host or host:port as the Host header carries it
    path: str  # request target: path + "?query", never empty


def parse_url(url: str) -> Target:
    """Split an absolute http(s) URL without decoding or normalising its path/query."""
    sep = url.find("://")
    scheme = url[:sep].lower() if sep > 0 else ""
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is None:
        raise RequestInvalid("URL scheme must be http or https")
    start = sep + 3
    end = len(url)
    for mark in "/?#":
        i = url.find(mark, start, end)
        if i >= 0:
            end = i
    authority = url[start:end]
    if "@" in authority:
        raise RequestInvalid("URL must not carry userinfo")
    path = url[end:].partition("#")[0]
    if not path or path[0] == "?":
        path = "/" + path
    if not (path.isascii() and path.isprintable()) or " " in path:
        raise RequestInvalid("URL path/query must be percent-encoded ASCII")
    host, port = _split_authority(authority, default_port)
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    return Target(scheme, host, port, host_header, path)


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise RequestInvalid("URL has an unterminated IPv6 literal")
        host, rest = authority[1:close], authority[close + 1 :]
        if rest and rest[0] != ":":
            raise RequestInvalid("URL authority is malformed")
        port_text = rest[1:]
    else:
        host, _, port_text = authority.partition(":")
        if not host.isascii():
            host = _idna(host)
    if not host:
        raise RequestInvalid("URL has no host")
    if not (host.isascii() and host.isprintable()) or " " in host:
        raise RequestInvalid("URL host has characters a host cannot have")
    if not port_text:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise RequestInvalid("URL port is not a number from 1 to 65535")
    return host, int(port_text)


def _idna(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise RequestInvalid("URL host is not a valid internationalised name") from None


def build_head(
    method: str,
    target: Target,
    headers: Sequence[tuple[str, str]],
    body_length: int | None,
    streamed: bool,
) -> tuple[bytes, int | None]:
    """The request head, and the streamed body's declared length (None: chunked).

    ``body_length`` is the length of a bytes body (None for no body or a streamed one).
    """
    if method not in _METHODS_SEEN:
        _check_method(method)
    parts = [method, " ", target.path, " HTTP/1.1\r\n", ""]  # [4]: Host, if generated
    lines = 1
    has_host = False
    caller_length: str | None = None
    kinds = _NAME_KINDS
    for name, value in headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _classify(name)
        if kind == _KEEP:
            parts += (name, ": ", value, "\r\n")
            lines += 1
        elif kind == _HOST:
            has_host = True
            parts += (name, ": ", value, "\r\n")
            lines += 1
        elif kind == _CONTENT_LENGTH and caller_length is None:
            caller_length = value
    if not has_host:
        parts[4] = f"Host: {target.host_header}\r\n"
        lines += 1
    declared: int | None = None
    if streamed:
        if caller_length is None:
            parts.append("Transfer-Encoding: chunked\r\n")
        else:
            declared = _parse_length(caller_length)
            parts += ("Content-Length: ", str(declared), "\r\n")
        lines += 1
    elif body_length is not None:
        parts += ("Content-Length: ", str(body_length), "\r\n")
        lines += 1
    elif method in _EMPTY_BODY_NEEDS_LENGTH:
        parts.append("Content-Length: 0\r\n")
        lines += 1
    parts.append("\r\n")
    return _encode("".join(parts), lines + 1, headers), declared


def _encode(head: str, lines: int, headers: Sequence[tuple[str, str]]) -> bytes:
    if head.count("\n") != lines or head.count("\r") != lines or "\0" in head:
        raise RequestInvalid(f"header {_first_bad_value(headers)!r} has CR, LF or NUL in its value")
    try:
        return head.encode("latin-1")
    except UnicodeEncodeError:
        raise RequestInvalid("a header value has characters outside latin-1") from None


def _first_bad_value(headers: Sequence[tuple[str, str]]) -> str:
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value:
            return name
    return "?"


def _classify(name: str) -> int:
    if TOKEN.fullmatch(name) is None:
        # The name itself stays out of the message: a mangled "Name: value" pair would
        # put a credential there.
        raise RequestInvalid("a header name is not an RFC 9110 token")
    kind = _SPECIAL_KINDS.get(name.lower(), _KEEP)
    if len(_NAME_KINDS) < _NAME_CACHE_LIMIT:
        _NAME_KINDS[name] = kind
    return kind


def _check_method(method: str) -> None:
    if TOKEN.fullmatch(method) is None:
        raise RequestInvalid("method is not an RFC 9110 token")
    if len(_METHODS_SEEN) < _NAME_CACHE_LIMIT:
        _METHODS_SEEN.add(method)


def _parse_length(text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise RequestInvalid("Content-Length must be a non-negative integer")
    return int(text)
