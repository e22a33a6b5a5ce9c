"""How every token-endpoint failure is classified, end to end over a real socket.

OAUTH2 refresh carries the requests; the classification is shared by every mode.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from credentials.grants import GrantError, TokenHttp, renew
from tests.credentials.grants.fakes import (
    TokenServer,
    answer,
    grant_request,
    hang,
    provider,
)

CLIENT = {"client_id": "client-abc", "client_secret": "client-secret-xyz"}
STORED = {
    "type": "OAUTH2",
    "access_token": "old-access-token-value",
    "refresh_token": "refresh-token-value-1",
}
SECRETS = ("client-secret-xyz", "refresh-token-value-1", "old-access-token-value")


async def refresh_error(server: TokenServer, http: TokenHttp) -> GrantError:
    request = grant_request(
        http, provider("OAUTH2", token_url=server.url("/token")), STORED, client=CLIENT
    )
    with pytest.raises(GrantError) as caught:
        await renew(request)
    return caught.value


def assert_safe(error: GrantError) -> None:
    text = f"{error} {error!r} {error.args}"
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (400, {"error": "invalid_grant"}, None, ("invalid_grant", True, None)),
        (401, {"error": "invalid_client"}, None, ("invalid_client", True, None)),
        (400, {"error": "unauthorized_client"}, None, ("unauthorized_client", True, None)),
        (200, {"error": "invalid_grant"}, None, ("invalid_grant", True, None)),
        (400, {"error": "invalid_request"}, None, ("provider_4xx", False, None)),
        (403, {"error": "invalid_grant"}, None, ("provider_4xx", False, None)),
        (404, b"<html>not here</html>", None, ("provider_4xx", False, None)),
        (429, {"error": "slow_down"}, {"Retry-After": "17"}, ("rate_limited", False, 17.0)),
        (429, b"", None, ("rate_limited", False, None)),
        (500, b"<html>boom</html>", None, ("provider_5xx", False, None)),
        (503, b"", {"Retry-After": "5"}, ("provider_5xx", False, 5.0)),
        (200, b"<html>maintenance</html>", None, ("bad_response", False, None)),
        (200, {"token_type": "bearer"}, None, ("bad_response", False, None)),
        (302, b"", {"Location": "https://elsewhere.example/"}, ("provider_4xx", False, None)),
    ],
)
async def test_classification(
    server: TokenServer,
    http: TokenHttp,
    status: int,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None,
    expected: tuple[str, bool, float | None],
) -> None:
    server.on("/token", answer(body, status, headers))
    error = await refresh_error(server, http)
    assert (error.reason, error.permanent, error.retry_after) == expected
    assert error.status == status
    assert_safe(error)


async def test_a_redirect_is_not_followed(server: TokenServer, http: TokenHttp) -> None:
    server.on("/token", answer(b"", 307, {"Location": server.url("/elsewhere")}))
    server.on("/elsewhere", answer({"access_token": "stolen"}))
    error = await refresh_error(server, http)
    assert error.reason == "provider_4xx"
    assert [received.path for received in server.received] == ["/token"]


async def test_the_provider_description_is_reported_truncated_and_redacted(
    server: TokenServer, http: TokenHttp
) -> None:
    description = "token refresh-token-value-1 was revoked; " + "x" * 400
    server.on("/token", answer({"error": "invalid_grant", "error_description": description}, 400))
    error = await refresh_error(server, http)
    assert error.provider_error == "invalid_grant"
    assert error.description is not None
    assert error.description.startswith("token [redacted] was revoked; xxx")
    assert len(error.description) <= 200
    assert "'invalid_grant'" in str(error)
    assert "[redacted]" in str(error)
    assert_safe(error)


async def test_timeout(server: TokenServer) -> None:
    server.on("/token", hang(server))
    http = TokenHttp(allow_private=True, total_timeout=0.2)
    try:
        error = await refresh_error(server, http)
    finally:
        await http.close()
    assert (error.reason, error.permanent, error.status) == ("timeout", False, None)
    assert len(server.received) == 1  # it did reach the endpoint


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_connection_refused(http: TokenHttp, refused_port: int) -> None:
    token_url = f"http://127.0.0.1:{refused_port}/token"
    request = grant_request(http, provider("OAUTH2", token_url=token_url), STORED, client=CLIENT)
    with pytest.raises(GrantError) as caught:
        await renew(request)
    assert (caught.value.reason, caught.value.permanent) == ("network", False)
    assert_safe(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_token_endpoint_refused_without_allow_private(
    server: TokenServer, host: str
) -> None:
    http = TokenHttp(allow_private=False)
    token_url = server.url("/token").replace("127.0.0.1", host)
    request = grant_request(http, provider("OAUTH2", token_url=token_url), STORED, client=CLIENT)
    try:
        with pytest.raises(GrantError) as caught:
            await renew(request)
    finally:
        await http.close()
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)
    assert "loopback" in str(caught.value)
    assert server.received == []


async def test_an_oversized_answer_is_a_bad_response(server: TokenServer) -> None:
    server.on("/token", answer({"access_token": "t", "padding": "x" * 5000}))
    http = TokenHttp(allow_private=True, max_response_bytes=1000)
    try:
        error = await refresh_error(server, http)
    finally:
        await http.close()
    assert (error.reason, error.permanent) == ("bad_response", False)
