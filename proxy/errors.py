"""Errors the proxy answers itself, and the one function that puts them on the wire.

    ProxyError                      status, Nango-style code, message
     ├── AuthenticationFailed       401  missing/malformed/unknown secret key
     ├── InvalidHeaders             400  control headers fail validation (lists each field)
     ├── UnknownConnection          404  no such integration + connection in this environment
     ├── InvalidCredentials         401  stored credentials cannot be used
     ├── ProviderConfigError        400  provider/base URL/auth mode cannot serve the call
     ├── OutboundRefused            400  the upstream address is refused by the SSRF policy
     ├── InvalidUpstreamRequest     400  the request cannot be put on the wire as built
     ├── PayloadTooLarge            413  request body over the configured limit
     ├── UpstreamTimeout            504  connect, first byte or total deadline passed
     ├── UpstreamUnreachable        502  the provider could not be reached
     ├── RefreshBackingOff          424  expired credentials; a renewal failed moments ago
     ├── RefreshFailed              424  expired credentials; the token endpoint failed
     └── StoreUnreachable           503  the credential store could not be reached

Every answer carries the JSON envelope `{"error": {"code", "message"}}` and the
`X-Authgate-Error` header, so a caller can tell our errors from the provider's.
"""

from __future__ import annotations

from typing import Any

import orjson

from credentials.secret_keys import AUTH_ERROR_MESSAGES
from proxy import compat

# Our own code (Nango has no equivalent); the management API answers with the same one.
STORE_UNAVAILABLE = "store_unavailable"


class ProxyError(Exception):
    status = 500
    code = compat.SERVER_ERROR
    retry_after: int | None = None
    """Seconds for a `Retry-After` header, for errors a client should simply retry."""
    headers: dict[str, str] = {}  # replaced per instance, never mutated
    """More headers of the answer (a rate limit's `RateLimit-*`, say)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class AuthenticationFailed(ProxyError):
    """The secret key is missing, malformed or unknown (Nango's legacy 401 shape)."""

    status = 401

    def __init__(self, code: str) -> None:
        super().__init__(AUTH_ERROR_MESSAGES[code], code=code)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "code": self.code, "payload": {}}}


class InvalidHeaders(ProxyError):
    """One or more control headers are invalid; `issues` names each offending header."""

    status = 400
    code = compat.INVALID_HEADERS

    def __init__(self, issues: list[dict[str, Any]]) -> None:
        fields = ", ".join(str(issue["path"][0]) for issue in issues)
        super().__init__(f"Invalid request headers: {fields}")
        self.issues = issues

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "errors": self.issues}}


class UnknownConnection(ProxyError):
    status = 404
    code = compat.UNKNOWN_CONNECTION

    def __init__(self, connection_id: str, provider_config_key: str) -> None:
        super().__init__(compat.unknown_connection_message(connection_id, provider_config_key))


class InvalidCredentials(ProxyError):
    status = 401
    code = compat.INVALID_CREDENTIALS


class ProviderConfigError(ProxyError):
    status = 400
    code = compat.UNSUPPORTED_PROVIDER


class OutboundRefused(ProxyError):
    status = 400
    code = compat.OUTBOUND_NOT_ALLOWED

    @classmethod
    def blocked(cls, host: str, reason: str) -> OutboundRefused:
        return cls(
            f"The upstream host {host} is not allowed ({reason}); loopback and private "
            "addresses need AUTHGATE_ALLOW_PRIVATE_UPSTREAMS=true"
        )


class InvalidUpstreamRequest(ProxyError):
    status = 400
    code = compat.INVALID_REQUEST


class PayloadTooLarge(ProxyError):
    status = 413
    code = compat.PAYLOAD_TOO_LARGE


class UpstreamTimeout(ProxyError):
    status = 504
    code = compat.UPSTREAM_TIMEOUT


class UpstreamUnreachable(ProxyError):
    status = 502
    code = compat.UPSTREAM_UNREACHABLE


class RefreshBackingOff(ProxyError):
    """A recent renewal of the expired credentials failed; not retried yet (Nango's 424)."""

    status = 424
    code = compat.REFRESH_BACKOFF


class RefreshFailed(ProxyError):
    """The provider's token endpoint did not renew expired credentials this time.

    424 (Failed Dependency), as Nango answers refresh failures: the call was never sent,
    because the renewal it depends on failed; the next attempt backs off.
    """

    status = 424
    code = compat.REFRESH_FAILED


class StoreUnreachable(ProxyError):
    """The connection (or the secret key) had to be read, and the database is down."""

    status = 503
    code = STORE_UNAVAILABLE
    retry_after = 1

    def __init__(self) -> None:
        super().__init__("The credential store is unreachable; try again")


ErrorAnswer = tuple[int, list[tuple[str, str]], bytes]


def error_answer(error: ProxyError, request_id: str | None = None) -> ErrorAnswer:
    """Status, headers and JSON body of `error`, ready for `Reply.respond`."""
    headers = [("Content-Type", "application/json"), (compat.ERROR_HEADER, error.code)]
    if request_id:
        headers.append((compat.REQUEST_ID_HEADER, request_id))
    if error.retry_after is not None:
        headers.append(("Retry-After", str(error.retry_after)))
    headers.extend(error.headers.items())
    return error.status, headers, orjson.dumps(error.body())
