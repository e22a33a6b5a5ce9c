"""Connections through the management API, end to end (§7.1 to 7.6): list, read, patch,
delete and the deprecated flat import, on a real `authgate serve` with SQLite and
PostgreSQL stores. The proxy is the witness that a change took effect at once.

Requests are written the way `@nangohq/node` 0.71.10 sends them: its exact query
strings, `Content-Type: application/json` on GET and DELETE without a body, ids in the
path exactly as the caller wrote them.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from yarl import URL

from credentials.models import Environment
from tests.e2e.conftest import Authgate, json_of
from tests.e2e.management_calls import CONNECTION_FIELDS, NO_BODY, assert_error
from tests.e2e.management_calls import call as shared_call

ORIGINAL_TOKEN = "at-original-0001"
BOOLEAN_MESSAGE = (
    'Invalid option: expected one of "true"|"1"|"yes"|"on"|"y"|"enabled"|"false"|"0"|"no"'
    '|"off"|"n"|"disabled"'
)
ISO_MS_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+00:00$")
POSTGRES_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d*[1-9])?\+00:00$")
UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
LIST_FIELDS = {
    "id",
    "connection_id",
    "provider_config_key",
    "provider",
    "created",
    "metadata",
    "tags",
    "errors",
    "end_user",
}
# What @nangohq/node adds to every request, and the JSON type it sends even without a body.
NODE_HEADERS = {
    "User-Agent": "nango-node-client/0.71.10 (linux/6.8.0; node.js/v22.11.0)",
    "Nango-Is-Sync": "false",
    "Nango-Is-Script": "false",
    "Nango-Is-Dry-Run": "false",
    "Content-Type": "application/json",
}


# --- helpers -----------------------------------------------------------------------------


async def call(authgate: Authgate, method: str, target: str, **options: Any) -> tuple[int, Any]:
    """`management_calls.call` with the headers @nangohq/node adds to every request."""
    headers = {**NODE_HEADERS, **(options.pop("headers", None) or {})}
    return await shared_call(authgate, method, target, headers=headers, **options)


def node_get_target(
    connection_id: str,
    key: str,
    *,
    force: str = "false",
    refresh_token: str = "false",  # noqa: S107  (a flag, not a secret)
    github_jwt: str = "false",
    base: str = "/connections",
) -> str:
    """getConnection's URL: the id unencoded in the path, all four parameters."""
    return (
        f"{base}/{connection_id}?provider_config_key={key}&force_refresh={force}"
        f"&refresh_token={refresh_token}&refresh_github_app_jwt_token={github_jwt}"
    )


async def get_connection(
    authgate: Authgate, connection_id: str = "conn-1", key: str = "oauth", **flags: str
) -> dict[str, Any]:
    status, payload = await call(authgate, "GET", node_get_target(connection_id, key, **flags))
    assert status == 200, payload
    result: dict[str, Any] = payload
    return result


async def list_connections(authgate: Authgate, query: str = "") -> list[dict[str, Any]]:
    status, payload = await call(authgate, "GET", f"/connections{query}")
    assert status == 200, payload
    assert set(payload) == {"connections"}
    items: list[dict[str, Any]] = payload["connections"]
    return items


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["connection_id"] for item in items]


def assert_issue(
    status: int, payload: Any, code: str, path: list[str], issue_code: str
) -> dict[str, Any]:
    """A validation error of `code` with an issue of `issue_code` at `path`."""
    assert_error(status, payload, 400, code)
    matching = [issue for issue in payload["error"]["errors"] if issue["path"] == path]
    assert matching, payload
    if issue_code:  # "" when any issue at `path` will do
        assert issue_code in {issue["code"] for issue in matching}, payload
    found: dict[str, Any] = matching[0]
    return found


async def injected(authgate: Authgate, connection_id: str = "conn-1", key: str = "oauth") -> Any:
    """The Authorization the proxy sends for the connection now, or None when the proxy
    answers 404 unknown_connection (nothing reached the provider)."""
    before = len(authgate.provider.received)
    response = await authgate.proxy(
        "GET", "/proxy/whoami", connection_id=connection_id, provider_config_key=key
    )
    payload = await json_of(response)
    if len(authgate.provider.received) == before:
        assert response.status == 404, payload
        assert payload["error"]["code"] == "unknown_connection"
        return None
    assert response.status == 200
    return authgate.provider.last().header("Authorization")


async def oauth_connection(authgate: Authgate, connection_id: str = "conn-1", **extra: Any) -> None:
    """Integration `oauth` with a connection holding ORIGINAL_TOKEN (and a refresh token),
    already read once by the proxy so its cache is warm."""
    env = await environment(authgate)
    if await authgate.core.store.get_integration(env.id, "oauth") is None:
        await authgate.integration("oauth", "fake-oauth")
    credentials = {"type": "OAUTH2", "access_token": ORIGINAL_TOKEN, "refresh_token": "rt-1"}
    await authgate.connection("oauth", connection_id, credentials, **extra)
    assert await injected(authgate, connection_id) == f"Bearer {ORIGINAL_TOKEN}"


async def environment(authgate: Authgate) -> Environment:
    found = await authgate.core.store.get_environment("dev")
    assert found is not None
    return found


def recent(stamp: str, pattern: re.Pattern[str] = ISO_MS_OFFSET) -> datetime:
    assert pattern.match(stamp), stamp
    moment = datetime.fromisoformat(stamp)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)
    return moment


# --- GET /connections ----------------------------------------------------------------------


