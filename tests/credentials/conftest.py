"""Fixtures that run every store test against both SQLite and PostgreSQL.

PostgreSQL tests get a fresh schema per test (selected with `?search_path=`) that is
dropped afterwards, so tests never see each other's rows and can run in any order.
Point `AUTHGATE_TEST_POSTGRES_URL` elsewhere to use another server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from credentials.crypto import Keyring, generate_key
from credentials.store import SqlStore, open_store

POSTGRES_URL = os.environ.get(
    "AUTHGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class FakeClock:
    """Epoch milliseconds that only move when a test says so."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00Z
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}search_path={schema}"


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    schema = f"authgate_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await admin.close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # Synchronous on purpose: it pulls in the async schema fixture only for PostgreSQL,
    # and getfixturevalue cannot set up an async fixture from inside a running loop.
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'authgate.db'}"
    schema: str = request.getfixturevalue("postgres_schema")
    return with_search_path(POSTGRES_URL, schema)


@pytest.fixture
def encryption_key() -> bytes:
    return generate_key()


@pytest.fixture
def keyring(encryption_key: bytes) -> Keyring:
    return Keyring([encryption_key])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(database_url: str, keyring: Keyring, clock: FakeClock) -> AsyncIterator[SqlStore]:
    opened = await open_store(database_url, keyring, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()
