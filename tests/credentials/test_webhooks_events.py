"""Which auth webhooks are queued, where to, and what they say; and the refresher's
failures and recoveries reaching a real receiver. Both store backends.

The refresher runs for real against a token endpoint on a real socket that answers as
each test scripts it; webhooks are delivered by a real sender to a real receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from credentials.change_waiters import ChangeWaiters
from credentials.environment_settings import EnvironmentSettingsStore
from credentials.expiry import iso_expiry
from credentials.grants import TokenHttp
from credentials.locks import RefreshLocks, StoreLease
from credentials.models import Connection, Environment, Integration, Provider
from credentials.providers import parse_catalogue
from credentials.refresh import NeedsReauthorization, Refresher, RefreshFailed, RefreshSettings
from credentials.store import SqlStore
from credentials.webhooks import AuthWebhooks, SenderSettings
from credentials.webhooks.signing import serialise
from tests.e2e.webhook_receiver import WebhookReceiver, serve_receiver

CATALOGUE = """
fake-oauth:
    display_name: Fake OAuth
    docs: https://docs.example.com/fake
    auth_mode: OAUTH2
    token_url: http://127.0.0.1:${connectionConfig.port}/token
"""
PRIMARY = "https://hooks.example.com/primary"
SECONDARY = "https://backup.example.com/secondary"
OVERRIDE = "https://override.example.net/hook?key=abc"
END_USER = {
    "id": "user-1",
    "email": "ada@example.com",
    "display_name": "Ada",
    "tags": {"plan": "pro"},
    "organization": {"id": "org-9", "display_name": "Org"},
}


@dataclass
class TokenEndpoint:
    """Answers refreshes from `answers` (status, body) in order, then with a new token."""

    answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    calls: int = 0

    async def token(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.answers:
            status, body = self.answers.pop(0)
            return web.json_response(body, status=status)
        return web.json_response(
            {"access_token": f"at-{self.calls}", "refresh_token": "rt-next", "expires_in": 3600}
        )


@dataclass
class Scene:
    store: SqlStore
    environment: Environment
    integration: Integration
    webhooks: AuthWebhooks
    settings: EnvironmentSettingsStore

    async def configure(self, **fields: Any) -> None:
        await self.settings.update(self.environment.id, **fields)

    async def connection(self, name: str = "c1", **extra: Any) -> Connection:
        return await self.store.upsert_connection(
            self.environment.id,
            self.integration,
            connection_id=name,
            credentials={"type": "API_KEY", "apiKey": "key-value-1234"},
            **extra,
        )

    async def queued(self) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.store.db.fetch("SELECT url, body FROM webhook_outbox ORDER BY id")
        return [(row["url"], orjson.loads(row["body"])) for row in rows]


@pytest.fixture
async def scene(store: SqlStore) -> Scene:
    environment = await store.create_environment("prod")
    integration = await store.create_integration(
        environment.id, unique_key="github", provider="github-pat"
    )
    return Scene(
        store,
        environment,
        integration,
        AuthWebhooks(store, allow_private=False),
        EnvironmentSettingsStore(store),
    )


# --- what is said ------------------------------------------------------------------------


async def test_a_creation_webhook_carries_nangos_fields(scene: Scene) -> None:
    await scene.configure(webhook_url=PRIMARY)
    connection = await scene.connection(end_user=END_USER, tags={"team": "core"})

    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="creation"
    )

    [(url, body)] = await scene.queued()
    assert url == PRIMARY
    assert body == {
        "from": "nango",
        "type": "auth",
        "connectionId": "c1",
        "providerConfigKey": "github",
        "authMode": "API_KEY",
        "provider": "github-pat",
        "environment": "prod",
        "operation": "creation",
        "success": True,
        "endUser": {
            "endUserId": "user-1",
            "endUserEmail": "ada@example.com",
            "organizationId": "org-9",
            "tags": {"plan": "pro"},
        },
        "tags": {"team": "core"},
    }


async def test_the_stored_body_is_serialised_once_with_sorted_keys(scene: Scene) -> None:
    await scene.configure(webhook_url=PRIMARY)
    connection = await scene.connection(tags={"zeta": "1", "alpha": "2"})

    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="override"
    )

    raw = await scene.store.db.fetchval("SELECT body FROM webhook_outbox")
    assert raw.encode() == serialise(orjson.loads(raw))
    assert raw.index('"alpha"') < raw.index('"zeta"')
    assert raw.index('"authMode"') < raw.index('"connectionId"') < raw.index('"type"')


async def test_a_creation_failure_reports_its_error_and_end_user(scene: Scene) -> None:
    await scene.configure(webhook_url=PRIMARY)

    await scene.webhooks.connection_creation_failed(
        scene.environment,
        provider_config_key="github",
        connection_id=None,
        provider="github-pat",
        auth_mode="API_KEY",
        error_type="connection_test_failed",
        error_description="The provider refused the credentials",
        end_user={"id": "user-2"},
        tags={"source": "connect"},
    )

    [(_, body)] = await scene.queued()
    assert "connectionId" not in body
    assert body["operation"] == "creation"
    assert body["success"] is False
    assert body["error"] == {
        "type": "connection_test_failed",
        "description": "The provider refused the credentials",
    }
    assert body["endUser"] == {"endUserId": "user-2"}
    assert body["tags"] == {"source": "connect"}


# --- whether it is sent ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("creation", "refresh_error", "expected"),
    [
        (True, True, ["creation", "creation", "override", "refresh", "refresh"]),
        (False, True, ["override", "refresh", "refresh"]),
        (True, False, ["creation", "creation", "override"]),
        (False, False, ["override"]),
    ],
)
async def test_gating_by_the_environment_settings(
    scene: Scene, creation: bool, refresh_error: bool, expected: list[str]
) -> None:
    await scene.configure(
        webhook_url=PRIMARY, send_auth_creation=creation, send_auth_refresh_error=refresh_error
    )
    connection = await scene.connection()

    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="creation"
    )
    await scene.webhooks.connection_creation_failed(
        scene.environment,
        provider_config_key="github",
        connection_id="c2",
        provider="github-pat",
        auth_mode="API_KEY",
        error_type="connection_test_failed",
        error_description="refused",
    )
    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="override"
    )
    await scene.webhooks.refresh_failed(connection, auth_mode="API_KEY", error_description="x")
    await scene.webhooks.refresh_recovered(connection, auth_mode="API_KEY")

    assert [body["operation"] for _, body in await scene.queued()] == expected


# --- where it goes ---------------------------------------------------------------------------


async def test_primary_and_secondary_both_receive_it(scene: Scene) -> None:
    await scene.configure(webhook_url=PRIMARY, webhook_secondary_url=SECONDARY)

    await scene.webhooks.connection_created(
        scene.environment, await scene.connection(), "API_KEY", operation="creation"
    )

    assert [url for url, _ in await scene.queued()] == [PRIMARY, SECONDARY]


async def test_a_connection_override_replaces_the_primary_and_silences_the_secondary(
    scene: Scene,
) -> None:
    await scene.configure(webhook_url=PRIMARY, webhook_secondary_url=SECONDARY)
    connection = await scene.connection(webhook_url_override=OVERRIDE)

    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="override"
    )
    await scene.webhooks.refresh_failed(connection, auth_mode="API_KEY", error_description="x")

    assert [url for url, _ in await scene.queued()] == [OVERRIDE, OVERRIDE]


async def test_an_override_applies_even_without_environment_urls(scene: Scene) -> None:
    connection = await scene.connection(webhook_url_override=OVERRIDE)

    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="creation"
    )

    assert [url for url, _ in await scene.queued()] == [OVERRIDE]


async def test_a_failed_reauthorisation_goes_where_the_connection_webhooks_go(
    scene: Scene,
) -> None:
    await scene.configure(webhook_url=PRIMARY, webhook_secondary_url=SECONDARY)
    await scene.connection("existing", webhook_url_override=OVERRIDE)

    for connection_id in ("existing", "brand-new"):
        await scene.webhooks.connection_creation_failed(
            scene.environment,
            provider_config_key="github",
            connection_id=connection_id,
            provider="github-pat",
            auth_mode="API_KEY",
            error_type="token_err",
            error_description="refused",
        )

    assert [url for url, _ in await scene.queued()] == [OVERRIDE, PRIMARY, SECONDARY]


async def test_one_url_configured_twice_receives_it_once(scene: Scene) -> None:
    await scene.configure(webhook_url=PRIMARY, webhook_secondary_url=PRIMARY)

    await scene.webhooks.connection_created(
        scene.environment, await scene.connection(), "API_KEY", operation="creation"
    )

    assert [url for url, _ in await scene.queued()] == [PRIMARY]


async def test_nothing_is_queued_and_no_secret_made_without_a_url(scene: Scene) -> None:
    await scene.webhooks.connection_created(
        scene.environment, await scene.connection(), "API_KEY", operation="creation"
    )

    assert await scene.queued() == []
    assert (await scene.settings.get(scene.environment.id)).webhook_secret is None


async def test_the_first_queued_webhook_creates_the_signing_secret(scene: Scene) -> None:
    await scene.configure(webhook_url=PRIMARY)
    connection = await scene.connection()

    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="creation"
    )
    created = (await scene.settings.get(scene.environment.id)).webhook_secret
    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="override"
    )

    assert created is not None
    assert len(created) == 64
    assert (await scene.settings.get(scene.environment.id)).webhook_secret == created


async def test_a_destination_the_outbound_policy_refuses_is_not_queued(scene: Scene) -> None:
    await scene.configure(webhook_url="http://127.0.0.1:9/hook", webhook_secondary_url=SECONDARY)
    connection = await scene.connection(webhook_url_override="http://169.254.169.254/latest")

    await scene.webhooks.connection_created(
        scene.environment, await scene.connection("c2"), "API_KEY", operation="creation"
    )
    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="creation"
    )

    assert [url for url, _ in await scene.queued()] == [SECONDARY]


async def test_queuing_never_fails_the_caller(scene: Scene) -> None:
    await scene.configure(webhook_url=PRIMARY)
    connection = await scene.connection()
    await scene.store.close()  # the store is gone

    await scene.webhooks.connection_created(
        scene.environment, connection, "API_KEY", operation="creation"
    )
    await scene.webhooks.refresh_failed(connection, auth_mode="API_KEY", error_description="x")
    await scene.webhooks.connection_creation_failed(
        scene.environment,
        provider_config_key="github",
        connection_id="c1",
        provider="github-pat",
        auth_mode="API_KEY",
        error_type="token_err",
        error_description="refused",
    )


# --- the refresher reports failures and recoveries --------------------------------------------


@dataclass
class RefreshScene:
    store: SqlStore
    endpoint: TokenEndpoint
    refresher: Refresher
    provider: Provider
    integration: Integration
    receiver: WebhookReceiver
    port: int
    webhooks: AuthWebhooks

    async def expired_connection(self, name: str = "c1") -> Connection:
        credentials = {
            "type": "OAUTH2",
            "access_token": "at-0",
            "refresh_token": "rt-0",
            "expires_at": iso_expiry(time.time() - 60),
        }
        return await self.store.upsert_connection(
            self.integration.environment_id,
            self.integration,
            connection_id=name,
            credentials=credentials,
            connection_config={"port": str(self.port)},
            tags={"team": "core"},
        )

    async def fresh(self, connection: Connection, **flags: bool) -> Connection:
        return await self.refresher.fresh(connection, self.integration, self.provider, **flags)

    async def delivered(self) -> list[dict[str, Any]]:
        sender = self.webhooks.sender(SenderSettings(timeout=5.0, lease=30.0))
        try:
            while await sender.deliver_due():
                pass
        finally:
            await sender.close()
        return [delivery.json() for delivery in self.receiver.deliveries]


@pytest.fixture
async def refresh_scene(store: SqlStore) -> AsyncIterator[RefreshScene]:
    endpoint = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/token", endpoint.token)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    http = TokenHttp(allow_private=True)
    webhooks = AuthWebhooks(store, allow_private=True)
    refresher = Refresher(
        store,
        RefreshLocks(None, StoreLease(store.db)),
        http,
        ChangeWaiters(),
        RefreshSettings(poll_interval=0.02, rotation_grace=0.1),
        listener=webhooks,
    )
    environment = await store.create_environment("dev")
    integration = await store.create_integration(
        environment.id,
        unique_key="fake",
        provider="fake-oauth",
        credentials={"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"},
    )
    provider = parse_catalogue(CATALOGUE, "test")["fake-oauth"]
    receiver = WebhookReceiver()
    try:
        async with serve_receiver(receiver) as base_url:
            await EnvironmentSettingsStore(store).update(
                environment.id, webhook_url=base_url + "/hook"
            )
            yield RefreshScene(
                store,
                endpoint,
                refresher,
                provider,
                integration,
                receiver,
                server.port or 0,
                webhooks,
            )
    finally:
        await http.close()
        await server.close()


async def test_a_refused_refresh_sends_a_refresh_failure_webhook(
    refresh_scene: RefreshScene,
) -> None:
    connection = await refresh_scene.expired_connection()
    refresh_scene.endpoint.answers = [(400, {"error": "invalid_grant"})]

    with pytest.raises(NeedsReauthorization):
        await refresh_scene.fresh(connection)

    [body] = await refresh_scene.delivered()
    assert body["operation"] == "refresh"
    assert body["success"] is False
    assert body["error"]["type"] == "refresh_token_external_error"
    assert "invalid_grant" in body["error"]["description"]
    assert "rt-0" not in body["error"]["description"]
    assert body["connectionId"] == "c1"
    assert body["authMode"] == "OAUTH2"
    assert body["provider"] == "fake-oauth"
    assert body["environment"] == "dev"
    assert body["tags"] == {"team": "core"}


async def test_a_refresh_that_works_again_sends_a_recovery_webhook(
    refresh_scene: RefreshScene,
) -> None:
    connection = await refresh_scene.expired_connection()
    refresh_scene.endpoint.answers = [(503, {"error": "temporarily_unavailable"})]
    with pytest.raises(RefreshFailed):
        await refresh_scene.fresh(connection)
    failing = await refresh_scene.store.get_connection(connection.environment_id, "fake", "c1")
    assert failing is not None

    recovered = await refresh_scene.fresh(failing, force=True, bypass_backoff=True)
    healthy_again = await refresh_scene.fresh(recovered, force=True)

    assert healthy_again.refresh.failures == 0
    bodies = await refresh_scene.delivered()
    assert [(body["operation"], body["success"]) for body in bodies] == [
        ("refresh", False),
        ("refresh", True),  # once: a refresh of a healthy connection says nothing
    ]
    assert "error" not in bodies[1]
    assert "provider_5xx" in bodies[0]["error"]["description"]


async def test_refresh_webhooks_are_signed_with_the_environment_secret(
    refresh_scene: RefreshScene,
) -> None:
    connection = await refresh_scene.expired_connection()
    refresh_scene.endpoint.answers = [(400, {"error": "invalid_client"})]
    with pytest.raises(NeedsReauthorization):
        await refresh_scene.fresh(connection)

    await refresh_scene.delivered()

    settings = await EnvironmentSettingsStore(refresh_scene.store).get(
        refresh_scene.integration.environment_id
    )
    assert settings.webhook_secret is not None
    [delivery] = refresh_scene.receiver.deliveries
    expected = hmac.new(settings.webhook_secret.encode(), delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.headers["X-Nango-Hmac-Sha256"], expected)


async def test_refresh_webhooks_follow_send_auth_refresh_error(
    refresh_scene: RefreshScene,
) -> None:
    await EnvironmentSettingsStore(refresh_scene.store).update(
        refresh_scene.integration.environment_id, send_auth_refresh_error=False
    )
    connection = await refresh_scene.expired_connection()
    refresh_scene.endpoint.answers = [(503, {})]
    with pytest.raises(RefreshFailed):
        await refresh_scene.fresh(connection)
    failing = await refresh_scene.store.get_connection(connection.environment_id, "fake", "c1")
    assert failing is not None
    await refresh_scene.fresh(failing, force=True, bypass_backoff=True)

    assert await refresh_scene.delivered() == []


class BrokenListener:
    """A listener that always fails: the refresh must not notice."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def refresh_failed(
        self, connection: Connection, *, auth_mode: str, error_description: str
    ) -> None:
        self.calls.append("failed")
        raise RuntimeError("listener down")

    async def refresh_recovered(self, connection: Connection, *, auth_mode: str) -> None:
        self.calls.append("recovered")
        raise RuntimeError("listener down")


async def test_a_failing_listener_never_changes_the_refresh_outcome(
    refresh_scene: RefreshScene,
) -> None:
    scene = refresh_scene
    listener = BrokenListener()
    http = TokenHttp(allow_private=True)
    refresher = Refresher(
        scene.store,
        RefreshLocks(None, StoreLease(scene.store.db)),
        http,
        ChangeWaiters(),
        RefreshSettings(poll_interval=0.02, rotation_grace=0.1),
        listener=listener,
    )
    connection = await scene.expired_connection()
    scene.endpoint.answers = [(503, {})]
    try:
        with pytest.raises(RefreshFailed):
            await refresher.fresh(connection, scene.integration, scene.provider)
        failing = await scene.store.get_connection(connection.environment_id, "fake", "c1")
        assert failing is not None
        renewed = await refresher.fresh(
            failing, scene.integration, scene.provider, force=True, bypass_backoff=True
        )
    finally:
        await http.close()

    assert renewed.credentials["access_token"] == "at-2"
    assert listener.calls == ["failed", "recovered"]