async def test_list_items_have_the_list_shape_newest_first(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection("oauth", "first", {"type": "OAUTH2", "access_token": "t1"})
    await authgate.connection(
        "keyed", "second", {"type": "API_KEY", "apiKey": "k"}, metadata={"plan": "pro"}
    )
    await authgate.connection(
        "oauth", "third", {"type": "OAUTH2", "access_token": "t3"}, tags={"Env": "Prod"}
    )
    items = await list_connections(authgate)
    assert ids(items) == ["third", "second", "first"]
    for item in items:
        assert set(item) == LIST_FIELDS
        assert isinstance(item["id"], int)
        recent(item["created"], POSTGRES_TIME)
        assert item["errors"] == []
        assert item["end_user"] is None
    assert items[0]["provider_config_key"] == "oauth"
    assert items[0]["provider"] == "fake-oauth"
    assert items[0]["tags"] == {"env": "Prod"}
    assert items[1]["provider"] == "fake-api-key"
    assert items[1]["metadata"] == {"plan": "pro"}
    assert items[2]["metadata"] == {}
    assert "t1" not in repr(items)
    assert "credentials" not in repr(items)


async def test_list_is_scoped_to_the_callers_environment(
    authgate: Authgate, capsys: pytest.CaptureFixture[str]
) -> None:
    from authgate.operator import create_environment
    from credentials.config import CoreSettings

    await oauth_connection(authgate)
    assert await create_environment(CoreSettings.from_env(authgate.environ), "prod") == 0
    prod_key = capsys.readouterr().out.strip()
    response = await authgate.session.get(
        authgate.url.with_path("/connections"), headers=authgate.auth(prod_key)
    )
    assert response.status == 200
    assert await json_of(response) == {"connections": []}


async def test_list_filters(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.integration("keyed", "fake-api-key")
    await authgate.integration("other", "fake-basic")
    oauth = {"type": "OAUTH2", "access_token": "t"}
    await authgate.connection(
        "oauth",
        "shared-id",
        oauth,
        end_user={"id": "user-1", "email": "Ada@Example.com", "display_name": "Ada Lovelace"},
        tags={"env": "prod", "team": "Core"},
    )
    await authgate.connection(
        "keyed", "shared-id", {"type": "API_KEY", "apiKey": "k"}, tags={"env": "dev"}
    )
    await authgate.connection(
        "other", "lonely", {"type": "BASIC", "username": "u", "password": "p"}
    )
    store = authgate.core.store
    env = await environment(authgate)
    organization = {"id": "org-9", "display_name": "Acme"}
    await store.update_connection_fields(
        env.id, "other", "lonely", end_user={"id": "user-2", "organization": organization}
    )

    assert ids(await list_connections(authgate, "?connectionId=shared-id")) == [
        "shared-id",
        "shared-id",
    ]
    assert ids(await list_connections(authgate, "?connectionId=shared")) == []  # exact match
    # search: case-insensitive substring of the id, the end user's name or email.
    assert ids(await list_connections(authgate, "?search=ONEL")) == ["lonely"]
    assert len(await list_connections(authgate, "?search=lovelace")) == 1
    assert len(await list_connections(authgate, "?search=ada%40example")) == 1
    assert ids(await list_connections(authgate, "?search=100%25")) == []  # % is literal
    assert ids(await list_connections(authgate, "?endUserId=user-1")) == ["shared-id"]
    assert ids(await list_connections(authgate, "?endUserOrganizationId=org-9")) == ["lonely"]
    items = await list_connections(authgate, "?integrationId=keyed,+other")
    assert {item["provider_config_key"] for item in items} == {"keyed", "other"}
    items = await list_connections(authgate, "?integrationId=oauth")
    assert [item["provider_config_key"] for item in items] == ["oauth"]
    # tags: containment; keys are lowercased, values keep their case.
    items = await list_connections(authgate, "?tags%5BENV%5D=prod&tags%5Bteam%5D=Core")
    assert [item["provider_config_key"] for item in items] == ["oauth"]
    assert await list_connections(authgate, "?tags%5Bteam%5D=core") == []
    assert await list_connections(authgate, "?tags%5Benv%5D=prod&tags%5Bteam%5D=Other") == []
    # Filters combine.
    items = await list_connections(authgate, "?connectionId=shared-id&integrationId=keyed")
    assert [item["provider_config_key"] for item in items] == ["keyed"]


async def test_list_end_user_and_generated_tags(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection(
        "oauth",
        "c1",
        {"type": "OAUTH2", "access_token": "t"},
        end_user={"id": "u-1", "email": "u@example.com", "tags": {"Plan": "gold"}},
        tags={"plan": "platinum"},
    )
    [item] = await list_connections(authgate)
    assert item["end_user"] == {
        "id": "u-1",
        "display_name": None,
        "email": "u@example.com",
        "tags": {"plan": "gold"},
        "organization": None,
    }
    # Generated from the end user, then its own tags, then the explicit tags on top.
    assert item["tags"] == {
        "end_user_id": "u-1",
        "end_user_email": "u@example.com",
        "plan": "platinum",
    }


async def test_what_the_node_client_sends_to_list(authgate: Authgate) -> None:
    """listConnections({connectionId, userId, integrationId: [...], tags, limit, page}) and
    waitForConnection's `?endUserId=`: URLSearchParams, so spaces arrive as `+` and the
    tag brackets percent-encoded."""
    await authgate.integration("oauth", "fake-oauth")
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection(
        "oauth",
        "john doe",
        {"type": "OAUTH2", "access_token": "t"},
        end_user={"id": "user 42", "display_name": "John Doe", "email": "john@example.com"},
    )
    target = (
        "?connectionId=john+doe&endUserId=user+42&integrationId=oauth%2Ckeyed"
        "&tags%5Bend_user_display_name%5D=John+Doe&tags%5Bend_user_email%5D=john%40example.com"
        "&limit=100&page=0"
    )
    assert ids(await list_connections(authgate, target)) == ["john doe"]
    # waitForConnection: the first item of the integration, by end user.
    [item] = await list_connections(authgate, "?endUserId=user+42")
    assert item["provider_config_key"] == "oauth"


@pytest.mark.parametrize("path", ["/connection", "/connections/", "/connection/"])
async def test_list_aliases(authgate: Authgate, path: str) -> None:
    await oauth_connection(authgate)
    status, payload = await call(authgate, "GET", f"{path}?connectionId=conn-1")
    assert status == 200
    assert ids(payload["connections"]) == ["conn-1"]


async def test_list_pages(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    for name in ("a", "b", "c", "d", "e"):
        await authgate.connection("oauth", name, {"type": "OAUTH2", "access_token": "t"})
    assert ids(await list_connections(authgate)) == ["e", "d", "c", "b", "a"]
    assert ids(await list_connections(authgate, "?limit=2")) == ["e", "d"]
    assert ids(await list_connections(authgate, "?limit=2&page=1")) == ["c", "b"]
    assert ids(await list_connections(authgate, "?limit=2&page=2")) == ["a"]
    assert ids(await list_connections(authgate, "?limit=2&page=3")) == []
    assert ids(await list_connections(authgate, "?limit=2000&page=0")) == ["e", "d", "c", "b", "a"]
    # Without a limit a page is 10000 long, so page 1 is already past the end.
    assert ids(await list_connections(authgate, "?page=1")) == []
    # Lenient numbers, as JavaScript's Number() reads them.
    assert ids(await list_connections(authgate, "?limit=+3+&page=0x1")) == ["b", "a"]
    assert ids(await list_connections(authgate, "?limit=1e0")) == ["e"]
    # A page far past the end selects nothing (and overflows nothing).
    assert await list_connections(authgate, "?limit=2000&page=1e300") == []


async def test_without_a_limit_the_list_is_not_capped_at_the_explicit_maximum(
    authgate: Authgate,
) -> None:
    """Nango's default page is 10000 although an explicit limit stops at 2000."""
    await authgate.integration("oauth", "fake-oauth")
    env = await environment(authgate)
    store = authgate.core.store
    integration = await store.get_integration(env.id, "oauth")
    assert integration is not None
    # Seeded in SQL for speed; listing never decrypts credentials.
    await store.db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)"
        " INSERT INTO connections (environment_id, integration_id, connection_id,"
        " credentials_enc, created_at, updated_at)"
        " SELECT $2, $3, 'bulk-' || i, 'unused', 1767225600000, 1767225600000 FROM n",
        2003,
        env.id,
        integration.id,
    )
    everything = await list_connections(authgate)
    assert len(everything) == 2003
    assert everything[0]["connection_id"] == "bulk-2003"  # same created_at: newest id first
    assert everything[0]["created"] == "2026-01-01T00:00:00+00:00"
    assert len(await list_connections(authgate, "?limit=2000")) == 2000
    assert ids(await list_connections(authgate, "?limit=2000&page=1")) == [
        "bulk-3",
        "bulk-2",
        "bulk-1",
    ]


@pytest.mark.parametrize(
    ("query", "path", "issue_code", "message"),
    [
        ("?foo=1", [], "unrecognized_keys", 'Unrecognized key: "foo"'),
        ("?foo=1&_=2", [], "unrecognized_keys", 'Unrecognized keys: "foo", "_"'),
        ("?connection_id=x", [], "unrecognized_keys", 'Unrecognized key: "connection_id"'),
        ("?limit=0", ["limit"], "too_small", "Too small: expected number to be >=1"),
        ("?limit=-5", ["limit"], "too_small", "Too small: expected number to be >=1"),
        ("?limit=2001", ["limit"], "too_big", "Too big: expected number to be <=2000"),
        ("?limit=ten", ["limit"], "invalid_type", "Invalid input: expected number, received NaN"),
        ("?limit=1&limit=2", ["limit"], "invalid_type", None),
        ("?limit[a]=1", ["limit"], "invalid_type", None),
        ("?limit=Infinity", ["limit"], "invalid_type", None),
        ("?limit=1.5", ["limit"], "invalid_type", None),
        ("?page=-1", ["page"], "too_small", "Too small: expected number to be >=0"),
        ("?page=x", ["page"], "invalid_type", "Invalid input: expected number, received NaN"),
        ("?connectionId=", ["connectionId"], "too_small", None),
        ("?connectionId=a&connectionId=b", ["connectionId"], "invalid_type", None),
        ("?search=" + "s" * 256, ["search"], "too_big", None),
        ("?endUserId=", ["endUserId"], "too_small", None),
        ("?endUserOrganizationId=" + "o" * 256, ["endUserOrganizationId"], "too_big", None),
        ("?integrationId=", ["integrationId"], "too_small", None),
        ("?connectionId=a%00b", ["connectionId"], "invalid_format", None),
        ("?tags=x", ["tags"], "invalid_type", None),
        ("?tags%5B1bad%5D=x", ["tags", "1bad"], "invalid_format", None),
        ("?tags%5Bk%5D=", ["tags", "k"], "too_small", None),
        ("?tags%5Bk%5D%5Bnested%5D=x", ["tags", "k"], "invalid_type", None),
        ("?tags%5Bend_user_email%5D=nope", ["tags", "end_user_email"], "invalid_format", None),
        (
            "?" + "&".join(f"tags%5Bk{index}%5D=v" for index in range(11)),
            ["tags"],
            "too_big",
            None,
        ),
    ],
)
async def test_bad_list_queries_are_invalid_query_params(
    authgate: Authgate, query: str, path: list[str], issue_code: str, message: str | None
) -> None:
    status, payload = await call(authgate, "GET", f"/connections{query}")
    issue = assert_issue(status, payload, "invalid_query_params", path, issue_code)
    if message is not None:
        assert issue["message"] == message


async def test_every_bad_list_parameter_is_reported_at_once(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/connections?limit=0&page=-1&extra=1")
    assert status == 400
    assert sorted(issue["path"] for issue in payload["error"]["errors"]) == [
        [],
        ["limit"],
        ["page"],
    ]


# --- GET /connections/{connection_id} ------------------------------------------------------


async def test_get_returns_the_bare_connection_with_credentials(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection(
        "oauth",
        "conn-1",
        {
            "type": "OAUTH2",
            "access_token": "at-1",
            "refresh_token": "rt-1",
            "expires_at": "2030-01-02T03:04:05Z",
        },
        metadata={"plan": "pro"},
        connection_config={"region": "eu", "refreshToken": "nested-secret"},
        tags={"env": "prod"},
        webhook_url_override="https://hooks.example.com/in",
    )
    connection = await get_connection(authgate)
    assert set(connection) == CONNECTION_FIELDS
    assert connection["connection_id"] == "conn-1"
    assert connection["provider_config_key"] == "oauth"
    assert connection["provider"] == "fake-oauth"
    assert connection["errors"] == []
    assert connection["end_user"] is None
    assert connection["metadata"] == {"plan": "pro"}
    assert connection["tags"] == {"env": "prod"}
    assert connection["webhook_url_override"] == "https://hooks.example.com/in"
    # Refresh tokens are stripped by default, in the credentials, raw and the config.
    assert connection["connection_config"] == {"port": str(authgate.provider_port), "region": "eu"}
    token = {"access_token": "at-1", "expires_at": "2030-01-02T03:04:05.000Z"}
    assert connection["credentials"] == {"type": "OAUTH2", **token, "raw": token}
    created = recent(connection["created_at"])
    assert recent(connection["updated_at"]) == created
    assert recent(connection["last_fetched_at"]) >= created


async def test_refresh_token_true_returns_refresh_tokens(authgate: Authgate) -> None:
    await oauth_connection(authgate, connection_config={"refresh_token": "in-config"})
    connection = await get_connection(authgate, refresh_token="true")
    assert connection["credentials"]["refresh_token"] == "rt-1"
    assert connection["credentials"]["raw"]["refresh_token"] == "rt-1"
    assert connection["connection_config"]["refresh_token"] == "in-config"


@pytest.mark.parametrize(
    ("word", "shown"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("y", True),
        ("Enabled", True),
        ("false", False),
        ("0", False),
        ("NO", False),
        ("off", False),
        ("n", False),
        ("disabled", False),
    ],
)
async def test_flags_are_lenient_booleans(authgate: Authgate, word: str, shown: bool) -> None:
    await oauth_connection(authgate)
    connection = await get_connection(
        authgate, refresh_token=word, force=word.upper(), github_jwt=word.lower()
    )
    assert ("refresh_token" in connection["credentials"]) is shown


@pytest.mark.parametrize("flag", ["force_refresh", "refresh_token", "refresh_github_app_jwt_token"])
@pytest.mark.parametrize("word", ["maybe", "", "truee", "t", "2"])
async def test_a_bad_flag_is_invalid_value(authgate: Authgate, flag: str, word: str) -> None:
    await oauth_connection(authgate)
    status, payload = await call(
        authgate, "GET", f"/connections/conn-1?provider_config_key=oauth&{flag}={word}"
    )
    issue = assert_issue(status, payload, "invalid_query_params", [flag], "invalid_value")
    assert issue["message"] == BOOLEAN_MESSAGE


async def test_a_repeated_flag_is_invalid_value(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    target = "/connections/conn-1?provider_config_key=oauth&refresh_token=true&refresh_token=1"
    status, payload = await call(authgate, "GET", target)
    assert_issue(status, payload, "invalid_query_params", ["refresh_token"], "invalid_value")


async def test_force_refresh_returns_the_stored_token_when_refresh_cannot_happen(
    authgate: Authgate,
) -> None:
    await authgate.integration("oauth", "fake-oauth")
    expired = {"type": "OAUTH2", "access_token": "stale", "expires_at": "2020-01-01T00:00:00Z"}
    await authgate.connection("oauth", "conn-1", expired)
    connection = await get_connection(authgate, force="true", github_jwt="true")
    assert connection["credentials"]["access_token"] == "stale"
    assert connection["credentials"]["expires_at"] == "2020-01-01T00:00:00.000Z"


async def test_only_flags_and_the_key_are_accepted(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    target = "/connections/conn-1?provider_config_key=oauth&cache_buster=123"
    status, payload = await call(authgate, "GET", target)
    issue = assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")
    assert issue["message"] == 'Unrecognized key: "cache_buster"'


@pytest.mark.parametrize(
    ("query", "issue_code", "message"),
    [
        ("", "invalid_type", "Invalid input: expected string, received undefined"),
        ("?force_refresh=false", "invalid_type", None),
        ("?provider_config_key=", "invalid_format", None),
        ("?provider_config_key=o%2Fauth", "invalid_format", None),
        ("?provider_config_key=" + "k" * 256, "too_big", None),
        ("?provider_config_key=a&provider_config_key=b", "invalid_type", None),
        ("?provider_config_key%5Bx%5D=oauth", "invalid_type", None),
    ],
)
async def test_the_key_is_required_and_checked(
    authgate: Authgate, query: str, issue_code: str, message: str | None
) -> None:
    await oauth_connection(authgate)
    for method in ("GET", "DELETE", "PATCH"):
        body: Any = {} if method == "PATCH" else NO_BODY
        status, payload = await call(authgate, method, f"/connections/conn-1{query}", body=body)
        issue = assert_issue(
            status, payload, "invalid_query_params", ["provider_config_key"], issue_code
        )
        if message is not None:
            assert issue["message"] == message
    assert await injected(authgate) == f"Bearer {ORIGINAL_TOKEN}"  # not deleted


async def test_unknown_integration_and_unknown_connection(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    for base in ("/connections", "/connection"):
        status, payload = await call(authgate, "GET", node_get_target("conn-1", "nope", base=base))
        assert (status, payload) == (
            400,
            {"error": {"code": "unknown_provider_config", "message": "Provider does not exists"}},
        )
        status, payload = await call(authgate, "GET", node_get_target("nobody", "oauth", base=base))
        assert (status, payload) == (
            404,
            {"error": {"code": "not_found", "message": "Failed to find connection"}},
        )


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("user%201", "user 1"),
        ("a%2Fb%40example.com", "a/b@example.com"),
        ("%7B%22id%22%3A1%7D", '{"id":1}'),
        ("x|y$z[1]~;=,+", "x|y$z[1]~;=,+"),
        ("a'b\\c", "a'b\\c"),
    ],
)
async def test_path_ids_are_percent_decoded(authgate: Authgate, written: str, stored: str) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", stored, {"type": "OAUTH2", "access_token": "t"})
    connection = await get_connection(authgate, written)
    assert connection["connection_id"] == stored
    status, _ = await call(authgate, "DELETE", f"/connections/{written}?provider_config_key=oauth")
    assert status == 200
    assert await list_connections(authgate) == []


@pytest.mark.parametrize("written", ["caf%C3%A9", "a%25b", "a%00b", "tab%09", "x" * 256, "%ff"])
async def test_bad_path_ids_are_invalid_uri_params(authgate: Authgate, written: str) -> None:
    await oauth_connection(authgate)
    for method, query in (
        ("GET", "?provider_config_key=oauth"),
        ("DELETE", "?provider_config_key=oauth"),
        ("PATCH", "?provider_config_key=oauth"),
    ):
        body: Any = {} if method == "PATCH" else NO_BODY
        status, payload = await call(authgate, method, f"/connections/{written}{query}", body=body)
        assert_issue(status, payload, "invalid_uri_params", ["connectionId"], "")


async def test_the_query_is_checked_before_the_path(authgate: Authgate) -> None:
    status, payload = await call(authgate, "GET", "/connections/caf%C3%A9?bad=1")
    assert_error(status, payload, 400, "invalid_query_params")


async def test_get_records_the_fetch(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    first = recent((await get_connection(authgate))["last_fetched_at"])
    second = recent((await get_connection(authgate))["last_fetched_at"])
    assert second >= first


async def test_get_metadata_and_other_credential_types(authgate: Authgate) -> None:
    """getMetadata reads `.metadata` of the same GET; API_KEY and BASIC come back as
    stored, without `raw`."""
    await authgate.integration("keyed", "fake-api-key")
    await authgate.integration("basic", "fake-basic")
    await authgate.connection(
        "keyed", "k1", {"type": "API_KEY", "apiKey": "secret-key"}, metadata={"a": {"b": 1}}
    )
    await authgate.connection("basic", "b1", {"type": "BASIC", "username": "u", "password": ""})
    keyed = await get_connection(authgate, "k1", "keyed")
    assert keyed["metadata"] == {"a": {"b": 1}}
    assert keyed["credentials"] == {"type": "API_KEY", "apiKey": "secret-key"}
    basic = await get_connection(authgate, "b1", "basic", base="/connection")
    assert basic["credentials"] == {"type": "BASIC", "username": "u", "password": ""}


async def test_get_ignores_a_json_content_type_and_an_empty_body(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    url = URL(str(authgate.url).rstrip("/") + node_get_target("conn-1", "oauth"), encoded=True)
    for data in (b"", b"  "):
        response = await authgate.session.get(
            url, data=data, headers={**authgate.auth(), "Content-Type": "application/json"}
        )
        assert response.status == 200, await response.text()


# --- PATCH /connections/{connection_id} ----------------------------------------------------


async def patch(
    authgate: Authgate, body: Any, connection_id: str = "conn-1", key: str = "oauth"
) -> tuple[int, Any]:
    return await call(
        authgate, "PATCH", f"/connections/{connection_id}?provider_config_key={key}", body=body
    )


async def test_patch_links_an_end_user_and_replaces_the_tags(authgate: Authgate) -> None:
    await oauth_connection(authgate, tags={"old": "gone"})
    end_user = {
        "id": "user-7",
        "email": "grace@example.com",
        "display_name": "Grace Hopper",
        "tags": {"Team": "navy"},
    }
    status, payload = await patch(authgate, {"end_user": end_user, "tags": {"Env": "Prod"}})
    assert (status, payload) == (200, {"success": True})
    connection = await get_connection(authgate)
    assert connection["end_user"] == {
        "id": "user-7",
        "display_name": "Grace Hopper",
        "email": "grace@example.com",
        "tags": {"team": "navy"},
        "organization": None,
    }
    assert connection["tags"] == {
        "end_user_id": "user-7",
        "end_user_email": "grace@example.com",
        "end_user_display_name": "Grace Hopper",
        "team": "navy",
        "env": "Prod",
    }
    assert ids(await list_connections(authgate, "?endUserId=user-7")) == ["conn-1"]
    assert ids(await list_connections(authgate, "?search=hopper")) == ["conn-1"]


async def test_patch_tags_alone_replace_every_tag(authgate: Authgate) -> None:
    await oauth_connection(authgate, tags={"a": "1", "b": "2"})
    status, _ = await patch(authgate, {"tags": {"C": "3"}})
    assert status == 200
    assert (await get_connection(authgate))["tags"] == {"c": "3"}
    status, _ = await patch(authgate, {"tags": {}})
    assert status == 200
    assert (await get_connection(authgate))["tags"] == {}


async def test_patch_keeps_a_different_linked_end_user(authgate: Authgate) -> None:
    """Nango links the end user only when none is linked yet; the tags still follow the
    body's end user."""
    await oauth_connection(authgate, end_user={"id": "first", "email": "first@example.com"})
    status, _ = await patch(authgate, {"end_user": {"id": "second"}})
    assert status == 200
    connection = await get_connection(authgate)
    assert connection["end_user"]["id"] == "first"
    assert connection["end_user"]["email"] == "first@example.com"
    assert connection["tags"] == {"end_user_id": "second"}
    # The same end user is updated in place, and keeps its organization.
    store = authgate.core.store
    env = await environment(authgate)
    linked = {"id": "first", "organization": {"id": "org-1", "display_name": "Org"}}
    await store.update_connection_fields(env.id, "oauth", "conn-1", end_user=linked)
    status, _ = await patch(authgate, {"end_user": {"id": "first", "display_name": "First"}})
    assert status == 200
    connection = await get_connection(authgate)
    assert connection["end_user"] == {
        "id": "first",
        "display_name": "First",
        "email": None,
        "tags": None,
        "organization": {"id": "org-1", "display_name": "Org"},
    }
    assert connection["tags"] == {
        "end_user_id": "first",
        "end_user_display_name": "First",
        "organization_id": "org-1",
        "organization_display_name": "Org",
    }


async def test_patch_sets_and_clears_the_webhook_override(authgate: Authgate) -> None:
    await oauth_connection(authgate, tags={"keep": "me"})
    status, _ = await patch(authgate, {"webhook_url_override": "https://hooks.example.com/a"})
    assert status == 200
    connection = await get_connection(authgate)
    assert connection["webhook_url_override"] == "https://hooks.example.com/a"
    assert connection["tags"] == {"keep": "me"}  # tags untouched without end_user/tags
    status, _ = await patch(authgate, {"webhook_url_override": ""})
    assert status == 200
    assert (await get_connection(authgate))["webhook_url_override"] is None


@pytest.mark.parametrize("body", [NO_BODY, {}])
async def test_an_empty_patch_changes_nothing(authgate: Authgate, body: Any) -> None:
    await oauth_connection(authgate, tags={"keep": "me"}, metadata={"m": 1})
    before = await get_connection(authgate)
    status, payload = await call(
        authgate, "PATCH", "/connections/conn-1?provider_config_key=oauth", body=body
    )
    assert (status, payload) == (200, {"success": True})
    after = await get_connection(authgate)
    assert after["tags"] == {"keep": "me"}
    assert after["metadata"] == {"m": 1}
    assert after["updated_at"] == before["updated_at"]


async def test_patch_errors(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    status, payload = await patch(authgate, {"tags": {"a": "b"}}, key="nope")
    assert (status, payload) == (
        400,
        {"error": {"code": "unknown_provider_config", "message": "Provider does not exists"}},
    )
    status, payload = await patch(authgate, {"tags": {"a": "b"}}, connection_id="nobody")
    assert (status, payload) == (
        404,
        {"error": {"code": "not_found", "message": "Failed to find connection"}},
    )
    # Body before path: a bad body on a bad id is invalid_body.
    status, payload = await patch(authgate, {"nope": 1}, connection_id="caf%C3%A9")
    assert_error(status, payload, 400, "invalid_body")


@pytest.mark.parametrize(
    ("body", "path", "issue_code"),
    [
        ([], [], "invalid_type"),
        ("tags", [], "invalid_type"),
        ({"metadata": {}}, [], "unrecognized_keys"),
        ({"end_user": "u"}, ["end_user"], "invalid_type"),
        ({"end_user": {}}, ["end_user", "id"], "invalid_type"),
        ({"end_user": {"id": ""}}, ["end_user", "id"], "too_small"),
        (
            {"end_user": {"id": "u", "email": "not-an-email"}},
            ["end_user", "email"],
            "invalid_format",
        ),
        ({"end_user": {"id": "u", "organization": {}}}, ["end_user"], "unrecognized_keys"),
        (
            {"end_user": {"id": "u", "display_name": "d" * 256}},
            ["end_user", "display_name"],
            "too_big",
        ),
        (
            {"end_user": {"id": "u", "tags": {"1x": "v"}}},
            ["end_user", "tags", "1x"],
            "invalid_format",
        ),
        ({"tags": {"k": 1}}, ["tags", "k"], "invalid_type"),
        ({"tags": {"A": "1", "a": "2"}}, ["tags", "a"], "custom"),
        ({"tags": {f"k{index}": "v" for index in range(11)}}, ["tags"], "too_big"),
        (
            {"webhook_url_override": "http://127.0.0.1/h"},
            ["webhook_url_override"],
            "invalid_format",
        ),
        ({"webhook_url_override": "not a url"}, ["webhook_url_override"], "invalid_format"),
        ({"webhook_url_override": None}, ["webhook_url_override"], "invalid_type"),
    ],
)
async def test_bad_patch_bodies_are_invalid_body(
    authgate: Authgate, body: Any, path: list[str], issue_code: str
) -> None:
    await oauth_connection(authgate, tags={"keep": "me"})
    status, payload = await patch(authgate, body)
    assert_issue(status, payload, "invalid_body", path, issue_code)
    assert (await get_connection(authgate))["tags"] == {"keep": "me"}


async def test_patch_on_the_metadata_path_is_the_metadata_update(authgate: Authgate) -> None:
    """Route order: PATCH /connections/metadata never patches a connection named so."""
    await oauth_connection(authgate)
    body = {"connection_id": "conn-1", "provider_config_key": "oauth", "metadata": {"x": 1}}
    status, payload = await call(authgate, "PATCH", "/connections/metadata", body=body)
    assert (status, payload) == (200, body)


# --- DELETE /connections/{connection_id} ---------------------------------------------------


@pytest.mark.parametrize("base", ["/connections", "/connection"])
async def test_delete_is_seen_by_the_proxy_at_once(authgate: Authgate, base: str) -> None:
    await oauth_connection(authgate)
    await oauth_connection(authgate, "conn-2")
    # deleteConnection: Content-Type JSON, no body, the URL built by hand.
    status, payload = await call(authgate, "DELETE", f"{base}/conn-1?provider_config_key=oauth")
    assert (status, payload) == (200, {"success": True})
    assert await injected(authgate) is None  # the warm cache entry is gone
    status, _ = await call(authgate, "GET", node_get_target("conn-1", "oauth"))
    assert status == 404
    assert ids(await list_connections(authgate)) == ["conn-2"]
    assert await injected(authgate, "conn-2") == f"Bearer {ORIGINAL_TOKEN}"


async def test_delete_of_something_unknown_is_400_without_message(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    for target in (
        "/connections/nobody?provider_config_key=oauth",
        "/connections/conn-1?provider_config_key=nope",
        "/connection/nobody?provider_config_key=oauth",
    ):
        status, payload = await call(authgate, "DELETE", target)
        assert (status, payload) == (400, {"error": {"code": "unknown_connection"}})
    status, _ = await call(authgate, "DELETE", "/connections/conn-1?provider_config_key=oauth")
    assert status == 200
    status, payload = await call(
        authgate, "DELETE", "/connections/conn-1?provider_config_key=oauth"
    )
    assert (status, payload) == (400, {"error": {"code": "unknown_connection"}})


async def test_delete_only_takes_the_key(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    status, payload = await call(
        authgate, "DELETE", "/connections/conn-1?provider_config_key=oauth&force=true"
    )
    assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")
    assert await injected(authgate) == f"Bearer {ORIGINAL_TOKEN}"


async def test_an_import_overwrite_is_seen_by_the_proxy_at_once(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    await authgate.connection("oauth", "conn-1", {"type": "OAUTH2", "access_token": "at-new"})
    assert await injected(authgate) == "Bearer at-new"


# --- POST /connections additions -------------------------------------------------------------


async def test_import_stores_the_webhook_override_and_end_user_tags(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    response = await authgate.post_json(
        "/connections",
        {
            "provider_config_key": "oauth",
            "connection_id": "c1",
            "credentials": {"type": "OAUTH2", "access_token": "t"},
            "webhook_url_override": "https://hooks.example.com/c1",
            "end_user": {"id": "u1", "display_name": "U One"},
            "tags": {"end_user_display_name": "Override"},
        },
    )
    assert response.status == 201
    created = await json_of(response)
    assert created["webhook_url_override"] == "https://hooks.example.com/c1"
    assert created["tags"] == {"end_user_id": "u1", "end_user_display_name": "Override"}
    connection = await get_connection(authgate, "c1")
    assert connection["webhook_url_override"] == "https://hooks.example.com/c1"
    assert connection["end_user"]["display_name"] == "U One"
    # An upsert without the field (or with "") leaves no override.
    await authgate.connection("oauth", "c1", {"type": "OAUTH2", "access_token": "t"})
    assert (await get_connection(authgate, "c1"))["webhook_url_override"] is None


# --- POST /connection (deprecated flat import) ---------------------------------------------


async def legacy_import(authgate: Authgate, body: Any) -> tuple[int, Any]:
    return await call(authgate, "POST", "/connection", body=body)


def assert_legacy(status: int, payload: Any, expected: int, code: str, message: str) -> None:
    assert status == expected, payload
    assert payload == {"error": {"message": message, "code": code, "payload": {}}}


async def test_legacy_oauth2_import_echoes_and_takes_effect(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    body = {
        "provider_config_key": "oauth",
        "connection_id": "conn-1",
        "access_token": "at-legacy",
        "refresh_token": "rt-legacy",
        "expires_at": "2031-05-06T07:08:09.000Z",
        "metadata": {"source": "legacy"},
        "connection_config": {"port": str(authgate.provider_port)},
        "oauth_client_id_override": "own-client",
        "webhook_url_override": "https://hooks.example.com/legacy",
    }
    status, payload = await legacy_import(authgate, body)
    assert (status, payload) == (201, body)
    assert await injected(authgate) == "Bearer at-legacy"
    connection = await get_connection(authgate, refresh_token="true")
    credentials = connection["credentials"]
    assert credentials["access_token"] == "at-legacy"
    assert credentials["refresh_token"] == "rt-legacy"
    assert credentials["expires_at"] == "2031-05-06T07:08:09.000Z"
    assert credentials["config_override"] == {"client_id": "own-client"}
    assert credentials["raw"] == {
        "access_token": "at-legacy",
        "refresh_token": "rt-legacy",
        "expires_at": "2031-05-06T07:08:09.000Z",
    }
    assert connection["metadata"] == {"source": "legacy"}
    assert connection["webhook_url_override"] == "https://hooks.example.com/legacy"


async def test_legacy_import_fills_in_a_connection_id(authgate: Authgate) -> None:
    await authgate.integration("keyed", "fake-api-key")
    body = {"provider_config_key": "keyed", "api_key": "k-1"}
    status, payload = await legacy_import(authgate, body)
    assert status == 201
    assert UUID_V4.match(payload.pop("connection_id"))
    assert payload == body
    [item] = await list_connections(authgate)
    assert UUID_V4.match(item["connection_id"])


@pytest.mark.parametrize(
    ("extra", "expires_at"),
    [
        ({"no_expiration": True}, None),
        ({"expires_in": 3600}, "soon"),
        ({"expires_at": 1_900_000_000}, "2030-03-17T17:46:40.000Z"),
    ],
)
async def test_legacy_oauth2_expiry_forms(
    authgate: Authgate, extra: dict[str, Any], expires_at: str | None
) -> None:
    await authgate.integration("oauth", "fake-oauth")
    body = {"provider_config_key": "oauth", "connection_id": "c", "access_token": "t", **extra}
    status, _ = await legacy_import(authgate, body)
    assert status == 201
    stored = (await get_connection(authgate, "c"))["credentials"].get("expires_at")
    if expires_at == "soon":
        moment = datetime.fromisoformat(stored.replace("Z", "+00:00"))
        assert timedelta(minutes=55) < moment - datetime.now(UTC) < timedelta(minutes=65)
    else:
        assert stored == expires_at


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({}, "missing_provider_config", "Missing param 'provider_config_key'."),
        ([], "missing_provider_config", "Missing param 'provider_config_key'."),
        ({"provider_config_key": ""}, "missing_provider_config", None),
        ({"provider_config_key": "oauth"}, "missing_access_token", "Missing param 'access_token'."),
        (
            {"provider_config_key": "oauth", "access_token": "t"},
            "missing_expires_at",
            "Importing an OAuth2 token requires the 'expires_at' parameter. If the token doesn't"
            " expire pass in the 'no_expiration' parameter",
        ),
        (
            {"provider_config_key": "oauth", "access_token": "t", "expires_at": "someday"},
            "invalid_expires_at",
            "The provided 'expires_at' parameter is invalid. It should be a valid date",
        ),
        ({"provider_config_key": "keyed"}, "missing_api_key", "Missing param 'api_key'."),
        (
            {"provider_config_key": "basic", "password": "p"},
            "missing_basic_username",
            "Missing param username for basic api authentication.",
        ),
    ],
)
async def test_legacy_import_errors_use_the_legacy_envelope(
    authgate: Authgate, body: Any, code: str, message: str | None
) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.integration("keyed", "fake-api-key")
    await authgate.integration("basic", "fake-basic")
    status, payload = await legacy_import(authgate, body)
    assert status == 400, payload
    assert set(payload["error"]) == {"message", "code", "payload"}
    assert payload["error"]["code"] == code
    assert payload["error"]["payload"] == {}
    if message is not None:
        assert payload["error"]["message"] == message
    assert await list_connections(authgate) == []


async def test_legacy_import_of_an_unknown_integration(authgate: Authgate) -> None:
    status, payload = await legacy_import(
        authgate, {"provider_config_key": "nope", "access_token": "t"}
    )
    assert status == 400
    expected_payload = {"providerConfigKey": "nope", "environmentName": "dev"}
    assert payload == {
        "error": {
            "message": "There is no Provider Configuration matching this key. Please make sure"
            ' this value exists in the Nango dashboard {\n  "providerConfigKey": "nope",\n'
            '  "environmentName": "dev"\n}',
            "code": "unknown_provider_config",
            "payload": expected_payload,
        }
    }


async def test_legacy_basic_and_api_key_imports_reach_the_provider(authgate: Authgate) -> None:
    await authgate.integration("basic", "fake-basic")
    status, _ = await legacy_import(
        authgate,
        {
            "provider_config_key": "basic",
            "connection_id": "b",
            "username": "user",
            "password": "pass",
            "connection_config": {"port": str(authgate.provider_port)},
        },
    )
    assert status == 201
    assert await injected(authgate, "b", "basic") == "Basic dXNlcjpwYXNz"


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"connection_id": "caf\u00e9"}, ["connection_id"]),
        ({"connection_id": 5}, ["connection_id"]),
        ({"metadata": [1]}, ["metadata"]),
        ({"connection_config": "x"}, ["connection_config"]),
        ({"webhook_url_override": "http://10.0.0.1/h"}, ["webhook_url_override"]),
    ],
)
async def test_legacy_import_refuses_unaddressable_fields(
    authgate: Authgate, changes: dict[str, Any], path: list[str]
) -> None:
    await authgate.integration("keyed", "fake-api-key")
    body = {"provider_config_key": "keyed", "api_key": "k", **changes}
    status, payload = await legacy_import(authgate, body)
    assert_issue(status, payload, "invalid_body", path, "")
    assert await list_connections(authgate) == []


# --- no input is a 500 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/connections?%",
        "/connections?tags[[[=1",
        "/connections?tags%5B%5D=x",
        "/connections?tags%5B0%5D=x",
        "/connections?limit=%FF",
        "/connections?" + "a=&" * 1200,  # past qs's 1000-parameter limit
        "/connections?integrationId=" + ",".join(["a"] * 3000),
        "/connections?a[b][c][d][e][f][g]=1",
        "/connections/%E2%80%8B?provider_config_key=oauth",
        "/connections/conn-1?provider_config_key=%00",
        "/connections/conn-1?provider_config_key=oauth&force_refresh[]=true",
    ],
)
async def test_junk_queries_are_4xx_json(authgate: Authgate, target: str) -> None:
    await oauth_connection(authgate)
    for method in ("GET", "DELETE"):
        status, _ = await call(authgate, method, target)
        assert 400 <= status < 500 or (method, status) == ("GET", 200)
    assert await injected(authgate) == f"Bearer {ORIGINAL_TOKEN}"


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"{", "application/json"),
        (b"[1,2", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"{}", "text/plain"),
        (b"null", "application/json"),
        (b"1e999", "application/json"),
    ],
)
async def test_junk_patch_bodies_are_4xx_json(
    authgate: Authgate, raw: bytes, content_type: str
) -> None:
    await oauth_connection(authgate, tags={"keep": "me"})
    url = URL(
        str(authgate.url).rstrip("/") + "/connections/conn-1?provider_config_key=oauth",
        encoded=True,
    )
    response = await authgate.session.patch(
        url, data=raw, headers={**authgate.auth(), "Content-Type": content_type}
    )
    payload = await json_of(response)
    assert 400 <= response.status < 500 or payload == {"success": True}, payload
    assert (await get_connection(authgate))["tags"] == {"keep": "me"}


async def test_management_routes_need_the_secret_key(authgate: Authgate) -> None:
    await oauth_connection(authgate)
    for method, target in (
        ("GET", "/connections"),
        ("GET", node_get_target("conn-1", "oauth")),
        ("DELETE", "/connections/conn-1?provider_config_key=oauth"),
        ("PATCH", "/connections/conn-1?provider_config_key=oauth"),
    ):
        url = URL(str(authgate.url).rstrip("/") + target, encoded=True)
        response = await authgate.session.request(
            method,
            url,
            headers={"Authorization": f"Bearer {uuid.uuid4()}"},
            skip_auto_headers=["Content-Type"],
        )
        assert response.status == 401
        assert (await json_of(response))["error"]["code"] == "unknown_account"
    assert await injected(authgate) == f"Bearer {ORIGINAL_TOKEN}"
