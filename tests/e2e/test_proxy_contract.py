"""The Nango proxy contract, end to end: caller → authgate → fake provider, real sockets."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from aiohttp import web

from authgate.operator import create_environment
from credentials.config import CoreSettings
from tests.e2e.conftest import Authgate, Factory, json_of, ok_handler

OAUTH = {"type": "OAUTH2", "access_token": "at-secret-1", "refresh_token": "rt-secret-1"}


async def _oauth_connection(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", OAUTH)


async def test_get_forwards_path_and_query_byte_for_byte(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    target = "/users/a%2Fb/repos/?x=1&x=2&q=%20a+b&empty=&raw=%7E~"
    response = await authgate.proxy("GET", "/proxy" + target)
    assert response.status == 200
    assert authgate.provider.last().raw_path == target


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("/proxy", "/"), ("/proxy/", "/"), ("/proxy?x=1", "/?x=1"), ("/proxy//a", "/a")],
)
async def test_endpoint_edges(authgate: Authgate, raw: str, expected: str) -> None:
    await _oauth_connection(authgate)
    response = await authgate.proxy("GET", raw)
    assert response.status == 200
    assert authgate.provider.last().raw_path == expected


async def test_oauth2_bearer_injected_and_caller_authorization_dropped(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    await authgate.proxy("GET", "/proxy/me")
    received = authgate.provider.last()
    assert received.header("Authorization") == "Bearer at-secret-1"
    assert authgate.secret_key not in str(received.headers)
    for control in ("connection-id", "provider-config-key", "retries", "base-url-override"):
        assert control not in received.header_names()


async def test_api_key_templates_header_and_query(authgate: Authgate) -> None:
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection("keyed", "conn-k", {"type": "API_KEY", "apiKey": "k-123"})
    response = await authgate.proxy(
        "GET", "/proxy/items?page=2", connection_id="conn-k", provider_config_key="keyed"
    )
    assert response.status == 200
    received = authgate.provider.last()
    assert received.raw_path == "/api/items?page=2&key=k-123"
    assert received.header("x-api-key") == "k-123"
    # The tenant header's template cannot resolve: it is dropped, never sent as `${...}`.
    assert "x-tenant" not in received.header_names()
    assert all("${" not in value for _, value in received.headers)


async def test_provider_accept_beats_a_plain_accept_but_not_a_prefixed_one(
    authgate: Authgate,
) -> None:
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection("keyed", "conn-k", {"type": "API_KEY", "apiKey": "k-123"})
    await authgate.proxy(
        "GET",
        "/proxy/a",
        connection_id="conn-k",
        provider_config_key="keyed",
        headers={"Accept": "*/*", "Content-Type": "text/csv"},
    )
    assert authgate.provider.last().header("Accept") == "application/vnd.fake+json"
    assert authgate.provider.last().header("Content-Type") == "text/csv"
    await authgate.proxy(
        "GET",
        "/proxy/a",
        connection_id="conn-k",
        provider_config_key="keyed",
        headers={"Nango-Proxy-Accept": "text/csv"},
    )
    assert authgate.provider.last().header("Accept") == "text/csv"


async def test_basic_auth(authgate: Authgate) -> None:
    await authgate.integration("basic", "fake-basic")
    await authgate.connection(
        "basic", "conn-b", {"type": "BASIC", "username": "ann", "password": "pw:1"}
    )
    await authgate.proxy("GET", "/proxy/x", connection_id="conn-b", provider_config_key="basic")
    assert authgate.provider.last().header("Authorization") == "Basic YW5uOnB3OjE="


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_body_methods_forward_raw_bytes_and_content_type(
    authgate: Authgate, method: str
) -> None:
    await _oauth_connection(authgate)
    body = b'{"big": 12345678901234567890123, "dup": 1, "dup": 2}'
    response = await authgate.proxy(
        method, "/proxy/things", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200
    received = authgate.provider.last()
    assert received.method == method
    assert received.body == body
    assert received.header("Content-Type") == "application/json"


async def test_multipart_and_binary_bodies_untouched(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    boundary = "XyZ"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="b"\r\n\r\n2\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="a"; filename="f.bin"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n\x00\x01\xff\r\n--{boundary}--\r\n"
    ).encode("latin-1")
    content_type = f"multipart/form-data; boundary={boundary}"
    await authgate.proxy(
        "POST", "/proxy/upload", data=multipart, headers={"Content-Type": content_type}
    )
    assert authgate.provider.last().body == multipart
    assert authgate.provider.last().header("Content-Type") == content_type
    binary = bytes(range(256)) * 10
    await authgate.proxy("PUT", "/proxy/blob", data=binary, headers={"Content-Type": "x-foo/bar"})
    assert authgate.provider.last().body == binary


async def test_nango_proxy_headers_stripped_and_override(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    await authgate.proxy(
        "GET",
        "/proxy/n",
        headers={
            "Nango-Proxy-Notion-Version": "2022-06-28",
            "Nango-Proxy-Accept": "application/vnd.custom",
            "Accept": "text/plain",
            "X-Not-Forwarded": "1",
            "Nango-Proxy-Transfer-Encoding": "chunked",
        },
    )
    received = authgate.provider.last()
    assert received.header("Notion-Version") == "2022-06-28"
    assert received.header("Accept") == "application/vnd.custom"
    assert "x-not-forwarded" not in received.header_names()
    assert received.header("Transfer-Encoding") is None


@pytest.mark.parametrize("status", [201, 202, 204, 301, 404, 422, 500])
async def test_real_status_and_headers_pass_through(authgate: Authgate, status: int) -> None:
    await _oauth_connection(authgate)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=status, body=None if status == 204 else b"payload")
        response.headers.add("X-Custom", "one")
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Connection"] = "keep-alive, X-Drop-Me"
        response.headers["X-Drop-Me"] = "hop"
        return response

    authgate.provider.respond("/status", handler)
    response = await authgate.proxy("GET", "/proxy/status")
    assert response.status == status
    assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
    assert response.headers["X-Custom"] == "one"
    assert "Keep-Alive" not in response.headers
    assert "X-Drop-Me" not in response.headers
    assert "X-Authgate-Error" not in response.headers
    body = await response.read()
    assert body == (b"" if status == 204 else b"payload")


async def test_compressed_bodies_untouched_unless_decompress(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    plain = b'{"hello": "world"}' * 50
    packed = gzip.compress(plain)
    authgate.provider.respond(
        "/gz",
        ok_handler(
            body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        ),
    )
    response = await authgate.proxy("GET", "/proxy/gz")
    assert response.headers["Content-Encoding"] == "gzip"
    assert await response.read() == packed
    response = await authgate.proxy("GET", "/proxy/gz", headers={"Decompress": "true"})
    assert "Content-Encoding" not in response.headers
    assert await response.read() == plain


async def test_unknown_connection_is_404_with_the_documented_message(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    response = await authgate.proxy("GET", "/proxy/x", connection_id="user-123")
    assert response.status == 404
    assert response.headers["X-Authgate-Error"] == "unknown_connection"
    assert await json_of(response) == {
        "error": {
            "code": "unknown_connection",
            "message": (
                "Connection not found for connection_id: user-123 and provider_config_key: oauth"
            ),
        }
    }
    response = await authgate.proxy("GET", "/proxy/x", provider_config_key="github")
    assert response.status == 404
    assert (await json_of(response))["error"]["code"] == "unknown_connection"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_auth_header"),
        ("Bearer ", "invalid_secret_key_format"),  # servers trim the trailing space
        ("Bearer not-a-uuid", "invalid_secret_key_format"),
        ("Bearer 0b6a3b4e-9b1c-4f7e-8a2d-3c4b5a6d7e8f", "unknown_account"),
    ],
)
async def test_secret_key_errors(authgate: Authgate, authorization: str | None, code: str) -> None:
    headers = {"Connection-Id": "c", "Provider-Config-Key": "p"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await authgate.session.get(authgate.url.with_path("/proxy/x"), headers=headers)
    assert response.status == 401
    body = await json_of(response)
    assert body["error"]["code"] == code
    assert response.headers["X-Authgate-Error"] == code


async def test_invalid_headers_all_reported(authgate: Authgate) -> None:
    response = await authgate.proxy(
        "GET",
        "/proxy/x",
        connection_id="",
        headers={"Retries": "11", "Retry-On": "abc", "Decompress": "maybe"},
    )
    assert response.status == 400
    body = await json_of(response)
    assert body["error"]["code"] == "invalid_headers"
    paths = {issue["path"][0] for issue in body["error"]["errors"]}
    assert paths == {"connection-id", "retries", "retry-on", "decompress"}


async def test_empty_optional_headers_count_as_absent(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    response = await authgate.proxy(
        "GET",
        "/proxy/x",
        headers={"Base-Url-Override": "", "Nango-Activity-Log-Id": "", "Retries": ""},
    )
    assert response.status == 200


async def test_base_url_override(authgate: Authgate) -> None:
    await authgate.integration("nobase", "fake-nobase")
    await authgate.connection("nobase", "c", {"type": "API_KEY", "apiKey": "k"})
    response = await authgate.proxy(
        "GET", "/proxy/x", connection_id="c", provider_config_key="nobase"
    )
    assert response.status == 400
    assert (await json_of(response))["error"]["code"] == "missing_connection_config"
    override = f"http://127.0.0.1:{authgate.provider_port}/base/"
    response = await authgate.proxy(
        "GET",
        "/proxy/x",
        connection_id="c",
        provider_config_key="nobase",
        headers={"Base-Url-Override": override},
    )
    assert response.status == 200
    assert authgate.provider.last().raw_path == "/base/x"


async def test_retries_on_5xx_until_success(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    answers = iter([503, 502, 200])

    async def flaky(request: web.Request) -> web.StreamResponse:
        return web.Response(status=next(answers), headers={"Retry-After": "0"})

    authgate.provider.respond("/flaky", flaky)
    response = await authgate.proxy("POST", "/proxy/flaky", data=b"once", headers={"Retries": "3"})
    assert response.status == 200
    assert [r.body for r in authgate.provider.received] == [b"once"] * 3


async def test_no_retry_without_the_header(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    authgate.provider.respond("/down", ok_handler(status=503))
    response = await authgate.proxy("GET", "/proxy/down")
    assert response.status == 503
    assert len(authgate.provider.received) == 1


async def test_retry_on_extra_status(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    answers = iter([409, 200])

    async def conflict(request: web.Request) -> web.StreamResponse:
        return web.Response(status=next(answers), headers={"Retry-After": "0"})

    authgate.provider.respond("/conflict", conflict)
    response = await authgate.proxy(
        "GET", "/proxy/conflict", headers={"Retries": "1", "Retry-On": "409"}
    )
    assert response.status == 200
    assert len(authgate.provider.received) == 2


async def test_unreachable_provider_is_502(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    response = await authgate.proxy(
        "GET", "/proxy/x", headers={"Base-Url-Override": "http://127.0.0.1:9"}
    )
    assert response.status == 502
    assert response.headers["X-Authgate-Error"] == "upstream_unreachable"


async def test_read_timeout_is_504(make_authgate: Factory) -> None:
    authgate = await make_authgate(AUTHGATE_UPSTREAM_READ_TIMEOUT="0.2")
    await _oauth_connection(authgate)

    async def stall(request: web.Request) -> web.StreamResponse:
        await asyncio.get_running_loop().create_future()  # never completes: the provider hangs
        raise AssertionError("unreachable")

    authgate.provider.respond("/stall", stall)
    response = await authgate.proxy("GET", "/proxy/stall")
    assert response.status == 504
    assert (await json_of(response))["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize(
    "override",
    [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://0x7f.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
    ],
)
async def test_ssrf_refused_by_default(make_authgate: Factory, override: str) -> None:
    authgate = await make_authgate(AUTHGATE_ALLOW_PRIVATE_UPSTREAMS="false")
    await _oauth_connection(authgate)
    response = await authgate.proxy("GET", "/proxy/x", headers={"Base-Url-Override": override})
    assert response.status == 400
    assert response.headers["X-Authgate-Error"] == "base_url_override_not_allowed"
    assert authgate.provider.received == []


async def test_metadata_address_refused_even_when_private_allowed(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    response = await authgate.proxy(
        "GET", "/proxy/x", headers={"Base-Url-Override": "http://169.254.169.254"}
    )
    assert response.status == 400


async def test_redirect_followed_and_credentials_kept_on_same_origin(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    authgate.provider.respond("/old", ok_handler(status=302, headers={"Location": "/new?z=1"}))
    response = await authgate.proxy("GET", "/proxy/old")
    assert response.status == 200
    assert authgate.provider.last().raw_path == "/new?z=1"
    assert authgate.provider.last().header("Authorization") == "Bearer at-secret-1"


async def test_redirect_to_other_origin_drops_injected_credentials(authgate: Authgate) -> None:
    await _oauth_connection(authgate)
    elsewhere = f"http://localhost:{authgate.provider_port}/landing"
    authgate.provider.respond("/away", ok_handler(status=307, headers={"Location": elsewhere}))
    response = await authgate.proxy("GET", "/proxy/away")
    assert response.status == 200
    assert authgate.provider.last().raw_path == "/landing"
    assert authgate.provider.last().header("Authorization") is None


async def test_a_key_reaches_only_its_environment(
    authgate: Authgate, capsys: pytest.CaptureFixture[str]
) -> None:
    await _oauth_connection(authgate)
    settings = CoreSettings.from_env(authgate.environ)
    assert await create_environment(settings, "prod") == 0
    prod_key = capsys.readouterr().out.strip()
    response = await authgate.proxy("GET", "/proxy/x", key=prod_key)
    assert response.status == 404
    assert authgate.provider.received == []
    imported = await authgate.post_json(
        "/connections",
        {"provider_config_key": "oauth", "connection_id": "intruder", "credentials": OAUTH},
        key=prod_key,
    )
    assert imported.status == 404
    response = await authgate.proxy("GET", "/proxy/x")
    assert response.status == 200


async def test_health_and_ready(authgate: Authgate) -> None:
    health = await authgate.session.get(authgate.url.with_path("/health"))
    assert health.status == 200
    ready = await authgate.session.get(authgate.url.with_path("/ready"))
    assert ready.status == 200
    assert (await json_of(ready))["ready"] is True
