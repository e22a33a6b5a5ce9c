"""POST /integrations and POST /connections, end to end: caller → authgate (serve) → store,
with the proxy and the fake provider as the witness of what was (or was not) stored.

The contract is the reference's §6.3 (integrations) and §7.3 (connections): status codes,
envelopes, error codes and the offending field in `errors[].path`. Every rejected request
is followed by a check that nothing changed, and no input may ever produce a 500.
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from authgate.operator import create_environment
from authgate.serving import MAX_JSON_BODY
from credentials.config import CoreSettings
from tests.e2e.conftest import Authgate, Factory, json_of
from tests.e2e.management_calls import CONNECTION_FIELDS

OAUTH_CLIENT = {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}
ORIGINAL_TOKEN = "at-original-0001"
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# --- helpers -----------------------------------------------------------------------------


async def send(
    authgate: Authgate,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """POST to management; returns (status, parsed JSON, response). Every answer must be
    JSON, and every error must name its code in the X-Authgate-Error header."""
    sent = {**(authgate.auth() if auth else {}), **(headers or {})}
    url = str(authgate.url).rstrip("/") + path
    if raw is None:
        response = await authgate.session.post(url, json=body, headers=sent)
    else:
        response = await authgate.session.post(
            url, data=io.BytesIO(raw), headers=sent, skip_auto_headers=["Content-Type"]
        )
    payload = await json_of(response)
    assert response.content_type == "application/json"
    if response.status >= 400:
        assert response.headers["X-Authgate-Error"] == payload["error"]["code"]
    return response.status, payload, response


def paths(payload: Any) -> list[list[str]]:
    return [issue["path"] for issue in payload["error"]["errors"]]


def assert_invalid_body(
    status: int, payload: Any, path: list[str], code: str | None = None
) -> dict[str, Any]:
    """A 400 invalid_body whose issue list names `path` (with `code`, when given)."""
    assert status == 400, payload
    assert payload["error"]["code"] == "invalid_body"
    matching = [issue for issue in payload["error"]["errors"] if issue["path"] == path]
    assert matching, f"no issue at {path}: {payload}"
    for issue in payload["error"]["errors"]:
        assert set(issue) == {"code", "message", "path"}
        assert isinstance(issue["message"], str)
        assert issue["message"]
    if code is not None:
        assert code in {issue["code"] for issue in matching}, payload
    first: dict[str, Any] = matching[0]
    return first


def assert_business_error(status: int, payload: Any, message: str) -> None:
    assert status == 400
    assert payload == {"error": {"code": "invalid_body", "message": message}}


async def injected_authorization(
    authgate: Authgate, connection_id: str = "conn-1", key: str = "oauth"
) -> str | None:
    """What the proxy injects for the connection right now (None: nothing reached the
    provider, e.g. the connection does not exist)."""
    before = len(authgate.provider.received)
    response = await authgate.proxy(
        "GET", "/proxy/whoami", connection_id=connection_id, provider_config_key=key
    )
    await response.read()
    if len(authgate.provider.received) == before:
        assert response.status == 404, response.status
        assert (await json_of(response))["error"]["code"] == "unknown_connection"
        return None
    assert response.status == 200
    return authgate.provider.last().header("Authorization")


async def oauth_with_connection(authgate: Authgate) -> None:
    """Integration `oauth` (OAUTH2) with connection `conn-1` holding ORIGINAL_TOKEN,
    already read once by the proxy (so its cache is warm)."""
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", {"type": "OAUTH2", "access_token": ORIGINAL_TOKEN})
    assert await injected_authorization(authgate) == f"Bearer {ORIGINAL_TOKEN}"


async def assert_unchanged(authgate: Authgate) -> None:
    assert await injected_authorization(authgate) == f"Bearer {ORIGINAL_TOKEN}"


def import_body(**overrides: Any) -> dict[str, Any]:
    """A valid import of `conn-1` into `oauth`; the port comes from the caller."""
    body: dict[str, Any] = {
        "provider_config_key": "oauth",
        "connection_id": "conn-1",
        "credentials": {"type": "OAUTH2", "access_token": "at-replacement"},
    }
    body.update(overrides)
    return body


def any_of(*values: Any) -> tuple[Any, ...]:
    """A table of values of mixed types (typed, so list comprehensions over it check)."""
    return values


def assert_recent(stamp: str) -> datetime:
    assert ISO_MS_Z.match(stamp), stamp
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)
    return moment


# --- POST /integrations ------------------------------------------------------------------


async def test_create_integration_returns_the_public_shape(make_authgate: Factory) -> None:
    authgate = await make_authgate(AUTHGATE_PUBLIC_URL="https://gate.example.com/")
    status, payload, _ = await send(
        authgate, "/integrations", body={"provider": "fake-basic", "unique_key": "my-basic"}
    )
    assert status == 200
    data = payload["data"]
    assert set(payload) == {"data"}
    assert set(data) == {
        "unique_key",
        "provider",
        "display_name",
        "logo",
        "forward_webhooks",
        "created_at",
        "updated_at",
    }
    assert data["unique_key"] == "my-basic"
    assert data["provider"] == "fake-basic"
    assert data["display_name"] == "Fake Basic"  # the provider's, since none was given
    assert data["logo"] == "https://gate.example.com/images/template-logos/fake-basic.svg"
    assert data["forward_webhooks"] is True
    assert assert_recent(data["created_at"]) == assert_recent(data["updated_at"])


async def test_create_integration_with_every_optional_field(authgate: Authgate) -> None:
    status, payload, _ = await send(
        authgate,
        "/integrations",
        body={
            "provider": "fake-oauth",
            "unique_key": "Weird ~:.@ _-key",
            "display_name": "My OAuth app",
            "forward_webhooks": False,
            "credentials": {
                **OAUTH_CLIENT,
                "scopes": "read:user,repo",
                "webhook_secret": "whsec",
            },
        },
    )
    assert status == 200
    assert payload["data"]["unique_key"] == "Weird ~:.@ _-key"
    assert payload["data"]["display_name"] == "My OAuth app"
    assert payload["data"]["forward_webhooks"] is False
    # Stored: a connection can be imported into it.
    await authgate.connection("Weird ~:.@ _-key", "c", {"type": "OAUTH2", "access_token": "t"})


async def test_unknown_provider_is_refused_on_the_provider_field(authgate: Authgate) -> None:
    status, payload, _ = await send(
        authgate, "/integrations", body={"provider": "no-such-provider", "unique_key": "k"}
    )
    assert status == 400
    assert payload["error"]["code"] == "invalid_body"
    assert payload["error"]["errors"] == [
        {"code": "invalid_string", "message": "Invalid provider", "path": ["provider"]}
    ]
    await assert_integration_absent(authgate, "k")


async def assert_integration_absent(authgate: Authgate, unique_key: str) -> None:
    """Nothing was stored under `unique_key`: an import into it is a 404, and the key is
    still free."""
    status, payload, _ = await send(
        authgate,
        "/connections",
        body={
            "provider_config_key": unique_key,
            "credentials": {"type": "BASIC", "username": "u", "password": "p"},
        },
    )
    assert (status, payload["error"]["code"]) == (404, "not_found")
    status, _, _ = await send(
        authgate, "/integrations", body={"provider": "fake-basic", "unique_key": unique_key}
    )
    assert status == 200


async def test_duplicate_unique_key_reports_the_camel_case_path(
    authgate: Authgate, capsys: pytest.CaptureFixture[str]
) -> None:
    await authgate.integration("dup", "fake-basic")
    status, payload, _ = await send(
        authgate, "/integrations", body={"provider": "fake-api-key", "unique_key": "dup"}
    )
    assert status == 400
    assert payload["error"]["code"] == "invalid_body"
    assert payload["error"]["errors"] == [
        {"code": "invalid_string", "message": "Unique key already exists", "path": ["uniqueKey"]}
    ]
    # The first integration is untouched: it still takes BASIC, not API_KEY, credentials.
    status, payload, _ = await send(
        authgate,
        "/connections",
        body={"provider_config_key": "dup", "credentials": {"type": "API_KEY", "apiKey": "k"}},
    )
    assert_business_error(status, payload, "Provider BASIC does not support API_KEY auth")
    # Unique per environment only.
    assert await create_environment(CoreSettings.from_env(authgate.environ), "prod") == 0
    prod_key = capsys.readouterr().out.strip()
    response = await authgate.post_json(
        "/integrations", {"provider": "fake-api-key", "unique_key": "dup"}, key=prod_key
    )
    assert response.status == 200


async def test_oauth2_provider_without_credentials(authgate: Authgate) -> None:
    status, payload, _ = await send(
        authgate, "/integrations", body={"provider": "fake-oauth", "unique_key": "o"}
    )
    assert_business_error(status, payload, "Missing credentials")
    await assert_integration_absent(authgate, "o")


@pytest.mark.parametrize(
    ("provider", "credentials"),
    [
        ("fake-oauth", {"type": "OAUTH1", "client_id": "a", "client_secret": "b"}),
        ("fake-oauth", {"type": "TBA", "client_id": "a", "client_secret": "b"}),
        ("fake-basic", OAUTH_CLIENT),
        ("fake-api-key", OAUTH_CLIENT),
    ],
)
async def test_credentials_type_must_match_the_provider(
    authgate: Authgate, provider: str, credentials: dict[str, Any]
) -> None:
    status, payload, _ = await send(
        authgate,
        "/integrations",
        body={"provider": provider, "unique_key": "m", "credentials": credentials},
    )
    assert_business_error(status, payload, "incompatible credentials auth type and provider auth")
    await assert_integration_absent(authgate, "m")


async def test_unknown_keys_are_refused_at_every_level(authgate: Authgate) -> None:
    status, payload, _ = await send(
        authgate,
        "/integrations",
        body={"provider": "fake-basic", "unique_key": "s", "foo": 1, "bar": 2},
    )
    issue = assert_invalid_body(status, payload, [], "unrecognized_keys")
    assert issue["message"] == 'Unrecognized keys: "foo", "bar"'
    status, payload, _ = await send(
        authgate,
        "/integrations",
        body={
            "provider": "fake-oauth",
            "unique_key": "s",
            "credentials": {**OAUTH_CLIENT, "client_email": "x"},
        },
    )
    issue = assert_invalid_body(status, payload, ["credentials"], "unrecognized_keys")
    assert issue["message"] == 'Unrecognized key: "client_email"'
    await assert_integration_absent(authgate, "s")


@pytest.mark.parametrize(
    ("changes", "path", "code"),
    [
        ({"provider": None}, ["provider"], "invalid_type"),
        ({"unique_key": None}, ["unique_key"], "invalid_type"),
        ({"provider": 7}, ["provider"], "invalid_type"),
        ({"provider": "fake basic"}, ["provider"], "invalid_format"),
        ({"unique_key": "a/b"}, ["unique_key"], "invalid_format"),
        ({"unique_key": "key\n"}, ["unique_key"], "invalid_format"),
        ({"provider": "fake-basic\n"}, ["provider"], "invalid_format"),
        ({"display_name": "nul\u0000"}, ["display_name"], "invalid_format"),
        ({"unique_key": ""}, ["unique_key"], "invalid_format"),
        ({"unique_key": "k" * 256}, ["unique_key"], "too_big"),
        ({"display_name": ""}, ["display_name"], "too_small"),
        ({"display_name": "d" * 256}, ["display_name"], "too_big"),
        ({"display_name": None}, ["display_name"], "invalid_type"),
        ({"forward_webhooks": "yes"}, ["forward_webhooks"], "invalid_type"),
        ({"credentials": "cid:csecret"}, ["credentials"], "invalid_type"),
        ({"credentials": {"client_id": "a"}}, ["credentials", "type"], "invalid_union"),
        ({"credentials": {"type": "MAGIC"}}, ["credentials", "type"], "invalid_union"),
        (
            {"credentials": {**OAUTH_CLIENT, "client_id": ""}},
            ["credentials", "client_id"],
            "too_small",
        ),
        (
            {"credentials": {"type": "OAUTH2", "client_id": "a"}},
            ["credentials", "client_secret"],
            "invalid_type",
        ),
        (
            {"credentials": {**OAUTH_CLIENT, "scopes": "read user"}},
            ["credentials", "scopes"],
            "invalid_format",
        ),
        (
            {"credentials": {**OAUTH_CLIENT, "webhook_secret": "w" * 256}},
            ["credentials", "webhook_secret"],
            "too_big",
        ),
        ({"custom": {"a": 1}}, ["custom", "a"], "invalid_type"),
        ({"integration_config": "x"}, ["integration_config"], "invalid_type"),
    ],
)
async def test_schema_failures_name_the_field(
    authgate: Authgate, changes: dict[str, Any], path: list[str], code: str
) -> None:
    body = {"provider": "fake-oauth", "unique_key": "v", "credentials": OAUTH_CLIENT, **changes}
    status, payload, _ = await send(authgate, "/integrations", body=body)
    assert_invalid_body(status, payload, path, code)
    status, _, _ = await send(
        authgate, "/integrations", body={"provider": "fake-basic", "unique_key": "v"}
    )
    assert status == 200  # nothing was stored under "v"


async def test_every_schema_problem_is_reported_at_once(authgate: Authgate) -> None:
    status, payload, _ = await send(
        authgate,
        "/integrations",
        body={"provider": 1, "unique_key": "a/b", "forward_webhooks": 0, "extra": True},
    )
    assert status == 400
    assert sorted(paths(payload)) == [[], ["forward_webhooks"], ["provider"], ["unique_key"]]


# --- transport: content type, JSON, query, secret key --------------------------------------


@pytest.mark.parametrize("path", ["/integrations", "/connections"])
async def test_malformed_json_is_invalid_json(authgate: Authgate, path: str) -> None:
    await authgate.integration("oauth", "fake-oauth")
    valid = (
        {"provider": "fake-basic", "unique_key": "mj"}
        if path == "/integrations"
        else import_body(connection_id="mj")
    )
    truncated = orjson.dumps(valid)[:-1]
    status, payload, _ = await send(
        authgate, path, raw=truncated, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert payload["error"]["code"] == "invalid_json"
    assert payload["error"]["message"]
    assert await injected_authorization(authgate, "mj") is None
    await assert_integration_absent(authgate, "mj")


@pytest.mark.parametrize("path", ["/integrations", "/connections"])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_non_json_content_type_is_415(
    authgate: Authgate, path: str, content_type: str
) -> None:
    raw = b'{"provider": "fake-basic", "unique_key": "ct"}'
    status, payload, _ = await send(authgate, path, raw=raw, headers={"Content-Type": content_type})
    assert status == 415
    assert payload == {
        "error": {
            "code": "invalid_content_type",
            "message": "Content-Type header must be application/json",
        }
    }
    await assert_integration_absent(authgate, "ct")


@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8"])
async def test_missing_or_parameterised_json_content_type_is_accepted(
    authgate: Authgate, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    raw = b'{"provider": "fake-basic", "unique_key": "ct"}'
    status, payload, _ = await send(authgate, "/integrations", raw=raw, headers=headers)
    assert status == 200, payload


@pytest.mark.parametrize("path", ["/integrations", "/connections"])
@pytest.mark.parametrize("query", ["?x=1", "?cache_bust", "?unique_key=q&unique_key=r"])
async def test_any_query_string_is_refused(authgate: Authgate, path: str, query: str) -> None:
    await authgate.integration("oauth", "fake-oauth")
    body = (
        {"provider": "fake-basic", "unique_key": "q"}
        if path == "/integrations"
        else import_body(connection_id="q")
    )
    status, payload, _ = await send(authgate, path + query, body=body)
    assert status == 400
    assert payload["error"]["code"] == "invalid_query_params"
    assert await injected_authorization(authgate, "q") is None
    await assert_integration_absent(authgate, "q")


@pytest.mark.parametrize("path", ["/integrations", "/connections"])
@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_auth_header"),
        ("", "missing_auth_header"),
        ("Bearer not-a-uuid", "invalid_secret_key_format"),
        ("Basic dXNlcjpwYXNz", "invalid_secret_key_format"),
        ("Bearer 0b6a3b4e-9b1c-1f7e-8a2d-3c4b5a6d7e8f", "invalid_secret_key_format"),  # v1
        ("Bearer 0b6a3b4e-9b1c-4f7e-8a2d-3c4b5a6d7e8f", "unknown_account"),
    ],
)
async def test_secret_key_failures_use_the_legacy_401_shape(
    authgate: Authgate, path: str, authorization: str | None, code: str
) -> None:
    await authgate.integration("oauth", "fake-oauth")
    headers = {} if authorization is None else {"Authorization": authorization}
    body = (
        {"provider": "fake-basic", "unique_key": "unauth"}
        if path == "/integrations"
        else import_body(connection_id="unauth")
    )
    status, payload, _ = await send(authgate, path, body=body, headers=headers, auth=False)
    assert status == 401
    assert payload["error"]["code"] == code
    assert set(payload["error"]) == {"message", "code", "payload"}
    assert payload["error"]["payload"] == {}
    assert payload["error"]["message"].startswith("Authentication failed.")
    assert await injected_authorization(authgate, "unauth") is None
    await assert_integration_absent(authgate, "unauth")


async def test_unknown_management_route_is_a_json_error(authgate: Authgate) -> None:
    response = await authgate.session.get(
        authgate.url.with_path("/no-such-route"), headers=authgate.auth()
    )
    assert response.status == 404
    assert (await json_of(response))["error"]["code"] == "not_found"
    response = await authgate.session.delete(
        authgate.url.with_path("/integrations"), headers=authgate.auth()
    )
    assert response.status == 405
    assert (await json_of(response))["error"]["code"] == "method_not_allowed"


# --- POST /connections: success ------------------------------------------------------------


async def test_import_oauth2_returns_the_full_connection(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    body = {
        "provider_config_key": "oauth",
        "connection_id": "user-42",
        "credentials": {
            "type": "OAUTH2",
            "access_token": "at-1",
            "refresh_token": "rt-1",
            "expires_at": "2030-01-02T03:04:05Z",
            "config_override": {"client_id": "per-conn-id", "client_secret": "per-conn-sec"},
        },
        "metadata": {"plan": "pro", "nested": {"n": [1, 2]}},
        "connection_config": {"port": str(authgate.provider_port), "region": "eu"},
        "tags": {"Env": "Prod"},
    }
    status, payload, _ = await send(authgate, "/connections", body=body)
    assert status == 201, payload
    assert set(payload) == CONNECTION_FIELDS
    assert isinstance(payload["id"], int)
    assert payload["connection_id"] == "user-42"
    assert payload["provider_config_key"] == "oauth"
    assert payload["provider"] == "fake-oauth"
    assert payload["errors"] == []
    assert payload["end_user"] is None
    assert payload["tags"] == {"env": "Prod"}
    assert payload["metadata"] == {"plan": "pro", "nested": {"n": [1, 2]}}
    assert payload["connection_config"] == body["connection_config"]
    assert payload["webhook_url_override"] is None
    assert payload["last_fetched_at"] is None
    assert assert_recent(payload["created_at"]) == assert_recent(payload["updated_at"])
    token_fields = {
        "access_token": "at-1",
        "refresh_token": "rt-1",
        "expires_at": "2030-01-02T03:04:05.000Z",
        "config_override": {"client_id": "per-conn-id", "client_secret": "per-conn-sec"},
    }
    assert payload["credentials"] == {"type": "OAUTH2", **token_fields, "raw": token_fields}
    assert await injected_authorization(authgate, "user-42") == "Bearer at-1"


async def test_optional_fields_default_to_empty(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    status, payload, _ = await send(
        authgate,
        "/connections",
        body={
            "provider_config_key": "oauth",
            "credentials": {"type": "OAUTH2", "access_token": "t"},
        },
    )
    assert status == 201
    assert payload["metadata"] == {}
    assert payload["connection_config"] == {}
    assert payload["tags"] == {}
    assert payload["credentials"] == {
        "type": "OAUTH2",
        "access_token": "t",
        "raw": {"access_token": "t"},
    }


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2030-01-02T03:04:05Z", "2030-01-02T03:04:05.000Z"),
        ("2030-01-02T03:04:05.123Z", "2030-01-02T03:04:05.123Z"),
        ("2030-01-02T05:04:05.5+02:00", "2030-01-02T03:04:05.500Z"),
        ("2030-01-01T19:04:05-08:00", "2030-01-02T03:04:05.000Z"),
        ("2030-01-02", "2030-01-02T00:00:00.000Z"),
        ("2030-01-02T03:04:05", "2030-01-02T03:04:05.000Z"),
        (1893553445, "2030-01-02T03:04:05.000Z"),
        (1893553445.25, "2030-01-02T03:04:05.250Z"),
    ],
)
async def test_expires_at_is_normalised_to_iso_z(
    authgate: Authgate, given: str | float, stored: str
) -> None:
    await authgate.integration("oauth", "fake-oauth")
    credentials = {"type": "OAUTH2", "access_token": "t", "expires_at": given}
    status, payload, _ = await send(
        authgate, "/connections", body=import_body(credentials=credentials)
    )
    assert status == 201, payload
    assert payload["credentials"]["expires_at"] == stored
    assert payload["credentials"]["raw"]["expires_at"] == stored


@pytest.mark.parametrize(
    "connection_id",
    ["user@example.com", '{"tenant":"a b"}', "a/b|c$d;e=f+g~h[i]", "x" * 255, "'quoted'\\"],
)
async def test_legacy_connection_id_characters_are_accepted(
    authgate: Authgate, connection_id: str
) -> None:
    await authgate.integration("oauth", "fake-oauth")
    body = import_body(
        connection_id=connection_id, connection_config={"port": str(authgate.provider_port)}
    )
    status, payload, _ = await send(authgate, "/connections", body=body)
    assert status == 201, payload
    assert payload["connection_id"] == connection_id
    assert await injected_authorization(authgate, connection_id) == "Bearer at-replacement"


async def test_connection_id_is_a_generated_uuid_v4_when_absent(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    seen = set()
    for token in ("gen-1", "gen-2"):
        body = import_body(
            credentials={"type": "OAUTH2", "access_token": token},
            connection_config={"port": str(authgate.provider_port)},
        )
        del body["connection_id"]
        status, payload, _ = await send(authgate, "/connections", body=body)
        assert status == 201
        connection_id = payload["connection_id"]
        assert UUID_V4.match(connection_id), connection_id
        assert uuid.UUID(connection_id).version == 4
        assert await injected_authorization(authgate, connection_id) == f"Bearer {token}"
        seen.add(connection_id)
    assert len(seen) == 2


async def test_upsert_overwrites_and_the_proxy_injects_the_new_token(authgate: Authgate) -> None:
    await oauth_with_connection(authgate)  # the proxy has read and cached conn-1 already
    status, second, _ = await send(
        authgate,
        "/connections",
        body=import_body(
            credentials={"type": "OAUTH2", "access_token": "at-second", "refresh_token": "rt-2"},
            connection_config={"port": str(authgate.provider_port)},
            metadata={"v": 2},
        ),
    )
    assert status == 201
    assert second["credentials"]["access_token"] == "at-second"
    assert second["metadata"] == {"v": 2}
    assert await injected_authorization(authgate) == "Bearer at-second"
    # Once more, so the overwrite is not a one-off of the first cache fill.
    status, third, _ = await send(
        authgate,
        "/connections",
        body=import_body(
            credentials={"type": "OAUTH2", "access_token": "at-third"},
            connection_config={"port": str(authgate.provider_port)},
        ),
    )
    assert status == 201
    assert third["id"] == second["id"]
    assert third["created_at"] == second["created_at"]
    assert third["metadata"] == {}  # every field is overwritten, not merged
    assert "refresh_token" not in third["credentials"]
    assert await injected_authorization(authgate) == "Bearer at-third"


async def test_basic_with_empty_password_and_api_key(authgate: Authgate) -> None:
    await authgate.integration("basic", "fake-basic")
    await authgate.integration("keyed", "fake-api-key")
    config = {"port": str(authgate.provider_port)}
    status, payload, _ = await send(
        authgate,
        "/connections",
        body={
            "provider_config_key": "basic",
            "connection_id": "b",
            "credentials": {"type": "BASIC", "username": "ann", "password": ""},
            "connection_config": config,
        },
    )
    assert status == 201, payload
    assert payload["credentials"] == {"type": "BASIC", "username": "ann", "password": ""}
    expected = "Basic " + base64.b64encode(b"ann:").decode()
    assert await injected_authorization(authgate, "b", "basic") == expected
    status, payload, _ = await send(
        authgate,
        "/connections",
        body={
            "provider_config_key": "keyed",
            "connection_id": "k",
            "credentials": {"type": "API_KEY", "apiKey": "key-1"},
            "connection_config": config,
        },
    )
    assert status == 201
    assert payload["credentials"] == {"type": "API_KEY", "apiKey": "key-1"}


async def test_tags_keys_are_lower_cased_and_values_kept(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    tags = {f"Key{i}": f"Value{i}" for i in range(9)}
    tags["A" + "b" * 63] = "x" * 255  # 64-character key, 255-character value
    status, payload, _ = await send(authgate, "/connections", body=import_body(tags=tags))
    assert status == 201, payload
    assert payload["tags"] == {key.lower(): value for key, value in tags.items()}
    assert len(payload["tags"]) == 10


@pytest.mark.parametrize("url", ["", "https://hooks.example.com/x?y=1", "http://93.184.215.14/h"])
async def test_public_webhook_url_override_is_accepted(authgate: Authgate, url: str) -> None:
    await authgate.integration("oauth", "fake-oauth")
    status, payload, _ = await send(
        authgate, "/connections", body=import_body(webhook_url_override=url)
    )
    assert status == 201, payload


# --- POST /connections: refused, and nothing stored --------------------------------------


async def test_unknown_integration_is_404(authgate: Authgate) -> None:
    await oauth_with_connection(authgate)
    status, payload, _ = await send(
        authgate, "/connections", body=import_body(provider_config_key="nope")
    )
    assert status == 404
    assert payload == {"error": {"code": "not_found", "message": "Integration does not exist"}}
    assert await injected_authorization(authgate, "conn-1", "nope") is None
    await assert_unchanged(authgate)


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"type": "API_KEY", "apiKey": "k"}, "Provider OAUTH2 does not support API_KEY auth"),
        (
            {"type": "BASIC", "username": "u", "password": "p"},
            "Provider OAUTH2 does not support BASIC auth",
        ),
        ({"type": "NONE"}, "Provider OAUTH2 does not support NONE auth"),
        (
            {"type": "OAUTH1", "oauth_token": "a", "oauth_token_secret": "b"},
            "Provider OAUTH2 does not support OAUTH1 auth",
        ),
    ],
)
async def test_credential_type_must_match_the_provider(
    authgate: Authgate, credentials: dict[str, Any], message: str
) -> None:
    await oauth_with_connection(authgate)
    for connection_id in ("conn-1", "new-one"):
        status, payload, _ = await send(
            authgate,
            "/connections",
            body=import_body(connection_id=connection_id, credentials=credentials),
        )
        assert_business_error(status, payload, message)
    assert await injected_authorization(authgate, "new-one") is None
    await assert_unchanged(authgate)


LONG = "x" * 256
ABSENT: Any = object()  # a key the body leaves out
DEEP: Any = {"d": {"d": {}}}
for _ in range(70):
    DEEP = {"d": DEEP}
BAD_IMPORTS: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("no credentials", {"credentials": ABSENT}, ["credentials"], "invalid_type"),
    ("credentials array", {"credentials": []}, ["credentials"], "invalid_type"),
    ("no type", {"credentials": {"access_token": "t"}}, ["credentials", "type"], "invalid_union"),
    (
        "unknown type",
        {"credentials": {"type": "MAGIC", "access_token": "t"}},
        ["credentials", "type"],
        "invalid_union",
    ),
    (
        "lower-case type",
        {"credentials": {"type": "oauth2", "access_token": "t"}},
        ["credentials", "type"],
        "invalid_union",
    ),
    (
        "no access_token",
        {"credentials": {"type": "OAUTH2"}},
        ["credentials", "access_token"],
        "invalid_type",
    ),
    (
        "empty access_token",
        {"credentials": {"type": "OAUTH2", "access_token": ""}},
        ["credentials", "access_token"],
        "too_small",
    ),
    (
        "numeric access_token",
        {"credentials": {"type": "OAUTH2", "access_token": 12345}},
        ["credentials", "access_token"],
        "invalid_type",
    ),
    (
        "null refresh_token",
        {"credentials": {"type": "OAUTH2", "access_token": "t", "refresh_token": None}},
        ["credentials", "refresh_token"],
        "invalid_type",
    ),
    (
        "no apiKey",
        {"credentials": {"type": "API_KEY", "api_key": "k"}},
        ["credentials", "apiKey"],
        "invalid_type",
    ),
    (
        "no password",
        {"credentials": {"type": "BASIC", "username": "u"}},
        ["credentials", "password"],
        "invalid_type",
    ),
    (
        "unknown credential key",
        {"credentials": {"type": "OAUTH2", "access_token": "t", "raw": {}}},
        ["credentials"],
        "unrecognized_keys",
    ),
    (
        "bad config_override",
        {"credentials": {"type": "OAUTH2", "access_token": "t", "config_override": {"x": "y"}}},
        ["credentials", "config_override"],
        "unrecognized_keys",
    ),
    (
        "config_override not an object",
        {"credentials": {"type": "OAUTH2", "access_token": "t", "config_override": "c"}},
        ["credentials", "config_override"],
        "invalid_type",
    ),
    *[
        (
            f"expires_at {value!r}",
            {"credentials": {"type": "OAUTH2", "access_token": "t", "expires_at": value}},
            ["credentials", "expires_at"],
            "invalid_type",
        )
        for value in any_of(
            "not a date",
            "",
            "2030-13-01",
            "2030-01-01T25:00:00Z",
            True,
            None,
            {},
            [],
            1e20,
            -1e20,
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
        )
    ],
    (
        "no provider_config_key",
        {"provider_config_key": None},
        ["provider_config_key"],
        "invalid_type",
    ),
    ("empty provider_config_key", {"provider_config_key": ""}, ["provider_config_key"], ""),
    ("empty connection_id", {"connection_id": ""}, ["connection_id"], ""),
    ("long connection_id", {"connection_id": LONG}, ["connection_id"], "too_big"),
    ("numeric connection_id", {"connection_id": 1}, ["connection_id"], "invalid_type"),
    ("connection_id with a newline", {"connection_id": "a\nb"}, ["connection_id"], ""),
    ("connection_id, trailing newline", {"connection_id": "conn-1\n"}, ["connection_id"], ""),
    ("connection_id with NUL", {"connection_id": "conn\u00001"}, ["connection_id"], ""),
    ("connection_id with é", {"connection_id": "café"}, ["connection_id"], "invalid_format"),
    (
        "provider_config_key, trailing newline",
        {"provider_config_key": "oauth\n"},
        ["provider_config_key"],
        "",
    ),
    (
        "provider_config_key with a slash",
        {"provider_config_key": "o/auth"},
        ["provider_config_key"],
        "",
    ),
    ("metadata string", {"metadata": "m"}, ["metadata"], "invalid_type"),
    ("metadata array", {"metadata": [1]}, ["metadata"], "invalid_type"),
    ("connection_config array", {"connection_config": []}, ["connection_config"], "invalid_type"),
    ("end_user string", {"end_user": "u"}, ["end_user"], "invalid_type"),
    ("webhook_url_override number", {"webhook_url_override": 5}, ["webhook_url_override"], ""),
    ("unknown top-level key", {"provider": "fake-oauth"}, [], "unrecognized_keys"),
    (
        "webhook_url_override not a url",
        {"webhook_url_override": "not a url"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override ftp://example.com/h",
        {"webhook_url_override": "ftp://example.com/h"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override http://localhost:3000/h",
        {"webhook_url_override": "http://localhost:3000/h"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override http://127.0.0.1/h",
        {"webhook_url_override": "http://127.0.0.1/h"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override http://10.1.2.3/h",
        {"webhook_url_override": "http://10.1.2.3/h"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override http://192.168.0.9/h",
        {"webhook_url_override": "http://192.168.0.9/h"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override http://169.254.169.254/h",
        {"webhook_url_override": "http://169.254.169.254/h"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override http://[::1]/h",
        {"webhook_url_override": "http://[::1]/h"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override http://[::ffff:10.0.0.1]/h",
        {"webhook_url_override": "http://[::ffff:10.0.0.1]/h"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override https://api.nango.dev/webhook",
        {"webhook_url_override": "https://api.nango.dev/webhook"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    (
        "webhook_url_override https://NANGO.DEV./webhook",
        {"webhook_url_override": "https://NANGO.DEV./webhook"},
        ["webhook_url_override"],
        "invalid_format",
    ),
    ("tag key, trailing newline", {"tags": {"env\n": "v"}}, ["tags", "env\n"], ""),
    ("tag value with NUL", {"tags": {"env": "v\u0000"}}, ["tags", "env"], "invalid_format"),
    ("metadata too deep", {"metadata": DEEP}, ["metadata", *["d"] * 63], "too_big"),
    ("tags not an object", {"tags": ["a"]}, ["tags"], "invalid_type"),
    ("tag key starts with a digit", {"tags": {"1abc": "v"}}, ["tags", "1abc"], ""),
    ("tag key with a space", {"tags": {"a b": "v"}}, ["tags", "a b"], ""),
    ("tag key too long", {"tags": {"a" * 65: "v"}}, ["tags", "a" * 65], ""),
    ("empty tag value", {"tags": {"k": ""}}, ["tags", "k"], "too_small"),
    ("long tag value", {"tags": {"k": LONG}}, ["tags", "k"], "too_big"),
    ("numeric tag value", {"tags": {"k": 1}}, ["tags", "k"], "invalid_type"),
    ("eleven tags", {"tags": {f"k{i}": "v" for i in range(11)}}, ["tags"], "too_big"),
]


@pytest.mark.parametrize(
    ("changes", "path", "code"),
    [case[1:] for case in BAD_IMPORTS],
    ids=[case[0] for case in BAD_IMPORTS],
)
async def test_bad_imports_name_the_field_and_store_nothing(
    authgate: Authgate, changes: dict[str, Any], path: list[str], code: str
) -> None:
    await oauth_with_connection(authgate)
    body = {key: value for key, value in import_body(**changes).items() if value is not ABSENT}
    status, payload, _ = await send(authgate, "/connections", body=body)
    assert_invalid_body(status, payload, path, code or None)
    await assert_unchanged(authgate)


async def test_duplicate_tag_keys_after_lower_casing(authgate: Authgate) -> None:
    await oauth_with_connection(authgate)
    status, payload, _ = await send(
        authgate, "/connections", body=import_body(tags={"Env": "a", "ENV": "b"})
    )
    assert status == 400
    issues = payload["error"]["errors"]
    assert len(issues) == 1
    assert issues[0]["path"][0] == "tags"
    assert issues[0]["message"].startswith("Duplicate tag key after case normalization")
    await assert_unchanged(authgate)


async def test_invalid_end_user_email_tag(authgate: Authgate) -> None:
    await oauth_with_connection(authgate)
    status, payload, _ = await send(
        authgate, "/connections", body=import_body(tags={"end_user_email": "not-an-email"})
    )
    assert_invalid_body(status, payload, ["tags", "end_user_email"], "invalid_format")
    await assert_unchanged(authgate)


# --- junk: always a 4xx JSON error, never a 500, never a write -----------------------------


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


JUNK_BODIES: list[Any] = [
    [],
    [import_body()],
    "a string",
    "",
    0,
    -1.5,
    True,
    None,
    {},
    {"": ""},
    _deep(50),
    {"provider_config_key": "oauth", "credentials": _deep(300)},
    import_body(metadata=_deep(300)),
    import_body(connection_config=_deep(300)),
    import_body(end_user=_deep(300)),
    import_body(connection_id="c" * 100_000),
    import_body(provider_config_key="p" * 100_000),
    import_body(connection_id="a\u0000b"),
    import_body(provider_config_key="oa\u0000uth"),
    import_body(metadata={"k\u0000": "v\u0000"}),
    import_body(tags={"k": "v\u0000"}),
    import_body(end_user={"id": "\u0000"}),
    import_body(credentials={"type": "OAUTH2", "access_token": "t\u0000"}),
    *[
        import_body(**{field: junk})
        for field in ("provider_config_key", "connection_id", "webhook_url_override")
        for junk in any_of(None, 1, 1.5, True, [], {}, ["oauth"])
    ],
    *[
        import_body(**{field: junk})
        for field in ("credentials", "metadata", "connection_config", "end_user", "tags")
        for junk in any_of(None, 1, "s", True, [], [{}])
    ],
    *[
        import_body(credentials={"type": "OAUTH2", "access_token": "t", field: junk})
        for field in ("refresh_token", "expires_at", "config_override")
        for junk in any_of(None, True, [], [1], {"a": {}})
    ],
    import_body(credentials={"type": None, "access_token": "t"}),
    import_body(credentials={"type": ["OAUTH2"], "access_token": "t"}),
    import_body(credentials={"type": {"OAUTH2": 1}, "access_token": "t"}),
    import_body(tags={"k": None}),
    import_body(tags={"k": {"nested": "v"}}),
]
RAW_JUNK: list[bytes] = [
    b"\xff\xfe\x00garbage",
    b'{"provider_config_key": "\\ud800"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a": 1,}',
    b"NaN",
    b'{"provider_config_key": "oauth"} trailing',
    b"{" + b'"k": 1, ' * 10_000 + b'"z": 2}',
    b'"' + b"s" * 2_000_000 + b'"',
    *[
        b'{"provider_config_key": "oauth", "connection_id": "conn-1", "credentials":'
        b' {"type": "OAUTH2", "access_token": "t", "expires_at": ' + number + b"}}"
        for number in (b"18446744073709551615", b"-9223372036854775809", b"1e308", b"1e400")
    ],
]


async def _assert_junk_refused(authgate: Authgate, path: str, status: int, payload: Any) -> None:
    assert 400 <= status < 500, (path, status, payload)
    assert isinstance(payload["error"]["code"], str)


@pytest.mark.parametrize("path", ["/connections", "/integrations"])
async def test_junk_bodies_are_4xx_json_and_store_nothing(authgate: Authgate, path: str) -> None:
    await oauth_with_connection(authgate)
    for body in JUNK_BODIES:
        status, payload, _ = await send(authgate, path, body=body)
        await _assert_junk_refused(authgate, path, status, payload)
    for raw in RAW_JUNK:
        status, payload, _ = await send(
            authgate, path, raw=raw, headers={"Content-Type": "application/json"}
        )
        await _assert_junk_refused(authgate, path, status, payload)
    await assert_unchanged(authgate)


async def test_oversized_body_is_a_413_json_error(authgate: Authgate) -> None:
    path = "/connections"
    await oauth_with_connection(authgate)
    body = import_body(metadata={"blob": "b" * (MAX_JSON_BODY + 1)})
    status, payload, _ = await send(
        authgate, path, raw=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert status == 413
    assert payload["error"]["code"] == "payload_too_large"
    await assert_unchanged(authgate)


JUNK_INTEGRATIONS: list[dict[str, Any]] = [
    *[
        {"provider": "fake-oauth", "unique_key": "j", "credentials": OAUTH_CLIENT, field: junk}
        for field in (
            "provider",
            "unique_key",
            "display_name",
            "forward_webhooks",
            "credentials",
            "integration_config",
            "custom",
        )
        for junk in any_of(None, 0, 1.5, "", [], {}, [[]], {"a": None})
        if not (field in ("integration_config", "custom") and junk == {})
    ],
    {"provider": "fake-basic", "unique_key": "j", "display_name": "d\u0000"},
    {"provider": "fake-basic", "unique_key": "j\u0000"},
    {"provider": "fake-\u0000basic", "unique_key": "j"},
    {"provider": "fake-basic", "unique_key": "j", "display_name": "d" * 100_000},
    {
        "provider": "fake-oauth",
        "unique_key": "j",
        "credentials": {**OAUTH_CLIENT, "client_secret": _deep(300)},
    },
]


async def test_junk_integrations_are_4xx_json_and_store_nothing(authgate: Authgate) -> None:
    for body in JUNK_INTEGRATIONS:
        status, payload, _ = await send(authgate, "/integrations", body=body)
        assert 400 <= status < 500, (body, status, payload)
    await assert_integration_absent(authgate, "j")
