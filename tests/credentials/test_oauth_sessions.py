"""OAuth sessions (authorisations in progress) on both store backends: single use even
under concurrency, an hour's life on the store's clock, secrets sealed to their row."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from credentials.crypto import Keyring, generate_key
from credentials.oauth_sessions import (
    SESSION_TTL_MS,
    FlowSecrets,
    FlowStart,
    OAuthSessionStore,
    new_state,
)
from credentials.store import SqlStore, open_store
from tests.credentials.conftest import FakeClock

VERIFIER = "pkce-verifier-for-session-tests-0123456789abc"
REQUEST_TOKEN_SECRET = "request-token-secret-session-tests"
CLIENT_SECRET_OVERRIDE = "client-secret-override-session-tests"


async def flow_start(store: SqlStore, **secrets: str) -> FlowStart:
    environment = await store.get_environment("flows") or await store.create_environment("flows")
    return FlowStart(
        environment_id=environment.id,
        provider_config_key="crm",
        provider="fake-oauth2",
        auth_mode="OAUTH2",
        connection_id="conn-1",
        callback_url="https://authgate.example.com/oauth/callback",
        connection_config={"subdomain": "acme"},
        connect_session_id=7,
        ws_client_id="ws-1",
        secrets=FlowSecrets(
            code_verifier=secrets.get("code_verifier", VERIFIER),
            request_token_secret=secrets.get("request_token_secret"),
            client_secret_override=secrets.get("client_secret_override"),
            end_user={"id": "user-1", "email": "u1@example.com"},
            tags={"plan": "pro"},
            webhook_url_override="https://hooks.example.com/in",
        ),
    )


def test_a_state_is_long_random_and_url_safe() -> None:
    states = {new_state() for _ in range(200)}
    assert len(states) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", state) for state in states)


async def test_a_session_is_taken_whole_and_only_once(store: SqlStore) -> None:
    sessions = OAuthSessionStore(store)
    start = await flow_start(store, client_secret_override=CLIENT_SECRET_OVERRIDE)
    state = new_state()
    created = await sessions.create(state, start)

    taken = await sessions.take(state)
    again = await sessions.take(state)

    assert taken is not None
    assert taken.id == state
    assert taken.start == start
    assert taken.expires_at == created.created_at + SESSION_TTL_MS
    assert again is None
    assert await sessions.take(new_state()) is None


async def test_concurrent_callbacks_redeem_a_state_once(
    database_url: str, keyring: Keyring, clock: FakeClock
) -> None:
    # Two stores (two connection pools, as two replicas would have) race for each state.
    first = await open_store(database_url, keyring, clock=clock)
    second = await open_store(database_url, keyring, clock=clock)
    try:
        start = await flow_start(first)
        states = [new_state() for _ in range(20)]
        for state in states:
            await OAuthSessionStore(first).create(state, start)
        for state in states:
            results = await asyncio.gather(
                OAuthSessionStore(first).take(state), OAuthSessionStore(second).take(state)
            )
            assert sum(result is not None for result in results) == 1
    finally:
        await first.close()
        await second.close()


async def test_an_expired_session_is_refused_and_gone(store: SqlStore, clock: FakeClock) -> None:
    sessions = OAuthSessionStore(store)
    start = await flow_start(store)
    live, stale = new_state(), new_state()
    await sessions.create(stale, start)
    clock.advance(SESSION_TTL_MS - 1)
    await sessions.create(live, start)
    clock.advance(1)

    assert await sessions.take(stale) is None
    assert await sessions.take(live) is not None
    count = await store.db.fetchval("SELECT COUNT(*) FROM oauth_sessions")
    assert int(count) == 0


async def test_starting_a_flow_purges_abandoned_ones(store: SqlStore, clock: FakeClock) -> None:
    sessions = OAuthSessionStore(store)
    start = await flow_start(store)
    for _ in range(3):
        await sessions.create(new_state(), start)
    clock.advance(SESSION_TTL_MS)

    await sessions.create(new_state(), start)

    count = await store.db.fetchval("SELECT COUNT(*) FROM oauth_sessions")
    assert int(count) == 1


async def test_secrets_are_sealed_to_their_row(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    sessions = OAuthSessionStore(store)
    start = await flow_start(
        store,
        request_token_secret=REQUEST_TOKEN_SECRET,
        client_secret_override=CLIENT_SECRET_OVERRIDE,
    )
    one, two = new_state(), new_state()
    await sessions.create(one, start)
    await sessions.create(two, start)
    rows = await store.db.fetch("SELECT * FROM oauth_sessions")
    stored = " ".join(str(value) for row in rows for value in row.values())
    for secret in (VERIFIER, REQUEST_TOKEN_SECRET, CLIENT_SECRET_OVERRIDE, "u1@example.com"):
        assert secret not in stored
    # A sealed blob copied onto another row does not open there.
    sealed = await store.db.fetchval("SELECT secrets_enc FROM oauth_sessions WHERE id = $1", one)
    await store.db.execute("UPDATE oauth_sessions SET secrets_enc = $1 WHERE id = $2", sealed, two)

    with caplog.at_level(logging.WARNING):
        assert await sessions.take(two) is None
    assert "cannot be decrypted" in caplog.text
    assert await sessions.take(one) is not None


async def test_sessions_survive_a_key_rotation(
    database_url: str, encryption_key: bytes, clock: FakeClock
) -> None:
    old = await open_store(database_url, Keyring([encryption_key]), clock=clock)
    start = await flow_start(old)
    state = new_state()
    await OAuthSessionStore(old).create(state, start)
    await old.close()
    rotated = await open_store(database_url, Keyring([generate_key(), encryption_key]), clock=clock)
    try:
        assert await rotated.reencrypt_all() >= 1
        taken = await OAuthSessionStore(rotated).take(state)
        assert taken is not None
        assert taken.start.secrets.code_verifier == VERIFIER
    finally:
        await rotated.close()


def test_reprs_name_no_secret() -> None:
    secrets = FlowSecrets(code_verifier=VERIFIER, client_secret_override=CLIENT_SECRET_OVERRIDE)
    assert VERIFIER not in repr(secrets)
    assert CLIENT_SECRET_OVERRIDE not in repr(secrets)
    assert "code_verifier" in repr(secrets)
