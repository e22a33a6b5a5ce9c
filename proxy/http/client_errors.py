"""The upstream client's exceptions (re-exported by :mod:`proxy.http.client`).

Messages name hosts, ports and what went wrong, never a header value, a body byte or a
URL's path or query: those carry credentials on the proxy's path. Timeouts are the
builtin TimeoutError and a resolver's own exceptions propagate unchanged, so neither
appears here.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error the client raises itself."""


class ConnectError(ClientError):
    """No connection could be made: refused, unreachable, TLS failure, or no address."""

    def __init__(self, host: str, port: int, strerror: str) -> None:
        super().__init__(f"cannot connect to {host}:{port}: {strerror}")
        self.host = host
        self.port = port
        self.strerror = strerror


class RequestInvalid(ClientError, ValueError):
    """The request cannot be sent as given (URL, method, header or body framing)."""


class ResponseInvalid(ClientError):
    """The upstream's answer is not acceptable HTTP/1.1 (malformed, head too large, 101)."""


class ConnectionDropped(ClientError):
    """The peer closed or reset the connection before or during the response."""
