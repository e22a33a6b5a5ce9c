"""The /integrations routes end to end (reference §6, §13 items 3, 4 and 11): list, get
with `include`, patch, delete, quickstart; with the proxy as the witness that deletes and
renames take effect at once, and the store as the witness of what was kept."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from credentials.models import Integration
from credentials.secret_keys import generate_secret_key, hash_secret_key
from tests.e2e.conftest import TEST_PROVIDERS, Authgate, Factory
from tests.e2e.management_calls import assert_error, assert_issue, call

EXTRA_PROVIDERS = """
hooked-oauth:
    display_name: Hooked OAuth
    auth_mode: OAUTH2
    authorization_url: https://auth.example.com/authorize
    token_url: https://auth.example.com/token
    webhook_routing_script: hookedWebhookRouting
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
fake-oauth1:
    display_name: Fake OAuth1
    auth_mode: OAUTH1
fake-tba:
    display_name: Fake TBA
    auth_mode: TBA
fake-app:
    display_name: Fake App
    auth_mode: APP
fake-custom:
    display_name: Fake Custom
    auth_mode: CUSTOM
configured-key:
    display_name: Configured key
    auth_mode: API_KEY
    integration_config:
        keyPlacement:
            type: string
            enum: [header, query]
        keyName:
            type: string
        baseUrl:
            type: string
            pattern: '^https?://'
        keyLabel:
            type: string
            optional: true
configured-two-step:
    display_name: Configured two step
    auth_mode: TWO_STEP
    integration_config:
        clientId:
            type: string
        privateKey:
            type: string
            secret: true
