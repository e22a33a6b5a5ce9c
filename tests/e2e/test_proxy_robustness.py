"""Bad input never becomes a 500 or a traceback, and stored credentials stay protected."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Authgate, Factory, json_of

OAUTH = {"type": "OAUTH2", "access_token": "at-robust", "refresh_token": "rt-robust"}


async def _ready(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", OAUTH)


@pytest.mark.parametrize(
    "raw_target",
    [
        "/proxy/%zz",
        "/proxy/../../etc/passwd",
        "/proxy/a%2F..%2F..%2Fb",
        "/proxy/%E2%82%AC?q=%C3%A9&q=%FF",
        "/proxy/" + "a" * 4000,
        "/proxy/x?" + "&".join(f"k{i}=v" for i in range(500)),
        "/proxy/x#fragment",
    ],
)
async def test_odd_targets_are_forwarded_or_refused_cleanly(
    authgate: Authgate, raw_target: str
) -> None:
    await _ready(authgate)
    response = await authgate.proxy("GET", raw_target)
    assert response.status < 500, await response.text()


@pytest.mark.parametrize(
    "headers",
    [
        {"Retries": "99999999999999999999999"},
        {"Retries": "1e3"},
        {"Retry-On": "999"},
        {"Retry-On": ",".join(["500"] * 1000)},
        {"Base-Url-Override": "http://[::1"},
        {"Base-Url-Override": "javascript:alert(1)"},
        {"Base-Url-Override": "http://user:pw@127.0.0.1:1/"},
        {"Decompress": "\u00e9"},
        {"Nango-Activity-Log-Id": "\u00ff" * 300},
        {"Nango-Proxy-": "empty-name"},
        {"Nango-Proxy-Host": "evil.example"},
        {"Nango-Proxy-Content-Length": "5"},
    ],
)
async def test_odd_control_headers_never_500(authgate: Authgate, headers: dict[str, str]) -> None:
    await _ready(authgate)
    response = await authgate.proxy("GET", "/proxy/x", headers=headers)
    assert response.status < 500 or response.headers.get("X-Authgate-Error") in (
        "upstream_unreachable",
        "upstream_timeout",
    )
    if response.status >= 400 and "X-Authgate-Error" in response.headers:
        body = await json_of(response)
        assert set(body["error"]) >= {"code", "message"}


async def test_smuggling_headers_never_reach_the_provider(authgate: Authgate) -> None:
    await _ready(authgate)
    response = await authgate.proxy(
        "POST",
        "/proxy/x",
        data=b"abc",
        headers={"Nango-Proxy-Host": "evil.example", "Nango-Proxy-Content-Length": "1"},
    )
    assert response.status == 200
    received = authgate.provider.last()
    assert received.header("Host") == f"127.0.0.1:{authgate.provider_port}"
    assert received.header("Content-Length") == "3"
    assert received.body == b"abc"


async def test_credentials_sealed_with_another_key_are_invalid_credentials(
    make_authgate: Factory,
) -> None:
    first = await make_authgate()
    await _ready(first)
    # Same database, a different encryption key: the stored ciphertext cannot be opened.
    second = await make_authgate()
    response = await second.proxy("GET", "/proxy/x")
    assert response.status == 401
    body = await json_of(response)
    assert body["error"]["code"] == "invalid_credentials"
    assert "at-robust" not in str(body)
    assert second.provider.received == []


async def test_oversized_body_is_413(make_authgate: Factory) -> None:
    authgate = await make_authgate(AUTHGATE_MAX_BODY_BYTES="10")
    await _ready(authgate)
    response = await authgate.proxy("POST", "/proxy/x", data=b"x" * 11)
    assert response.status == 413
    assert (await json_of(response))["error"]["code"] == "payload_too_large"
    assert authgate.provider.received == []


async def test_head_returns_headers_without_a_body(authgate: Authgate) -> None:
    await _ready(authgate)
    response = await authgate.proxy("HEAD", "/proxy/x")
    assert response.status == 200
    assert await response.read() == b""
    assert authgate.provider.last().method == "HEAD"


async def test_get_never_forwards_a_body(authgate: Authgate) -> None:
    await _ready(authgate)
    response = await authgate.proxy("GET", "/proxy/x", data=b"ignored")
    assert response.status == 200
    assert authgate.provider.last().body == b""


async def test_stored_token_unsafe_in_a_header_is_invalid_credentials(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", {"type": "OAUTH2", "access_token": "a\r\nX: y"})
    response = await authgate.proxy("GET", "/proxy/x")
    assert response.status == 401
    assert (await json_of(response))["error"]["code"] == "invalid_credentials"
    assert authgate.provider.received == []


async def test_basic_with_an_empty_username_is_sent(authgate: Authgate) -> None:
    await authgate.integration("basic", "fake-basic")
    await authgate.connection("basic", "b", {"type": "BASIC", "username": "", "password": "pw"})
    response = await authgate.proxy(
        "GET", "/proxy/x", connection_id="b", provider_config_key="basic"
    )
    assert response.status == 200
    assert authgate.provider.last().header("Authorization") == "Basic OnB3"


async def test_connection_config_breaking_the_base_url_is_refused(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", OAUTH, connection_config={"port": "1\r\nX: y"})
    response = await authgate.proxy("GET", "/proxy/x")
    assert 400 <= response.status < 500
    assert authgate.provider.received == []
