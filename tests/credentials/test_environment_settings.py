"""Environment settings of the auth flows and webhooks, on both store backends."""

from __future__ import annotations

import pytest

from credentials.crypto import DecryptionError
from credentials.environment_settings import (
    EnvironmentSettings,
    EnvironmentSettingsStore,
    generate_secret,
)
from credentials.store import SqlStore


async def test_an_environment_without_a_row_has_the_defaults(store: SqlStore) -> None:
    environment = await store.create_environment("settings-defaults")
    settings = await EnvironmentSettingsStore(store).get(environment.id)
    assert settings == EnvironmentSettings(environment.id)
    assert settings.send_auth_creation is True
    assert settings.hmac_enabled is False


async def test_updates_keep_other_fields_and_secrets_are_sealed(store: SqlStore) -> None:
    environment = await store.create_environment("settings-update")
    other = await store.create_environment("settings-other")
    settings_store = EnvironmentSettingsStore(store)
    secret, hmac_key = generate_secret(), generate_secret()
    await settings_store.update(
        environment.id, webhook_url="https://hooks.example.com/a", webhook_secret=secret
    )
    updated = await settings_store.update(
        environment.id, hmac_enabled=True, hmac_key=hmac_key, public_key="pk-1"
    )
    assert updated.webhook_url == "https://hooks.example.com/a"
    again = await settings_store.get(environment.id)
    assert again == updated
    assert again.webhook_secret == secret
    assert again.hmac_key == hmac_key
    assert (await settings_store.get(other.id)) == EnvironmentSettings(other.id)
    assert await settings_store.find_by_public_key("pk-1") == again
    assert await settings_store.find_by_public_key("pk-2") is None

    row = await store.db.fetchrow(
        "SELECT webhook_secret_enc, hmac_key_enc FROM environment_settings"
        " WHERE environment_id = $1",
        environment.id,
    )
    assert row is not None
    assert secret not in str(row["webhook_secret_enc"])
    assert hmac_key not in str(row["hmac_key_enc"])
    assert secret not in repr(again)
    assert hmac_key not in repr(again)


async def test_a_sealed_secret_moved_to_another_environment_does_not_open(
    store: SqlStore,
) -> None:
    first = await store.create_environment("settings-first")
    second = await store.create_environment("settings-second")
    settings_store = EnvironmentSettingsStore(store)
    await settings_store.update(first.id, webhook_secret=generate_secret())
    await settings_store.update(second.id, webhook_url="https://x.example.com")
    await store.db.execute(
        "UPDATE environment_settings SET webhook_secret_enc ="
        " (SELECT webhook_secret_enc FROM environment_settings WHERE environment_id = $1)"
        " WHERE environment_id = $2",
        first.id,
        second.id,
    )
    with pytest.raises(DecryptionError):
        await settings_store.get(second.id)
