"""The official @nangohq/node 0.71.10 client, unchanged, against a running authgate.

Each test sets up state over HTTP (the client has no import method), runs one scenario of
client calls in one node process, and asserts on what the client returned (and, for the
proxy, on what the fake provider received). The contract is
reference/nango-management-api.md (§12 lists the client's methods) and
reference/nango-proxy.md §10.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from authgate.bootstrap import start_core
from credentials.config import CoreSettings
from tests.compat.conftest import PUBLIC_URL, UNDEFINED, NodeClient, call
from tests.e2e.conftest import Authgate
from tests.e2e.management_calls import CONNECTION_FIELDS

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
CONNECT_TOKEN = re.compile(r"^nango_connect_session_[0-9a-f]{64}$")
INTEGRATION_FIELDS = {
    "unique_key",
    "provider",
    "display_name",
    "logo",
    "forward_webhooks",
    "created_at",
    "updated_at",
}
LIST_ITEM_FIELDS = {
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
# Tell the proxy to retry at once.
NO_WAIT = {"Retry-After": "0"}
FAR_FUTURE = "2099-01-01T00:00:00.000Z"
OAUTH_TOKEN = {
    "type": "OAUTH2",
    "access_token": "at-compat-1",
    "refresh_token": "rt-compat-1",
    "expires_at": FAR_FUTURE,
}


def recent(stamp: str, *, around: timedelta = timedelta(0)) -> bool:
    assert ISO_MS_Z.match(stamp), stamp
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return abs(datetime.now(UTC) + around - moment) < timedelta(minutes=2)


def ids(listing: Any) -> list[str]:
    return [item["connection_id"] for item in listing["connections"]]


def error(code: str, message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code}
    if message is not None:
        body["message"] = message
    return {"error": body}


# --- providers ---------------------------------------------------------------------------------


async def test_providers(nango: NodeClient) -> None:
    (everything, no_query, searched, upper, one, unknown) = await nango.run(
        call("listProviders", {}),
        call("listProviders", UNDEFINED),
        call("listProviders", {"search": "fake-o"}),
        call("listProviders", {"search": "FAKE.API"}),
        call("getProvider", {"provider": "fake-oauth"}),
        call("getProvider", {"provider": "no-such-provider"}),
    )
    providers = everything.result["data"]
    names = [provider["name"] for provider in providers]
    assert {"fake-oauth", "fake-api-key", "fake-basic", "fake-nobase"} <= set(names)
    assert len(names) == len(set(names))
    for provider in providers:
        assert provider["logo_url"] == f"{PUBLIC_URL}/images/template-logos/{provider['name']}.svg"
    assert no_query.result == everything.result
    # The search is a case-insensitive regular expression over the provider name (so the
    # `.` of "FAKE.API" matches the `-`).
    assert [p["name"] for p in searched.result["data"]] == ["fake-oauth"]
    assert [p["name"] for p in upper.result["data"]] == ["fake-api-key"]

    provider = one.result["data"]
    assert provider["name"] == "fake-oauth"
    assert provider["display_name"] == "Fake OAuth"
    assert provider["auth_mode"] == "OAUTH2"
    assert provider["proxy"]["base_url"] == "http://127.0.0.1:${connectionConfig.port}"
    assert provider["logo_url"] == f"{PUBLIC_URL}/images/template-logos/fake-oauth.svg"
    assert unknown.failure(404) == error("not_found", "Unknown provider no-such-provider")


async def test_a_wrong_secret_key_is_the_legacy_401(nango: NodeClient) -> None:
    (unknown_key,) = await nango.run(call("listIntegrations", secret_key=str(uuid.uuid4())))
    assert unknown_key.failure(401) == {
        "error": {
            "message": (
                "Authentication failed. The provided authorization header does not match any "
                "account."
            ),
            "code": "unknown_account",
            "payload": {},
        }
    }


# --- integrations ------------------------------------------------------------------------------


async def test_integrations(nango: NodeClient) -> None:
    oauth_credentials = {
        "type": "OAUTH2",
        "client_id": "cid-1",
        "client_secret": "csecret-1",
        "scopes": "repo,user",
    }
    outcomes = await nango.run(
        call(
            "createIntegration",
            {
                "provider": "fake-oauth",
                "unique_key": "gh",
                "display_name": "GitHub dev",
                "credentials": oauth_credentials,
            },
        ),
        call(
            "createIntegration",
            {"provider": "fake-oauth", "unique_key": "gh", "credentials": oauth_credentials},
        ),
        call("createIntegration", {"provider": "fake-api-key", "unique_key": "keyed"}),
        call("listIntegrations"),
        call("getIntegration", {"uniqueKey": "gh"}),
        call("getIntegration", {"uniqueKey": "gh"}, {"include": ["credentials"]}),
        # The client sends only the last element of an `include` array.
        call("getIntegration", {"uniqueKey": "gh"}, {"include": ["webhook", "credentials"]}),
        call("getIntegration", {"uniqueKey": "keyed"}, {"include": ["credentials"]}),
        call(
            "updateIntegration",
            {"uniqueKey": "gh"},
            {
                "display_name": "GitHub prod",
                "credentials": {**oauth_credentials, "client_id": "cid-2", "scopes": "repo"},
            },
        ),
        call("getIntegration", {"uniqueKey": "gh"}, {"include": ["credentials"]}),
        call("updateIntegration", {"uniqueKey": "gh"}, {"unique_key": "gh-renamed"}),
        call("getIntegration", {"uniqueKey": "gh"}),
        call("createQuickstartIntegration", {"provider": "fake-oauth", "unique_key": "quick"}),
        call("createQuickstartIntegration", {"provider": "fake-api-key", "unique_key": "quick"}),
        call("deleteIntegration", "gh-renamed"),
        call("deleteIntegration", "gh-renamed"),
        call("listIntegrations"),
    )
    (
        created,
        duplicate,
        created_keyed,
        listed,
        fetched,
        with_credentials,
        include_quirk,
        api_key_credentials,
        updated,
        after_update,
        renamed,
        old_name,
        quickstart,
        quickstart_api_key,
        deleted,
        deleted_again,
        listed_after,
    ) = outcomes

    data = created.result["data"]
    assert set(created.result) == {"data"}
    assert set(data) == INTEGRATION_FIELDS
    assert data["unique_key"] == "gh"
    assert data["provider"] == "fake-oauth"
    assert data["display_name"] == "GitHub dev"
    assert data["logo"] == f"{PUBLIC_URL}/images/template-logos/fake-oauth.svg"
    assert data["forward_webhooks"] is True
    assert recent(data["created_at"])
    assert recent(data["updated_at"])

    body = duplicate.failure(400)
    assert body["error"]["code"] == "invalid_body"
    assert ["uniqueKey"] in [issue["path"] for issue in body["error"]["errors"]]

    assert created_keyed.result["data"]["display_name"] == "Fake API key"

    # The client rewraps the wire's {data: [...]} as {configs: [...]}; ordered by provider.
    configs = listed.result["configs"]
    assert set(listed.result) == {"configs"}
    assert [c["unique_key"] for c in configs] == ["keyed", "gh"]
    assert all(set(config) == INTEGRATION_FIELDS for config in configs)

    assert fetched.result == {"data": data}
    assert with_credentials.result["data"]["credentials"] == {
        "type": "OAUTH2",
        "client_id": "cid-1",
        "client_secret": "csecret-1",
        "scopes": "repo,user",
        "webhook_secret": None,
    }
    assert "webhook_url" not in include_quirk.result["data"]
    assert include_quirk.result["data"]["credentials"]["client_id"] == "cid-1"
    assert api_key_credentials.result["data"]["credentials"] is None

    assert updated.result["data"]["display_name"] == "GitHub prod"
    assert updated.result["data"]["unique_key"] == "gh"
    credentials = after_update.result["data"]["credentials"]
    assert (credentials["client_id"], credentials["scopes"]) == ("cid-2", "repo")
    assert renamed.result["data"]["unique_key"] == "gh-renamed"
    assert old_name.failure(404) == error("not_found", 'Integration "gh" does not exist')

    assert quickstart.failure(400) == error(
        "invalid_body", "No Nango-provided developer app is configured for this provider"
    )
    assert quickstart_api_key.failure(400) == error(
        "invalid_body", "Quickstart is only available for providers that require a developer app"
    )

    # deleteIntegration resolves with the AxiosResponse itself.
    assert deleted.response(200)["data"] == {"success": True}
    assert deleted_again.failure(404) == error("not_found", "Integration does not exist")
    assert [c["unique_key"] for c in listed_after.result["configs"]] == ["keyed"]


# --- connections: list -------------------------------------------------------------------------


async def test_list_connections(authgate: Authgate, nango: NodeClient) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection(
        "oauth",
        "alice-oauth",
        OAUTH_TOKEN,
        tags={"team": "Red", "end_user_email": "alice.oauth@example.com"},
        metadata={"plan": "pro"},
    )
    await authgate.connection("oauth", "bob-oauth", OAUTH_TOKEN, tags={"team": "blue"})
    await authgate.connection(
        "keyed",
        "alice-key",
        {"type": "API_KEY", "apiKey": "k-compat"},
        tags={"team": "Red"},
        end_user={"id": "user-alice", "email": "alice@example.com", "display_name": "Alice"},
    )
    outcomes = await nango.run(
        call("listConnections"),
        call("listConnections", "bob-oauth"),
        call("listConnections", UNDEFINED, "ALICE"),
        call("listConnections", UNDEFINED, UNDEFINED, {"endUserId": "user-alice"}),
        call("listConnections", UNDEFINED, UNDEFINED, {"limit": 1, "page": 1}),
        call("listConnections", {}),
        call("listConnections", {"integrationId": "keyed"}),
        call("listConnections", {"integrationId": ["keyed", "oauth"]}),
        call("listConnections", {"tags": {"Team": "Red"}}),
        call("listConnections", {"tags": {"email": "alice.oauth@example.com", "team": "Red"}}),
        call("listConnections", {"userId": "user-alice"}),
        call("listConnections", {"connectionId": "bob-oauth", "integrationId": "oauth"}),
        call("listConnections", {"limit": 2, "page": 1}),
        call("listConnections", {"connectionId": "nobody"}),
        # Polls GET /connections?endUserId=...; the connection exists, so no wait.
        call("waitForConnection", "keyed", "user-alice"),
    )
    (
        everything,
        legacy_id,
        legacy_search,
        legacy_end_user,
        legacy_page,
        empty_object,
        one_integration,
        two_integrations,
        by_tag,
        by_email_tag,
        by_user,
        id_and_integration,
        object_page,
        nobody,
        waited,
    ) = outcomes

    # Newest first.
    assert set(everything.result) == {"connections"}
    assert ids(everything.result) == ["alice-key", "bob-oauth", "alice-oauth"]
    for item in everything.result["connections"]:
        assert set(item) == LIST_ITEM_FIELDS
        assert isinstance(item["id"], int)
        assert item["errors"] == []
    first = everything.result["connections"][2]
    assert first["provider_config_key"] == "oauth"
    assert first["provider"] == "fake-oauth"
    assert first["metadata"] == {"plan": "pro"}
    assert first["tags"] == {"team": "Red", "end_user_email": "alice.oauth@example.com"}

    assert ids(legacy_id.result) == ["bob-oauth"]
    assert ids(legacy_search.result) == ["alice-key", "alice-oauth"]
    assert ids(legacy_end_user.result) == ["alice-key"]
    assert ids(legacy_page.result) == ["bob-oauth"]
    assert empty_object.result == everything.result
    assert ids(one_integration.result) == ["alice-key"]
    assert ids(two_integrations.result) == ids(everything.result)
    assert ids(by_tag.result) == ["alice-key", "alice-oauth"]
    assert ids(by_email_tag.result) == ["alice-oauth"]
    assert ids(by_user.result) == ["alice-key"]
    assert by_user.result["connections"][0]["end_user"]["id"] == "user-alice"
    assert ids(id_and_integration.result) == ["bob-oauth"]
    assert ids(object_page.result) == ["alice-oauth"]
    assert nobody.result == {"connections": []}
    assert waited.result == everything.result["connections"][0]


# --- connections: get, token, raw token, metadata ----------------------------------------------


async def test_get_connection_and_tokens(authgate: Authgate, nango: NodeClient) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.integration("keyed", "fake-api-key")
    await authgate.integration("basic", "fake-basic")
    await authgate.connection("oauth", "conn-o", OAUTH_TOKEN, metadata={"plan": "pro"})
    # No refresh token: a forced refresh is impossible and returns the stored token.
    await authgate.connection(
        "oauth", "conn-static", {"type": "OAUTH2", "access_token": "at-static"}
    )
    await authgate.connection("keyed", "conn-k", {"type": "API_KEY", "apiKey": "k-compat"})
    await authgate.connection(
        "basic", "conn-b", {"type": "BASIC", "username": "ada", "password": "pw"}
    )
    outcomes = await nango.run(
        call("getConnection", "oauth", "conn-o"),
        call("getConnection", "oauth", "conn-o", False, True),
        call("getConnection", "oauth", "conn-static", True),
        call("getConnection", "oauth", "conn-o", False, False, True),
        call("getToken", "oauth", "conn-o"),
        call("getToken", "oauth", "conn-static", True),
        call("getToken", "keyed", "conn-k"),
        call("getToken", "basic", "conn-b"),
        call("getRawTokenResponse", "oauth", "conn-o"),
        call("getRawTokenResponse", "keyed", "conn-k"),
        call("getMetadata", "oauth", "conn-o"),
        call("getMetadata", "keyed", "conn-k"),
        call("getConnection", "oauth", "nobody"),
        call("getConnection", "no-such-integration", "conn-o"),
        call("getToken", "oauth", "nobody"),
    )
    (
        connection,
        with_refresh_token,
        forced,
        github_jwt_flag,
        oauth_token,
        forced_token,
        api_key_token,
        basic_token,
        raw,
        api_key_raw,
        metadata,
        empty_metadata,
        missing,
        missing_integration,
        missing_token,
    ) = outcomes

    # The bare connection object, not wrapped in `data`.
    conn = connection.result
    assert set(conn) == CONNECTION_FIELDS
    assert conn["connection_id"] == "conn-o"
    assert conn["provider_config_key"] == "oauth"
    assert conn["provider"] == "fake-oauth"
    assert conn["metadata"] == {"plan": "pro"}
    assert conn["connection_config"] == {"port": str(authgate.provider_port)}
    assert conn["last_fetched_at"] is not None
    credentials = conn["credentials"]
    assert credentials["type"] == "OAUTH2"
    assert credentials["access_token"] == "at-compat-1"
    assert credentials["expires_at"] == FAR_FUTURE
    # Refresh tokens are stripped by default, including inside `raw`.
    assert "refresh_token" not in credentials
    assert "refresh_token" not in credentials["raw"]
    assert credentials["raw"]["access_token"] == "at-compat-1"

    shown = with_refresh_token.result["credentials"]
    assert shown["refresh_token"] == "rt-compat-1"
    assert shown["raw"]["refresh_token"] == "rt-compat-1"
    assert forced.result["credentials"]["access_token"] == "at-static"
    assert github_jwt_flag.result["credentials"]["access_token"] == "at-compat-1"

    # getToken: the access token itself for OAUTH2, the credentials object otherwise.
    assert oauth_token.result == "at-compat-1"
    assert forced_token.result == "at-static"
    assert api_key_token.result == {"type": "API_KEY", "apiKey": "k-compat"}
    assert basic_token.result == {"type": "BASIC", "username": "ada", "password": "pw"}

    assert raw.result["access_token"] == "at-compat-1"
    assert "refresh_token" not in raw.result
    assert api_key_raw.ok
    assert not api_key_raw.defined  # API_KEY credentials have no `raw`

    assert metadata.result == {"plan": "pro"}
    assert empty_metadata.result == {}

    assert missing.failure(404) == error("not_found", "Failed to find connection")
    assert missing_integration.failure(400) == error(
        "unknown_provider_config", "Provider does not exists"
    )
    assert missing_token.failure(404) == error("not_found", "Failed to find connection")


# --- metadata ----------------------------------------------------------------------------------


async def test_metadata(authgate: Authgate, nango: NodeClient) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", OAUTH_TOKEN, metadata={"old": True})
    await authgate.connection("oauth", "conn-2", OAUTH_TOKEN)
    outcomes = await nango.run(
        call("setMetadata", "oauth", "conn-1", {"plan": "pro", "seats": 5}),
        call("getMetadata", "oauth", "conn-1"),
        call("updateMetadata", "oauth", "conn-1", {"seats": 6, "region": "eu"}),
        call("getMetadata", "oauth", "conn-1"),
        call("setMetadata", "oauth", ["conn-1", "conn-2"], {"shared": {"a": 1}}),
        call("getMetadata", "oauth", "conn-1"),
        call("getMetadata", "oauth", "conn-2"),
        call("updateMetadata", "oauth", ["conn-1", "conn-2"], {"extra": "x"}),
        call("getMetadata", "oauth", "conn-2"),
        call("setMetadata", "oauth", ["conn-1", "ghost"], {"lost": True}),
        call("updateMetadata", "oauth", "ghost", {"lost": True}),
        call("getMetadata", "oauth", "conn-1"),
        call("setMetadata", "oauth", "conn-1", UNDEFINED),
    )
    (
        set_one,
        after_set,
        update_one,
        after_update,
        set_many,
        many_1,
        many_2,
        update_many,
        after_update_many,
        set_with_ghost,
        update_ghost,
        unchanged,
        client_side,
    ) = outcomes

    # setMetadata / updateMetadata resolve with the AxiosResponse; the body echoes the request.
    assert set_one.response(201)["data"] == {
        "connection_id": "conn-1",
        "provider_config_key": "oauth",
        "metadata": {"plan": "pro", "seats": 5},
    }
    assert after_set.result == {"plan": "pro", "seats": 5}
    assert update_one.response(200)["data"] == {
        "connection_id": "conn-1",
        "provider_config_key": "oauth",
        "metadata": {"seats": 6, "region": "eu"},
    }
    assert after_update.result == {"plan": "pro", "seats": 6, "region": "eu"}
    assert set_many.response(201)["data"]["connection_id"] == ["conn-1", "conn-2"]
    assert many_1.result == many_2.result == {"shared": {"a": 1}}
    assert update_many.response(200)["data"]["metadata"] == {"extra": "x"}
    assert after_update_many.result == {"shared": {"a": 1}, "extra": "x"}

    assert set_with_ghost.failure(404) == error(
        "unknown_connection",
        "Connection with connection id ghost and provider config key oauth not found. "
        "Please make sure the connection exists in the Nango dashboard. No actions were "
        "taken on any of the connections as a result of this failure.",
    )
    assert update_ghost.failure(404) == error(
        "unknown_connection",
        "Connection with connection id ghost and provider config key oauth not found. "
        "Please make sure the connection exists in the Nango dashboard",
    )
    assert unchanged.result == {"shared": {"a": 1}, "extra": "x"}  # all or nothing
    assert client_side.status is None
    assert client_side.error == "Metadata is required"


# --- connections: patch and delete -------------------------------------------------------------


async def test_patch_and_delete_connection(authgate: Authgate, nango: NodeClient) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.integration("doomed", "fake-oauth")
    await authgate.connection("oauth", "conn-1", OAUTH_TOKEN, tags={"team": "red"})
    await authgate.connection("doomed", "conn-d", OAUTH_TOKEN)
    target = {"connectionId": "conn-1", "provider_config_key": "oauth"}
    outcomes = await nango.run(
        call("patchConnection", target, {"tags": {"Team": "Core", "tier": "gold"}}),
        call("listConnections", {"connectionId": "conn-1"}),
        call(
            "patchConnection",
            target,
            {"end_user": {"id": "user-9", "email": "nine@example.com", "display_name": "Nine"}},
        ),
        call("listConnections", {"userId": "user-9"}),
        call("patchConnection", {**target, "connectionId": "ghost"}, {"tags": {"a": "b"}}),
        call("patchConnection", {**target, "provider_config_key": "nope"}, {"tags": {"a": "b"}}),
        call("deleteConnection", "oauth", "conn-1"),
        call("getConnection", "oauth", "conn-1"),
        call("deleteConnection", "oauth", "conn-1"),
        call("deleteIntegration", "doomed"),
        call("getConnection", "doomed", "conn-d"),
        call("listConnections"),
    )
    (
        patched_tags,
        after_tags,
        patched_user,
        after_user,
        patch_ghost,
        patch_no_integration,
        deleted,
        get_deleted,
        delete_again,
        integration_deleted,
        cascaded,
        remaining,
    ) = outcomes

    assert patched_tags.result == {"success": True}
    # Tags are replaced, not merged; keys lower-cased, values kept.
    assert after_tags.result["connections"][0]["tags"] == {"team": "Core", "tier": "gold"}
    assert patched_user.result == {"success": True}
    (item,) = after_user.result["connections"]
    assert item["connection_id"] == "conn-1"
    assert item["end_user"]["id"] == "user-9"
    assert item["end_user"]["email"] == "nine@example.com"
    assert item["tags"] == {
        "end_user_id": "user-9",
        "end_user_email": "nine@example.com",
        "end_user_display_name": "Nine",
    }
    assert patch_ghost.failure(404) == error("not_found", "Failed to find connection")
    assert patch_no_integration.failure(400) == error(
        "unknown_provider_config", "Provider does not exists"
    )

    # deleteConnection resolves with the AxiosResponse.
    assert deleted.response(200)["data"] == {"success": True}
    assert get_deleted.failure(404) == error("not_found", "Failed to find connection")
    assert delete_again.failure(400) == {"error": {"code": "unknown_connection"}}
    assert integration_deleted.response(200)["data"] == {"success": True}
    assert cascaded.failure(400) == error("unknown_provider_config", "Provider does not exists")
    assert remaining.result == {"connections": []}


# --- connect sessions --------------------------------------------------------------------------


async def test_connect_sessions(authgate: Authgate, nango: NodeClient) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", OAUTH_TOKEN)
    end_user = {"id": "user-1", "email": "one@example.com", "display_name": "One"}
    outcomes = await nango.run(
        call("createConnectSession", {"end_user": end_user, "allowed_integrations": ["oauth"]}),
        call("createConnectSession", {"tags": {"project": "p-1"}}),
        call("createConnectSession", {"end_user": end_user, "allowed_integrations": ["nope"]}),
        call("createConnectSession", {}),
        call("createReconnectSession", {"connection_id": "conn-1", "integration_id": "oauth"}),
        call("createReconnectSession", {"connection_id": "ghost", "integration_id": "oauth"}),
    )
    (session, tagged, unknown_integration, empty, reconnect, reconnect_ghost) = outcomes

    for outcome in (session, tagged, reconnect):
        body = outcome.result
        assert set(body) == {"data"}, body
        assert set(body["data"]) == {"token", "connect_link", "expires_at"}
        token = body["data"]["token"]
        assert CONNECT_TOKEN.match(token), token
        assert body["data"]["connect_link"].endswith(f"?session_token={token}")
        assert recent(body["data"]["expires_at"], around=timedelta(minutes=30))
    assert len({o.result["data"]["token"] for o in (session, tagged, reconnect)}) == 3

    body = unknown_integration.failure(400)
    assert body["error"]["code"] == "invalid_body"
    assert {"path": ["allowed_integrations", "0"], "message": "Integration does not exist"} in [
        {"path": issue["path"], "message": issue["message"]} for issue in body["error"]["errors"]
    ]
    assert empty.failure(400)["error"]["code"] == "invalid_body"
    assert reconnect_ghost.failure(400) == error(
        "invalid_body", "ConnectionID or IntegrationId does not exists"
    )


# --- environment variables ---------------------------------------------------------------------


async def test_environment_variables(authgate: Authgate, nango: NodeClient) -> None:
    (none,) = await nango.run(call("getEnvironmentVariables"))
    assert none.result == []

    # No public endpoint writes variables (the dashboard does in Nango); use the store.
    core = await start_core(CoreSettings.from_env(authgate.environ), lambda _: None)
    try:
        environment = await core.store.get_environment("dev")
        assert environment is not None
        await core.store.set_environment_variable(environment.id, "API_BASE", "https://x.test")
        await core.store.set_environment_variable(environment.id, "FEATURE", "on")
    finally:
        await core.close()

    (some,) = await nango.run(call("getEnvironmentVariables"))
    assert sorted(some.result, key=lambda v: v["name"]) == [
        {"name": "API_BASE", "value": "https://x.test"},
        {"name": "FEATURE", "value": "on"},
    ]


# --- proxy -------------------------------------------------------------------------------------


def _json_response(
    status: int, payload: Any, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


async def test_proxy_methods_reach_the_provider(authgate: Authgate, nango: NodeClient) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.integration("keyed", "fake-api-key")
    await authgate.connection("oauth", "conn-1", OAUTH_TOKEN)
    await authgate.connection(
        "keyed",
        "conn-k",
        {"type": "API_KEY", "apiKey": "k-compat"},
        connection_config={"tenant": "acme"},
    )
    binary = bytes(range(256)) * 4

    async def created(request: web.Request) -> web.StreamResponse:
        return _json_response(201, {"id": 7, "name": "x"})

    async def no_content(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def blob(request: web.Request) -> web.StreamResponse:
        return web.Response(body=binary, content_type="application/octet-stream")

    authgate.provider.respond("/items", created)
    authgate.provider.respond("/items/7", no_content)
    authgate.provider.respond("/blob", blob)
    oauth = {"providerConfigKey": "oauth", "connectionId": "conn-1"}
    outcomes = await nango.run(
        call(
            "proxy",
            {
                **oauth,
                "endpoint": "/users/octocat",
                "params": {"per_page": "5", "q": "a b"},
                "headers": {"X-Custom": "v1", "Accept": "application/vnd.test+json"},
            },
        ),
        call("get", {**oauth, "endpoint": "repos", "params": "?page=2&sort=asc"}),
        call("post", {**oauth, "endpoint": "/items", "data": {"name": "x", "n": 1}}),
        call(
            "put",
            {
                **oauth,
                "endpoint": "/upload",
                "data": binary,
                "headers": {"Content-Type": "application/octet-stream"},
            },
        ),
        call("patch", {**oauth, "endpoint": "/items/7", "data": {"name": "y"}}),
        call("delete", {**oauth, "endpoint": "/items/7"}),
        call("delete", {**oauth, "endpoint": "/items/8", "data": {"reason": "dup"}}),
        call(
            "proxy",
            {
                **oauth,
                "method": "POST",
                "endpoint": "/form",
                "data": "a=1&b=2",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
        ),
        call("get", {**oauth, "endpoint": "/blob", "responseType": "arraybuffer"}),
        call(
            "get",
            {"providerConfigKey": "keyed", "connectionId": "conn-k", "endpoint": "/things"},
        ),
    )
    (
        proxied,
        got,
        posted,
        put,
        patched,
        deleted,
        deleted_with_body,
        form,
        downloaded,
        api_key,
    ) = outcomes
    received = authgate.provider.received
    assert len(received) == len(outcomes)
    (
        r_proxy,
        r_get,
        r_post,
        r_put,
        r_patch,
        r_delete,
        r_delete_body,
        r_form,
        r_blob,
        r_api_key,
    ) = received

    # proxy(): GET by default; params appended by the client; custom headers unprefixed.
    assert proxied.response(200)["data"] == {
        "method": "GET",
        "path": "/users/octocat?per_page=5&q=a+b",
        "size": 0,
    }
    assert proxied.result["headers"]["content-type"].startswith("application/json")
    assert (r_proxy.method, r_proxy.raw_path) == ("GET", "/users/octocat?per_page=5&q=a+b")
    assert r_proxy.header("X-Custom") == "v1"
    assert r_proxy.header("Accept") == "application/vnd.test+json"
    assert r_proxy.header("Authorization") == "Bearer at-compat-1"
    for name in r_proxy.header_names():
        assert not name.startswith("nango-"), name
    for control in ("connection-id", "provider-config-key", "base-url-override", "retries"):
        assert control not in r_proxy.header_names()

    assert got.response(200)["data"]["path"] == "/repos?page=2&sort=asc"
    assert (r_get.method, r_get.raw_path) == ("GET", "/repos?page=2&sort=asc")

    # The provider's real status and its parsed JSON come back.
    assert posted.response(201)["data"] == {"id": 7, "name": "x"}
    assert (r_post.method, r_post.raw_path) == ("POST", "/items")
    assert r_post.body == b'{"name":"x","n":1}'
    assert r_post.header("Content-Type") == "application/json"

    assert put.response(200)["data"] == {"method": "PUT", "path": "/upload", "size": 1024}
    assert (r_put.method, r_put.body) == ("PUT", binary)
    assert r_put.header("Content-Type") == "application/octet-stream"

    assert patched.response(204)["data"] == ""
    assert (r_patch.method, r_patch.raw_path, orjson.loads(r_patch.body)) == (
        "PATCH",
        "/items/7",
        {"name": "y"},
    )
    assert deleted.response(204)["data"] == ""
    assert (r_delete.method, r_delete.raw_path, r_delete.body) == ("DELETE", "/items/7", b"")
    assert deleted_with_body.response(200)["data"]["method"] == "DELETE"
    assert orjson.loads(r_delete_body.body) == {"reason": "dup"}

    assert form.response(200)["data"]["method"] == "POST"
    assert r_form.body == b"a=1&b=2"
    assert r_form.header("Content-Type") == "application/x-www-form-urlencoded"

    assert downloaded.response(200)["data"] == binary
    assert r_blob.raw_path == "/blob"

    # API_KEY: the provider's header and query templates, under the provider's base path.
    assert api_key.response(200)["data"]["path"] == "/api/things?key=k-compat"
    assert r_api_key.header("x-api-key") == "k-compat"
    assert r_api_key.header("x-tenant") == "acme"
    assert r_api_key.header("Authorization") is None

    # The secret key never reaches the provider, in any header, path or body.
    for request in received:
        assert authgate.secret_key not in request.raw_path
        assert authgate.secret_key.encode() not in request.body
        for _, value in request.headers:
            assert authgate.secret_key not in value


async def test_proxy_errors_surface_as_axios_errors(authgate: Authgate, nango: NodeClient) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", OAUTH_TOKEN)

    async def unprocessable(request: web.Request) -> web.StreamResponse:
        return _json_response(422, {"errors": [{"field": "name", "problem": "taken"}]})

    authgate.provider.respond("/invalid", unprocessable)
    oauth = {"providerConfigKey": "oauth", "connectionId": "conn-1"}
    outcomes = await nango.run(
        call("get", {**oauth, "connectionId": "user-123", "endpoint": "/x"}),
        call("get", {**oauth, "providerConfigKey": "github", "endpoint": "/x"}),
        call("post", {**oauth, "endpoint": "/invalid", "data": {"name": "taken"}}),
        call("get", {**oauth, "endpoint": "/x"}, secret_key=str(uuid.uuid4())),
        call("proxy", {"providerConfigKey": "oauth", "endpoint": "/x"}),
    )
    (unknown_connection, unknown_integration, provider_422, bad_key, client_side) = outcomes

    assert unknown_connection.failure(404) == error(
        "unknown_connection",
        "Connection not found for connection_id: user-123 and provider_config_key: oauth",
    )
    assert unknown_connection.headers.get("x-authgate-error") == "unknown_connection"
    assert unknown_integration.failure(404)["error"]["code"] == "unknown_connection"

    # A provider error is passed through untouched, and is not marked as authgate's.
    assert provider_422.failure(422) == {"errors": [{"field": "name", "problem": "taken"}]}
    assert "x-authgate-error" not in provider_422.headers
    assert bad_key.failure(401)["error"]["code"] == "unknown_account"
    assert client_side.status is None
    assert client_side.error == "connectionId is missing and is required to make a proxy call!"
    # Only the 422 reached the provider.
    assert [r.raw_path for r in authgate.provider.received] == ["/invalid"]


async def test_proxy_retries_and_retry_on(authgate: Authgate, nango: NodeClient) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", OAUTH_TOKEN)
    flaky_answers = iter([409, 503, 200])
    conflict_answers = iter([409, 200])

    async def flaky(request: web.Request) -> web.StreamResponse:
        status = next(flaky_answers)
        return _json_response(status, {"attempt_status": status}, NO_WAIT)

    async def conflict(request: web.Request) -> web.StreamResponse:
        status = next(conflict_answers)
        return _json_response(status, {"attempt_status": status}, NO_WAIT)

    authgate.provider.respond("/flaky", flaky)
    authgate.provider.respond("/conflict", conflict)
    oauth = {"providerConfigKey": "oauth", "connectionId": "conn-1"}
    outcomes = await nango.run(
        # 409 is retryable only because of retryOn; 503 by default.
        call(
            "post",
            {**oauth, "endpoint": "/flaky", "data": {"n": 1}, "retries": 3, "retryOn": [409]},
        ),
        # Without retryOn the 409 comes straight back, retries notwithstanding.
        call("get", {**oauth, "endpoint": "/conflict", "retries": 3}),
    )
    (recovered, not_retried) = outcomes
    assert recovered.response(200)["data"] == {"attempt_status": 200}
    flaky_calls = [r for r in authgate.provider.received if r.raw_path == "/flaky"]
    assert [r.method for r in flaky_calls] == ["POST"] * 3
    assert [r.body for r in flaky_calls] == [b'{"n":1}'] * 3
    assert not_retried.failure(409) == {"attempt_status": 409}
    assert len([r for r in authgate.provider.received if r.raw_path == "/conflict"]) == 1