"""

OAUTH_CLIENT = {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"
APP_CLIENT = {"type": "APP", "app_id": "123", "app_link": "https://github.com/apps/x"}
PUBLIC_FIELDS = {
    "unique_key",
    "provider",
    "display_name",
    "logo",
    "forward_webhooks",
    "created_at",
    "updated_at",
}
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PUBLIC_URL = "http://127.0.0.1:3003"
NO_APP = "No Nango-provided developer app is configured for this provider"
NOT_QUICKSTART = "Quickstart is only available for providers that require a developer app"


@pytest.fixture
async def gate(make_authgate: Factory, tmp_path: Any) -> Authgate:
    """authgate with the e2e providers plus one of each auth mode the routes treat apart."""
    providers = tmp_path / "integration-providers.yaml"
    providers.write_text(TEST_PROVIDERS + EXTRA_PROVIDERS)
    return await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))


async def create(gate: Authgate, unique_key: str, provider: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"unique_key": unique_key, "provider": provider, **extra}
    if provider in ("fake-oauth", "hooked-oauth") and "credentials" not in extra:
        body["credentials"] = OAUTH_CLIENT
    status, payload = await call(gate, "POST", "/integrations", body=body)
    assert status == 200, payload
    data: dict[str, Any] = payload["data"]
    return data


async def get(gate: Authgate, unique_key: str, query: str = "") -> tuple[int, Any]:
    return await call(gate, "GET", f"/integrations/{unique_key}{query}")


async def patch(gate: Authgate, unique_key: str, body: Any) -> tuple[int, Any]:
    return await call(gate, "PATCH", f"/integrations/{unique_key}", body=body)


async def stored(gate: Authgate, unique_key: str) -> Integration | None:
    core = gate.core
    environment = await core.store.get_environment("dev")
    assert environment is not None
    return await core.store.get_integration(environment.id, unique_key)


async def listed_keys(gate: Authgate, key: str | None = None) -> list[str]:
    status, payload = await call(gate, "GET", "/integrations", key=key)
    assert status == 200, payload
    return [item["unique_key"] for item in payload["data"]]


async def import_connection(
    gate: Authgate, unique_key: str, connection_id: str, api_key: str
) -> None:
    await gate.connection(unique_key, connection_id, {"type": "API_KEY", "apiKey": api_key})


async def proxied_api_key(gate: Authgate, unique_key: str, connection_id: str) -> str | None:
    """The API key the proxy injects now, or None when it answers unknown_connection."""
    before = len(gate.provider.received)
    response = await gate.proxy(
        "GET", "/proxy/whoami", connection_id=connection_id, provider_config_key=unique_key
    )
    payload = await response.json(content_type=None)
    if len(gate.provider.received) == before:
        assert response.status == 404, payload
        assert payload["error"]["code"] == "unknown_connection", payload
        return None
    assert response.status == 200, payload
    return gate.provider.last().header("x-api-key")


async def other_environment_key(gate: Authgate) -> str:
    core = gate.core
    environment = await core.store.create_environment(f"other-{uuid.uuid4().hex[:8]}")
    key = generate_secret_key()
    await core.store.add_secret_key(environment.id, hash_secret_key(key), "test")
    return key


async def session_token(gate: Authgate, **body: Any) -> str:
    status, payload = await call(
        gate, "POST", "/connect/sessions", body={"end_user": {"id": "u-1"}, **body}
    )
    assert status == 201, payload
    token: str = payload["data"]["token"]
    return token


# --- GET /integrations ------------------------------------------------------------------------


async def test_list_is_empty_at_first(gate: Authgate) -> None:
    assert await call(gate, "GET", "/integrations") == (200, {"data": []})


async def test_list_orders_by_provider_then_creation(gate: Authgate) -> None:
    await create(gate, "b-oauth", "fake-oauth")
    await create(gate, "a-basic", "fake-basic")
    await create(gate, "c-oauth", "fake-oauth")
    await create(gate, "z-api", "fake-api-key")
    await create(gate, "0-oauth", "fake-oauth")
    assert await listed_keys(gate) == ["z-api", "a-basic", "b-oauth", "c-oauth", "0-oauth"]


async def test_list_items_have_the_public_shape_only(gate: Authgate) -> None:
    created = await create(gate, "github-main", "fake-oauth", display_name="Main GitHub")
    await create(gate, "plain", "fake-basic", forward_webhooks=False)
    status, payload = await call(gate, "GET", "/integrations")
    assert status == 200
    by_key = {item["unique_key"]: item for item in payload["data"]}
    assert by_key["github-main"] == created
    assert set(by_key["github-main"]) == PUBLIC_FIELDS
    assert by_key["plain"]["display_name"] == "Fake Basic"
    assert by_key["plain"]["forward_webhooks"] is False
    assert by_key["plain"]["logo"] == f"{PUBLIC_URL}/images/template-logos/fake-basic.svg"
    assert ISO_MS_Z.match(by_key["plain"]["created_at"])


async def test_list_takes_no_query(gate: Authgate) -> None:
    for query in ("?limit=1", "?connect_session_token=x", "?include=webhook"):
        status, payload = await call(gate, "GET", f"/integrations{query}")
        assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")


async def test_list_is_scoped_to_the_environment(gate: Authgate) -> None:
    await create(gate, "mine", "fake-basic")
    other = await other_environment_key(gate)
    assert await listed_keys(gate, other) == []
    status, payload = await call(
        gate,
        "POST",
        "/integrations",
        key=other,
        body={"unique_key": "mine", "provider": "fake-basic"},
    )
    assert status == 200, payload
    assert await listed_keys(gate, other) == ["mine"]
    assert await listed_keys(gate) == ["mine"]


async def test_a_session_sees_only_its_allowed_integrations(gate: Authgate) -> None:
    for key in ("alpha", "beta", "gamma"):
        await create(gate, key, "fake-basic")
    limited = await session_token(gate, allowed_integrations=["gamma", "alpha"])
    assert await listed_keys(gate, limited) == ["alpha", "gamma"]
    unlimited = await session_token(gate)
    assert await listed_keys(gate, unlimited) == ["alpha", "beta", "gamma"]
    # Deleting an allowed integration removes it from the session's view too.
    assert (await call(gate, "DELETE", "/integrations/gamma"))[0] == 200
    assert await listed_keys(gate, limited) == ["alpha"]


async def test_session_tokens_reach_only_the_list(gate: Authgate) -> None:
    await create(gate, "alpha", "fake-basic")
    token = await session_token(gate)
    for method, path in (
        ("GET", "/integrations/alpha"),
        ("PATCH", "/integrations/alpha"),
        ("DELETE", "/integrations/alpha"),
    ):
        status, payload = await call(gate, method, path, key=token, body={})
        assert_error(status, payload, 401, "invalid_secret_key_format")
    status, payload = await call(gate, "GET", "/integrations", key="nango_connect_session_x")
    assert_error(status, payload, 401, "invalid_connect_session_token_format")
    assert await stored(gate, "alpha") is not None


# --- GET /integrations/{uniqueKey} ------------------------------------------------------------


async def test_get_returns_the_public_shape(gate: Authgate) -> None:
    created = await create(gate, "main", "fake-oauth")
    status, payload = await get(gate, "main")
    assert (status, payload) == (200, {"data": created})
    assert set(created) == PUBLIC_FIELDS
    assert created["display_name"] == "Fake OAuth"


async def test_unknown_integration_is_404_naming_the_key(gate: Authgate) -> None:
    status, payload = await get(gate, "nope")
    assert_error(status, payload, 404, "not_found", 'Integration "nope" does not exist')
    assert payload == {
        "error": {"code": "not_found", "message": 'Integration "nope" does not exist'}
    }


async def test_path_keys_are_percent_decoded(gate: Authgate) -> None:
    await create(gate, "my key:1@x.y~z", "fake-basic")
    status, payload = await get(gate, "my%20key%3A1%40x.y~z")
    assert status == 200, payload
    assert payload["data"]["unique_key"] == "my key:1@x.y~z"


@pytest.mark.parametrize(
    ("raw_key", "issue_code"),
    [
        ("a%2Fb", "invalid_format"),
        ("a%", "invalid_format"),
        ("a%00", "invalid_format"),
        ("a%23b", "invalid_format"),
        ("caf%C3%A9", "invalid_format"),
        ("k" * 256, "too_big"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_bad_path_keys_are_invalid_uri_params(
    gate: Authgate, method: str, raw_key: str, issue_code: str
) -> None:
    status, payload = await call(gate, method, f"/integrations/{raw_key}", body={})
    assert_issue(status, payload, "invalid_uri_params", ["uniqueKey"], issue_code)


async def test_include_webhook_without_routing_is_null(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth")
    status, payload = await get(gate, "main", "?include=webhook")
    assert status == 200
    assert payload["data"]["webhook_url"] is None
    assert "credentials" not in payload["data"]


async def test_include_webhook_with_routing_names_environment_and_key(gate: Authgate) -> None:
    await create(gate, "hook key:1@x", "hooked-oauth")
    status, payload = await get(gate, "hook%20key%3A1%40x", "?include=webhook")
    assert status == 200
    assert payload["data"]["webhook_url"] == f"{PUBLIC_URL}/webhook/dev/hook%20key%3A1%40x"


async def test_include_credentials_oauth_shape(gate: Authgate) -> None:
    client = {**OAUTH_CLIENT, "scopes": "repo,user", "webhook_secret": "whs"}
    await create(gate, "main", "fake-oauth", credentials=client)
    status, payload = await get(gate, "main", "?include=credentials")
    assert status == 200
    assert payload["data"]["credentials"] == client
    await create(gate, "bare", "fake-oauth")
    _, bare = await get(gate, "bare", "?include=credentials")
    assert bare["data"]["credentials"] == {**OAUTH_CLIENT, "scopes": None, "webhook_secret": None}


async def test_include_quirk_only_the_transmitted_value_counts(gate: Authgate) -> None:
    """§13.11: the client sends `include=credentials` for ['webhook', 'credentials']."""
    await create(gate, "main", "hooked-oauth")
    _, payload = await get(gate, "main", "?include=credentials")
    assert "credentials" in payload["data"]
    assert "webhook_url" not in payload["data"]


@pytest.mark.parametrize(
    "query",
    [
        "?include=webhook&include=credentials",
        "?include[]=webhook&include[]=credentials",
        "?include[0]=credentials&include[1]=webhook",
    ],
)
async def test_include_both(gate: Authgate, query: str) -> None:
    await create(gate, "main", "hooked-oauth")
    status, payload = await get(gate, "main", query)
    assert status == 200, payload
    assert payload["data"]["webhook_url"] == f"{PUBLIC_URL}/webhook/dev/main"
    assert payload["data"]["credentials"]["client_id"] == "cid"


@pytest.mark.parametrize(
    ("provider", "extra", "expected"),
    [
        ("fake-api-key", {}, None),
        ("fake-basic", {}, None),
        ("configured-two-step", {}, None),
        (
            "fake-tba",
            {},
            {
                "type": "TBA",
                "client_id": None,
                "client_secret": None,
                "scopes": None,
                "webhook_secret": None,
            },
        ),
        (
            "fake-oauth1",
            {"credentials": {"type": "OAUTH1", "client_id": "c1", "client_secret": "s1"}},
            {
                "type": "OAUTH1",
                "client_id": "c1",
                "client_secret": "s1",
                "scopes": None,
                "webhook_secret": None,
            },
        ),
        (
            "fake-app",
            {"credentials": {**APP_CLIENT, "private_key": PEM}},
            {**APP_CLIENT, "private_key": PEM},
        ),
        (
            "fake-custom",
            {
                "credentials": {
                    "type": "CUSTOM",
                    "client_id": "c",
                    "client_secret": "s",
                    "app_id": "1",
                    "app_link": "https://x",
                    "private_key": PEM,
                }
            },
            {
                "type": "CUSTOM",
                "client_id": "c",
                "client_secret": "s",
                "app_id": "1",
                "app_link": "https://x",
                "private_key": PEM,
            },
        ),
    ],
)
async def test_include_credentials_shape_follows_the_auth_mode(
    gate: Authgate, provider: str, extra: dict[str, Any], expected: Any
) -> None:
    await create(gate, "it", provider, **extra)
    status, payload = await get(gate, "it", "?include=credentials")
    assert status == 200, payload
    assert payload["data"]["credentials"] == expected


@pytest.mark.parametrize(
    ("query", "path", "issue_code"),
    [
        ("?include=secrets", ["include"], "invalid_value"),
        ("?include=", ["include"], "invalid_value"),
        ("?include=webhook&include=nope", ["include", "1"], "invalid_value"),
        ("?include[a]=webhook", ["include"], "invalid_type"),
        ("?include=webhook&force=1", [], "unrecognized_keys"),
        ("?provider_config_key=main", [], "unrecognized_keys"),
    ],
)
async def test_bad_get_queries_are_invalid_query_params(
    gate: Authgate, query: str, path: list[str], issue_code: str
) -> None:
    await create(gate, "main", "fake-oauth")
    status, payload = await get(gate, "main", query)
    assert_issue(status, payload, "invalid_query_params", path, issue_code)


async def test_include_value_message_lists_the_options(gate: Authgate) -> None:
    status, payload = await get(gate, "main", "?include=all")
    issue = assert_issue(status, payload, "invalid_query_params", ["include"])
    assert issue["message"] == 'Invalid option: expected one of "webhook"|"credentials"'


async def test_integrations_of_another_environment_are_invisible(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth")
    other = await other_environment_key(gate)
    for method in ("GET", "PATCH", "DELETE"):
        status, payload = await call(
            gate, method, "/integrations/main", key=other, body={"display_name": "x"}
        )
        assert status == 404, payload
    assert (await stored(gate, "main")) is not None
    assert (await get(gate, "main"))[1]["data"]["display_name"] == "Fake OAuth"


# --- credentials_label and preconfigured_credentials -------------------------------------------


async def test_key_label_is_shown_for_configured_providers(gate: Authgate) -> None:
    created = await create(
        gate,
        "cfg",
        "configured-key",
        integration_config={"keyName": "x-key", "keyLabel": "Your ACME key"},
    )
    assert created["credentials_label"] == {"apiKey": "Your ACME key"}
    _, listed = await call(gate, "GET", "/integrations")
    assert listed["data"][0]["credentials_label"] == {"apiKey": "Your ACME key"}
    plain = await create(gate, "cfg2", "configured-key")
    assert "credentials_label" not in plain
    assert "preconfigured_credentials" not in plain


async def test_two_step_providers_list_preconfigured_fields(gate: Authgate) -> None:
    created = await create(gate, "ts", "configured-two-step", integration_config={"clientId": "c"})
    assert created["preconfigured_credentials"] == ["clientId"]
    status, payload = await patch(gate, "ts", {"integration_config": {"privateKey": "k"}})
    assert status == 200, payload
    assert payload["data"]["preconfigured_credentials"] == ["clientId", "privateKey"]
    assert "credentials_label" not in payload["data"]


# --- POST /integrations (create) --------------------------------------------------------------


async def test_create_answers_200_not_201(gate: Authgate) -> None:
    """§13.3."""
    status, payload = await call(
        gate, "POST", "/integrations", body={"unique_key": "k", "provider": "fake-basic"}
    )
    assert status == 200
    assert set(payload) == {"data"}


async def test_duplicate_key_is_invalid_body_on_camel_case_path(gate: Authgate) -> None:
    """§13.4: 400 invalid_body at ["uniqueKey"], not 409."""
    await create(gate, "dup", "fake-basic")
    status, payload = await call(
        gate, "POST", "/integrations", body={"unique_key": "dup", "provider": "fake-api-key"}
    )
    assert payload == {
        "error": {
            "code": "invalid_body",
            "message": payload["error"]["message"],
            "errors": [
                {
                    "code": "invalid_string",
                    "message": "Unique key already exists",
                    "path": ["uniqueKey"],
                }
            ],
        }
    }
    assert status == 400
    found = await stored(gate, "dup")
    assert found is not None
    assert found.provider == "fake-basic"


async def test_create_stores_integration_config(gate: Authgate) -> None:
    await create(
        gate,
        "cfg",
        "configured-key",
        integration_config={"keyPlacement": "query", "keyName": "k", "baseUrl": "https://a.b"},
    )
    found = await stored(gate, "cfg")
    assert found is not None
    assert found.custom == {"keyPlacement": "query", "keyName": "k", "baseUrl": "https://a.b"}


async def test_create_stores_custom_for_providers_without_a_schema(gate: Authgate) -> None:
    await create(gate, "plain", "fake-basic", custom={"team": "core"})
    found = await stored(gate, "plain")
    assert found is not None
    assert found.custom == {"team": "core"}


async def test_create_with_empty_webhook_secret_stores_none(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth", credentials={**OAUTH_CLIENT, "webhook_secret": ""})
    _, payload = await get(gate, "main", "?include=credentials")
    assert payload["data"]["credentials"]["webhook_secret"] is None


@pytest.mark.parametrize(
    ("provider", "body", "message"),
    [
        (
            "configured-key",
            {"custom": {"a": "b"}},
            "custom is not supported by provider configured-key; use integration_config",
        ),
        (
            "fake-basic",
            {"integration_config": {"a": "b"}},
            "integration_config is not supported by provider fake-basic",
        ),
        (
            "configured-key",
            {"integration_config": {"nope": "b"}},
            'Unknown integration_config field "nope" for provider configured-key',
        ),
        (
            "configured-key",
            {"integration_config": {"keyPlacement": "body"}},
            "integration_config.keyPlacement must be one of: header, query",
        ),
        (
            "configured-key",
            {"integration_config": {"baseUrl": "ftp://x"}},
            "integration_config.baseUrl does not match the pattern ^https?://",
        ),
    ],
)
async def test_bad_settings_are_refused_on_create_and_patch(
    gate: Authgate, provider: str, body: dict[str, Any], message: str
) -> None:
    status, payload = await call(
        gate, "POST", "/integrations", body={"unique_key": "new", "provider": provider, **body}
    )
    assert (status, payload) == (400, {"error": {"code": "invalid_body", "message": message}})
    assert await stored(gate, "new") is None
    await create(gate, "it", provider)
    status, payload = await patch(gate, "it", body)
    assert (status, payload) == (400, {"error": {"code": "invalid_body", "message": message}})
    found = await stored(gate, "it")
    assert found is not None
    assert found.custom is None


# --- PATCH /integrations/{uniqueKey} ----------------------------------------------------------


async def test_patch_changes_display_name_and_forwarding(gate: Authgate) -> None:
    created = await create(gate, "main", "fake-oauth")
    status, payload = await patch(gate, "main", {"display_name": "Ours", "forward_webhooks": False})
    assert status == 200, payload
    data = payload["data"]
    assert data["display_name"] == "Ours"
    assert data["forward_webhooks"] is False
    assert data["created_at"] == created["created_at"]
    assert data["updated_at"] >= created["updated_at"]
    assert set(data) == PUBLIC_FIELDS
    assert (await get(gate, "main"))[1] == {"data": data}


async def test_empty_patch_changes_nothing(gate: Authgate) -> None:
    created = await create(gate, "main", "fake-oauth")
    assert await patch(gate, "main", {}) == (200, {"data": created})


async def test_patch_credentials_replace_the_client(gate: Authgate) -> None:
    await create(
        gate,
        "main",
        "fake-oauth",
        credentials={**OAUTH_CLIENT, "scopes": "a,b", "webhook_secret": "keep-me"},
    )
    replacement = {"type": "OAUTH2", "client_id": "cid2", "client_secret": "sec2", "scopes": "c"}
    status, payload = await patch(gate, "main", {"credentials": replacement})
    assert status == 200, payload
    _, shown = await get(gate, "main", "?include=credentials")
    # Left out, the webhook secret is kept.
    assert shown["data"]["credentials"] == {**replacement, "webhook_secret": "keep-me"}
    without_scopes = {"type": "OAUTH2", "client_id": "cid3", "client_secret": "sec3"}
    await patch(gate, "main", {"credentials": without_scopes})
    _, shown = await get(gate, "main", "?include=credentials")
    assert shown["data"]["credentials"]["scopes"] is None
    assert shown["data"]["credentials"]["client_id"] == "cid3"


async def test_patch_webhook_secret_set_and_cleared(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth")
    await patch(gate, "main", {"credentials": {**OAUTH_CLIENT, "webhook_secret": "s3cret"}})
    _, shown = await get(gate, "main", "?include=credentials")
    assert shown["data"]["credentials"]["webhook_secret"] == "s3cret"
    status, _ = await patch(gate, "main", {"credentials": {**OAUTH_CLIENT, "webhook_secret": ""}})
    assert status == 200
    _, shown = await get(gate, "main", "?include=credentials")
    assert shown["data"]["credentials"]["webhook_secret"] is None


async def test_patch_app_credentials_replace_all(gate: Authgate) -> None:
    await create(gate, "app", "fake-app", credentials={**APP_CLIENT, "private_key": PEM})
    new = {"type": "APP", "app_id": "999", "app_link": "https://l", "private_key": PEM + "\n"}
    assert (await patch(gate, "app", {"credentials": new}))[0] == 200
    _, shown = await get(gate, "app", "?include=credentials")
    assert shown["data"]["credentials"] == new


@pytest.mark.parametrize(
    ("provider", "credentials"),
    [
        ("fake-oauth", {"type": "OAUTH1", "client_id": "c", "client_secret": "s"}),
        ("fake-oauth", {"type": "TBA", "client_id": "c", "client_secret": "s"}),
        ("fake-basic", OAUTH_CLIENT),
        (
            "fake-app",
            {
                "type": "CUSTOM",
                **{k: "x" for k in ("client_id", "client_secret")},
                "app_id": "1",
                "app_link": "l",
                "private_key": PEM,
            },
        ),
    ],
)
async def test_patch_credentials_must_match_the_auth_mode(
    gate: Authgate, provider: str, credentials: dict[str, Any]
) -> None:
    extra = {"credentials": {**APP_CLIENT, "private_key": PEM}} if provider == "fake-app" else {}
    await create(gate, "it", provider, **extra)
    before = await stored(gate, "it")
    status, payload = await patch(gate, "it", {"credentials": credentials})
    assert_error(
        status, payload, 400, "invalid_body", "incompatible credentials auth type and provider auth"
    )
    assert await stored(gate, "it") == before


async def test_patch_merges_custom(gate: Authgate) -> None:
    await create(gate, "plain", "fake-basic", custom={"a": "1", "b": "2"})
    status, _ = await patch(gate, "plain", {"custom": {"b": "3", "c": "4"}})
    assert status == 200
    found = await stored(gate, "plain")
    assert found is not None
    assert found.custom == {"a": "1", "b": "3", "c": "4"}


async def test_patch_merges_integration_config_and_empty_unsets(gate: Authgate) -> None:
    await create(
        gate,
        "cfg",
        "configured-key",
        integration_config={"keyName": "x", "keyLabel": "Label", "keyPlacement": "header"},
    )
    status, payload = await patch(
        gate, "cfg", {"integration_config": {"keyPlacement": "query", "keyLabel": ""}}
    )
    assert status == 200, payload
    assert "credentials_label" not in payload["data"]
    found = await stored(gate, "cfg")
    assert found is not None
    assert found.custom == {"keyName": "x", "keyPlacement": "query"}


async def test_patch_unknown_integration_is_404(gate: Authgate) -> None:
    status, payload = await patch(gate, "ghost", {"display_name": "x"})
    assert_error(status, payload, 404, "not_found", 'Integration "ghost" does not exist')


async def test_patch_body_is_validated_before_the_lookup(gate: Authgate) -> None:
    status, payload = await patch(gate, "ghost", {"display_name": ""})
    assert_issue(status, payload, "invalid_body", ["display_name"], "too_small")


@pytest.mark.parametrize(
    ("body", "path", "issue_code"),
    [
        ({"provider": "fake-basic"}, [], "unrecognized_keys"),
        ({"uniqueKey": "x"}, [], "unrecognized_keys"),
        ({"unique_key": "a/b"}, ["unique_key"], "invalid_format"),
        ({"unique_key": ""}, ["unique_key"], "invalid_format"),
        ({"unique_key": "k" * 256}, ["unique_key"], "too_big"),
        ({"unique_key": 5}, ["unique_key"], "invalid_type"),
        ({"display_name": ""}, ["display_name"], "too_small"),
        ({"display_name": "d" * 256}, ["display_name"], "too_big"),
        ({"display_name": None}, ["display_name"], "invalid_type"),
        ({"forward_webhooks": "yes"}, ["forward_webhooks"], "invalid_type"),
        ({"custom": {"a": 1}}, ["custom", "a"], "invalid_type"),
        ({"custom": ["a"]}, ["custom"], "invalid_type"),
        ({"integration_config": {"a": "x" * 8193}}, ["integration_config", "a"], "too_big"),
        ({"credentials": {"type": "BASIC"}}, ["credentials", "type"], "invalid_union"),
        ({"credentials": "x"}, ["credentials"], "invalid_type"),
        (
            {"credentials": {"type": "OAUTH2", "client_id": "c"}},
            ["credentials", "client_secret"],
            "invalid_type",
        ),
        ({"credentials": {**OAUTH_CLIENT, "extra": 1}}, ["credentials"], "unrecognized_keys"),
        (
            {"credentials": {**OAUTH_CLIENT, "scopes": "a b"}},
            ["credentials", "scopes"],
            "invalid_format",
        ),
    ],
)
async def test_bad_patch_bodies_name_the_field(
    gate: Authgate, body: dict[str, Any], path: list[str], issue_code: str
) -> None:
    await create(gate, "main", "fake-oauth")
    before = await stored(gate, "main")
    status, payload = await patch(gate, "main", body)
    assert_issue(status, payload, "invalid_body", path, issue_code)
    assert await stored(gate, "main") == before


async def test_patch_takes_no_query(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth")
    status, payload = await call(
        gate, "PATCH", "/integrations/main?x=1", body={"display_name": "y"}
    )
    assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")
    assert (await get(gate, "main"))[1]["data"]["display_name"] == "Fake OAuth"


# --- renames --------------------------------------------------------------------------------


async def test_rename_without_connections(gate: Authgate) -> None:
    created = await create(gate, "old", "fake-api-key")
    status, payload = await patch(gate, "old", {"unique_key": "new name"})
    assert status == 200, payload
    assert payload["data"]["unique_key"] == "new name"
    assert payload["data"]["created_at"] == created["created_at"]
    assert (await get(gate, "old"))[0] == 404
    assert (await get(gate, "new%20name"))[0] == 200
    assert await listed_keys(gate) == ["new name"]


async def test_rename_to_a_taken_key_is_refused(gate: Authgate) -> None:
    await create(gate, "one", "fake-basic")
    await create(gate, "two", "fake-api-key")
    status, payload = await patch(gate, "one", {"unique_key": "two"})
    assert_error(
        status, payload, 400, "invalid_body", "uniqueKey is already used by another integration"
    )
    assert await listed_keys(gate) == ["two", "one"]


async def test_rename_with_connections_is_refused_and_the_proxy_unaffected(gate: Authgate) -> None:
    await create(gate, "old", "fake-api-key")
    await import_connection(gate, "old", "conn-1", "key-1")
    assert await proxied_api_key(gate, "old", "conn-1") == "key-1"
    status, payload = await patch(gate, "old", {"unique_key": "new", "display_name": "Changed"})
    assert_error(
        status, payload, 400, "invalid_body", "Can't rename an integration with active connections"
    )
    assert await proxied_api_key(gate, "old", "conn-1") == "key-1"
    assert (await get(gate, "old"))[1]["data"]["display_name"] == "Fake API key"
    # Renaming to its own key is no rename.
    status, payload = await patch(gate, "old", {"unique_key": "old", "display_name": "Same"})
    assert status == 200, payload


async def test_rename_is_seen_by_the_proxy_at_once(gate: Authgate) -> None:
    await create(gate, "old", "fake-api-key")
    await import_connection(gate, "old", "conn-1", "key-1")
    assert await proxied_api_key(gate, "old", "conn-1") == "key-1"  # the proxy caches it
    core = gate.core
    environment = await core.store.get_environment("dev")
    assert environment is not None
    assert await core.store.delete_connection(environment.id, "old", "conn-1")
    assert (await patch(gate, "old", {"unique_key": "new"}))[0] == 200
    assert await proxied_api_key(gate, "old", "conn-1") is None
    await import_connection(gate, "new", "conn-1", "key-2")
    assert await proxied_api_key(gate, "new", "conn-1") == "key-2"
    assert await proxied_api_key(gate, "old", "conn-1") is None


# --- DELETE /integrations/{uniqueKey} ---------------------------------------------------------


async def test_delete_answers_success_and_forgets_the_integration(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth")
    assert await call(gate, "DELETE", "/integrations/main") == (200, {"success": True})
    assert (await get(gate, "main"))[0] == 404
    assert await listed_keys(gate) == []


async def test_delete_unknown_is_404_without_the_key(gate: Authgate) -> None:
    status, payload = await call(gate, "DELETE", "/integrations/ghost")
    assert status == 404
    assert payload == {"error": {"code": "not_found", "message": "Integration does not exist"}}
    await create(gate, "main", "fake-oauth")
    assert (await call(gate, "DELETE", "/integrations/main"))[0] == 200
    assert (await call(gate, "DELETE", "/integrations/main"))[0] == 404


async def test_delete_cascades_and_the_proxy_sees_it_at_once(gate: Authgate) -> None:
    await create(gate, "doomed", "fake-api-key")
    await create(gate, "kept", "fake-api-key")
    await import_connection(gate, "doomed", "conn-1", "key-doomed")
    await import_connection(gate, "kept", "conn-1", "key-kept")
    assert await proxied_api_key(gate, "doomed", "conn-1") == "key-doomed"
    assert await proxied_api_key(gate, "kept", "conn-1") == "key-kept"
    assert (await call(gate, "DELETE", "/integrations/doomed"))[0] == 200
    assert await proxied_api_key(gate, "doomed", "conn-1") is None
    assert await proxied_api_key(gate, "kept", "conn-1") == "key-kept"
    # Re-created under the same key, the integration does not bring the connection back.
    await create(gate, "doomed", "fake-api-key")
    assert await proxied_api_key(gate, "doomed", "conn-1") is None


async def test_delete_takes_no_query(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth")
    status, payload = await call(gate, "DELETE", "/integrations/main?force=true")
    assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")
    assert await stored(gate, "main") is not None


# --- POST /integrations/quickstart ------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ("fake-oauth", NO_APP),
        ("fake-oauth1", NO_APP),
        ("fake-app", NO_APP),
        ("fake-api-key", NOT_QUICKSTART),
        ("fake-basic", NOT_QUICKSTART),
        ("fake-tba", NOT_QUICKSTART),
        ("fake-custom", NOT_QUICKSTART),
    ],
)
async def test_quickstart_never_creates(gate: Authgate, provider: str, message: str) -> None:
    status, payload = await call(
        gate,
        "POST",
        "/integrations/quickstart",
        body={
            "provider": provider,
            "unique_key": "qs",
            "display_name": "Q",
            "forward_webhooks": True,
        },
    )
    assert (status, payload) == (400, {"error": {"code": "invalid_body", "message": message}})
    assert await stored(gate, "qs") is None


async def test_quickstart_validates_the_body_first(gate: Authgate) -> None:
    status, payload = await call(
        gate, "POST", "/integrations/quickstart", body={"provider": "nope", "unique_key": "qs"}
    )
    issue = assert_issue(status, payload, "invalid_body", ["provider"], "invalid_string")
    assert issue["message"] == "Invalid provider"
    status, payload = await call(
        gate,
        "POST",
        "/integrations/quickstart",
        body={"provider": "fake-oauth", "unique_key": "qs", "credentials": OAUTH_CLIENT},
    )
    assert_issue(status, payload, "invalid_body", [], "unrecognized_keys")
    status, payload = await call(
        gate, "POST", "/integrations/quickstart", body={"provider": "fake-oauth"}
    )
    assert_issue(status, payload, "invalid_body", ["unique_key"], "invalid_type")
    status, payload = await call(
        gate, "POST", "/integrations/quickstart?x=1", body={"provider": "fake-oauth"}
    )
    assert_issue(status, payload, "invalid_query_params", [], "unrecognized_keys")


async def test_quickstart_is_not_an_integration_key_for_post(gate: Authgate) -> None:
    status, payload = await call(
        gate,
        "POST",
        "/integrations/quickstart/",
        body={"provider": "fake-oauth", "unique_key": "q"},
    )
    assert_error(status, payload, 400, "invalid_body", NO_APP)
    # For the other methods `quickstart` is an ordinary key.
    status, payload = await get(gate, "quickstart")
    assert_error(status, payload, 404, "not_found", 'Integration "quickstart" does not exist')


# --- transport: trailing slashes, methods, junk -------------------------------------------------


async def test_trailing_slashes_are_routed(gate: Authgate) -> None:
    status, payload = await call(
        gate, "POST", "/integrations/", body={"unique_key": "main", "provider": "fake-basic"}
    )
    assert status == 200, payload
    assert await call(gate, "GET", "/integrations/") == (200, {"data": [payload["data"]]})
    assert (await call(gate, "GET", "/integrations/main/"))[0] == 200
    status, patched = await call(gate, "PATCH", "/integrations/main/", body={"display_name": "S"})
    assert (status, patched["data"]["display_name"]) == (200, "S")
    assert await call(gate, "DELETE", "/integrations/main/") == (200, {"success": True})


async def test_unsupported_methods_are_405(gate: Authgate) -> None:
    for method, path in (("PUT", "/integrations/main"), ("DELETE", "/integrations")):
        status, payload = await call(gate, method, path)
        assert_error(status, payload, 405, "method_not_allowed")


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'"text"', b"42", b"null", b"true", b"[{}]", b'{"a":', b"\xff\xfe", b"{}{}"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/integrations/main"),
        ("POST", "/integrations"),
        ("POST", "/integrations/quickstart"),
    ],
)
async def test_junk_bodies_are_4xx_and_change_nothing(
    gate: Authgate, method: str, path: str, raw: bytes
) -> None:
    await create(gate, "main", "fake-oauth")
    before = await stored(gate, "main")
    status, payload = await call(
        gate, method, path, raw=raw, headers={"Content-Type": "application/json"}
    )
    assert 400 <= status < 500, payload
    assert payload["error"]["code"] in ("invalid_body", "invalid_json")
    assert await stored(gate, "main") == before
    assert await listed_keys(gate) == ["main"]


async def test_non_json_content_type_is_415(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth")
    status, payload = await call(
        gate,
        "PATCH",
        "/integrations/main",
        raw=b"display_name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(
        status, payload, 415, "invalid_content_type", "Content-Type header must be application/json"
    )


async def test_json_content_type_without_body_is_accepted_on_get_and_delete(
    gate: Authgate,
) -> None:
    """The Node client sends Content-Type: application/json on bodiless GET and DELETE."""
    await create(gate, "main", "fake-oauth")
    json_header = {"Content-Type": "application/json"}
    assert (await call(gate, "GET", "/integrations/main", raw=b"", headers=json_header))[0] == 200
    assert (await call(gate, "GET", "/integrations", raw=b"", headers=json_header))[0] == 200
    status, payload = await call(gate, "DELETE", "/integrations/main", raw=b"", headers=json_header)
    assert (status, payload) == (200, {"success": True})


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("?include=%ff", ["include"]),
        ("?include=webhook%00", ["include"]),
        ("?include=" + "w" * 5000, ["include"]),
        ("?%5B%5D=1", []),
        ("?=x", []),
        ("?include[[=x", []),
        ("?include[]]=x", ["include", "0"]),
        ("?include[a][b]=x", ["include"]),
        ("?include[a]=webhook&include[b]=credentials", ["include"]),
        ("?include=webhook&include[x]=y", ["include"]),
        ("?include[x]=y&include=webhook", ["include"]),
    ],
)
async def test_junk_queries_are_invalid_query_params(
    gate: Authgate, query: str, path: list[str]
) -> None:
    await create(gate, "main", "fake-oauth")
    status, payload = await get(gate, "main", query)
    assert_issue(status, payload, "invalid_query_params", path)


async def test_empty_query_pieces_are_no_parameters(gate: Authgate) -> None:
    await create(gate, "main", "fake-oauth")
    status, payload = await get(gate, "main", "?&&&")
    assert status == 200, payload
    assert set(payload["data"]) == PUBLIC_FIELDS
