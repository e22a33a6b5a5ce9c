"""Connect-session storage on SQLite and PostgreSQL: tokens, hashing, expiry, scoping.

Time is the injected `FakeClock`, so expiry is exercised to the millisecond without waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import pytest

from credentials.models import Environment
from credentials.sessions import (
    SESSION_TTL_MS,
    ConnectSessionStore,
    ReconnectTarget,
    SessionSpec,
    generate_token,
    hash_token,
    is_well_formed,
)
from credentials.store import SqlStore
from tests.credentials.conftest import FakeClock

TOKEN = re.compile(r"^nango_connect_session_[0-9a-f]{64}$")
FULL_SPEC = SessionSpec(
    end_user={"id": "u-1", "email": "ann@example.com", "tags": {"plan": "pro"}},
    organization={"id": "org-1", "display_name": "Org"},
    tags={"end_user_id": "u-1", "plan": "pro"},
    allowed_integrations=("github", "slack"),
    integrations_config_defaults={"github": {"connection_config": {"a": 1}}},
    overrides={"github": {"docs_connect": ""}},
    webhook_url_override="https://example.com/hook",
    reconnect=ReconnectTarget("github", "conn-1"),
)


@pytest.fixture
async def environment(store: SqlStore) -> Environment:
    return await store.create_environment("dev")


@pytest.fixture
def sessions(store: SqlStore, clock: FakeClock) -> ConnectSessionStore:
    return ConnectSessionStore(store.db, clock=clock)


async def _rows(store: SqlStore) -> list[dict[str, Any]]:
    return [dict(row) for row in await store.db.fetch("SELECT * FROM connect_sessions")]


# --- tokens ------------------------------------------------------------------------------


def test_tokens_have_nangos_form_and_are_unique() -> None:
    tokens = {generate_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(TOKEN.fullmatch(token) for token in tokens)
    assert all(is_well_formed(token) for token in tokens)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nango_connect_session_",
        "nango_connect_session_" + "a" * 63,
        "nango_connect_session_" + "a" * 65,
        "nango_connect_session_" + "A" * 64,  # upper-case hex is not Nango's form
        "nango_connect_session_" + "g" * 64,
        "Nango_connect_session_" + "a" * 64,
        " nango_connect_session_" + "a" * 64,
        "nango_connect_session_" + "a" * 64 + "\n",
        "00000000-0000-4000-8000-000000000000",
    ],
)
def test_malformed_tokens_are_recognised(token: str) -> None:
    assert not is_well_formed(token)


def test_the_hash_is_sha256_of_the_token() -> None:
    token = generate_token()
    assert hash_token(token) == hashlib.sha256(token.encode()).digest()


# --- create and resolve ------------------------------------------------------------------


async def test_only_a_hash_of_the_token_is_stored(
    store: SqlStore, sessions: ConnectSessionStore, environment: Environment
) -> None:
    issued = await sessions.create(environment.id, FULL_SPEC)
    assert TOKEN.fullmatch(issued.token)
    (row,) = await _rows(store)
    assert bytes(row["token_hash"]) == hash_token(issued.token)
    secret_part = issued.token.removeprefix("nango_connect_session_")
    for column, value in row.items():
        text = bytes(value).hex() if isinstance(value, bytes | memoryview) else str(value)
        assert secret_part not in text, column


async def test_a_session_round_trips_with_its_environment(
    sessions: ConnectSessionStore, environment: Environment, clock: FakeClock
) -> None:
    issued = await sessions.create(environment.id, FULL_SPEC)
    assert issued.session.created_at == clock.now_ms
    assert issued.session.expires_at == clock.now_ms + SESSION_TTL_MS == clock.now_ms + 1_800_000
    resolved = await sessions.resolve(issued.token)
    assert resolved is not None
    assert resolved.environment == environment
    assert resolved.session == issued.session
    assert resolved.session.spec == FULL_SPEC


async def test_absent_fields_stay_absent(
    sessions: ConnectSessionStore, environment: Environment
) -> None:
    issued = await sessions.create(environment.id, SessionSpec())
    resolved = await sessions.resolve(issued.token)
    assert resolved is not None
    assert resolved.session.spec == SessionSpec()
    # "No tags given" and "no tags" are different answers for GET /connect/session.
    tagged = await sessions.create(environment.id, SessionSpec(tags={}))
    resolved = await sessions.resolve(tagged.token)
    assert resolved is not None
    assert resolved.session.spec.tags == {}


@pytest.mark.parametrize(
    "token",
    [
        "nango_connect_session_" + "0" * 64,  # well formed, never issued
        "nango_connect_session_" + "A" * 64,  # malformed
        "not a token",
    ],
)
async def test_unknown_tokens_resolve_to_nothing(
    sessions: ConnectSessionStore, environment: Environment, token: str
) -> None:
    await sessions.create(environment.id, SessionSpec(tags={}))
    assert await sessions.resolve(token) is None


async def test_an_upper_cased_token_is_not_the_same_token(
    sessions: ConnectSessionStore, environment: Environment
) -> None:
    issued = await sessions.create(environment.id, SessionSpec(tags={}))
    assert await sessions.resolve(issued.token.upper()) is None


async def test_the_stored_hash_is_compared_in_constant_time(
    sessions: ConnectSessionStore, environment: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await sessions.create(environment.id, SessionSpec(tags={}))
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr("credentials.sessions.hmac.compare_digest", spy)
    assert await sessions.resolve(issued.token) is not None
    assert compared == [(hash_token(issued.token), hash_token(issued.token))]


# --- expiry ------------------------------------------------------------------------------


async def test_a_session_lives_exactly_thirty_minutes(
    store: SqlStore, sessions: ConnectSessionStore, environment: Environment, clock: FakeClock
) -> None:
    issued = await sessions.create(environment.id, SessionSpec(tags={}))
    clock.advance(SESSION_TTL_MS - 1)
    assert await sessions.resolve(issued.token) is not None
    assert await sessions.get(environment.id, issued.session.id) is not None
    clock.advance(1)
    assert await sessions.resolve(issued.token) is None
    # Refused and purged on the spot, not left for a cleanup job.
    assert await _rows(store) == []


async def test_get_refuses_and_purges_an_expired_session(
    store: SqlStore, sessions: ConnectSessionStore, environment: Environment, clock: FakeClock
) -> None:
    issued = await sessions.create(environment.id, SessionSpec(tags={}))
    clock.advance(SESSION_TTL_MS)
    assert await sessions.get(environment.id, issued.session.id) is None
    assert await _rows(store) == []


async def test_creating_a_session_purges_expired_ones(
    store: SqlStore, sessions: ConnectSessionStore, environment: Environment, clock: FakeClock
) -> None:
    old = await sessions.create(environment.id, SessionSpec(tags={}))
    clock.advance(SESSION_TTL_MS // 2)
    younger = await sessions.create(environment.id, SessionSpec(tags={}))
    clock.advance(SESSION_TTL_MS // 2)
    fresh = await sessions.create(environment.id, SessionSpec(tags={}))
    ids = {row["id"] for row in await _rows(store)}
    assert ids == {younger.session.id, fresh.session.id}
    assert old.session.id not in ids


async def test_purge_counts_what_it_removed(
    sessions: ConnectSessionStore, environment: Environment, clock: FakeClock
) -> None:
    for _ in range(3):
        await sessions.create(environment.id, SessionSpec(tags={}))
    assert await sessions.purge_expired() == 0
    clock.advance(SESSION_TTL_MS)
    assert await sessions.purge_expired() == 3


async def test_the_ttl_is_injectable(
    store: SqlStore, environment: Environment, clock: FakeClock
) -> None:
    short = ConnectSessionStore(store.db, clock=clock, ttl_ms=10)
    issued = await short.create(environment.id, SessionSpec(tags={}))
    assert issued.session.expires_at == clock.now_ms + 10
    clock.advance(10)
    assert await short.resolve(issued.token) is None


# --- scoping and deletion ----------------------------------------------------------------


async def test_sessions_are_scoped_to_their_environment(
    store: SqlStore, sessions: ConnectSessionStore, environment: Environment
) -> None:
    other = await store.create_environment("prod")
    mine = await sessions.create(environment.id, SessionSpec(tags={"side": "dev"}))
    theirs = await sessions.create(other.id, SessionSpec(tags={"side": "prod"}))
    resolved = await sessions.resolve(theirs.token)
    assert resolved is not None
    assert resolved.environment == other
    assert await sessions.get(other.id, mine.session.id) is None
    assert await sessions.get(environment.id, theirs.session.id) is None
    assert not await sessions.delete(other.id, mine.session.id)
    assert await sessions.resolve(mine.token) is not None


async def test_delete_ends_the_session_at_once(
    sessions: ConnectSessionStore, environment: Environment
) -> None:
    issued = await sessions.create(environment.id, SessionSpec(tags={}))
    kept = await sessions.create(environment.id, SessionSpec(tags={}))
    assert await sessions.delete(environment.id, issued.session.id)
    assert await sessions.resolve(issued.token) is None
    assert await sessions.get(environment.id, issued.session.id) is None
    assert not await sessions.delete(environment.id, issued.session.id)
    assert await sessions.resolve(kept.token) is not None
