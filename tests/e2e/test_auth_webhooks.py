"""Auth webhooks end to end, through a real `authgate serve` on both store backends.

The environment's settings are changed over HTTP (`/environment/settings`); a refresh
fails for real (the fake provider's token endpoint answers 503) through the proxy, then
recovers through `GET /connections/{id}?force_refresh=true`; a real sender delivers to a
real receiver, and each webhook's signature is checked against the secret the PATCH
returned, computed here independently.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from credentials.expiry import iso_expiry
from credentials.webhooks import SenderSettings, WebhookSender
from tests.e2e.conftest import Authgate, Factory
from tests.e2e.management_calls import assert_issue, call
from tests.e2e.webhook_receiver import WebhookReceiver, serve_receiver
from tests.log_scan import SecretRegistry

PROVIDERS = """
fake-flaky:
    display_name: Fake flaky OAuth
    docs: https://docs.example.com/fake-flaky
    auth_mode: OAUTH2
    token_url: http://127.0.0.1:${connectionConfig.port}/oauth/token
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
fake-api-key:
    display_name: Fake API key
    docs: https://docs.example.com/fake-api-key
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
"""
CLIENT = {"type": "OAUTH2", "client_id": "flaky-client", "client_secret": "flaky-secret"}
HEX_SECRET = re.compile(r"[0-9a-f]{64}")
SETTINGS_PATH = "/environment/settings"

Patch = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    hooks = WebhookReceiver()
    async with serve_receiver(hooks) as base_url:
        yield hooks, base_url


@pytest.fixture
async def gate(make_authgate: Factory, tmp_path: Path) -> Authgate:
    providers = tmp_path / "webhook-providers.yaml"
    providers.write_text(PROVIDERS)
    return await make_authgate(AUTHGATE_PROVIDERS_FILE=str(providers))


@pytest.fixture
async def sender(gate: Authgate) -> AsyncIterator[WebhookSender]:
    """The sender a serving process runs, started here with a long poll: deliveries in
    these tests happen because queuing wakes it."""
    assert gate.core.webhooks is not None
    running = gate.core.webhooks.sender(SenderSettings(poll_interval=3600.0))
    await running.start()
    yield running
    await running.close()


@pytest.fixture
def patch_settings(gate: Authgate, secret_registry: SecretRegistry) -> Patch:
    """PATCH the settings; every secret an answer reveals is registered with the log
    scan, so the suite fails if any log line ever carries it."""

    async def send(body: Any, target: Authgate | None = None) -> tuple[int, Any]:
        status, payload = await call(target or gate, "PATCH", SETTINGS_PATH, body=body)
        for name in ("webhook_secret", "hmac_key"):
            value = payload["data"].get(name) if status == 200 else None
            if value is not None:
                secret_registry.add(value, f"the {name} a PATCH returned")
        return status, payload

    return send


def signed_by(secret: str, headers: Any, body: bytes) -> bool:
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    legacy = hashlib.sha256(secret.encode() + body).hexdigest()
    return hmac.compare_digest(headers["X-Nango-Hmac-Sha256"], expected) and hmac.compare_digest(
        headers["X-Nango-Signature"], legacy
    )


# --- the settings endpoints ----------------------------------------------------------------


async def test_settings_start_with_the_defaults(gate: Authgate) -> None:
    status, payload = await call(gate, "GET", SETTINGS_PATH)

    assert status == 200, payload
    assert payload == {
        "data": {
            "callback_url": None,
            "webhook_url": None,
            "webhook_secondary_url": None,
            "send_auth_creation": True,
            "send_auth_refresh_error": True,
            "has_webhook_secret": False,
            "public_key": None,
            "hmac_enabled": False,
            "has_hmac_key": False,
        }
    }


async def test_the_webhook_secret_is_returned_once_when_made(
    gate: Authgate, patch_settings: Patch
) -> None:
    status, made = await patch_settings({"webhook_url": "https://hooks.example.com/a"})
    assert status == 200, made
    secret = made["data"]["webhook_secret"]
    assert HEX_SECRET.fullmatch(secret)

    _, later = await patch_settings({"webhook_secondary_url": "https://b.example.com/"})
    _, shown = await call(gate, "GET", SETTINGS_PATH)
    _, rotated = await patch_settings({"webhook_secret": "rotate"})

    assert "webhook_secret" not in later["data"]
    assert "webhook_secret" not in shown["data"]
    assert shown["data"]["has_webhook_secret"] is True
    assert shown["data"]["webhook_url"] == "https://hooks.example.com/a"
    assert shown["data"]["webhook_secondary_url"] == "https://b.example.com/"
    assert HEX_SECRET.fullmatch(rotated["data"]["webhook_secret"])
    assert rotated["data"]["webhook_secret"] != secret
    assert secret not in str(shown)


async def test_hmac_key_is_made_when_enabled_and_shown_once(
    gate: Authgate, patch_settings: Patch
) -> None:
    _, enabled = await patch_settings({"hmac_enabled": True})
    key = enabled["data"]["hmac_key"]
    _, shown = await call(gate, "GET", SETTINGS_PATH)
    status, refused = await patch_settings({"hmac_key": None})
    _, rotated = await patch_settings({"hmac_key": "generate"})
    _, removed = await patch_settings({"hmac_enabled": False, "hmac_key": None})

    assert HEX_SECRET.fullmatch(key)
    assert enabled["data"]["hmac_enabled"] is True
    assert "hmac_key" not in shown["data"]
    assert shown["data"]["has_hmac_key"] is True
    assert_issue(status, refused, "invalid_body", ["hmac_key"], "custom")
    assert rotated["data"]["hmac_key"] != key
    assert removed["data"]["has_hmac_key"] is False
    assert "hmac_key" not in removed["data"]


async def test_public_key_is_generated_rotated_and_turned_off(
    gate: Authgate, patch_settings: Patch
) -> None:
    _, made = await patch_settings({"public_key": "generate"})
    _, rotated = await patch_settings({"public_key": "rotate"})
    _, off = await patch_settings({"public_key": None})

    first = made["data"]["public_key"]
    assert uuid.UUID(first).version == 4
    assert rotated["data"]["public_key"] not in (None, first)
    assert off["data"]["public_key"] is None


async def test_flags_and_callback_url_round_trip(gate: Authgate, patch_settings: Patch) -> None:
    body = {
        "send_auth_creation": False,
        "send_auth_refresh_error": False,
        "callback_url": "https://app.example.com/oauth/callback",
    }
    _, patched = await patch_settings(body)
    _, cleared = await patch_settings({"callback_url": ""})
    _, shown = await call(gate, "GET", SETTINGS_PATH)

    assert {key: patched["data"][key] for key in body} == body
    assert cleared["data"]["callback_url"] is None
    assert shown["data"]["send_auth_creation"] is False
    assert shown["data"]["send_auth_refresh_error"] is False


async def test_bad_input_is_refused_naming_every_field(
    gate: Authgate, patch_settings: Patch
) -> None:
    body = {
        "webhook_url": "ftp://hooks.example.com/",
        "webhook_secondary_url": 12,
        "callback_url": "not a url",
        "send_auth_creation": "yes",
        "webhook_secret": None,
        "public_key": "mine",
        "colour": "blue",
    }
    status, payload = await patch_settings(body)

    assert_issue(status, payload, "invalid_body", ["webhook_url"], "invalid_format")
    assert_issue(status, payload, "invalid_body", ["webhook_secondary_url"], "invalid_type")
    assert_issue(status, payload, "invalid_body", ["callback_url"], "invalid_format")
    assert_issue(status, payload, "invalid_body", ["send_auth_creation"], "invalid_type")
    assert_issue(status, payload, "invalid_body", ["webhook_secret"], "invalid_value")
    assert_issue(status, payload, "invalid_body", ["public_key"], "invalid_value")
    assert_issue(status, payload, "invalid_body", [], "unrecognized_keys")
    _, unchanged = await call(gate, "GET", SETTINGS_PATH)
    assert unchanged["data"]["webhook_url"] is None  # nothing was written


async def test_a_body_that_is_not_an_object_and_a_query_are_refused(
    gate: Authgate, patch_settings: Patch
) -> None:
    status, payload = await patch_settings(["webhook_url"])
    assert_issue(status, payload, "invalid_body", [], "invalid_type")
    status, payload = await call(gate, "GET", SETTINGS_PATH + "?reveal=true")
    assert_issue(status, payload, "invalid_query_params", [])


async def test_the_settings_need_a_secret_key(gate: Authgate) -> None:
    for method in ("GET", "PATCH"):
        status, payload = await call(gate, method, SETTINGS_PATH, body={}, auth=False)
        assert status == 401, payload


async def test_metadata_addresses_are_refused_even_with_private_upstreams_allowed(
    gate: Authgate, patch_settings: Patch
) -> None:
    status, payload = await patch_settings({"webhook_url": "http://169.254.169.254/latest"})
    issue = assert_issue(status, payload, "invalid_body", ["webhook_url"], "invalid_format")
    assert "metadata" in issue["message"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://localhost/hook",
        "https://hooks.nango.dev/x",
    ],
)
async def test_private_webhook_urls_are_refused_by_default(
    make_authgate: Factory, url: str, patch_settings: Patch
) -> None:
    strict = await make_authgate(AUTHGATE_ALLOW_PRIVATE_UPSTREAMS="false")

    status, payload = await patch_settings({"webhook_secondary_url": url}, strict)
    assert_issue(status, payload, "invalid_body", ["webhook_secondary_url"], "invalid_format")
    status, payload = await patch_settings(
        {"webhook_secondary_url": "https://ok.example.com"}, strict
    )
    assert status == 200, payload


# --- webhooks reach the receiver ----------------------------------------------------------


class FlakyTokenEndpoint:
    """The fake provider's token endpoint: 503 while `failing`, then fresh tokens."""

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0

    async def __call__(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.failing:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return web.json_response(
            {"access_token": f"fresh-{self.calls}", "refresh_token": "rt-2", "expires_in": 3600}
        )


async def configure_webhooks(patch_settings: Patch, url: str) -> str:
    status, payload = await patch_settings({"webhook_url": url})
    assert status == 200, payload
    secret: str = payload["data"]["webhook_secret"]
    return secret


async def test_a_failing_then_recovering_refresh_sends_two_signed_webhooks(
    gate: Authgate,
    sender: WebhookSender,
    receiver: tuple[WebhookReceiver, str],
    patch_settings: Patch,
) -> None:
    hooks, base_url = receiver
    secret = await configure_webhooks(patch_settings, base_url + "/auth-hooks?token=abc")
    token_endpoint = FlakyTokenEndpoint()
    gate.provider.respond("/oauth/token", token_endpoint)
    await gate.integration("flaky", "fake-flaky", credentials=CLIENT)
    expired = {
        "type": "OAUTH2",
        "access_token": "stale-access-1",
        "refresh_token": "refresh-one-1",
        "expires_at": iso_expiry(time.time() - 60),
    }
    await gate.connection("flaky", "c1", expired, tags={"team": "core"})

    failed = await gate.proxy("GET", "/proxy/me", connection_id="c1", provider_config_key="flaky")
    assert failed.status == 424, await failed.text()
    [failure] = await hooks.wait_for(1)

    token_endpoint.failing = False
    status, payload = await call(
        gate, "GET", "/connections/c1?provider_config_key=flaky&force_refresh=true"
    )
    assert status == 200, payload
    _, recovery = await hooks.wait_for(2)

    assert failure.path == "/auth-hooks"
    assert failure.query_string == "token=abc"
    assert failure.headers["Content-Type"] == "application/json"
    for delivery in (failure, recovery):
        assert signed_by(secret, delivery.headers, delivery.body)
    body = failure.json()
    assert {key: body[key] for key in ("from", "type", "operation", "success")} == {
        "from": "nango",
        "type": "auth",
        "operation": "refresh",
        "success": False,
    }
    assert body["connectionId"] == "c1"
    assert body["providerConfigKey"] == "flaky"
    assert body["provider"] == "fake-flaky"
    assert body["authMode"] == "OAUTH2"
    assert body["environment"] == "dev"
    assert body["error"]["type"] == "refresh_token_external_error"
    assert "provider_5xx" in body["error"]["description"]
    assert "refresh-one-1" not in failure.body.decode()
    assert recovery.json()["operation"] == "refresh"
    assert recovery.json()["success"] is True
    assert "error" not in recovery.json()


async def test_refresh_webhooks_can_be_switched_off(
    gate: Authgate,
    sender: WebhookSender,
    receiver: tuple[WebhookReceiver, str],
    patch_settings: Patch,
) -> None:
    hooks, base_url = receiver
    await configure_webhooks(patch_settings, base_url + "/auth-hooks")
    await patch_settings({"send_auth_refresh_error": False})
    gate.provider.respond("/oauth/token", FlakyTokenEndpoint())
    await gate.integration("flaky", "fake-flaky", credentials=CLIENT)
    expired = {
        "type": "OAUTH2",
        "access_token": "stale-access-2",
        "refresh_token": "refresh-two-2",
        "expires_at": iso_expiry(time.time() - 60),
    }
    await gate.connection("flaky", "c1", expired)

    failed = await gate.proxy("GET", "/proxy/me", connection_id="c1", provider_config_key="flaky")
    assert failed.status == 424

    # The webhook would have been queued before the proxy answered: there is none.
    assert await gate.core.store.db.fetchval("SELECT COUNT(*) FROM webhook_outbox") == 0
    assert hooks.deliveries == []


async def test_a_created_connection_is_reported_to_its_override_url(
    gate: Authgate,
    sender: WebhookSender,
    receiver: tuple[WebhookReceiver, str],
    patch_settings: Patch,
) -> None:
    hooks, base_url = receiver
    secret = await configure_webhooks(patch_settings, base_url + "/primary")
    await patch_settings({"webhook_secondary_url": base_url + "/second"})
    await gate.integration("keyed", "fake-api-key")
    await gate.connection(
        "keyed",
        "c1",
        {"type": "API_KEY", "apiKey": "api-key-value-1"},
        end_user={"id": "user-7", "email": "grace@example.com"},
    )
    environment = await gate.core.store.get_environment("dev")
    assert environment is not None
    # Through the store: the API refuses a loopback override (Nango's rule), and the
    # receiver lives on loopback.
    connection = await gate.core.store.update_connection_fields(
        environment.id, "keyed", "c1", webhook_url_override=base_url + "/override"
    )
    assert connection is not None
    assert gate.core.webhooks is not None

    # What an auth flow reports through AUTH_EVENTS once it has stored a connection.
    await gate.core.webhooks.connection_created(
        environment, connection, "API_KEY", operation="creation"
    )

    [delivery] = await hooks.wait_for(1)
    assert delivery.path == "/override"
    assert signed_by(secret, delivery.headers, delivery.body)
    body = delivery.json()
    assert body["operation"] == "creation"
    assert body["success"] is True
    assert body["endUser"] == {"endUserId": "user-7", "endUserEmail": "grace@example.com"}
    assert "api-key-value-1" not in delivery.body.decode()
